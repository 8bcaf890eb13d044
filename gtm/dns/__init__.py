"""The DNS tier: wire parsing, zones, the pure answer engine, and the UDP/TCP servers."""
