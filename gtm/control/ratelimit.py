"""Token buckets per client, for what a client may only do so often (failed logins).

A client is its address, or its /64 for IPv6, where one host commonly holds a whole
/64. Each client's bucket holds up to ``burst`` tokens and refills at ``rate`` per
second; ``take`` spends one, or says how long until one is there. Buckets are held for
at most ``max_clients`` clients: full buckets are dropped first (they hold nothing a
fresh one would not), and past that every new client shares one bucket, so a flood
from many addresses is limited as one client rather than growing the table.
"""

from __future__ import annotations

import ipaddress
import time
from dataclasses import dataclass

MAX_CLIENTS = 65_536
SHARED = "(every other client)"


def client_of(remote: str | None) -> str:
    """The client a request comes from, as the limits and the audit log count it."""
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return "unknown"
    if address.version == 6 and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address.ipv4_mapped or address) if address.version == 6 else str(address)


@dataclass
class _Bucket:
    tokens: float
    at: float  # time.monotonic() when ``tokens`` was counted


class TokenBuckets:
    def __init__(self, burst: float, rate: float, max_clients: int = MAX_CLIENTS):
        if burst < 1 or rate <= 0:
            raise ValueError("a token bucket needs burst >= 1 and rate > 0")
        self.burst = burst
        self.rate = rate
        self.max_clients = max_clients
        self._buckets: dict[str, _Bucket] = {}
        self._pruned_at = float("-inf")

    def take(self, client: str, now: float | None = None) -> float:
        """Spend one token of ``client``'s: 0.0 when there was one, else the seconds until
        there will be (and nothing is spent)."""
        now = time.monotonic() if now is None else now
        bucket = self._bucket(client, now)
        bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate

    def _bucket(self, client: str, now: float) -> _Bucket:
        bucket = self._buckets.get(client)
        if bucket is not None:
            return bucket
        if len(self._buckets) >= self.max_clients and now - self._pruned_at >= 1.0:
            self._drop_full(now)  # a scan of every bucket: at most once a second
        if len(self._buckets) >= self.max_clients:
            client = SHARED
        return self._buckets.setdefault(client, _Bucket(self.burst, now))

    def _drop_full(self, now: float) -> None:
        self._pruned_at = now
        self._buckets = {
            client: bucket for client, bucket in self._buckets.items()
            if client == SHARED or bucket.tokens + (now - bucket.at) * self.rate < self.burst}
