"""What every benchmark suite needs: pinning, CPU accounting, processes, medians, tables.

The method is the one of /work/shared/BENCHMARKS.md: the server runs on one CPU and the
load generator on the other, the server's CPU time (utime+stime of all its processes,
from /proc) is taken over exactly the load window, and the figure compared is
throughput per server core = throughput / (server CPU seconds / wall seconds).

Everything here is bounded: every subprocess gets a timeout, every server is stopped
by its PID (never by name), and a whole run stops itself at a deadline.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCH_DIR / "results"
LOOPBACK = "127.0.0.1"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM})


class BenchError(Exception):
    """A benchmark that cannot produce a trustworthy figure; the message says why."""


class Interrupted(BenchError):
    """SIGTERM, SIGINT, SIGHUP or the run's own deadline: stop everything and leave."""


@dataclass(frozen=True)
class Suite:
    """One benchmark suite, as bench/main.py runs it.

    tools maps each command the suite needs to the Debian package providing it; they
    are installed (if missing) before the run's deadline starts. budget_seconds is the
    longest the suite may take with the given options; run returns an exit status.
    """

    name: str
    help: str
    tools: dict[str, str]
    add_arguments: Callable[[argparse._ArgumentGroup], None]
    budget_seconds: Callable[[argparse.Namespace], float]
    run: Callable[[argparse.Namespace, Deadline, dict[str, str]], int]


# -- time limits ------------------------------------------------------------------------


class Deadline:
    """The moment the whole run must be over; every step's timeout is capped by it."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.end - time.monotonic()

    def cap(self, timeout: float) -> float:
        """The smaller of a step's own timeout and what is left of the run."""
        left = self.remaining()
        if left <= 0:
            raise Interrupted(f"the run's deadline of {self.seconds:.0f} s has passed")
        return min(timeout, left)


def install_stop_handlers(deadline: Deadline) -> None:
    """Turn stop signals and the deadline (SIGALRM) into Interrupted, so `finally` runs."""

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGALRM:
            raise Interrupted(f"the run's deadline ({deadline.seconds:.0f} s) has passed")
        raise Interrupted(f"stopped by {signal.Signals(signum).name}")

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    signal.alarm(max(1, int(deadline.seconds)))


# -- CPUs -------------------------------------------------------------------------------


def check_cpus(*cpus: int) -> None:
    available = os.sched_getaffinity(0)
    missing = [cpu for cpu in cpus if cpu not in available]
    if missing:
        raise BenchError(f"CPU {missing} not available to this process (have {sorted(available)})")
    if len(set(cpus)) != len(cpus):
        raise BenchError(f"server and load generator must be on different CPUs, got {cpus}")


def pin_self(cpu: int) -> None:
    """Keep the harness itself (and what it starts unpinned) off the server's CPU."""
    os.sched_setaffinity(0, {cpu})


def pinned(cpu: int, argv: Sequence[str]) -> list[str]:
    """The command run on one CPU; taskset execs it, so its PID is the command's."""
    return ["taskset", "-c", str(cpu), *argv]


# -- CPU accounting from /proc ----------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    starttime: int  # clock ticks after boot: tells a process from a later one with its PID
    cpu_ticks: int  # utime + stime + cutime + cstime


def read_stat(pid: int) -> ProcStat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) is in parentheses and may hold spaces or parentheses.
    rest = raw[raw.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); utime..cstime are fields 14..17, starttime is 22.
    ticks = sum(int(value) for value in rest[11:15])
    return ProcStat(pid=pid, ppid=int(rest[1]), starttime=int(rest[19]), cpu_ticks=ticks)


def process_tree(root: int) -> list[ProcStat]:
    """The root process and all its live descendants (a one-pass scan of /proc)."""
    stats: dict[int, ProcStat] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None:
                stats[stat.pid] = stat
    if root not in stats:
        return []
    children: dict[int, list[int]] = {}
    for stat in stats.values():
        children.setdefault(stat.ppid, []).append(stat.pid)
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(stats[pid])
        todo.extend(children.get(pid, ()))
    return tree


def tree_cpu_seconds(root: int) -> float:
    """CPU seconds (user+system) used so far by a process and all its descendants.

    Live processes count their own time; a child that exited and was reaped is in its
    parent's cutime/cstime, so every process is counted once. Threads are in their
    process's figures already.
    """
    return sum(stat.cpu_ticks for stat in process_tree(root)) / CLOCK_TICKS


def cpu_busy_seconds(cpu: int) -> float:
    """Seconds one CPU has spent not idle since boot, whoever used them (/proc/stat).

    Over a run, this minus the server's own CPU seconds is what else ran on the
    server's CPU: other processes (a busy machine) and interrupts (loopback softirq).
    """
    for line in Path("/proc/stat").read_text().splitlines():
        words = line.split()
        if words[0] == f"cpu{cpu}":
            ticks = [int(value) for value in words[1:]]
            idle = ticks[3] + ticks[4]  # idle + iowait
            total = sum(ticks[:8])  # guest time is already in user
            return (total - idle) / CLOCK_TICKS
    raise BenchError(f"no cpu{cpu} in /proc/stat")


# -- processes --------------------------------------------------------------------------


