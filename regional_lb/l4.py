"""The TCP proxy: one backend connection per client connection, bytes both ways.

Connect failures and timeouts move on to the next backend (within the pool's retry
budget). Each side's full buffer pauses reading from the other; a FIN from one side is
passed on as a FIN (half-close); no bytes either way for ``tcp_idle`` closes both.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from gtm import log
from regional_lb import proxyproto
from regional_lb.balancing import BackendState, PoolState, pick
from regional_lb.tls.contexts import backend_tls

if TYPE_CHECKING:
    from regional_lb.snapshot import Snapshot
    from regional_lb.worker import Worker

MAX_EARLY = 65536  # client bytes held while the backend connection is being made


class TcpUpstream(asyncio.Protocol):
    def __init__(self, session: TcpSession):
        self.session = session
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            session = self.session
            session.deadline = session.worker.loop.time() + session.snapshot.timeouts.tcp_idle
            assert session.transport is not None
            session.transport.write(data)
        except Exception:
            self.session.internal_error("backend data_received")

    def eof_received(self) -> bool:
        try:
            return self.session.half_close(from_client=False)
        except Exception:
            self.session.internal_error("backend eof_received")
            return False

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.session.upstream_closed()
        except Exception:
            self.session.internal_error("backend connection_lost")

    def pause_writing(self) -> None:
        if self.session.transport is not None:
            self.session.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.session.transport is not None and not self.session.transport.is_closing():
            self.session.transport.resume_reading()


class TcpSession(asyncio.Protocol):
    """The client side of one proxied TCP connection."""

    def __init__(self, worker: Worker, listener_name: str):
        self.worker = worker
        self.snapshot: Snapshot = worker.snapshot  # the one it accepted under (a session
        # is one "request": it keeps its timeouts and pool for its whole life)
        self.listener_name = listener_name
        self.transport: asyncio.Transport | None = None
        self.upstream: TcpUpstream | None = None
        self.backend: BackendState | None = None
        self.early = b""
        self.deadline = 0.0
        self.peer: proxyproto.Address = ("0.0.0.0", 0)
        self.local: proxyproto.Address = ("0.0.0.0", 0)
        self.awaiting_proxy_header = False
        self.client_eof = False
        self.upstream_eof = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        worker = self.worker
        self.snapshot = snapshot = worker.snapshot
        if len(worker.connections) >= snapshot.limits.max_client_connections:
            self.closed = True
            transport.close()  # over the limit: refused before any work
            return
        worker.connections.add(self)
        peer = transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1])
        local = transport.get_extra_info("sockname")
        self.local = (local[0], local[1])
        self.deadline = worker.loop.time() + snapshot.timeouts.tcp_idle
        listener = snapshot.listeners.get(self.listener_name)
        if listener is None:
            transport.close()
            return
        if listener.tls is not None:
            listener.tls.count(transport)
        if listener.spec.proxy_protocol and worker.trusted(listener, peer[0]):
            self.awaiting_proxy_header = True
            return
        self._start(listener.pool)

    def _start(self, pool: PoolState) -> None:
        assert self.transport is not None
        self.transport.pause_reading()
        self.worker.spawn(self._connect(pool))

    def data_received(self, data: bytes) -> None:
        try:
            self.deadline = self.worker.loop.time() + self.snapshot.timeouts.tcp_idle
            upstream = self.upstream
            if upstream is not None and upstream.transport is not None:
                upstream.transport.write(data)
                return
            self.early += data
            if self.awaiting_proxy_header:
                self._proxy_header()
            elif len(self.early) > MAX_EARLY and self.transport is not None:
                self.transport.pause_reading()
        except Exception:
            self.internal_error("data_received")

    def _proxy_header(self) -> None:
        try:
            parsed = proxyproto.parse_proxy_header(self.early)
        except proxyproto.ProxyHeaderError:
            self.close(abort=True)
            return
        if parsed is None:
            return
        source, used = parsed
        if source is not None:
            self.peer = source
        self.early = self.early[used:]
        self.awaiting_proxy_header = False
        listener = self.snapshot.listeners.get(self.listener_name)
        if listener is None:
            self.close(abort=True)
            return
        self._start(listener.pool)

    async def _connect(self, pool: PoolState) -> None:
        worker = self.worker
        tried: list[BackendState] = []
        held: BackendState | None = None  # a backend slot taken, not yet the session's
        try:
            pool.admit_request()
            while not self.closed:
                backend = pick(pool, self.peer[0].encode(), worker.loop.time(), tried)
                if backend is None:
                    break
                tried.append(backend)
                backend.active += 1
                held = backend
                backend.requests += 1
                context, server_name = backend_tls(pool.spec, backend.host)
                try:
                    _, upstream = await asyncio.wait_for(
                        worker.loop.create_connection(
                            lambda: TcpUpstream(self), backend.host, backend.port,
                            ssl=context, server_hostname=server_name),
                        self.snapshot.timeouts.backend_connect)
                except (TimeoutError, OSError) as exc:
                    backend.active -= 1
                    held = None
                    backend.failures += 1
                    if backend.monitor is not None:  # passive outlier detection
                        backend.monitor.gateway_error()
                    # Refused or reset: nothing reached a backend, so the retry is free (a
                    # timeout may be an overloaded backend: that one is charged).
                    free = not isinstance(exc, TimeoutError)
                    if len(tried) > pool.spec.retries or not (free or pool.take_retry()):
                        break
                    continue
                self._connected(backend, upstream, pool)
                return
            self.close(abort=True)
        except Exception:
            if held is not None and self.backend is not held:
                held.active -= 1  # the session's own slot is given back by its close
            self.internal_error("backend connect")

    def _connected(self, backend: BackendState, upstream: TcpUpstream, pool: PoolState) -> None:
        assert upstream.transport is not None
        if self.closed:
            upstream.transport.close()
            backend.active -= 1  # last: a failure before it leaves the slot to _connect
            return
        self.backend = backend
        self.upstream = upstream
        if backend.monitor is not None:
            backend.monitor.connected()
        if pool.spec.proxy_protocol != "off":
            upstream.transport.write(proxyproto.build(pool.spec.proxy_protocol, self.peer,
                                                      self.local))
        if self.early:
            upstream.transport.write(self.early)
            self.early = b""
        if self.client_eof and upstream.transport.can_write_eof():
            upstream.transport.write_eof()
        elif self.transport is not None:
            self.transport.resume_reading()

    def eof_received(self) -> bool:
        try:
            keep = self.half_close(from_client=True)
            # A TLS transport closes after an EOF whatever this returns (and warns about True).
            return keep and (self.transport is None
                             or self.transport.get_extra_info("sslcontext") is None)
        except Exception:
            self.internal_error("eof_received")
            return False

    def half_close(self, from_client: bool) -> bool:
        """Pass a FIN on; close both once both directions have ended."""
        if from_client:
            self.client_eof = True
            target = self.upstream.transport if self.upstream is not None else None
        else:
            self.upstream_eof = True
            target = self.transport
        if self.client_eof and self.upstream_eof:
            self.close()
            return False
        if target is not None and target.can_write_eof():
            target.write_eof()
        return True

    def pause_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None \
                and not upstream.transport.is_closing():
            upstream.transport.resume_reading()

    def upstream_closed(self) -> None:
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        try:
            self.worker.connections.discard(self)
            self.close(abort=exc is not None)
        except Exception:
            self.internal_error("connection_lost")

    def close(self, abort: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        self.worker.connections.discard(self)
        if self.backend is not None:
            self.backend.active -= 1
            self.backend = None
        for transport in (self.transport, self.upstream.transport if self.upstream else None):
            if transport is not None and not transport.is_closing():
                if abort:
                    transport.abort()
                else:
                    transport.close()

    def internal_error(self, where: str) -> None:
        """The catch-all of the entry points (both sides' callbacks, the timeout, the
        connect task): a bug is logged once with its context and the session closed, which
        gives its backend slot back once."""
        try:
            backend = self.backend
            log.lb.exception("internal error in TCP %s: listener %s, client %s:%d, backend "
                             "%s; closed", where, self.listener_name, self.peer[0],
                             self.peer[1], backend.key if backend is not None else "-")
            self.close(abort=True)
        except Exception:
            log.lb.exception("internal error in the TCP catch-all (listener %s): session "
                             "aborted", self.listener_name)
            self.closed = True
            for transport in (self.transport, self.upstream.transport if self.upstream else None):
                if transport is not None:
                    transport.abort()
        backend, self.backend = self.backend, None
        if backend is not None:  # close() failed before giving it back
            backend.active -= 1

    def on_timeout(self, now: float) -> None:
        try:
            self.close(abort=True)
        except Exception:
            self.internal_error("on_timeout")

    @property
    def idle(self) -> bool:
        return False
