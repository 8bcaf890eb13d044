"""What the client protocol keeps per connection, its flow control, and the response side.

:class:`ClientBase` holds the per-connection state (defaults on the class, so accepting a
connection sets only what differs) and the callbacks UpstreamProtocol makes while a
response streams back. The request side is :class:`regional_lb.l7.proxy.ClientProtocol`.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from regional_lb.balancing import BackendState, PoolState
from regional_lb.balancing.state import LATENCY_BUCKETS
from regional_lb.l7.parser import ChunkedDecoder, Request, Response
from regional_lb.l7.rewrite import response_head

if TYPE_CHECKING:
    from regional_lb.l7.upstream import UpstreamProtocol
    from regional_lb.snapshot import Listener
    from regional_lb.worker import Worker

# Connection states.
PROXY_HEADER, HEAD, BODY, WAIT, TUNNEL, CLOSED = range(6)
# Reasons to stop reading from the client, as bits.
PAUSE_UPSTREAM, PAUSE_NO_UPSTREAM, PAUSE_PIPELINE, PAUSE_CLIENT_FULL = 1, 2, 4, 8
PIPELINE_BUFFER = 65536


class ClientBase(asyncio.Protocol):
    # Per-connection state. The defaults live on the class, so accepting a connection
    # sets only what differs (connections per second matter as much as requests).
    transport: asyncio.Transport | None = None
    state = HEAD
    buffer = b""
    pending = b""            # body bytes read before a backend was attached
    deadline = 0.0
    deadline_status = 0      # what a timeout answers in this state (0: close quietly)
    paused = 0
    client_ip = b""
    minor = 1
    keep_alive = True
    request: Request | None = None
    pool: PoolState | None = None
    backend: BackendState | None = None
    upstream: UpstreamProtocol | None = None
    tried: tuple[BackendState, ...] = ()  # backends that failed this request
    stale_retry = False
    head_out = b""
    upgrade: bytes | None = None  # the Upgrade offered to the backend (listener-allowed)
    body_left = 0
    decoder: ChunkedDecoder | None = None
    body_seen = 0
    request_done = False
    response_started = False
    status = 0
    started = 0.0
    answered = 0.0           # when the response head came (saves asking the clock again)
    writing_paused = False   # our buffer towards the client is full
    listener: Listener       # as it was when the connection came
    # Per-client limits and the pool queue (regional_lb.client_limits, .pool_queue).
    connection_cell = 0      # the count this connection holds for its client network
    request_cell = 0         # the count the request in flight holds
    waiting: list[Any] | None = None  # its queue entry while waiting for a backend slot

    worker: Worker
    listener_name: str

    # -- hooks of the request side ------------------------------------------------------
    def _heads(self, data: bytes) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _release_backend(self, failed: bool) -> None:
        raise NotImplementedError

    # -- flow control -------------------------------------------------------------------
    def pause_writing(self) -> None:
        self.writing_paused = True
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None and not upstream.closed:
            upstream.transport.resume_reading()
        if self.paused & PAUSE_CLIENT_FULL and self.state == HEAD:
            rest, self.buffer = self.buffer, b""
            self._resume(PAUSE_CLIENT_FULL)
            if rest:
                self._heads(rest)

    def pause_for_upstream(self, paused: bool) -> None:
        if paused:
            self._pause(PAUSE_UPSTREAM)
        else:
            self._resume(PAUSE_UPSTREAM)

    def _pause(self, reason: int) -> None:
        if not self.paused and self.transport is not None:
            self.transport.pause_reading()
        self.paused |= reason

    def _resume(self, reason: int) -> None:
        if self.paused & reason:
            self.paused &= ~reason
            if not self.paused and self.transport is not None and self.state != CLOSED:
                self.transport.resume_reading()

    @property
    def idle(self) -> bool:
        """Between requests with nothing buffered: safe to close when stopping."""
        return self.state in (HEAD, PROXY_HEADER) and not self.buffer

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    # -- response (called by UpstreamProtocol) ------------------------------------------
    def interim(self, head: bytes) -> None:
        if self.minor == 1 and self.transport is not None:
            self.transport.write(head)

    def connection_header(self, close_client: bool) -> bytes:
        """The Connection line of the response (CRLF-led), or nothing."""
        if close_client or not self.keep_alive or self.worker.stopping \
                or (self.state == BODY and not self.request_done):
            self.keep_alive = False
            return b"\r\nConnection: close"
        if self.minor == 0:
            return b"\r\nConnection: keep-alive"
        return b""

    def response_start(self, upstream: UpstreamProtocol, response: Response, head: bytes,
                       tunnel: bool = False) -> None:
        assert self.transport is not None
        self.response_started = True
        self.status = response.status
        self._record(response)
        self.transport.write(head)
        if tunnel:
            self.state = TUNNEL
            self.deadline = self.worker.loop.time() + self.worker.timeouts.tcp_idle
            self.deadline_status = 0
            if self.pending:
                assert upstream.transport is not None
                upstream.transport.write(self.pending)
                self.pending = b""
            self._resume(PAUSE_NO_UPSTREAM | PAUSE_PIPELINE)
            if self.buffer:
                assert upstream.transport is not None
                upstream.transport.write(self.buffer)
                self.buffer = b""

    def plain_response(self, upstream: UpstreamProtocol, response: Response, body: bytes) -> None:
        """A whole response in one piece (the common case): write, pool, next request.

        The same steps as response_start + response_end + _finish, in one call.
        """
        extra = self.listener.via[response.minor] + self.connection_header(False)
        head = response.heads.get(extra) or response_head(response, extra)
        self.response_started = True
        self.status = response.status
        self._record(response)
        assert self.transport is not None
        self.transport.write(head + body if body else head)
        self.response_end(upstream, b"")

    def _record(self, response: Response) -> None:
        """Counters, latency histogram and (for peak EWMA) the backend's response time."""
        backend = self.backend
        if backend is not None:
            self.answered = now = self.worker.loop.time()
            seconds = now - self.started
            backend.latency_sum += seconds
            backend.latency_buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1
            if self.pool is not None and self.pool.track_ewma:
                backend.observe_ewma(seconds, now)
            backend.responses[response.status // 100] += 1
            if backend.monitor is not None:  # passive outlier detection
                backend.monitor.response(response.status, seconds)

    def response_data(self, pieces: list[bytes]) -> None:
        assert self.transport is not None
        if len(pieces) == 1:
            self.transport.write(pieces[0])
        else:
            self.transport.writelines(pieces)
        self.deadline = self.worker.loop.time() + self.worker.timeouts.backend_response

    def response_end(self, upstream: UpstreamProtocol, last: bytes) -> None:
        assert self.transport is not None
        if last:
            self.transport.write(last)
        self.upstream = None
        if self.request_done and upstream.release():
            backend = upstream.backend
            if len(backend.idle) < (self.pool.spec.max_idle if self.pool else 0) and backend.up:
                backend.idle.append(upstream)
            else:
                upstream.close()
        elif not self.request_done:
            upstream.close()
            self.keep_alive = False
        self._finish()

    def response_broken(self, upstream: UpstreamProtocol) -> None:
        self.upstream = None
        upstream.abort()
        self._release_backend(failed=True)
        self.state = CLOSED
        if self.transport is not None:
            self.transport.abort()
