"""A DNS node's serving worker: its sockets and the service that swaps zones, fed by the
health overlay, into the answer engine (gtm.dns). Above gtm.health, below gtm.control."""
