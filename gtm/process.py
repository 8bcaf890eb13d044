"""Running a process's event loop: uvloop when installed, and stopping on a signal.

Shared by every long-running command (DNS nodes, the control plane, balancers).
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any


async def wait_for_stop(on_reload: Callable[[], Coroutine[Any, Any, Any]]) -> str:
    """Until SIGTERM or SIGINT (its name is returned); SIGHUP runs on_reload meanwhile."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []
    pending: set[asyncio.Task[Any]] = set()

    def reload() -> None:
        task = loop.create_task(on_reload())
        pending.add(task)
        task.add_done_callback(pending.discard)

    def stopping(signum: signal.Signals) -> None:
        received.append(signum.name)
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, stopping, signal.SIGTERM)
    loop.add_signal_handler(signal.SIGINT, stopping, signal.SIGINT)
    loop.add_signal_handler(signal.SIGHUP, reload)
    await stop.wait()
    return received[0]


def run_async(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run on uvloop when it is installed (about 1.4x asyncio on this workload)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(main())
        return
    if sys.version_info >= (3, 12):
        asyncio.run(main(), loop_factory=uvloop.new_event_loop)
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(main())


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel tasks and wait until every one has ended.

    One cancel() is not always enough on Python 3.11: asyncio.wait_for swallows a
    cancellation that arrives as its inner future completes (fixed in 3.12), and a loop
    around a probe then runs on, so a plain ``await task`` after cancel() can wait
    forever. Cancel again until the task is done.
    """
    pending = {task for task in tasks if task is not None and not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        done, pending = await asyncio.wait(pending, timeout=0.25)
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: never logged as "exception never retrieved"
