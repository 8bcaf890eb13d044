"""Stopping tasks for good: gtm.process.cancel_and_wait."""

from __future__ import annotations

import asyncio
import sys

from gtm.process import cancel_and_wait


async def _probe_like_task_hit_by_the_race() -> asyncio.Task[None]:
    """A loop around asyncio.wait_for (as the health probes are) cancelled at the moment
    its inner future completes: Python 3.11 loses that cancellation."""
    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[None]] = []

    async def prober() -> None:
        while True:
            future: asyncio.Future[None] = loop.create_future()
            futures.append(future)
            await asyncio.wait_for(future, 5)

    task = asyncio.create_task(prober())
    await asyncio.sleep(0)
    futures[-1].set_result(None)
    task.cancel()  # in the same turn: the race, made certain
    return task


def test_one_cancel_can_be_lost_and_cancel_and_wait_still_ends_the_task() -> None:
    async def main() -> None:
        task = await _probe_like_task_hit_by_the_race()
        await asyncio.wait([task], timeout=0.2)
        if sys.version_info < (3, 12):
            assert not task.done()  # what made balancer stops hang: the cancel was lost
        await asyncio.wait_for(cancel_and_wait(task), 5)
        assert task.cancelled()
    asyncio.run(main())


def test_cancel_and_wait_takes_none_and_finished_tasks() -> None:
    async def main() -> None:
        async def fails() -> None:
            raise ValueError("boom")
        failed = asyncio.create_task(fails())
        await asyncio.sleep(0)
        await cancel_and_wait(None, failed)  # its exception is retrieved, not logged
        assert failed.done()
    asyncio.run(main())
