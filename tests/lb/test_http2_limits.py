"""Per-client limits and the pool queue hold for HTTP/2 streams as for HTTP/1.1 requests:
a limited stream gets 429 with Retry-After, a queued stream its 503 at queue_timeout, and
an HTTP/2 connection counts against (and gives back) its client's connection cap."""

from __future__ import annotations

import time

import pytest

from tests.lb.conftest import Env
from tests.lb.h2client import H2Client
from tests.lb.test_pool_queue import depth, hold_the_slot, let, saturated, wait_for

pytestmark = pytest.mark.integration


def h2c_listener(**extra: object) -> dict[str, object]:
    return {"name": "web", "bind": "127.0.0.1:0", "h2c": True, **extra}


def test_a_limited_stream_gets_429_with_retry_after(env: Env) -> None:
    backend = env.recorder()
    address = env.balancer([backend.address], listeners=[
        h2c_listener(limits={"rate": 0.01, "burst": 2})])
    with H2Client(address) as client:
        statuses = [client.request(path=f"/{i}") for i in range(4)]
    assert [r.status for r in statuses] == [200, 200, 429, 429]
    retry_after = statuses[2].header("retry-after")
    assert retry_after is not None and int(retry_after) >= 1
    assert len(backend.requests) == 2


def test_a_queued_stream_gets_503_at_queue_timeout_and_leaves_the_queue(env: Env) -> None:
    gate, address = saturated(env, {"queue_size": 5, "queue_timeout": 0.2}, h2c=True)
    first = hold_the_slot(env, gate, address)  # over HTTP/1.1: the one slot is taken
    with H2Client(address) as client:
        reply = client.request(path="/late")
        assert (reply.status, reply.body) == (503, b"no backend slot within queue_timeout\n")
        assert depth(env) == 0
    let(env, gate)
    first.close()
    assert gate.paths == ["/first"]


def test_a_cancelled_queued_stream_leaves_the_queue(env: Env) -> None:
    gate, address = saturated(env, {"queue_size": 5, "queue_timeout": 30}, h2c=True)
    first = hold_the_slot(env, gate, address)
    with H2Client(address) as client:
        stream = client.start(path="/queued")
        wait_for(lambda: depth(env) == 1)
        client.conn.reset_stream(stream)
        client.flush()
        wait_for(lambda: depth(env) == 0)
    let(env, gate)
    first.close()
    assert gate.paths == ["/first"]


def test_http2_connections_count_against_the_cap_and_give_it_back(env: Env) -> None:
    backend = env.recorder()
    address = env.balancer([backend.address], listeners=[
        h2c_listener(limits={"max_connections": 1})])
    with H2Client(address) as client:
        assert client.request().status == 200
        with H2Client(address) as refused:  # the same client network, over the cap
            assert not refused.read_once()
    deadline = time.monotonic() + 5  # the close reaches the balancer soon
    while time.monotonic() < deadline:
        try:
            with H2Client(address) as again:
                if again.request().status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError("an HTTP/2 connection's slot was never given back")
