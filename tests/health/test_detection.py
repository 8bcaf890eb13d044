"""Real servers that die, hang, return 500, flap and come back, seen through a real
HealthService feeding a ServingFeed.

Tolerance: detection within interval x fall + coalesce + 0.3 s; the 0.3 s covers the
probe's own latency (or its timeout, added where the server hangs) and scheduling on
a loaded two-core machine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gtm.health.overlay import ServingFeed
from gtm.health.service import HealthService, HealthSettings
from tests.health.endpoint import Endpoint, free_port
from tests.health.helpers import Served, check, compile_zones, health_of, wait_for

EU, US = "127.0.1.1", "127.0.2.1"
INTERVAL, FALL, RISE, COALESCE = 0.2, 2, 2, 0.1
TOLERANCE = 0.3


@asynccontextmanager
async def node(spec: dict[str, Any]) -> AsyncIterator[tuple[Served, HealthService]]:
    served = Served()
    feed = ServingFeed(served)
    service = HealthService(HealthSettings("t1", coalesce=COALESCE, in_process_reports=False),
                            feed)
    feed.serve(compile_zones(spec))
    await service.start()
    try:
        yield served, service
    finally:
        await service.stop()
        feed.close()


async def servers(port: int, mode: str = "ok") -> tuple[Endpoint, Endpoint]:
    return (await Endpoint(EU, port, mode).start(), await Endpoint(US, port).start())


async def test_death_detected_within_interval_times_fall_and_recovery_through_rise() -> None:
    port = free_port(EU)
    eu, us = await servers(port)
    try:
        async with node(check(port)) as (served, service):
            await wait_for(lambda: service.view.agreed.get("hc.test/eu-1") is not None, 2)
            for _ in range(3):
                await eu.stop()
                died = time.monotonic()
                await wait_for(lambda: health_of(served.current, "eu-1") == "down", 3)
                detection = time.monotonic() - died
                assert detection <= INTERVAL * FALL + COALESCE + TOLERANCE, detection
                await eu.start()
                back = time.monotonic()
                await wait_for(lambda: health_of(served.current, "eu-1") == "up", 3)
                recovery = time.monotonic() - back
                assert recovery <= INTERVAL * RISE + COALESCE + TOLERANCE, recovery
            assert health_of(served.current, "us-1") == "up"
    finally:
        await eu.stop()
        await us.stop()


async def test_500_and_hang_take_it_down_with_reasons() -> None:
    port = free_port(EU)
    eu, us = await servers(port)
    try:
        async with node(check(port)) as (served, service):
            await asyncio.sleep(0.3)
            eu.mode = "error"
            await wait_for(lambda: health_of(served.current, "eu-1") == "down",
                           INTERVAL * FALL + COALESCE + TOLERANCE)
            assert "HTTP 500" in service.summary()["endpoints"]["hc.test/eu-1"]["reason"]
            eu.mode = "ok"
            await wait_for(lambda: health_of(served.current, "eu-1") == "up", 2)
            eu.mode = "hang"
            bound = (INTERVAL + 0.15) * FALL + COALESCE + TOLERANCE  # each probe times out
            await wait_for(lambda: health_of(served.current, "eu-1") == "down", bound)
            assert "timeout" in service.summary()["endpoints"]["hc.test/eu-1"]["reason"]
    finally:
        await eu.stop()
        await us.stop()


async def test_slow_server_within_timeout_stays_up_beyond_it_goes_down() -> None:
    port = free_port(EU)
    eu, us = await servers(port, "slow")
    eu.delay = 0.05
    try:
        async with node(check(port)) as (served, _):
            await asyncio.sleep(1.0)
            assert health_of(served.current, "eu-1") == "up"
            eu.delay = 0.5  # beyond the 0.15 s timeout
            await wait_for(lambda: health_of(served.current, "eu-1") == "down", 2)
    finally:
        await eu.stop()
        await us.stop()


async def test_flapping_server_is_held_by_hysteresis() -> None:
    port = free_port(EU)
    eu, us = await servers(port, "flap")
    try:
        async with node(check(port)) as (served, service):
            swaps_before = len(served.swaps)
            await asyncio.sleep(2.0)
            assert eu.hits >= 10  # it really was probed, failing every other time
            assert health_of(served.current, "eu-1") == "up"
            assert service.machines["hc.test/eu-1"].state == "up"
            # No flip, so nothing was rebuilt beyond doubt changes (at most a few).
            assert all(health_of(z, "eu-1") == "up" for _, z in served.swaps[swaps_before:])
    finally:
        await eu.stop()
        await us.stop()


async def test_probes_the_check_address_not_the_served_one() -> None:
    port = free_port(EU)
    checked = await Endpoint("127.0.1.9", port).start()
    us = await Endpoint(US, port).start()
    try:
        # Served 127.0.1.1 has nothing listening; the check address does: up.
        served = Served()
        feed = ServingFeed(served)
        service = HealthService(HealthSettings("t2", coalesce=COALESCE,
                                               in_process_reports=False), feed)
        feed.serve(compile_zones(check(port), eu_check="127.0.1.9"))
        await service.start()
        try:
            await asyncio.sleep(1.0)
            assert health_of(served.current, "eu-1") == "up" and checked.hits >= 3
        finally:
            await service.stop()
            feed.close()
    finally:
        await checked.stop()
        await us.stop()


async def test_config_swaps_keep_health_even_when_the_check_itself_changes() -> None:
    port = free_port(EU)
    us = await Endpoint(US, port).start()  # eu has nothing listening: it goes down
    try:
        async with node(check(port)) as (served, service):
            await wait_for(lambda: health_of(served.current, "eu-1") == "down", 2)
            mark = len(served.swaps)
            service.feed.serve(compile_zones(check(port)))  # a new version, same check
            service.feed.serve(compile_zones(check(port, timeout=0.12)))  # check edited
            await asyncio.sleep(1.0)
            assert all(health_of(z, "eu-1") == "down" for _, z in served.swaps[mark:])
    finally:
        await us.stop()
