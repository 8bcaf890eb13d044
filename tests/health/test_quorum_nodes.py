"""Three observers sharing observations through a real Redis; one gets partitioned.

C reaches the endpoint and Redis through relays (tests/health/forwarder.py); closing
a relay cuts C off for real. Expected: the healthy majority decides, and C never
flips its answers on its own view.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any
from urllib.parse import urlparse

from gtm.health.overlay import ServingFeed
from gtm.health.service import HealthService, HealthSettings
from gtm.health.summary import render_summary, status_column
from tests.health.conftest import REDIS_URL
from tests.health.endpoint import Endpoint, free_port
from tests.health.forwarder import Forwarder
from tests.health.helpers import Served, check, compile_zones, health_of, wait_for

T = "hc.test/eu-1"
EXPIRY = 1.0


@asynccontextmanager
async def observer(name: str, spec: dict[str, Any], redis_url: str, namespace: str,
                   **zone_args: Any) -> AsyncIterator[tuple[Served, HealthService]]:
    served = Served()
    feed = ServingFeed(served)
    settings = HealthSettings(name, quorum=2, expiry=EXPIRY, coalesce=0.1,
                              redis_url=redis_url, namespace=namespace,
                              in_process_reports=False)
    service = HealthService(settings, feed)
    if service.bus is not None:
        service.bus.resync = 0.5
    feed.serve(compile_zones(spec, **zone_args))
    await service.start()
    try:
        yield served, service
    finally:
        await service.stop()
        feed.close()


async def test_majority_decides_and_the_partitioned_node_does_not_flap(
        redis_namespace: str) -> None:
    port = free_port("127.0.1.1")
    redis = urlparse(REDIS_URL)
    async with AsyncExitStack() as stack:
        eu = await Endpoint("127.0.1.1", port).start()
        stack.push_async_callback(eu.stop)
        us = await Endpoint("127.0.2.1", port).start()
        stack.push_async_callback(us.stop)
        to_endpoint = await Forwarder("127.0.1.50", port, ("127.0.1.1", port)).start()
        stack.push_async_callback(to_endpoint.close)
        relay_port = free_port("127.0.6.1")
        to_redis = await Forwarder("127.0.6.1", relay_port,
                                   (redis.hostname or "127.0.0.1", redis.port or 6379)).start()
        stack.push_async_callback(to_redis.close)
        spec = check(port)
        a_served, a = await stack.enter_async_context(
            observer("a", spec, REDIS_URL, redis_namespace))
        _, b = await stack.enter_async_context(observer("b", spec, REDIS_URL, redis_namespace))
        c_url = REDIS_URL.replace(f"{redis.hostname}:{redis.port or 6379}",
                                  f"127.0.6.1:{relay_port}")
        c_served, c = await stack.enter_async_context(
            observer("c", spec, c_url, redis_namespace, eu_check="127.0.1.50"))
        # C probes through its relay; give it the relay's address and the same port.
        for node in (a, b, c):
            await wait_for(lambda n=node: len(n.view.fresh(T)) == 3, 5)  # type: ignore[misc]
        assert all(n.view.agreed[T].state == "up" for n in (a, b, c))

        # 1. C loses the endpoint (not the others): it says down, the majority says up.
        await to_endpoint.close()
        mark = len(c_served.swaps)
        await wait_for(lambda: c.machines[T].state == "down", 3)
        await asyncio.sleep(1.0)
        assert c.view.agreed[T].state == "up" and a.view.agreed[T].state == "up"
        assert all(health_of(z, "eu-1") == "up" for _, z in c_served.swaps[mark:])

        # 2. C loses Redis too, then the endpoint really dies: A and B agree down; C,
        #    left with only its own fresh view, keeps the last agreed state and says so.
        await to_redis.close()
        await asyncio.sleep(0.3)
        await eu.stop()
        await wait_for(lambda: health_of(a_served.current, "eu-1") == "down", 3)
        await wait_for(lambda: c.summary()["isolated"], EXPIRY + 2)
        await asyncio.sleep(1.0)
        assert c.view.agreed[T].state == "up"
        assert all(health_of(z, "eu-1") == "up" for _, z in c_served.swaps[mark:])
        assert c.summary()["endpoints"][T]["isolated"]
        # ... and says so where operators look: `gtm status` and `gtm health`.
        assert status_column({"health": c.summary()}) == "2/2 up ISOLATED"
        assert any("ISOLATED" in line for line in render_summary(c.summary()))
        assert status_column({"health": a.summary()}) == "1/2 up"
