"""The client side of the HTTP proxy: one protocol object per client connection.

This is the error boundary of a request: parsing, routing, picking, connecting,
streaming and timeouts all end here as a status code (400/408/413/414/431/502/503/504)
or, once a response has started, as a closed connection.
"""

from __future__ import annotations

import asyncio

from regional_lb.balancing import BackendState
from regional_lb.client_limits import REFUSED, ListenerAdmission, too_many_requests
from regional_lb.errors import HttpError, UpstreamError
from regional_lb.l7.acme_http import CHALLENGE_PREFIX, challenge_response
from regional_lb.l7.client_base import (
    BODY,
    CLOSED,
    HEAD,
    PAUSE_CLIENT_FULL,
    PAUSE_NO_UPSTREAM,
    PAUSE_PIPELINE,
    PIPELINE_BUFFER,
    PROXY_HEADER,
    TUNNEL,
    WAIT,
    ClientBase,
)
from regional_lb.l7.parser import (
    IDEMPOTENT,
    LAST_CHUNK,
    ChunkedDecoder,
    Request,
    allowed_upgrade,
    check_partial_head,
    chunk,
    parse_request_cached,
)
from regional_lb.l7.rewrite import (
    error_response,
    health_response,
    request_head,
)
from regional_lb.l7.upstream import UpstreamProtocol, connect
from regional_lb.pool_queue import ABANDONED, TIMEOUT, PoolQueue
from regional_lb.proxyproto import ProxyHeaderError, parse_proxy_header
from regional_lb.snapshot import Route, balance_key

# The HTTP/2 connection preface (RFC 9113 3.4) up to its first blank line: read as an
# HTTP/1.1 head it is "PRI * HTTP/2.0", which h2c listeners hand to HTTP/2.
PREFACE_HEAD = b"PRI * HTTP/2.0"


def alpn_h2(transport: asyncio.BaseTransport) -> bool:
    sslobj = transport.get_extra_info("ssl_object")
    return sslobj is not None and sslobj.selected_alpn_protocol() == "h2"


