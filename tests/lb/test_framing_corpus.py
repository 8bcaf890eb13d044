"""Request smuggling and malformed-request corpus (RFC 9112), through real sockets.

Each vector asserts the status the client gets, that the connection is closed, and
that nothing, or for body errors no complete request, reached the backend.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from tests.lb.conftest import Env, exchange, status_of

H = b"Host: example.test\r\n"

# (name, raw request, expected status): rejected on the head, the backend sees no byte.
HEAD_VECTORS = [
    ("cl-and-te", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-and-cl", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
     b"Content-Length: 5\r\n\r\n0\r\n\r\n", 400),
    ("cl-letters", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: abc\r\n\r\n", 400),
    ("cl-plus", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: +5\r\n\r\nhello", 400),
    ("cl-minus", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: -5\r\n\r\nhello", 400),
    ("cl-underscore", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1_0\r\n\r\nhello", 400),
    ("cl-hex", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 0x5\r\n\r\nhello", 400),
    ("cl-empty", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: \r\n\r\n", 400),
    ("cl-space-inside", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 1 0\r\n\r\nhello", 400),
    ("cl-conflicting-lines", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5\r\n"
     b"Content-Length: 6\r\n\r\nhello!", 400),
    ("cl-conflicting-list", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 5, 6\r\n\r\nhello!",
     400),
    ("cl-huge", b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 99999999999999999999\r\n\r\n",
     400),
    ("te-chunked-not-last", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400),
    ("te-gzip-only", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: gzip\r\n\r\n", 400),
    ("te-twice", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n"
     b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
    ("te-xchunked", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: xchunked\r\n\r\n", 400),
    ("te-identity", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: identity\r\n\r\n", 400),
    ("te-in-http10", b"POST / HTTP/1.0\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", 400),
    ("te-space-before-colon", b"POST / HTTP/1.1\r\n" + H
     + b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n", 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : example.test\r\n\r\n", 400),
    ("tab-before-colon", b"GET / HTTP/1.1\r\n" + H + b"X-A\t: b\r\n\r\n", 400),
    ("obs-fold-space", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\r\n c\r\n\r\n", 400),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\r\n\tc\r\n\r\n", 400),
    ("obs-fold-te", b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding:\r\n chunked\r\n\r\n"
     b"0\r\n\r\n", 400),
    ("bare-lf-everywhere", b"GET / HTTP/1.1\nHost: example.test\n\n", 400),
    ("bare-lf-in-header", b"GET / HTTP/1.1\r\nHost: example.test\nX-A: b\r\n\r\n", 400),
    ("bare-lf-at-end", b"GET / HTTP/1.1\r\nHost: example.test\r\n\n", 400),
    ("bare-cr-in-header", b"GET / HTTP/1.1\r\nHost: example.test\rX-A: b\r\n\r\n", 400),
    ("bare-cr-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\rc\r\n\r\n", 400),
    ("missing-host", b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n", 400),
    ("duplicate-host", b"GET / HTTP/1.1\r\n" + H + b"Host: other.test\r\n\r\n", 400),
    ("host-with-space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("empty-host", b"GET / HTTP/1.1\r\nHost: \r\n\r\n", 400),
    ("nul-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\x00c\r\n\r\n", 400),
    ("del-in-value", b"GET / HTTP/1.1\r\n" + H + b"X-A: b\x7fc\r\n\r\n", 400),
    ("space-in-name", b"GET / HTTP/1.1\r\n" + H + b"X A: b\r\n\r\n", 400),
    ("empty-name", b"GET / HTTP/1.1\r\n" + H + b": b\r\n\r\n", 400),
    ("no-colon", b"GET / HTTP/1.1\r\n" + H + b"X-A b\r\n\r\n", 400),
    ("double-space-request-line", b"GET  / HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("trailing-space-request-line", b"GET / HTTP/1.1 \r\n" + H + b"\r\n", 400),
    ("control-in-target", b"GET /a\x01b HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("no-version", b"GET /\r\n" + H + b"\r\n", 400),
    ("lowercase-version", b"GET / http/1.1\r\n" + H + b"\r\n", 400),
    ("http-2-line", b"GET / HTTP/2.0\r\n" + H + b"\r\n", 505),
    ("bad-target-form", b"GET example.test/ HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("expect-unknown", b"POST / HTTP/1.1\r\n" + H + b"Expect: 200-ok\r\n"
     b"Content-Length: 0\r\n\r\n", 417),
    ("proxy-header-untrusted", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET / HTTP/1.1\r\n" + H
     + b"\r\n", 400),
]

# Rejected in the body: the head may have gone out, but never a complete message.
BODY_VECTORS = [
    ("chunk-size-plus", b"+3\r\nabc\r\n0\r\n\r\n"),
    ("chunk-size-minus", b"-3\r\nabc\r\n0\r\n\r\n"),
    ("chunk-size-underscore", b"1_0\r\n0123456789abcdef\r\n0\r\n\r\n"),
    ("chunk-size-0x", b"0x3\r\nabc\r\n0\r\n\r\n"),
    ("chunk-size-leading-space", b" 3\r\nabc\r\n0\r\n\r\n"),
    ("chunk-size-trailing-space", b"3 \r\nabc\r\n0\r\n\r\n"),
    ("chunk-size-empty", b"\r\nabc\r\n0\r\n\r\n"),
    ("chunk-size-overflow", b"fffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
    ("chunk-bare-lf-size", b"3\nabc\r\n0\r\n\r\n"),
    ("chunk-bare-lf-data", b"3\r\nabc\n0\r\n\r\n"),
    ("chunk-data-too-long", b"3\r\nabcd\r\n0\r\n\r\n"),
    ("chunk-last-bare-lf", b"3\r\nabc\r\n0\n\n"),
    ("chunk-trailer-obs-fold", b"3\r\nabc\r\n0\r\nX-T: a\r\n b\r\n\r\n"),
]


def _sink(backend_bytes: bytearray) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                               Awaitable[None]]:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            data = await reader.read(65536)
            if not data:
                return
            backend_bytes.extend(data)
    return handler


@pytest.mark.parametrize(("name", "raw", "status"), HEAD_VECTORS, ids=[v[0] for v in HEAD_VECTORS])
def test_head_vector_rejected_before_any_backend(env: Env, name: str, raw: bytes,
                                                 status: int) -> None:
    received = bytearray()
    backend = env.raw(_sink(received))
    address = env.balancer([backend.address])
    response = exchange(address, raw)
    assert status_of(response) == status, response
    assert b"Connection: close" in response
    assert backend.connections == 0 and bytes(received) == b""


@pytest.mark.parametrize(("name", "body"), BODY_VECTORS, ids=[v[0] for v in BODY_VECTORS])
def test_body_vector_rejected_and_never_complete_upstream(env: Env, name: str,
                                                          body: bytes) -> None:
    backend = env.recorder()
    address = env.balancer([backend.address])
    raw = b"POST /upload HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n" + body
    response = exchange(address, raw)
    assert status_of(response) == 400, response
    assert backend.requests == []


def test_smuggled_request_after_te_is_not_forwarded(env: Env) -> None:
    """CL.TE: a front end trusting CL would forward the GET /admin as part of the body."""
    backend = env.recorder()
    address = env.balancer([backend.address])
    smuggled = b"0\r\n\r\nGET /admin HTTP/1.1\r\n" + H + b"\r\n"
    raw = (b"POST / HTTP/1.1\r\n" + H + b"Content-Length: %d\r\n" % len(smuggled)
           + b"Transfer-Encoding: chunked\r\n\r\n" + smuggled)
    assert status_of(exchange(address, raw)) == 400
    assert backend.requests == []


def test_identical_repeated_content_length_is_one(env: Env) -> None:
    backend = env.recorder()
    address = env.balancer([backend.address])
    raw = (b"POST /x HTTP/1.1\r\n" + H + b"Content-Length: 5\r\nContent-Length: 5\r\n"
           b"Connection: close\r\n\r\nhello")
    response = exchange(address, raw)
    assert status_of(response) == 200 and response.endswith(b"hello")
    assert backend.header(0, "Content-Length") == ["5"]


@pytest.mark.parametrize(("limits", "raw", "status"), [
    ({"max_request_line": 100}, b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ({"max_request_line": 100}, b"GET /" + b"a" * 200, 414),
    ({"max_header_bytes": 200}, b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"b" * 300
     + b"\r\n\r\n", 431),
    ({"max_header_bytes": 200}, b"GET / HTTP/1.1\r\n" + H + b"X-Big: " + b"b" * 300, 431),
    ({"max_headers": 5}, b"GET / HTTP/1.1\r\n" + H + b"".join(b"X-%d: v\r\n" % i
                                                              for i in range(10)) + b"\r\n", 431),
    ({"max_body_bytes": 10}, b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 11\r\n\r\n"
     + b"x" * 11, 413),
], ids=["uri-too-long", "uri-too-long-partial", "header-too-large", "header-too-large-partial",
        "too-many-headers", "body-too-large"])
def test_limits(env: Env, limits: dict[str, int], raw: bytes, status: int) -> None:
    received = bytearray()
    backend = env.raw(_sink(received))
    address = env.balancer([backend.address], limits=limits)
    response = exchange(address, raw)
    assert status_of(response) == status, response
    assert backend.connections == 0 and bytes(received) == b""


def test_chunked_body_over_limit_is_413(env: Env) -> None:
    backend = env.recorder()
    address = env.balancer([backend.address], limits={"max_body_bytes": 10})
    raw = (b"POST / HTTP/1.1\r\n" + H + b"Transfer-Encoding: chunked\r\n\r\n"
           b"8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n")
    assert status_of(exchange(address, raw)) == 413
    assert backend.requests == []
