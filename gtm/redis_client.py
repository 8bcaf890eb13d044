"""Redis connections with the product's timeouts: the control plane's fan-out and the
health bus both talk to Redis, and neither may wait on it for long."""

from __future__ import annotations

import redis.asyncio as aioredis

TIMEOUT = 1.0


def client(url: str, timeout: float = TIMEOUT) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        url, socket_timeout=timeout, socket_connect_timeout=timeout, decode_responses=True
    )


def subscriber(url: str) -> aioredis.Redis:
    """A client for pub/sub: no read timeout, since a subscriber idles until a change.

    A dead server still shows up at once, as a closed connection.
    """
    return aioredis.Redis.from_url(url, socket_connect_timeout=TIMEOUT, decode_responses=True)
