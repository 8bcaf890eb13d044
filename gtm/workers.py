"""Running one process per core: fork workers, restart the ones that crash, stop them all.

The parent does no serving and no asyncio: it forks, forwards signals, reaps and
restarts. Everything a worker needs (sockets, the first compiled snapshot) is made
before the fork, so workers start at once and a bad config fails before any starts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable

from gtm import log

RESTART_DELAY = 1.0
STOP_DEADLINE = 10.0


def worker_signals() -> None:
    """A forked worker's signals until its loop listens (gtm.process.wait_for_stop)."""
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    # A reload asked for before the worker's loop listens must neither kill it nor be
    # lost (the admin API's change would never reach this worker): held back, blocked,
    # until wait_for_stop listens for it.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGHUP})


class Supervisor:
    def __init__(self, count: int, run_worker: Callable[[int], int]):
        self.count = count
        self.run_worker = run_worker
        self.children: dict[int, int] = {}  # pid -> worker index
        self.stopping = False

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_forward)
        for index in range(self.count):
            self._spawn(index)
        return self._reap_until_stopped()

    def _spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                worker_signals()
                code = self.run_worker(index)
            except BaseException:
                log.workers.exception("worker %d failed", index)
            finally:
                os._exit(code)
        self.children[pid] = index
        log.workers.info("worker %d started as pid %d", index, pid)

    def _reap_until_stopped(self) -> int:
        deadline: float | None = None
        while self.children:
            if self.stopping and deadline is None:
                deadline = time.monotonic() + STOP_DEADLINE
            pid, status = self._wait(deadline)
            if pid == 0:
                if status == 0:
                    self._kill_remaining()
                continue
            index = self.children.pop(pid)
            if not self.stopping:
                log.workers.error(
                    "worker %d (pid %d) exited with status %d; restarting",
                    index, pid, os.waitstatus_to_exitcode(status),
                )
                time.sleep(RESTART_DELAY)
                if not self.stopping:
                    self._spawn(index)
        return 0

    def _wait(self, deadline: float | None) -> tuple[int, int]:
        """Wait for a child; (0, 0) when the stop deadline has passed.

        Polls rather than blocks, so a stop signal arriving mid-wait is acted on.
        """
        while True:
            if deadline is not None and time.monotonic() > deadline:
                return 0, 0
            if self.stopping and deadline is None:
                return 0, -1
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return next(iter(self.children), 0), 0
            if pid:
                return pid, status
            time.sleep(0.1)

    def _kill_remaining(self) -> None:
        for pid in list(self.children):
            log.workers.warning("worker pid %d did not stop in time; killing it", pid)
            _signal(pid, signal.SIGKILL)
            self.children.pop(pid, None)

    def _on_stop(self, signum: int, _frame: object) -> None:
        self.stopping = True
        for pid in self.children:
            _signal(pid, signal.SIGTERM)

    def _on_forward(self, signum: int, _frame: object) -> None:
        for pid in self.children:
            _signal(pid, signum)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)
