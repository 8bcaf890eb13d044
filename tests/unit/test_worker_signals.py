"""A reload (SIGHUP) sent to a worker before its event loop listens is not lost."""

from __future__ import annotations

import asyncio
import os
import select
import signal

from gtm.process import wait_for_stop
from gtm.workers import worker_signals


def test_an_early_sighup_reaches_the_reload_handler() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the worker, as Supervisor._spawn starts it
        code = 1
        try:
            worker_signals()
            os.kill(os.getpid(), signal.SIGHUP)  # the reload, before the loop listens

            async def reload() -> None:
                os.write(write_end, b"reloaded")
                os.kill(os.getpid(), signal.SIGTERM)

            async def main() -> None:
                await wait_for_stop(on_reload=reload)

            asyncio.run(main())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        ready, _, _ = select.select([read_end], [], [], 10)
        said = os.read(read_end, 100) if ready else b""
    finally:
        os.close(read_end)
        if not said:
            os.kill(pid, signal.SIGKILL)  # it waits for a reload that never came
        _, status = os.waitpid(pid, 0)
    assert said == b"reloaded"  # before: the signal was ignored, and the reload lost
    assert os.waitstatus_to_exitcode(status) == 0
