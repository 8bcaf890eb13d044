"""The queue in front of a saturated pool (issue 11, part 3): requests wait for a backend
slot instead of a 503 at once, highest priority class first and FIFO within a class, up
to queue_timeout and queue_size; a client that closes leaves the queue.

The backend is a gate: it takes one request at a time (max_connections = 1) and answers
only when the test lets it, so the order in which requests reach it is the order in
which the queue dispatched them, whatever the timing.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from prometheus_client import generate_latest

from gtm import metrics
from tests.lb.conftest import TIMEOUT, Client, Env, connect, read_request, read_response

H = b"Host: example.test\r\n"


class Gate:
    """A backend that records each request as it arrives and answers when let."""

    def __init__(self) -> None:
        self.permits = asyncio.Semaphore(0)
        self.arrived: list[tuple[str, bytes]] = []

    async def handler(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, body = await read_request(reader)
            self.arrived.append((head.split(b" ")[1].decode(), body))
            await self.permits.acquire()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    @property
    def paths(self) -> list[str]:
        return [path for path, _ in self.arrived]


def saturated(env: Env, pool: dict[str, Any], **listener: Any) -> tuple[Gate, tuple[str, int]]:
    gate = Gate()
    backend = env.raw(gate.handler)
    address = env.balancer([backend.address], pool={"max_connections": 1, **pool},
                           listeners=[{"name": "web", "bind": "127.0.0.1:0", **listener}])
    return gate, address


def send(address: tuple[str, int], path: str, extra: bytes = b"", body: bytes = b"") -> Client:
    client = connect(address)
    length = b"Content-Length: %d\r\n" % len(body) if body else b""
    client.sendall(b"POST " if body else b"GET ")
    client.sendall(path.encode() + b" HTTP/1.1\r\n" + H + extra + length + b"\r\n" + body)
    return client


def wait_for(condition: Any, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


def queue_of(env: Env) -> Any:
    assert env.handle is not None
    return env.handle.snapshot.pools["app"].queue


def depth(env: Env) -> int:
    return env.loop.call(lambda: queue_of(env).size)  # type: ignore[no-any-return]


def let(env: Env, gate: Gate, count: int = 1) -> None:
    for _ in range(count):
        env.loop.call(gate.permits.release)


def hold_the_slot(env: Env, gate: Gate, address: tuple[str, int]) -> Client:
    first = send(address, "/first")
    wait_for(lambda: gate.paths == ["/first"])
    return first


def test_a_saturated_pool_serves_its_queue_in_priority_order(env: Env) -> None:
    gate, address = saturated(
        env, {"queue_size": 10, "queue_timeout": 30},
        priority_header="X-Priority", priority_values={"urgent": "high"},
        routes=[{"pool": "app", "path_prefix": "/vip", "priority": "high"}])
    first = hold_the_slot(env, gate, address)
    arrivals = [("/low-1", b"X-Priority: low\r\n"), ("/normal-1", b""), ("/vip-1", b""),
                ("/low-2", b"X-Priority: low\r\n"), ("/high-2", b"X-Priority: urgent\r\n"),
                ("/normal-2", b"X-Priority: unknown\r\n"), ("/vip-low", b"X-Priority: low\r\n")]
    clients = []
    for count, (path, extra) in enumerate(arrivals, 1):
        clients.append(send(address, path, extra))
        wait_for(lambda count=count: depth(env) == count)  # queued in this order
    let(env, gate, len(arrivals) + 1)
    for client in [first, *clients]:
        assert read_response(client)[0] == 200
        client.close()
    # Highest class first, FIFO within a class; the header wins over the route.
    assert gate.paths == ["/first", "/vip-1", "/high-2", "/normal-1", "/normal-2", "/low-1",
                          "/low-2", "/vip-low"]
    stats = env.loop.call(lambda: [s.results[0] for s in queue_of(env).stats])
    assert stats == [2, 2, 3]  # dispatched per class: high, normal, low
    text = generate_latest(metrics.REGISTRY).decode()
    assert 'gtm_lb_queued_total{class="low",pool="app",result="dispatched"} 3.0' in text
    assert 'gtm_lb_queue_wait_seconds_count{class="high",pool="app"} 2.0' in text
    assert 'gtm_lb_queue_depth{class="normal",pool="app"} 0.0' in text


def test_a_queued_request_body_reaches_the_backend_whole(env: Env) -> None:
    gate, address = saturated(env, {"queue_size": 5, "queue_timeout": 30})
    first = hold_the_slot(env, gate, address)
    body = bytes(range(256)) * 1000  # more than is read while queued (then reading pauses)
    posting = send(address, "/upload", body=body)
    wait_for(lambda: depth(env) == 1)
    let(env, gate, 2)
    assert read_response(first)[0] == 200
    assert read_response(posting)[0] == 200
    assert gate.arrived[1] == ("/upload", body)
    first.close()
    posting.close()


def test_a_request_queued_past_queue_timeout_gets_503(env: Env) -> None:
    gate, address = saturated(env, {"queue_size": 5, "queue_timeout": 0.2})
    first = hold_the_slot(env, gate, address)
    with send(address, "/late") as late:
        status, headers, body = read_response(late)
        assert (status, body) == (503, b"no backend slot within queue_timeout\n")
        assert headers["cache-control"] == "no-store" and "date" in headers
        assert "connection" not in headers  # read whole: kept open, as other 503s
        assert depth(env) == 0
    let(env, gate)
    assert read_response(first)[0] == 200
    first.close()
    assert gate.paths == ["/first"]
    assert env.loop.call(lambda: queue_of(env).stats[1].results) == [0, 1, 0, 0]


def test_beyond_queue_size_503_at_once(env: Env) -> None:
    gate, address = saturated(env, {"queue_size": 1, "queue_timeout": 30})
    first = hold_the_slot(env, gate, address)
    queued = send(address, "/queued")
    wait_for(lambda: depth(env) == 1)
    with send(address, "/overflow") as overflow:
        status, _, body = read_response(overflow)  # while nothing has been let through
        assert (status, body) == (503, b"queue full\n")
    assert depth(env) == 1
    let(env, gate, 2)
    assert read_response(first)[0] == 200
    assert read_response(queued)[0] == 200
    assert gate.paths == ["/first", "/queued"]
    for client in (first, queued):
        client.close()


def test_a_queued_client_that_disconnects_leaves_the_queue(env: Env) -> None:
    gate, address = saturated(env, {"queue_size": 5, "queue_timeout": 30})
    first = hold_the_slot(env, gate, address)
    gone = send(address, "/gone")
    wait_for(lambda: depth(env) == 1)
    gone.close()
    wait_for(lambda: depth(env) == 0)
    half = send(address, "/half-closed")
    wait_for(lambda: depth(env) == 1)
    half.shutdown_write()  # a FIN while queued: given up (as HAProxy's abortonclose)
    wait_for(lambda: depth(env) == 0)
    half.close()
    staying = send(address, "/staying")
    wait_for(lambda: depth(env) == 1)
    let(env, gate, 2)
    assert read_response(first)[0] == 200
    assert read_response(staying)[0] == 200
    assert gate.paths == ["/first", "/staying"]  # the ones who left never reached it
    assert env.loop.call(lambda: queue_of(env).stats[1].results) == [1, 0, 2, 0]
    for client in (first, staying):
        client.close()


def test_no_queue_when_no_backend_is_up(env: Env) -> None:
    gate = Gate()
    backend = env.raw(gate.handler)
    address = env.balancer([{"address": backend.address, "state": "maintenance"}],
                           pool={"queue_size": 5, "queue_timeout": 30})
    with send(address, "/") as client:
        status, _, body = read_response(client)
        assert (status, body) == (503, b"no backend available\n")
    assert depth(env) == 0


def test_without_a_queue_a_saturated_pool_answers_503_at_once(env: Env) -> None:
    gate, address = saturated(env, {})
    first = hold_the_slot(env, gate, address)
    with send(address, "/second") as second:
        assert read_response(second)[0] == 503
    assert queue_of(env) is None
    let(env, gate)
    assert read_response(first)[0] == 200
    first.close()


def test_a_reload_that_raises_max_connections_dispatches_the_queue(env: Env) -> None:
    gate, address = saturated(env, {"queue_size": 5, "queue_timeout": 30})
    first = hold_the_slot(env, gate, address)
    queued = send(address, "/queued")
    wait_for(lambda: depth(env) == 1)
    assert env.handle is not None
    config = env.handle.snapshot.config
    from dataclasses import replace

    wider = replace(config, pools=(replace(config.pools[0], max_connections=2),))
    env.loop.run(env.handle.reload(wider))
    wait_for(lambda: gate.paths == ["/first", "/queued"])  # found by the sweeper
    let(env, gate, 2)
    assert read_response(first)[0] == 200
    assert read_response(queued)[0] == 200
    for client in (first, queued):
        client.close()


def test_a_reload_that_removes_the_queue_lets_its_waiters_finish(env: Env) -> None:
    gate, address = saturated(env, {"queue_size": 5, "queue_timeout": 30})
    first = hold_the_slot(env, gate, address)
    queued = send(address, "/queued")
    wait_for(lambda: depth(env) == 1)
    assert env.handle is not None
    config = env.handle.snapshot.config
    from dataclasses import replace

    env.loop.run(env.handle.reload(replace(config, pools=(replace(config.pools[0],
                                                                  queue_size=0),))))
    with send(address, "/late") as late:  # no one new joins the old queue
        assert read_response(late)[0] == 503
    let(env, gate, 2)
    assert read_response(first)[0] == 200
    assert read_response(queued)[0] == 200
    assert gate.paths == ["/first", "/queued"]
    for client in (first, queued):
        client.close()
