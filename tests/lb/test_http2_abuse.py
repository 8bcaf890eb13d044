"""HTTP/2 abuse, frame by frame: each case ends in the documented GOAWAY or stream
error, holds nothing of ours past it, and is counted in the metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiohttp import web
from h2.errors import ErrorCodes
from hyperframe.frame import (
    ContinuationFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    SettingsFrame,
)
from prometheus_client import generate_latest

from gtm.metrics import REGISTRY
from tests.lb.conftest import Env, Recorder
from tests.lb.h2client import H2Client

pytestmark = pytest.mark.integration


def slow_backend(env: Env, seconds: float = 5.0) -> Recorder:
    backend = env.recorder()

    async def handler(request: web.Request, body: bytes) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return web.Response(text="late")

    backend.handler = handler
    return backend


def balancer(env: Env, backend: Recorder, name: str, **http2: Any) -> tuple[str, int]:
    return env.balancer([backend.address], http2=http2,
                        listeners=[{"name": name, "bind": "127.0.0.1:0", "h2c": True}],
                        limits={"max_header_bytes": 4096})


def goaway_code(client: H2Client) -> int:
    client.wait_closed()
    assert client.terminated is not None, "closed without GOAWAY"
    return client.terminated.error_code


def metric(name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in generate_latest(REGISTRY).decode().splitlines():
        if line.startswith(f"{name}{{") and line.split("{", 1)[1].split("}")[0] == wanted:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def in_flight(env: Env) -> int:
    assert env.handle is not None
    return sum(b.active for p in env.handle.worker.snapshot.pools.values() for b in p.backends)


def wait_until(condition: Any, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


def test_rapid_reset_ends_in_goaway_and_frees_every_backend_slot(env: Env) -> None:
    backend = slow_backend(env)
    address = balancer(env, backend, "rapid", max_resets=20)
    with H2Client(address) as client:
        for _ in range(20):  # up to the limit: each reset frees its backend at once
            stream_id = client.start()
            client.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
            client.flush()
        assert wait_until(lambda: metric("gtm_lb_http2_streams_total", listener="rapid") == 20)
        assert wait_until(lambda: in_flight(env) == 0)
        for _ in range(5):
            stream_id = client.start()
            client.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
            client.flush()
        assert goaway_code(client) == ErrorCodes.ENHANCE_YOUR_CALM
    assert wait_until(lambda: in_flight(env) == 0)
    assert metric("gtm_lb_http2_goaways_total", listener="rapid", reason="rapid_reset") == 1
    assert metric("gtm_lb_http2_connections_total", listener="rapid") == 1
    assert metric("gtm_lb_http2_streams_total", listener="rapid") >= 20  # the last ones
    # may have come with the RST_STREAM over the limit: refused unread, with the GOAWAY
    assert wait_until(lambda: metric("gtm_lb_http2_connections", listener="rapid") == 0)


def test_continuation_flood_is_cut_before_it_is_buffered(env: Env) -> None:
    address = balancer(env, env.recorder(), "continuation")
    with H2Client(address) as client:
        block = client.conn.encoder.encode([(b":method", b"GET"), (b":path", b"/"),
                                            (b":scheme", b"http"), (b":authority", b"x")])
        client.send_raw(HeadersFrame(1, data=block).serialize())  # no END_HEADERS
        for _ in range(8):  # 8 KiB and more: twice max_header_bytes
            client.send_raw(ContinuationFrame(1, data=b"\x00" * 1100).serialize())
        assert goaway_code(client) == ErrorCodes.ENHANCE_YOUR_CALM
    assert metric("gtm_lb_http2_goaways_total", listener="continuation",
                  reason="continuation_flood") == 1


def test_a_header_list_over_the_limit_is_431_and_far_over_is_goaway(env: Env) -> None:
    address = balancer(env, env.recorder(), "headers")
    with H2Client(address) as client:
        reply = client.request(headers=[("x-big", "a" * 5000)])  # over 4096, under 8192
        assert reply.status == 431
        assert client.request().status == 200
        client.start(headers=[("x-huge", "b" * 9000)])
        assert goaway_code(client) == ErrorCodes.ENHANCE_YOUR_CALM


@pytest.mark.parametrize("kind", ["settings", "ping", "priority"])
def test_control_frame_floods_end_in_goaway(env: Env, kind: str) -> None:
    address = balancer(env, env.recorder(), f"flood-{kind}", max_control_frames=50)
    frames = {"settings": SettingsFrame(0), "ping": PingFrame(0, opaque_data=b"12345678"),
              "priority": PriorityFrame(1, depends_on=0, stream_weight=16)}
    with H2Client(address) as client:
        assert client.request().status == 200  # some are fine
        for _ in range(60):
            client.send_raw(frames[kind].serialize())
        assert goaway_code(client) == ErrorCodes.ENHANCE_YOUR_CALM
    assert metric("gtm_lb_http2_goaways_total", listener=f"flood-{kind}",
                  reason="control_flood") == 1


def test_more_streams_than_allowed_is_a_connection_error(env: Env) -> None:
    backend = slow_backend(env)
    address = balancer(env, backend, "streams", max_concurrent_streams=3)
    with H2Client(address) as client:
        for _ in range(4):  # before reading the server's SETTINGS: nothing stops us
            client.start()
        assert goaway_code(client) == ErrorCodes.PROTOCOL_ERROR
    assert wait_until(lambda: in_flight(env) == 0)
    assert metric("gtm_lb_http2_goaways_total", listener="streams",
                  reason="too_many_streams") == 1


def test_an_oversized_frame_is_refused_at_its_head(env: Env) -> None:
    address = balancer(env, env.recorder(), "frames")
    with H2Client(address) as client:
        client.start(end=False)
        # A DATA frame head announcing 16 MiB - 1; none of its payload is ever sent.
        client.send_raw((2**24 - 1).to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big"))
        assert goaway_code(client) == ErrorCodes.FRAME_SIZE_ERROR
    assert metric("gtm_lb_http2_goaways_total", listener="frames", reason="frame_size") == 1