@dataclass
class Server:
    """A server process started by the bench; stopped by its PID, never by name."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes]
    known: dict[int, int] = field(default_factory=dict)  # pid -> starttime, incl. children

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def remember_tree(self) -> None:
        """Note the server's processes now, so stop() can find any that outlive the root."""
        for stat in process_tree(self.pid):
            self.known[stat.pid] = stat.starttime

    def cpu_seconds(self) -> float:
        self.remember_tree()
        return tree_cpu_seconds(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the PID, SIGKILL it after `grace`, then any of its processes left over."""
        self.remember_tree()
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                try:
                    self.process.wait(timeout=grace)
                except subprocess.TimeoutExpired as exc:
                    raise BenchError(f"{self.name} (pid {self.pid}) survived SIGKILL") from exc
        for pid, starttime in self.known.items():
            stat = read_stat(pid)
            if pid != self.pid and stat is not None and stat.starttime == starttime:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def start_server(name: str, argv: list[str], log_path: Path, cwd: Path | None = None) -> Server:
    """Start a server in a session of its own, its stdout and stderr going to log_path."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            start_new_session=True,  # a Ctrl-C goes to the bench, which stops it by PID
        )
    server = Server(name=name, argv=argv, log_path=log_path, process=process)
    server.remember_tree()
    return server


class Servers:
    """Every server started in a `with` block is stopped when the block ends, however."""

    def __init__(self) -> None:
        self.started: list[Server] = []

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop_all()

    def start(self, name: str, argv: list[str], log_path: Path, cwd: Path | None = None) -> Server:
        # No stop signal may land between the fork and the server being on the list.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            server = start_server(name, argv, log_path, cwd)
            self.started.append(server)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        return server

    def stop(self, server: Server) -> None:
        # Signals stay blocked while stopping so a second Ctrl-C cannot leave it half done.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            server.stop()
        finally:
            if server in self.started:
                self.started.remove(server)
            signal.pthread_sigmask(signal.SIG_SETMASK, old)

    def stop_all(self) -> None:
        for server in list(self.started):
            self.stop(server)


@dataclass(frozen=True)
class Measured:
    """A command run to completion: its output, wall time and CPU time."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    wall_seconds: float
    cpu_seconds: float


def run_measured(argv: list[str], timeout: float) -> Measured:
    """Run a command (a load generator) and take its wall and CPU time.

    Its CPU time is this process's reaped-children usage before and after, so nothing
    else may be reaped meanwhile: the servers are reaped only when they are stopped.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{argv[0]} did not finish within {timeout:.0f} s") from exc
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Measured(argv, done.returncode, done.stdout, done.stderr, wall, cpu)


def run_quiet(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """A short helper command; its output kept, its failure left to the caller."""
    try:
        return subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"{' '.join(argv)} did not finish within {timeout:.0f} s") from exc


# -- ports ------------------------------------------------------------------------------


def free_port(host: str = LOOPBACK) -> int:
    """A port free for both UDP and TCP on host right now (the kernel picks it)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((host, 0))
            port = int(udp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((host, port))
                except OSError:
                    continue
                return port
    raise BenchError(f"no port free for both UDP and TCP on {host}")


# -- tools ------------------------------------------------------------------------------


def find_tool(command: str) -> str | None:
    """A command on PATH, or in the sbin directories a non-root PATH often lacks.

    An absolute path stands for a file a package installs that is not a command (a
    plugin such as /usr/lib/*/pdns/libbindbackend.so); it may hold glob wildcards.
    """
    if command.startswith("/"):
        matches = sorted(glob.glob(command))
        return matches[0] if matches else None
    found = shutil.which(command)
    if found:
        return found
    for directory in SBIN_DIRS:
        candidate = Path(directory) / command
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def ensure_tools(packages: dict[str, str], timeout: float = 600.0) -> dict[str, str]:
    """Path of each command; `apt-get install -y` the packages of those missing.

    `packages` maps a command to the Debian package that provides it. These machines
    have no systemd, so installing starts nothing: each suite starts its peers by hand.
    """
    missing = sorted({pkg for cmd, pkg in packages.items() if find_tool(cmd) is None})
    if missing:
        prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
        install = [*prefix, "apt-get", "install", "-y", "--no-install-recommends", *missing]
        print(f"bench: installing {' '.join(missing)} (apt-get install -y)", flush=True)
        os.environ.setdefault("DEBIAN_FRONTEND", "noninteractive")
        if run_quiet(install, timeout).returncode != 0:
            # A fresh machine may not have package lists yet.
            run_quiet([*prefix, "apt-get", "update"], timeout)
            done = run_quiet(install, timeout)
            if done.returncode != 0:
                raise BenchError(f"apt-get install {' '.join(missing)} failed:\n{done.stderr}")
    paths: dict[str, str] = {}
    for command in packages:
        path = find_tool(command)
        if path is None:
            raise BenchError(f"{command} not found even after installing {packages[command]}")
        paths[command] = path
    return paths


# -- numbers and tables -----------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    if not values:
        raise BenchError("median of no values")
    return float(statistics.median(values))


def per_core(throughput: float, cpu_seconds: float, wall_seconds: float) -> float:
    """Throughput per server core: throughput / (server CPU seconds / wall seconds)."""
    if cpu_seconds <= 0 or wall_seconds <= 0:
        raise BenchError("the server used no CPU time during the run: nothing was measured")
    return throughput / (cpu_seconds / wall_seconds)


def print_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    out: TextIO = sys.stdout,
    left: int = 1,
) -> None:
    """A plain-text table: the first `left` columns left-aligned, the figures right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.ljust(width) if index < left else cell.rjust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    print(line(headers), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in rows:
        print(line(row), file=out)


# -- results ----------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    load1, load5, load15 = os.getloadavg()
    return {
        "host": platform.node(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "loadavg_at_start": [load1, load5, load15],
    }


def write_results(suite: str, data: dict[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """bench/results/<suite>-<UTC time>.json (the directory is git-ignored)."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    path = directory / f"{suite}-{stamp}.json"
    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return path


def say(message: str) -> None:
    """Progress on stdout as it happens, so a slow or stuck step is obvious."""
    print(f"bench: {message}", flush=True)
