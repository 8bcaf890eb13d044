"""What idle keep-alive client connections cost the balancer, and that it gives it back.

The figures themselves (bytes per idle connection against HAProxy) come from
``python bench/connections.py``; these tests hold the two properties behind them.
"""

from __future__ import annotations

import contextlib
import socket
import time
import tracemalloc
from pathlib import Path

import regional_lb
from tests.lb.conftest import Env

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
