"""TLS termination: a certificate store chosen by SNI, listener contexts, rotation.

``certs`` reads and checks one certificate/key pair; ``store`` indexes a directory of
them by name and builds SSL contexts lazily; ``listener`` is what a TLS listener holds
(its front context, its SNI callback, its handshake counters); ``inventory`` is
``gtm certs list``.
"""