class ClientProtocol(ClientBase):
    __slots__ = ()  # the state is ClientBase's: no instance dict here either

    # -- connection ---------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        try:
            peer = transport.get_extra_info("peername")
            self.client_ip = peer[0].encode() if peer else b""
            worker = self.worker
            self.snapshot = snapshot = worker.snapshot
            if len(worker.connections) >= snapshot.limits.max_client_connections:
                self.state = CLOSED
                transport.close()  # over the limit: refused before any work
                return
            worker.connections.add(self)
            listener = snapshot.listeners.get(self.listener_name)
            if listener is None:
                self.state = CLOSED
                transport.close()
                return
            self.listener = listener  # kept in case a reload removes it
            if listener.tls is not None:
                self.tls_headers = listener.tls.count(transport)
            if listener.spec.proxy_protocol and peer is not None \
                    and worker.trusted(listener, peer[0]):
                self.state = PROXY_HEADER
            elif listener.admission is not None and not self._open(listener.admission):
                return
            if listener.tls is not None and listener.h2 and alpn_h2(transport):
                self._to_http2(transport, b"")  # after the connection cap: it counts too
                return
            self.deadline = worker.loop.time() + snapshot.timeouts.header_read
            self.deadline_status = 0
        except Exception:
            self.internal_error("accept")

    def _open(self, admission: ListenerAdmission) -> bool:
        """The client network's connection cap: over it, closed at accept."""
        cell = self.worker.limiter.open_connection(admission, self.client_ip)
        if cell == REFUSED:
            self.state = CLOSED
            assert self.transport is not None
            self.transport.close()
            return False
        self.connection_cell = cell
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            was = self.state
            self.state = CLOSED
            self.worker.connections.discard(self)
            self._end_limits(ABANDONED)
            if self.connection_cell:
                self.worker.limiter.close_connection(self.connection_cell)
                self.connection_cell = 0
            upstream = self.upstream
            if upstream is not None:
                self.upstream = None
                if was == TUNNEL:
                    upstream.close()
                else:
                    upstream.abort()
            self._release_backend(failed=False)
        except Exception:
            self.internal_error("connection_lost")

    def data_received(self, data: bytes) -> None:
        try:
            state = self.state
            if state == BODY:
                self._body(data)
            elif state == TUNNEL:
                assert self.upstream is not None and self.upstream.transport is not None
                self.upstream.transport.write(data)
            elif state == HEAD:
                if self.buffer:
                    data = self.buffer + data
                    self.buffer = b""
                self._heads(data)
            elif state == WAIT:
                self.buffer += data
                if len(self.buffer) > PIPELINE_BUFFER:
                    self._pause(PAUSE_PIPELINE)
            elif state == PROXY_HEADER:
                self._proxy_header(self.buffer + data)
        except Exception:
            self.internal_error("data_received")

    def eof_received(self) -> bool | None:
        try:
            # TLS transports close after an EOF whatever this returns (and warn about True).
            if self.waiting is not None:
                return None  # a client that closes while queued has given up: leave the queue
            keep = None if self.transport is None or self.transport.get_extra_info("sslcontext") \
                else True
            if self.state == TUNNEL and self.upstream is not None:
                assert self.upstream.transport is not None
                if self.upstream.transport.can_write_eof():
                    self.upstream.transport.write_eof()
                return keep
            if self.state in (BODY, WAIT) and self.request_done:
                return keep  # half-closed after a complete request: still answer it
            return None
        except Exception:
            self.internal_error("eof_received")
            return None

    def on_timeout(self, now: float) -> None:
        """Called by the worker's sweeper when self.deadline has passed."""
        try:
            if self.waiting is not None:
                self._leave_queue(TIMEOUT)
                self._gateway_error(HttpError(503, "no backend slot within queue_timeout"))
                return
            state = self.state
            if self.response_started or state in (TUNNEL, CLOSED):
                self.state = CLOSED
                if self.transport is not None:
                    self.transport.abort()
            elif state == WAIT and self.upstream is not None:
                self._fail_upstream(UpstreamError(504, "backend response timeout", retryable=False))
            elif state == BODY:
                self._reject(HttpError(408, "request body timed out"))
            elif state in (HEAD, PROXY_HEADER) and self.deadline_status:
                self._reject(HttpError(408, "request head timed out"))
            elif state in (HEAD, PROXY_HEADER):
                self.state = CLOSED
                if self.transport is not None:
                    self.transport.close()  # idle keep-alive connection: close quietly
            else:
                self.deadline = 0.0  # connecting: the connect timeout applies
        except Exception:
            self.internal_error("on_timeout")

    # -- PROXY protocol -----------------------------------------------------------------
    def _proxy_header(self, data: bytes) -> None:
        try:
            parsed = parse_proxy_header(data)
        except ProxyHeaderError as exc:
            self._reject(HttpError(400, str(exc)))
            return
        if parsed is None:
            self.buffer = data
            return
        source, used = parsed
        if source is not None:
            self.client_ip = source[0].encode()
        admission = self.listener.admission
        if admission is not None and not self._open(admission):
            return  # the connection cap counts the client the header names
        self.state = HEAD
        self.buffer = b""
        if used < len(data):
            self._heads(data[used:])

    # -- request heads ------------------------------------------------------------------
    def _heads(self, data: bytes) -> None:
        # A request starts: it reads this snapshot until it ends.
        self.snapshot = snapshot = self.worker.snapshot
        limits = snapshot.limits
        while self.state == HEAD:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self._partial_head(data)
                return
            head, data = data[:end], data[end + 4 :]
            while head.startswith(b"\r\n"):
                head = head[2:]  # empty lines before a request line are ignored
            if not head:
                continue
            line_end = head.find(b"\r\n")  # 414 first: the more precise answer
            if (line_end if line_end >= 0 else len(head)) > limits.max_request_line:
                self._reject(HttpError(414, "request line too long"))
                return
            if end > limits.max_header_bytes:
                self._reject(HttpError(431, "request head too large"))
                return
            try:
                # The snapshot's cache: parsed under these limits.
                request = snapshot.requests.get(head) \
                    or parse_request_cached(snapshot.requests, head, limits.max_headers)
            except HttpError as exc:
                if head == PREFACE_HEAD and self._h2c_allowed():
                    self._to_http2(self.transport, PREFACE_HEAD + b"\r\n\r\n" + data)
                else:
                    self._reject(exc)
                return
            self._dispatch(request, data)
            return

    def _h2c_allowed(self) -> bool:
        """HTTP/2 with prior knowledge (RFC 9113 3.3): on plain listeners that allow it, as
        the first thing on the connection (no request was proxied on it before)."""
        return self.listener.h2 and self.listener.tls is None and self.pool is None

    def _to_http2(self, transport: asyncio.BaseTransport | None, data: bytes) -> None:
        """Hand the connection to an HTTP/2 protocol (regional_lb.l7.http2)."""
        self.worker.connections.discard(self)
        self.state = CLOSED
        assert transport is not None
        # The client network's connection count goes with the connection, released when
        # the HTTP/2 protocol loses it (this object never hears of it again).
        cell, self.connection_cell = self.connection_cell, 0
        connection = self.worker.http2_connection(self.worker, self.snapshot,
                                                  self.listener_name, self.listener,
                                                  self.client_ip, self.tls_headers, cell)
        connection.take_over(transport, data)  # type: ignore[arg-type]

    def _partial_head(self, data: bytes) -> None:
        snapshot = self.snapshot
        limits = snapshot.limits
        try:
            check_partial_head(data, limits.max_request_line, limits.max_header_bytes)
        except HttpError as exc:
            self._reject(exc)
            return
        if data and not self.buffer and self.deadline_status == 0:
            self.deadline = self.worker.loop.time() + snapshot.timeouts.header_read
            self.deadline_status = 408
        self.buffer = data

    def _dispatch(self, request: Request, rest: bytes) -> None:
        worker = self.worker
        snapshot = self.snapshot
        listener = snapshot.listeners.get(self.listener_name)
        self.request = request
        self.minor = request.minor
        self.keep_alive = request.keep_alive and not worker.stopping
        if listener is None:  # removed by a reload: this request on the old one, then close
            listener = self.listener
            self.keep_alive = False
        if request.path == listener.health_path:
            self._health(rest)
            return
        if snapshot.acme_tokens is not None and request.path.startswith(CHALLENGE_PREFIX):
            reply = challenge_response(snapshot.acme_tokens, request.path,
                                       request.method == b"HEAD")
            if reply is not None:
                self._local_reply(reply, rest)
                return
        limit = snapshot.limits.max_body_bytes
        if limit and (request.content_length or 0) > limit:
            self._reject(HttpError(413, "request body too large"))
            return
        route = listener.match(request) if listener.routes else None
        self.pool = pool = route.pool if route is not None else listener.pool
        if pool.retry_tokens < pool.retry_cap:
            pool.retry_tokens += pool.retry_budget
        self.tried = ()
        self.stale_retry = False
        self.started = worker.loop.time()
        self.response_started = False
        self.status = 0
        if request.body:
            self.request_done = False
            self.state = BODY
            self.pending = rest
            if request.chunked:
                self.decoder = ChunkedDecoder()
                self.body_seen = 0
            else:
                self.decoder = None
                self.body_left = request.content_length or 0
        else:
            self.request_done = True
            self.state = WAIT
            self.buffer = rest
        if listener.admission is not None and not self._admit(listener.admission, route):
            return
        worker.request_count += 1
        # Almost no request offers an Upgrade: no call for the ones that do not.
        self.upgrade = allowed_upgrade(request.upgrade, listener.upgrades) \
            if request.upgrade is not None else None
        self.head_out = request_head(snapshot.suffixes, request, self.client_ip,
                                     worker.request_prefix + b"%x" % worker.request_count,
                                     listener.default_host, listener.proto, self.upgrade,
                                     listener.via)
        if self.tls_headers:  # before the blank line that ends the head
            self.head_out = self.head_out[:-2] + self.tls_headers + b"\r\n"
        self._pick_and_send()

    def _health(self, rest: bytes) -> None:
        assert self.request is not None
        self._local_reply(health_response(not self.worker.stopping, not self.keep_alive,
                                          self.request.method == b"HEAD"), rest)

    def _local_reply(self, reply: bytes, rest: bytes) -> None:
        """A response the balancer makes itself (its health path, an ACME token)."""
        close = not self.keep_alive
        assert self.transport is not None
        if close and b"Connection: close" not in reply:
            reply = reply.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
        self.transport.write(reply)
        self.request = None
        if close:
            self.state = CLOSED
            self.transport.close()
            return
        self._idle(rest)

    # -- backends -----------------------------------------------------------------------
    def _pick_and_send(self) -> None:
        request, pool = self.request, self.pool
        assert request is not None and pool is not None
        key = balance_key(pool, request, self.client_ip) if pool.hashed else b""
        backend = pool.picker(pool, key, self.started, self.tried)
        if backend is None:
            if pool.queue is None or not self._enqueue(pool.queue):
                self._gateway_error(HttpError(503, "no backend available"))
            return
        self._send_to(backend)

    def _send_to(self, backend: BackendState) -> None:
        self.backend = backend
        backend.active += 1
        backend.requests += 1
        idle = backend.idle
        while idle:
            upstream = idle.pop()
            if not upstream.closed:  # type: ignore[attr-defined]
                self._attach(upstream)  # type: ignore[arg-type]
                return
        self._pause(PAUSE_NO_UPSTREAM)
        self.deadline = 0.0
        self.worker.spawn(self._connect(backend))

    # -- limits and the queue (regional_lb.client_limits, regional_lb.pool_queue) --------
    def _admit(self, admission: ListenerAdmission, route: Route | None) -> bool:
        """Rate limits and the request cap: False when answered 429."""
        cell, wait = self.worker.limiter.admit(admission, route.limits if route else None,
                                               self.request, self.client_ip)  # type: ignore[arg-type]
        if cell == REFUSED:
            self._gateway_error(too_many_requests(wait))
            return False
        self.request_cell = cell
        return True

    def _enqueue(self, queue: PoolQueue) -> bool:
        """Wait for a backend slot when the backends that could serve are all busy.
        False when none is up (the caller answers 503); a full queue answers 503 here."""
        pool, request, tried = self.pool, self.request, self.tried
        assert pool is not None and request is not None
        if not any(b.up and b not in tried for b in pool.backends):
            return False
        listener = self.listener
        rank = listener.priority(request, listener.match(request) if listener.routes else None)
        now = self.worker.loop.time()
        if not queue.push(self, rank, now):
            self._gateway_error(HttpError(503, "queue full"))
            return True
        self.deadline = now + queue.timeout
        self.deadline_status = 503
        return True

    def from_queue(self) -> bool:
        """A backend slot freed: take it (True), or wait on at the head (False)."""
        try:
            request, pool = self.request, self.pool
            if request is None or pool is None or self.state == CLOSED:
                return True
            key = balance_key(pool, request, self.client_ip) if pool.hashed else b""
            backend = pool.picker(pool, key, self.started, self.tried)
            if backend is None:
                return False
            self._send_to(backend)
            return True
        except Exception:
            self.internal_error("from_queue")
            return True  # dropped: the queue is done with it

    def _leave_queue(self, result: int) -> None:
        pool = self.pool
        if pool is not None and pool.queue is not None:
            pool.queue.leave(self, result)

    def _wake_queue(self, queue: PoolQueue) -> None:
        """A backend slot of this pool freed: the first waiter takes it."""
        if queue.size:
            queue.dispatch(self.worker.loop.time())

    def _end_limits(self, result: int) -> None:
        """The request is over (answered, failed or abandoned): give back what it held."""
        if self.waiting is not None:
            self._leave_queue(result)
        if self.request_cell:
            self.worker.limiter.finish_request(self.request_cell)
            self.request_cell = 0

    async def _connect(self, backend: BackendState) -> None:
        try:
            try:
                pool = self.pool.spec if self.pool is not None else None
                upstream = await connect(backend, self.snapshot.timeouts.backend_connect, pool)
            except UpstreamError as exc:
                if self.state != CLOSED:
                    self._fail_upstream(exc)
                return
            if self.state == CLOSED or self.backend is not backend:
                upstream.close()
                return
            if upstream.closed:
                # Accepted by the kernel, then reset before we wrote a byte (a backend that
                # died with connections in its accept queue): a refused connect, in effect.
                self._fail_upstream(UpstreamError(502, "backend reset the new connection",
                                                  retryable=True, unsent=True))
                return
            self._attach(upstream)
        except Exception:
            self.internal_error("backend connect")

    def _attach(self, upstream: UpstreamProtocol) -> None:
        request = self.request
        assert request is not None and upstream.transport is not None
        self.upstream = upstream
        upstream.start(self, request.method == b"HEAD", self.upgrade)
        upstream.transport.write(self.head_out)
        self.deadline = self.started + self.snapshot.timeouts.backend_response
        self.deadline_status = 504
        if self.paused:
            self._resume(PAUSE_NO_UPSTREAM)
        if self.pending:
            pending, self.pending = self.pending, b""
            self._body(pending)

    def _fail_upstream(self, error: UpstreamError | HttpError) -> None:
        """A backend failed before the response started: retry elsewhere or answer."""
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.abort()
        if self.backend is not None:
            self.tried = (*self.tried, self.backend)
        self._release_backend(failed=True)
        request, pool = self.request, self.pool
        if request is None or pool is None or self.state == CLOSED:
            return
        retryable = isinstance(error, UpstreamError) and error.retryable
        if not retryable:  # sent already: only requests that may run twice, with no body
            retryable = (request.method in IDEMPOTENT and not request.body
                         and isinstance(error, UpstreamError) and error.status == 502)
        unsent = isinstance(error, UpstreamError) and error.unsent
        if retryable and len(self.tried) <= pool.spec.retries \
                and (unsent or pool.take_retry()):
            self._pick_and_send()
            return
        self._gateway_error(HttpError(error.status, error.reason))

    def _release_backend(self, failed: bool) -> None:
        backend, self.backend = self.backend, None
        if backend is None:
            return
        backend.active -= 1
        pool = self.pool
        if pool is not None and pool.queue is not None:
            self._wake_queue(pool.queue)
        if failed:
            backend.failures += 1
            backend.responses[5] += 1
            if backend.monitor is not None:  # passive outlier detection
                backend.monitor.gateway_error()

    # -- request body -------------------------------------------------------------------
    def _body(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is None or upstream.transport is None:
            self.pending += data
            if len(self.pending) > PIPELINE_BUFFER:  # queued: hold no more than this
                self._pause(PAUSE_NO_UPSTREAM)
            return
        self.deadline = self.worker.loop.time() + self.snapshot.timeouts.backend_response
        if self.decoder is None:
            left = self.body_left
            if len(data) < left:
                self.body_left = left - len(data)
                upstream.transport.write(data)
                return
            upstream.transport.write(data[:left])
            self.body_left = 0
            self._request_complete(data[left:])
            return
        pieces: list[bytes] = []
        try:
            used = self.decoder.feed(data, pieces)
        except HttpError as exc:
            self._abort_request(exc)
            return
        out: list[bytes] = []
        for piece in pieces:
            self.body_seen += len(piece)
            out.extend(chunk(piece))
        limit = self.snapshot.limits.max_body_bytes
        if limit and self.body_seen > limit:
            self._abort_request(HttpError(413, "request body too large"))
            return
        if self.decoder.done:
            out.append(LAST_CHUNK)
        upstream.transport.writelines(out)
        if self.decoder.done:
            self._request_complete(data[used:])

    def _abort_request(self, error: HttpError) -> None:
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.abort()
        self._release_backend(failed=False)
        self._reject(error)

    def _request_complete(self, rest: bytes) -> None:
        self.request_done = True
        self.buffer = rest
        if self.state == BODY:
            self.state = WAIT

    def upstream_lost(self, upstream: UpstreamProtocol, exc: Exception | None,
                      got_bytes: bool) -> None:
        if upstream is not self.upstream:
            return
        if self.state == TUNNEL:
            self.upstream = None
            self._release_backend(failed=False)
            self.state = CLOSED
            if self.transport is not None:
                self.transport.close()
            return
        if self.response_started:
            self.response_broken(upstream)
            return
        if upstream.uses > 1 and not got_bytes and self._replayable() and not self.stale_retry:
            # A pooled connection the backend closed as we reused it: once more, afresh.
            self.stale_retry = True
            self.upstream = None
            upstream.abort()
            self._release_backend(failed=False)
            self._pick_and_send()
            return
        self._fail_upstream(UpstreamError(502, "backend closed the connection", retryable=False))

    def upstream_failed(self, upstream: UpstreamProtocol, error: HttpError) -> None:
        if self.response_started:
            self.response_broken(upstream)
            return
        self.upstream = upstream  # so that _fail_upstream aborts it
        self._fail_upstream(UpstreamError(error.status, error.reason, retryable=False))

    def _replayable(self) -> bool:
        request = self.request
        return request is not None and not request.body

    # -- end of a request ---------------------------------------------------------------
    def _finish(self) -> None:
        worker = self.worker
        self._account()
        if self.state == CLOSED:
            return
        if not self.keep_alive or worker.stopping:
            self.state = CLOSED
            assert self.transport is not None
            self.transport.close()
            return
        rest = self.buffer
        if rest:
            self.buffer = b""
        self._idle(rest)

    def _account(self) -> None:
        """A request answered: counted, logged, its backend slot given back."""
        worker = self.worker
        worker.stats.requests += 1
        access_log = self.snapshot.access_log
        if access_log is not None and self.request is not None:
            access_log(self, worker.loop.time() - self.started)
        backend = self.backend
        if backend is not None:
            self.backend = None
            backend.active -= 1
            queue = self.pool.queue  # type: ignore[union-attr]
            if queue is not None:
                self._wake_queue(queue)
        if self.request_cell:
            worker.limiter.finish_request(self.request_cell)
            self.request_cell = 0
        self.request = None

    def _idle(self, rest: bytes) -> None:
        worker = self.worker
        self.state = HEAD
        self.deadline = (self.answered or worker.loop.time()) \
            + self.snapshot.timeouts.idle_keepalive
        self.answered = self.started = 0.0
        self.head_out = b""  # an idle connection keeps nothing of the request it served
        self.decoder = self.upgrade = None
        self.deadline_status = 0
        if self.paused:
            self._resume(PAUSE_PIPELINE)
        if rest:
            if self.writing_paused:  # a client not reading its responses gets no more
                self.buffer = rest
                self._pause(PAUSE_CLIENT_FULL)
                return
            self._heads(rest)

    def _gateway_error(self, error: HttpError) -> None:
        """A backend failed (502/503/504) after the whole request was read: the client's
        stream is intact, so its connection stays open for the next request."""
        if not self.request_done or not self.keep_alive or self.worker.stopping \
                or self.transport is None or self.state == CLOSED:
            self._reject(error)
            return
        self._drop_request(error)
        self.transport.write(error_response(error.status, close=False, message=error.reason,
                                            keep_alive_1_0=self.minor == 0,
                                            headers=error.headers))
        self._resume(PAUSE_NO_UPSTREAM)
        rest, self.buffer = self.buffer, b""
        self._idle(rest)

    def _reject(self, error: HttpError) -> None:
        """Answer with an error of our own and close: the stream cannot be trusted after it."""
        self._drop_request(error)
        self.state = CLOSED
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(error_response(error.status, close=True, message=error.reason,
                                                headers=error.headers))
            self.transport.close()

    def _internal_error(self) -> None:
        """A bug (see ClientBase.internal_error): 500 and close, or, once a response has
        started, just close; either way the request gives back what it holds."""
        error = HttpError(500, "internal error")
        if not self.response_started and self.state not in (TUNNEL, CLOSED):
            self._reject(error)
            return
        self._drop_request(error)
        self.state = CLOSED
        if self.transport is not None:
            self.transport.abort()

    def _drop_request(self, error: HttpError) -> None:
        """Count and log a request answered with an error of ours; free its backend."""
        self.worker.stats.rejected += 1
        self.status = error.status
        upstream, self.upstream = self.upstream, None
        if upstream is not None:
            upstream.abort()
        self._release_backend(failed=False)
        self._end_limits(ABANDONED)
        access_log = self.snapshot.access_log
        if access_log is not None and self.request is not None:
            access_log(self, self.worker.loop.time() - self.started)
        self.request = None
