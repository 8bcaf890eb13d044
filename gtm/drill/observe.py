"""Observers: what clients see during a drill.

Each vantage point stands for the clients behind one resolver: it resolves the names
through a stub that caches answers for their TTL as real resolvers do (and sends its
ECS subnet, so the authoritative servers steer it as that country's clients), then
sends an HTTP request to the address it got, on a fixed cadence. Every observation is
kept with its time: which region answered, the TTL left, the HTTP outcome, latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import dns.asyncquery
import dns.edns
import dns.exception
import dns.message
import dns.rdatatype

from gtm.config.drills import Vantage
from gtm.config_reader import Listen

MAX_OBSERVATIONS = 200_000  # per drill: a cap on what a long drill holds in memory


@dataclass(frozen=True)
class Observation:
    t: float                  # Unix time the request started
    vantage: str
    name: str
    address: str | None       # None: no answer
    region: str | None        # the answered address's region (None: unknown / no answer)
    ttl: int | None           # the TTL left on the answer used (the stub's cache)
    cached: bool
    ok: bool                  # the HTTP request got a 2xx/3xx answer
    status: int | None
    latency_ms: float | None
    error: str = ""

    def public(self) -> dict[str, object]:
        return asdict(self)


class CachingStub:
    """A stub resolver with a cache that honours TTLs (dnspython, UDP, ECS)."""

    def __init__(self, servers: tuple[Listen, ...], subnet: str, timeout: float = 1.0):
        address, _, prefix = subnet.partition("/")
        self.servers = servers
        self.ecs = dns.edns.ECSOption(address, int(prefix or 32))
        self.timeout = timeout
        self.cache: dict[str, tuple[float, list[str]]] = {}  # name -> (expires, addresses)

    async def resolve(self, name: str) -> tuple[list[str], int, bool]:
        """(addresses, TTL left, from cache); ([], 0, False) when no server answers."""
        now = time.monotonic()
        cached = self.cache.get(name)
        if cached is not None and cached[0] > now:
            return cached[1], int(cached[0] - now), True
        query = dns.message.make_query(name, "A", use_edns=0, options=[self.ecs])
        for server in self.servers:
            try:
                response = await dns.asyncquery.udp(query, server.host, timeout=self.timeout,
                                                    port=server.port)
            except (dns.exception.DNSException, OSError):
                continue
            addresses, ttl = _a_records(response)
            if ttl > 0:
                self.cache[name] = (time.monotonic() + ttl, addresses)
            return addresses, ttl, False
        return [], 0, False


def _a_records(response: dns.message.Message) -> tuple[list[str], int]:
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.A:
            return [r.address for r in rrset], int(rrset.ttl)
    return [], 0


async def http_get(address: str, port: int, host: str, path: str, timeout: float
                   ) -> tuple[int | None, float, str]:
    """(status, milliseconds, error): one request on a new connection, as a client that
    has just resolved the name makes it."""
    start = time.monotonic()
    writer = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(address, port)
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: gtm-drill\r\n"
                         "Connection: close\r\n\r\n".encode())
            line = await reader.readline()
            await reader.read()  # the body: the request is done when it is read
        parts = line.split()
        status = int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None
        error = "" if status is not None else f"not an HTTP answer: {line[:40]!r}"
        return status, (time.monotonic() - start) * 1000, error
    except TimeoutError:
        return None, (time.monotonic() - start) * 1000, "timeout"
    except OSError as exc:
        return None, (time.monotonic() - start) * 1000, exc.strerror or type(exc).__name__
    finally:
        if writer is not None:
            writer.close()


class VantagePoint:
    """One client population's loop: resolve, request, record, on a fixed cadence."""

    def __init__(self, vantage: Vantage, names: tuple[str, ...], servers: tuple[Listen, ...],
                 regions: Mapping[str, str], port: int, path: str, interval: float,
                 timeout: float, sink: list[Observation]):
        self.vantage = vantage
        self.names = names
        self.stub = CachingStub(servers, vantage.subnet, timeout)
        self.regions = regions
        self.port = port
        self.path = path
        self.interval = interval
        self.timeout = timeout
        self.sink = sink

    async def run(self) -> None:
        start = time.monotonic()
        tick = 0
        while True:
            for name in self.names:
                await self.observe(name)
            tick += 1
            # A fixed cadence: a slow request delays the next one, never the schedule.
            await asyncio.sleep(max(0.0, start + tick * self.interval - time.monotonic()))

    async def observe(self, name: str) -> Observation:
        started = time.time()
        addresses, ttl, cached = await self.stub.resolve(name)
        if not addresses:
            observation = Observation(started, self.vantage.name, name, None, None, None,
                                      False, False, None, None, "no DNS answer")
        else:
            address = addresses[0]
            status, latency, error = await http_get(address, self.port, name.rstrip("."),
                                                    self.path, self.timeout)
            ok = status is not None and 200 <= status < 400
            if status is not None and not ok:
                error = f"HTTP {status}"
            observation = Observation(started, self.vantage.name, name, address,
                                      self.regions.get(address), ttl, cached, ok, status,
                                      round(latency, 3), error)
        if len(self.sink) < MAX_OBSERVATIONS:
            self.sink.append(observation)
        return observation
