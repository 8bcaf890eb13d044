"""What the client protocol keeps per connection, its flow control, and the response side.

:class:`ClientBase` holds the per-connection state (in slots: an idle connection costs
little) and the callbacks UpstreamProtocol makes while a response streams back. The
request side is :class:`regional_lb.l7.proxy.ClientProtocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from bisect import bisect_left
from typing import TYPE_CHECKING, Any

from gtm import log
from regional_lb.balancing import BackendState, PoolState
from regional_lb.balancing.state import LATENCY_BUCKETS
from regional_lb.l7.parser import ChunkedDecoder, Request, Response
from regional_lb.l7.rewrite import response_head

if TYPE_CHECKING:
    from regional_lb.l7.upstream import UpstreamProtocol
    from regional_lb.snapshot import Listener, Snapshot
    from regional_lb.worker import Worker

# Connection states.
PROXY_HEADER, HEAD, BODY, WAIT, TUNNEL, CLOSED = range(6)
# Reasons to stop reading from the client, as bits.
PAUSE_UPSTREAM, PAUSE_NO_UPSTREAM, PAUSE_PIPELINE, PAUSE_CLIENT_FULL = 1, 2, 4, 8
PIPELINE_BUFFER = 65536
# The request's id, as the backend gets it (ours, or the one the client sent).
REQUEST_ID_LINE = re.compile(rb"\r\nx-request-id:[ \t]*([^\r\n]{0,64})", re.IGNORECASE)


class ClientBase(asyncio.Protocol):
    # Per-connection state in slots: no instance dict, 8 bytes a field, and an idle
    # keep-alive connection holds nothing else of ours but its deadline and client
    # address (bench/connections.py --breakdown). A slot has no class default, so
    # __init__ sets every field with plain stores, the cheapest way to fill an object.
    __slots__ = (
        "answered",
        "backend",
        "body_left",
        "body_seen",
        "buffer",
        "client_ip",
        "connection_cell",
        "deadline",
        "deadline_status",
        "decoder",
        "head_out",
        "keep_alive",
        "listener",
        "listener_name",
        "minor",
        "paused",
        "pending",
        "pool",
        "request",
        "request_cell",
        "request_done",
        "response_started",
        "snapshot",
        "stale_retry",
        "started",
        "state",
        "status",
        "tls_headers",
        "transport",
        "tried",
        "upgrade",
        "upstream",
        "waiting",
        "worker",
        "writing_paused",
    )
    transport: asyncio.Transport | None
    state: int
    buffer: bytes
    pending: bytes           # body bytes read before a backend was attached
    deadline: float
    deadline_status: int     # what a timeout answers in this state (0: close quietly)
    paused: int
    client_ip: bytes
    minor: int
    keep_alive: bool
    request: Request | None
    pool: PoolState | None
    backend: BackendState | None
    upstream: UpstreamProtocol | None
    tried: tuple[BackendState, ...]  # backends that failed this request
    stale_retry: bool
    head_out: bytes          # the request head for the backend, until the response ends
    upgrade: bytes | None    # the Upgrade offered to the backend (listener-allowed)
    body_left: int
    decoder: ChunkedDecoder | None
    body_seen: int
    request_done: bool
    response_started: bool
    status: int
    started: float
    answered: float          # when the response head came (saves asking the clock again)
    writing_paused: bool     # our buffer towards the client is full
    tls_headers: bytes       # about the client's certificate, for every request (TLS)
    listener: Listener       # as it was when the connection came (set by connection_made)
    # Per-client limits and the pool queue (regional_lb.client_limits, .pool_queue).
    connection_cell: int     # the count this connection holds for its client network
    request_cell: int        # the count the request in flight holds
    waiting: list[Any] | None  # its queue entry while waiting for a backend slot
    worker: Worker
    # The worker's snapshot as the request (or, between requests, the last one) started:
    # its limits, timeouts, access log and caches hold until the request ends.
    snapshot: Snapshot
    listener_name: str

    def __init__(self, worker: Worker, listener_name: str):
        self.worker = worker
        self.snapshot = worker.snapshot
        self.listener_name = listener_name
        self.transport = self.request = self.pool = self.backend = self.upstream = None
        self.decoder = self.upgrade = self.waiting = None
        self.state = HEAD
        self.buffer = self.pending = self.client_ip = self.head_out = self.tls_headers = b""
        self.deadline = self.started = self.answered = 0.0
        self.deadline_status = self.paused = self.body_left = self.body_seen = self.status = 0
        self.connection_cell = self.request_cell = 0
        self.minor = 1
        self.keep_alive = True
        self.tried = ()
        self.stale_retry = self.request_done = self.response_started = False
        self.writing_paused = False

    # -- hooks of the request side ------------------------------------------------------
    def _heads(self, data: bytes) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        raise NotImplementedError

    def _release_backend(self, failed: bool) -> None:
        raise NotImplementedError

    def _internal_error(self) -> None:
        raise NotImplementedError

    # -- the catch-all ------------------------------------------------------------------
    def internal_error(self, where: str) -> None:
        """The catch-all of the entry points (the client's and the backend's callbacks,
        timeouts, the queue, the connect task), called from their ``except Exception``.

        A bug while serving this connection is logged once with its context; the request
        is answered 500 when no response has started (else the connection, or the HTTP/2
        stream, is closed); its backend slot, queue place and request count are given back
        once (each is cleared as it is given back). Nothing of it runs on the hot path.
        """
        try:
            backend = self.backend
            match = REQUEST_ID_LINE.search(self.head_out)
            answered = not self.response_started and self.state not in (TUNNEL, CLOSED)
            log.lb.exception(
                "internal error in %s: listener %s, client %s, request %s, backend %s; %s",
                where, self.listener_name, self.client_ip.decode(errors="replace") or "-",
                match.group(1).decode(errors="replace") if match else "-",
                backend.key if backend is not None else "-",
                "answered 500" if answered else "closed")
            self._internal_error()
        except Exception:  # the catch-all itself failed: at least drop the connection
            log.lb.exception("internal error in the catch-all (listener %s): connection "
                             "aborted", self.listener_name)
            self.state = CLOSED
            with contextlib.suppress(Exception):
                self._release_backend(failed=False)
            if self.transport is not None:
                self.transport.abort()

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
                try:
                    self._heads(rest)
                except Exception:
                    self.internal_error("resume_writing")

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
            self.deadline = self.worker.loop.time() + self.snapshot.timeouts.tcp_idle
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
        self.deadline = self.worker.loop.time() + self.snapshot.timeouts.backend_response

    def response_end(self, upstream: UpstreamProtocol, last: bytes) -> None:
        assert self.transport is not None
        if last:
            self.transport.write(last)
        self.upstream = None
        self._return_upstream(upstream)
        self._finish()

    def _return_upstream(self, upstream: UpstreamProtocol) -> None:
        """After a response: back to the backend's idle pool, or closed when it cannot be
        reused (the request body was not all sent, the backend said close, a full pool)."""
        if self.request_done and upstream.release():
            backend = upstream.backend
            if len(backend.idle) < (self.pool.spec.max_idle if self.pool else 0) and backend.up:
                backend.idle.append(upstream)
            else:
                upstream.close()
        elif not self.request_done:
            upstream.close()
            self.keep_alive = False

    def response_broken(self, upstream: UpstreamProtocol) -> None:
        self.upstream = None
        upstream.abort()
        self._release_backend(failed=True)
        self.state = CLOSED
        if self.transport is not None:
            self.transport.abort()
