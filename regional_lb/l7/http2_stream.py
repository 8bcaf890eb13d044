"""One HTTP/2 stream: a request that goes the HTTP/1.1 path's way to a backend.

A stream *is* a :class:`ClientProtocol` without a transport of its own: routing,
balancing, the backend connection pools, retries, header rewriting, limits and the
access log are that class's, unchanged. The stream builds an HTTP/1.1 head from the
HTTP/2 header list and hands it to the same strict parser, then overrides only what
touches the wire: request body bytes come from DATA frames, and the callbacks
:class:`UpstreamProtocol` makes while a response streams back become HEADERS, DATA and
trailers on the stream, within the client's flow-control windows.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from h2.errors import ErrorCodes

from regional_lb.errors import HttpError, UpstreamError
from regional_lb.l7.client_base import (
    BODY,
    CLOSED,
    PAUSE_UPSTREAM,
    WAIT,
)
from regional_lb.l7.parser import (
    HOP_BY_HOP,
    LAST_CHUNK,
    Response,
    chunk,
    parse_request_cached,
    parse_response,
)
from regional_lb.l7.proxy import ClientProtocol
from regional_lb.l7.rewrite import error_response
from regional_lb.l7.upstream import CHUNKED, DONE, UpstreamProtocol
from regional_lb.pool_queue import ABANDONED, TIMEOUT

if TYPE_CHECKING:
    from regional_lb.l7.http2 import Http2Connection

Headers = list[tuple[bytes, bytes]]

# RFC 9113 8.2.2: connection-specific fields make a request malformed (TE but "trailers").
CONNECTION_SPECIFIC = frozenset({b"connection", b"keep-alive", b"proxy-connection",
                                 b"transfer-encoding", b"upgrade"})
PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path"})
# Never forwarded as trailers: framing, routing and hop-by-hop fields (RFC 9110 6.5.1).
NOT_TRAILERS = HOP_BY_HOP | {b"content-length", b"host", b"content-type", b"content-encoding"}
OUT_HIGH = 65536  # response bytes held for a stream before its backend is paused


class Malformed(Exception):
    """RFC 9113 8.1.1: a malformed request is a stream error of type PROTOCOL_ERROR."""


def request_head(headers: Headers, ended: bool) -> tuple[bytes, int]:
    """The HTTP/1.1 head (no final CRLF CRLF) the parser reads for this header list, and
    its number of lines; Malformed for what RFC 9113 forbids in HTTP/2 requests.

    Every field becomes one ``name: value`` line: a CR, LF or NUL in a field would
    become a line of its own (or hide one), so the caller counts the line ends."""
    pseudo: dict[bytes, bytes] = {}
    lines = []
    cookies = []
    host = None
    regular = False
    for name, value in headers:
        if name[:1] == b":":
            if regular or name not in PSEUDO or name in pseudo:
                raise Malformed(f"pseudo-header {name!r} unknown, repeated or late")
            pseudo[name] = value
            continue
        regular = True
        if name != name.lower() or b":" in name:
            raise Malformed(f"field name {name!r} has upper case or a colon")
        if value[:1] in (b" ", b"\t") or value[-1:] in (b" ", b"\t"):
            raise Malformed(f"field {name!r} starts or ends with whitespace")
        if name in CONNECTION_SPECIFIC:
            raise Malformed(f"connection-specific field {name!r}")
        if name == b"te":
            if value.lower() != b"trailers":
                raise Malformed("TE other than trailers")
            continue
        if name == b"host":
            if host is not None:
                raise Malformed("more than one Host")
            host = value
        elif name == b"cookie":  # crumbs are joined again for HTTP/1.1 (RFC 9113 8.2.3)
            cookies.append(value)
        else:
            lines.append(name + b": " + value)
    method = pseudo.get(b":method")
    path = pseudo.get(b":path")
    authority = pseudo.get(b":authority")
    if method is None:
        raise Malformed("no :method")
    if method != b"CONNECT" and (path is None or b":scheme" not in pseudo):
        raise Malformed("no :scheme or :path")
    if path is not None and path[:1] != b"/" and not (path == b"*" and method == b"OPTIONS"):
        raise Malformed(":path is not origin-form (nor * for OPTIONS)")
    if authority is not None and host is not None and host != authority:
        raise Malformed("Host differs from :authority")
    if pseudo.get(b":scheme", b"http") not in (b"http", b"https"):
        raise Malformed(":scheme is neither http nor https")
    if cookies:
        lines.append(b"cookie: " + b"; ".join(cookies))
    host = authority if authority is not None else host
    if host is not None:
        lines.append(b"host: " + host)
    if not ended and not any(line.startswith(b"content-length:") for line in lines):
        lines.append(b"transfer-encoding: chunked")  # a body of unknown length
    lines.insert(0, method + b" " + (path or b"*") + b" HTTP/1.1")
    return b"\r\n".join(lines), len(lines) - 1


HeadersCache = dict[tuple[int, bytes, int | bool | None, bytes], Headers]


def response_headers(cache: HeadersCache, response: Response, via: bytes) -> Headers:
    """The HTTP/2 header list of a backend's response: its kept fields (hop-by-hop and
    Connection-named ones are gone already), lower-cased, plus ``via`` (the listener's
    CRLF-led Via line, or empty). Kept in ``cache`` (a snapshot's) by what makes it."""
    key = (response.status, response.forwarded_block(), response.reemit and
           response.content_length, via)
    headers = cache.get(key)
    if headers is None:
        headers = [(b":status", b"%d" % response.status)]
        headers += _fields(response.forwarded_block())
        if response.reemit and response.content_length is not None:
            headers.append((b"content-length", b"%d" % response.content_length))
        if via:
            headers.append((b"via", via.partition(b": ")[2]))
        if len(cache) >= 4096:
            cache.clear()
        cache[key] = headers
    return headers


def _fields(block: bytes) -> Headers:
    """``\\r\\nName: value`` lines (already checked by the parser) as (name, value)."""
    fields = []
    for line in block.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        fields.append((name.lower(), value.strip(b" \t")))
    return fields


def h1_response(data: bytes) -> tuple[Headers, bytes]:
    """A whole HTTP/1.1 response the balancer made itself (errors, health, ACME) as an
    HTTP/2 header list and body."""
    head, _, body = data.partition(b"\r\n\r\n")
    response = parse_response(head)
    headers = [(b":status", b"%d" % response.status)]
    headers += [(name, value) for name, value in _fields(response.forwarded_block())
                if name != b"connection"]
    return headers, body


class Http2Stream(ClientProtocol):
    """A request on an HTTP/2 connection; see the module's docstring."""

    def __init__(self, connection: Http2Connection, stream_id: int):
        self.connection = connection  # first: the deadline setter below reads it
        self._deadline = 0.0
        super().__init__(connection.worker, connection.listener_name)
        self.stream_id = stream_id
        self.listener = connection.listener
        self.client_ip = connection.client_ip
        self.tls_headers = connection.tls_headers
        self.out: deque[bytes] = deque()  # response bytes waiting for the client's window
        self.out_size = 0
        self.out_headers: Headers | None = None
        self.out_end = False            # the response is complete once out is sent
        self.trailers: Headers | None = None
        self.sent_end = False
        self.client_ended = False       # the client's END_STREAM came
        self.unacked = 0                # request body bytes not yet given back as window
        self.upstream_paused = False    # we stopped reading the backend for this stream
        self.via_fixed = False

    # The worker's sweeper sees connections only: a stream's deadline moves its
    # connection's earlier, and the connection looks at its streams when that passes.
    @property
    def deadline(self) -> float:
        return self._deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._deadline = value
        connection = self.connection
        if value and (not connection.deadline or value < connection.deadline):
            connection.deadline = value

    # -- the request ----------------------------------------------------------------------
    def begin(self, headers: Headers, ended: bool) -> None:
        """The request's HEADERS: checked, read as HTTP/1.1, then dispatched as one."""
        self.client_ended = ended
        snapshot = self.snapshot  # the worker's as this stream began
        limits = snapshot.limits
        try:
            head, lines = request_head(headers, ended)
        except Malformed as exc:
            self.connection.malformed(self, str(exc))
            return
        if head.count(b"\n") != lines or head.count(b"\r") != lines or b"\0" in head:
            self.connection.malformed(self, "CR, LF or NUL in a field")
            return
        if len(head) > limits.max_header_bytes:
            self._reject(HttpError(431, "request head too large"))
            return
        try:
            request = snapshot.requests.get(head) \
                or parse_request_cached(snapshot.requests, head, limits.max_headers)
        except HttpError as exc:
            self._reject(exc)
            return
        if ended and request.body:
            self.connection.malformed(self, "content-length without DATA")
            return
        self._dispatch(request, b"")

    def data(self, data: bytes, flow_length: int) -> None:
        """A DATA frame: written to the backend now or when it is attached; its window is
        given back once written (a slow backend slows the client)."""
        self.unacked += flow_length
        if self.state == BODY and data:
            self._body(data)
        self._acknowledge()

    def end(self) -> None:
        """The client's END_STREAM: the request body is complete."""
        self.client_ended = True
        if self.state == BODY and self.upstream is not None:
            self._complete_body()

    def _complete_body(self) -> None:
        upstream = self.upstream
        assert upstream is not None and upstream.transport is not None
        if self.decoder is not None:
            upstream.transport.write(LAST_CHUNK)
        self._request_complete(b"")

    def _body(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is None or upstream.transport is None:
            self.pending += data  # bounded by the stream's window: not acknowledged yet
            return
        self.deadline = self.worker.loop.time() + self.snapshot.timeouts.backend_response
        self.body_seen += len(data)
        limit = self.snapshot.limits.max_body_bytes
        if limit and self.body_seen > limit:
            self._abort_request(HttpError(413, "request body too large"))
            return
        if self.decoder is not None:
            upstream.transport.writelines(chunk(data))
        else:
            upstream.transport.write(data)

    def _acknowledge(self) -> None:
        if self.unacked and not self.paused:
            self.connection.acknowledge(self.stream_id, self.unacked)
            self.unacked = 0

    def _pause(self, reason: int) -> None:
        self.paused |= reason  # DATA is no longer acknowledged: the client's window shuts

    def _resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            self._acknowledge()

    def _pick_and_send(self) -> None:
        if not self.via_fixed:
            self._via_received_as_2()
        super()._pick_and_send()

    def _via_received_as_2(self) -> None:
        """RFC 9110 7.6.3: Via names the protocol received, here 2 (the head was built as
        if received by HTTP/1.1). Ours is the last Via line of the head."""
        self.via_fixed = True
        ours = self.listener.via[1]
        at = self.head_out.rfind(ours)
        if ours and at >= 0:
            self.head_out = (self.head_out[:at] + ours.replace(b"Via: 1.1 ", b"Via: 2 ", 1)
                             + self.head_out[at + len(ours):])

    def _attach(self, upstream: UpstreamProtocol) -> None:
        # To UpstreamProtocol an HTTP/1.0 client (_dispatch set the request's 1): bodies
        # then come decoded, never re-chunked.
        self.minor = 0
        super()._attach(upstream)
        if self.client_ended and self.state == BODY and self.upstream is upstream:
            self._complete_body()
        self._acknowledge()

    # -- the response ---------------------------------------------------------------------
    def connection_header(self, close_client: bool) -> bytes:
        return b""  # HTTP/2 has no Connection field; the stream ends on its own

    def interim(self, head: bytes) -> None:
        """1xx (100 Continue, 103 Early Hints) as informational HEADERS."""
        headers, _ = h1_response(head)
        if self.state != CLOSED:
            self.connection.send_informational(self.stream_id, headers)

    def response_start(self, upstream: UpstreamProtocol, response: Response, head: bytes,
                       tunnel: bool = False) -> None:
        self.response_started = True
        self.status = response.status
        self._record(response)
        self.out_headers = response_headers(self.snapshot.h2_headers, response,
                                            self.listener.via[response.minor])
        body = head[head.find(b"\r\n\r\n") + 4 :]  # the body's first bytes may follow
        if body:
            self._queue(body)
        if upstream.state == CHUNKED and upstream.decoder is not None:
            upstream.decoder.trailers = []  # fed from here on: keep the trailers
        if upstream.state != DONE:  # else response_end follows: HEADERS with END_STREAM
            self._send()

    def plain_response(self, upstream: UpstreamProtocol, response: Response,
                       body: bytes) -> None:
        self.response_started = True
        self.status = response.status
        self._record(response)
        self.out_headers = response_headers(self.snapshot.h2_headers, response,
                                            self.listener.via[response.minor])
        if body:
            self._queue(body)
        self.response_end(upstream, b"")

    def response_data(self, pieces: list[bytes]) -> None:
        for piece in pieces:
            if piece:
                self._queue(piece)
        self.deadline = self.worker.loop.time() + self.snapshot.timeouts.backend_response
        self._send()

    def response_end(self, upstream: UpstreamProtocol, last: bytes) -> None:
        if last:
            self._queue(last)
        decoder = upstream.decoder
        if upstream.state == DONE and decoder is not None and decoder.trailers:
            self.trailers = [field for field in decoder.trailers
                             if field[0] not in NOT_TRAILERS]
            decoder.trailers = None
        self.out_end = True
        self.upstream = None
        if self.upstream_paused and upstream.transport is not None:
            self.upstream_paused = False  # pooled, it must see the backend close
            upstream.transport.resume_reading()
        self._return_upstream(upstream)
        if self.state == BODY:
            self.state = WAIT  # DATA still coming is acknowledged and dropped
        self._account()
        self._send()

    def response_broken(self, upstream: UpstreamProtocol) -> None:
        self.upstream = None
        upstream.abort()
        self._release_backend(failed=True)
        self._reset(ErrorCodes.INTERNAL_ERROR, "backend_broken")

    def pause_for_upstream(self, paused: bool) -> None:
        if paused:
            self._pause(PAUSE_UPSTREAM)
        else:
            self._resume(PAUSE_UPSTREAM)

    def _queue(self, data: bytes) -> None:
        self.out.append(data)
        self.out_size += len(data)

    def _send(self) -> None:
        """Send what the windows allow; hold the backend while this stream is full."""
        if self.state == CLOSED:
            return
        self.connection.send_stream(self)
        upstream = self.upstream
        if upstream is None or upstream.transport is None:
            return
        if self.out_size and (self.out_size > OUT_HIGH or self.connection.blocked(self)):
            if not self.upstream_paused:
                self.upstream_paused = True
                upstream.transport.pause_reading()
        elif self.upstream_paused:
            self.upstream_paused = False
            upstream.transport.resume_reading()

    def sent(self) -> None:
        """Called by the connection once END_STREAM went out: the stream is done."""
        self.sent_end = True
        self.state = CLOSED
        self.connection.stream_done(self, reset_client=not self.client_ended)

    # -- ends and errors ------------------------------------------------------------------
    def _finish(self) -> None:  # only reached through ClientBase.response_end: not here
        self._account()

    def _local_reply(self, reply: bytes, rest: bytes) -> None:
        """The balancer's own answers (health path, ACME tokens) on this stream."""
        self.out_headers, body = h1_response(reply)
        if body and self.request is not None and self.request.method != b"HEAD":
            self._queue(body)
        self.request = None
        self._answer()

    def _answer(self) -> None:
        """Send a response of our own; a client that never opens its window for it is
        reset after backend_response, like one stalling a backend's response."""
        self.response_started = True
        self.out_end = True
        self.state = WAIT
        self.deadline = self.worker.loop.time() + self.snapshot.timeouts.backend_response
        self._send()

    def _gateway_error(self, error: HttpError) -> None:
        self._reject(error)

    def _reject(self, error: HttpError) -> None:
        """Our own error response on this stream (the connection and its other streams
        go on); a client still sending is then told to stop (RST_STREAM NO_ERROR)."""
        head_only = self.request is not None and self.request.method == b"HEAD"
        self._drop_request(error)
        if self.state == CLOSED:
            return
        if self.response_started:
            self._reset(ErrorCodes.INTERNAL_ERROR, "backend_broken")
            return
        self.out.clear()
        self.out_size = 0
        self.out_headers, body = h1_response(error_response(error.status, close=False,
                                                            message=error.reason,
                                                            headers=error.headers))
        if not head_only:
            self._queue(body)
        self._answer()

    def _internal_error(self) -> None:
        """A bug on this stream (see ClientBase.internal_error): 500 on it, or RST_STREAM
        once its response started; the connection and its other streams go on."""
        self._reject(HttpError(500, "internal error"))

    def on_timeout(self, now: float) -> None:
        """Called by the connection when this stream's deadline has passed."""
        self._deadline = 0.0
        if self.waiting is not None:
            self._leave_queue(TIMEOUT)
            self._reject(HttpError(503, "no backend slot within queue_timeout"))
            return
        if self.response_started:
            upstream, self.upstream = self.upstream, None
            if upstream is not None:
                upstream.abort()  # the backend slot is free again
            self._release_backend(failed=False)
            self._reset(ErrorCodes.CANCEL, "stalled")  # the client's window, or the backend
        elif self.state == WAIT and self.upstream is not None:
            self._fail_upstream(UpstreamError(504, "backend response timeout", retryable=False))
        elif self.state == BODY:
            self._reject(HttpError(408, "request body timed out"))

    def cancel(self) -> None:
        """The client reset the stream, or the connection is gone: free what it holds."""
        if self.state == CLOSED:
            return
        self.state = CLOSED
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.abort()  # mid-request or mid-response: never back to the pool
        self._release_backend(failed=False)
        self._end_limits(ABANDONED)  # its queue place and its client's request count
        self.out.clear()
        self.out_size = 0

    def _reset(self, code: ErrorCodes, reason: str) -> None:
        """RST_STREAM with ``code``; ``reason`` is the metric's label."""
        if self.state == CLOSED:
            return
        self.cancel()
        self.connection.reset(self, code, reason)

    def _abort_request(self, error: HttpError) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.abort()
        self._release_backend(failed=False)
        self._reject(error)

    def close(self) -> None:
        self._reset(ErrorCodes.CANCEL, "cancelled")

    @property
    def idle(self) -> bool:
        return False
