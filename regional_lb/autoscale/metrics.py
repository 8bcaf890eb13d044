"""The figures a policy tracks, from every balancer's facts of the region.

A balancer's facts per backend: ``[in_flight, requests, responses_5xx, admin_state,
latency_buckets, mean_in_flight]`` (counters since it started). Rates are the
differences between two facts of one balancer over the time between them, added up over
the balancers, so a region of N balancers is measured as one. Per-backend metrics divide
by the *warm* backends (past warm-up) and count only their numbers.

``in_flight`` is the count when the facts were taken (a drain waits for it to be 0, a
scale-in picks the backends with the fewest); ``mean_in_flight`` is its mean over the
samples taken every SAMPLE_EVERY seconds since the previous facts, and is what the
``in_flight_per_backend`` metric tracks. One count a decision would be noise: with a
Poisson load whose mean is exactly the target of 10 per backend, one count in three
(one backend; one in four with four) lies past the 10 % tolerance band, and with a
scale-out window of 0 the first such count acted. Facts from a balancer of an earlier
version, without the mean, count their ``in_flight``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlencode

from gtm import log
from regional_lb.autoscale.outbound import checked_host
from regional_lb.config_autoscale import ScalePolicy
from regional_lb.report import percentile
from regional_lb.snapshot import Snapshot

MAX_BODY = 1 << 16  # bytes read from a backend's load report or Prometheus's answer
SAMPLE_EVERY = 0.1  # seconds between samples of the requests in flight (at most)
Counters = tuple[int, int, list[int]]


class Sampler:
    def __init__(self, outbound: tuple[Any, ...] = ()) -> None:
        self.outbound = outbound  # where Prometheus may be ([lb.autoscale] outbound_networks)
        self.previous: dict[tuple[str, str, str], tuple[float, Counters]] = {}
        self.in_flight: dict[str, dict[str, int]] = {}  # pool -> backend -> in flight
        self.in_flight_sums: dict[tuple[str, str], int] = {}  # since the last facts
        self.samples = 0

    def sample(self, snapshot: Snapshot, pools: set[str]) -> None:
        """Count what is in flight now, towards the next facts' means."""
        sums = self.in_flight_sums
        for name, pool in snapshot.pools.items():
            if name in pools:
                for b in pool.backends:
                    key = (name, b.key)
                    sums[key] = sums.get(key, 0) + b.active
        self.samples += 1

    def facts(self, snapshot: Snapshot, pools: set[str]) -> dict[str, Any]:
        sums, samples = self.in_flight_sums, self.samples
        self.in_flight_sums, self.samples = {}, 0

        def mean(pool: str, backend: Any) -> float:
            # A backend added since the last sample has none yet: its count now.
            total = sums.get((pool, backend.key))
            return round(total / samples, 3) if total is not None else float(backend.active)
        return {"pools": {
            name: {b.key: [b.active, b.requests, b.responses[5], b.admin,
                           list(b.latency_buckets), mean(name, b)] for b in pool.backends}
            for name, pool in snapshot.pools.items() if name in pools}}

    async def metric(self, policy: ScalePolicy, pool: str, facts: dict[str, Any],
                     warm: list[str], serving: list[str], now: float) -> float | None:
        in_flight: dict[str, int] = {}
        mean_in_flight: dict[str, float] = {}
        requests = errors = 0.0
        buckets: list[int] = []
        counted = set(warm)
        rated = False
        for member, member_facts in facts.items():
            at = float(member_facts["at"])
            for address, seen in member_facts.get("pools", {}).get(pool, {}).items():
                active, total, fives, lat = int(seen[0]), seen[1], seen[2], seen[4]
                in_flight[address] = in_flight.get(address, 0) + active
                mean = float(seen[5]) if len(seen) > 5 else float(active)
                mean_in_flight[address] = mean_in_flight.get(address, 0.0) + mean
                key = (member, pool, address)
                before = self.previous.get(key)
                self.previous[key] = (at, (total, fives, lat))
                if before is None or at <= before[0] or address not in counted:
                    continue
                elapsed = at - before[0]
                then = before[1]
                if total < then[0]:  # that balancer restarted: no rate this time
                    continue
                rated = True
                requests += (total - then[0]) / elapsed
                errors += (fives - then[1]) / elapsed
                delta = [a - b for a, b in zip(lat, then[2], strict=True)]
                buckets = delta if not buckets else [a + b for a, b in zip(buckets, delta,
                                                                         strict=True)]
        self.in_flight[pool] = in_flight
        warm_count = len(warm)
        kind = policy.metric
        if kind == "in_flight_per_backend":
            if not facts or not warm_count:
                return None
            return sum(mean_in_flight.get(k, 0.0) for k in warm) / warm_count
        if kind == "requests_per_backend":
            return requests / warm_count if rated and warm_count else None
        if kind == "p95_latency_ms":
            p95 = percentile(buckets, 0.95) if buckets else None
            return p95 * 1000 if p95 is not None else None
        if kind == "error_rate":
            return errors / requests if rated and requests > 0 else None
        if kind == "prometheus":
            return await self._prometheus(policy, warm_count)
        return await self._reported(policy, warm)

    async def _prometheus(self, policy: ScalePolicy, warm: int) -> float | None:
        import aiohttp

        spec = policy.prometheus
        assert spec is not None
        url = spec.url.rstrip("/") + "/api/v1/query?" + urlencode({"query": spec.query})
        try:
            await checked_host(url, self.outbound)
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as s, \
                    s.get(url, allow_redirects=False) as response:
                data = json.loads(await response.content.read(MAX_BODY))
            value = _prometheus_value(data)
        except Exception as exc:
            log.scale.warning("prometheus query failed: %s", exc)
            return None
        if value is None:
            return None
        return value / max(warm, 1) if spec.per_backend else value

    async def _reported(self, policy: ScalePolicy, warm: list[str]) -> float | None:
        spec = policy.reported
        assert spec is not None
        values = await asyncio.gather(*(_report_of(address, spec.path, spec.field,
                                                   spec.header) for address in warm))
        seen = [v for v in values if v is not None]
        return sum(seen) / len(seen) if seen else None


def _prometheus_value(data: Any) -> float | None:
    """A scalar, or the sum of an instant vector; None for no result."""
    result = data["data"]["result"]
    if data["data"]["resultType"] == "scalar":
        return float(result[1])
    values = [float(item["value"][1]) for item in result]
    return sum(values) if values else None


async def _report_of(address: str, path: str, field: str | None,
                     header: str | None) -> float | None:
    """A backend's own figure (a backend of the pool: allowed_backend_networks held)."""
    import aiohttp

    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as s, \
                s.get(f"http://{address}{path}", allow_redirects=False) as response:
            if header is not None:
                return float(response.headers[header])
            data = json.loads(await response.content.read(MAX_BODY))
            return float(data[field])
    except Exception:
        return None
