"""What idle keep-alive client connections cost the balancer, and that it gives it back.

The figures themselves (bytes per idle connection against HAProxy) come from
``python bench/connections.py``; these tests hold the two properties behind them.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import time
import tracemalloc
from pathlib import Path

import pytest

import regional_lb
from regional_lb import heap
from tests.lb.conftest import Env
from tests.lb.process import LbProcess, free_port

REGIONAL_LB = str(Path(regional_lb.__file__).parent)
REQUEST = b"GET /idle HTTP/1.1\r\nHost: memory.test\r\n\r\n"


def idle_clients(address: tuple[str, int], count: int) -> list[socket.socket]:
    """Connections that each had one keep-alive request answered, then stay open."""
    clients: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.create_connection(address, timeout=5)
            clients.append(sock)
            sock.sendall(REQUEST)
            data = b""
            while not (b"\r\n\r\n" in data and data.endswith(b"a\n")):  # the body: "a\n"
                piece = sock.recv(4096)
                assert piece, f"closed after {data!r}"
                data += piece
            assert data.startswith(b"HTTP/1.1 200") and b"Connection: close" not in data
    except BaseException:
        close_all(clients)
        raise
    return clients


def still_open(clients: list[socket.socket]) -> bool:
    for sock in clients:
        sock.setblocking(False)  # a peek that waits for nothing
        try:
            sock.recv(1, socket.MSG_PEEK)
            return False  # bytes or EOF from the balancer: not an idle open connection
        except BlockingIOError:
            continue
    return True


def close_all(clients: list[socket.socket]) -> None:
    for sock in clients:
        with contextlib.suppress(OSError):
            sock.close()
    clients.clear()


def ours_in_small_blocks(snapshot: tracemalloc.Snapshot) -> int:
    """Bytes allocated by the balancer's own code in blocks of under 1 KiB.

    The blocks a connection owns are small; the few large ones (the connection set's
    table) are shared by all and sized by powers of two, so they are left out.
    """
    mine = snapshot.filter_traces([tracemalloc.Filter(True, f"{REGIONAL_LB}/*")])
    return sum(trace.size for trace in mine.traces if trace.size < 1024)


def test_an_idle_keepalive_connection_holds_little_of_ours(env: Env) -> None:
    # Before: an instance dict, the last request's head for the backend (270 bytes
    # here) and its start time stayed with every idle connection: about 630 bytes of
    # ours beside uvloop's transport. Now about 350: the slotted protocol object (280),
    # the client's address and the idle deadline.
    backend = env.recorder("a")
    address = env.balancer([backend.address])
    close_all(idle_clients(address, 5))  # caches and the pooled backend connection first
    count = 400
    tracemalloc.start(1)
    try:
        before = tracemalloc.take_snapshot()
        clients = idle_clients(address, count)
        time.sleep(0.1)  # the last response's bookkeeping is done
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    try:
        assert still_open(clients)
        per_connection = (ours_in_small_blocks(after) - ours_in_small_blocks(before)) / count
        assert per_connection <= 400, f"{per_connection:.0f} bytes of ours per idle connection"
    finally:
        close_all(clients)


def resident(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_memory_goes_back_down_after_a_crowd_of_connections_closes(
        env: Env, tmp_path: Path) -> None:
    # Before: the worker's connection set kept its peak size and glibc kept the freed
    # transports in its heap, so RSS stayed at the peak (nothing given back; now ~70%).
    if not heap.release_free_pages():
        if os.environ.get("CI") == "true":
            pytest.fail("malloc_trim is not available to give memory back")
        pytest.skip("SKIPPED LOUDLY: no malloc_trim here (not glibc): nothing to give back")
    count = 3000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count + 500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, count + 500), hard))
    backend = env.recorder("a")
    port = free_port()
    config = tmp_path / "lb.toml"
    config.write_text(f"""[[lb.listeners]]
bind = "127.0.0.1:{port}"
[[lb.pools]]
name = "app"
backends = ["{backend.address}"]
""")
    lb = LbProcess(config)
    address = ("127.0.0.1", port)
    try:
        lb.wait_serving(address)
        close_all(idle_clients(address, 50))
        time.sleep(0.3)
        before = resident(lb.proc.pid)
        clients = idle_clients(address, count)
        assert still_open(clients)
        peak = resident(lb.proc.pid)
        close_all(clients)
        grown = peak - before
        assert grown > count * 500, f"only {grown} bytes for {count} connections"
        end = time.monotonic() + 10
        while resident(lb.proc.pid) > peak - grown // 2 and time.monotonic() < end:
            time.sleep(0.05)
        now = resident(lb.proc.pid)
        assert now <= peak - grown // 2, (
            f"RSS {before >> 10} KiB -> {peak >> 10} KiB with {count} idle connections -> "
            f"{now >> 10} KiB 10 s after they closed: under half given back")
    finally:
        lb.stop()
