"""Connections to backends: one request at a time, pooled while idle (keep-alive).

The protocol parses the response head, decides the body's framing, and streams the
body to the client protocol that owns it for the moment. Backpressure runs both ways:
a full client buffer pauses reading here, a full buffer here pauses the client.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

from regional_lb.balancing import BackendState
from regional_lb.errors import HttpError, UpstreamError
from regional_lb.l7.parser import (
    ChunkedDecoder,
    Response,
    chunk,
    parse_response_cached,
    upgrade_name,
)
from regional_lb.l7.rewrite import interim_response, response_head
from regional_lb.tls.contexts import backend_tls

if TYPE_CHECKING:
    from regional_lb.config import PoolSpec
    from regional_lb.l7.proxy import ClientProtocol

# Response states.
IDLE, HEAD, LENGTH, CHUNKED, UNTIL_CLOSE, TUNNEL, DONE = range(7)
MAX_RESPONSE_HEAD = 65536
CHUNKED_LINE = b"\r\nTransfer-Encoding: chunked"


async def connect(backend: BackendState, timeout: float,
                  pool: PoolSpec | None = None) -> UpstreamProtocol:
    """A new connection to a backend; UpstreamError (retryable) when it cannot be made.

    A pool with ``tls`` gets a verified TLS connection (SNI: its server name or the host).
    """
    loop = asyncio.get_running_loop()
    context, server_name = backend_tls(pool, backend.host)
    try:
        _, upstream = await asyncio.wait_for(
            loop.create_connection(lambda: UpstreamProtocol(backend), backend.host, backend.port,
                                   ssl=context, server_hostname=server_name),
            timeout)
    except TimeoutError as exc:
        raise UpstreamError(504, "backend connect timeout", retryable=True) from exc
    except OSError as exc:
        raise UpstreamError(502, f"backend connect failed: {exc}", retryable=True,
                            unsent=True) from exc
    return upstream


def _switch_problem(offered: bytes | None, chosen: bytes | None) -> str:
    """Why a backend's 101 cannot be tunnelled ("" when it can): it must switch to one
    of the protocols the request offered (RFC 9110 7.8), nothing else."""
    if offered is None:
        return "101 without an upgrade request"
    names = {upgrade_name(item) for item in offered.split(b",")}
    picked = [upgrade_name(item) for item in (chosen or b"").split(b",") if item.strip()]
    if not picked or any(name not in names for name in picked):
        return "101 to a protocol the request did not offer"
    return ""


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self, backend: BackendState):
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.client: ClientProtocol | None = None
        self.state = IDLE
        self.buffer = b""
        self.left = 0
        self.decoder: ChunkedDecoder | None = None
        self.raw_chunks = True     # forward validated chunked bytes as they are
        self.chunk_out = False     # until-close body re-framed as chunks for the client
        self.keep = True           # may go back to the idle pool after this response
        self.uses = 0
        self.got_bytes = False
        self.closed = False
        self.no_body = False
        self.upgrade: bytes | None = None  # protocols offered in the request's Upgrade

    # -- lifecycle ----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.backend.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.backend.connections -= 1
        client = self.client
        if client is None:
            with contextlib.suppress(ValueError):
                self.backend.idle.remove(self)
            return
        try:
            if self.state == UNTIL_CLOSE:
                self.state = DONE
                client.response_end(self, b"0\r\n\r\n" if self.chunk_out else b"")
            elif self.state != DONE:
                client.upstream_lost(self, exc, self.got_bytes)
        except Exception:
            client.internal_error("backend connection_lost")

    def start(self, client: ClientProtocol, no_body: bool, upgrade: bytes | None) -> None:
        """Take on one request: the client writes its head and body to our transport."""
        self.client = client
        self.state = HEAD
        self.buffer = b""
        self.no_body = no_body
        self.upgrade = upgrade
        self.got_bytes = False
        self.uses += 1
        transport = self.transport
        if transport is not None and not transport.is_reading():
            transport.resume_reading()  # paused for a slow client of an earlier request

    def release(self) -> bool:
        """Back to the pool after a clean response; False when it must close instead."""
        self.client = None
        if not self.keep or self.closed or self.state != DONE or self.buffer:
            self.close()
            return False
        self.state = IDLE
        return True

    def close(self) -> None:
        self.client = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def abort(self) -> None:
        self.client = None
        if self.transport is not None:
            self.transport.abort()

    # -- flow control -------------------------------------------------------------------
    def pause_writing(self) -> None:
        if self.client is not None:
            self.client.pause_for_upstream(True)

    def resume_writing(self) -> None:
        if self.client is not None:
            self.client.pause_for_upstream(False)

    # -- response -----------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        client = self.client
        if client is None:
            self.abort()  # bytes from an idle connection: nothing asked for them
            return
        try:
            self.got_bytes = True
            state = self.state
            if state == LENGTH:
                self._length(client, data)
            elif state == HEAD:
                self._head(client, data)
            elif state == TUNNEL:
                client.transport.write(data)  # type: ignore[union-attr]
            elif state == CHUNKED:
                self._chunked(client, data)
            elif state == UNTIL_CLOSE:
                client.response_data(chunk(data) if self.chunk_out else [data])
            else:
                self.keep = False  # bytes after the response: never reuse this connection
        except Exception:
            client.internal_error("backend data_received")
            self.abort()  # whatever the client did with it, it is not reused

    def _length(self, client: ClientProtocol, data: bytes) -> None:
        left = self.left
        if len(data) < left:
            self.left = left - len(data)
            client.response_data([data])
            return
        self.state = DONE
        if len(data) > left:
            self.keep = False
            data = data[:left]
        client.response_end(self, data)

    def _chunked(self, client: ClientProtocol, data: bytes) -> None:
        decoder = self.decoder
        assert decoder is not None
        pieces: list[bytes] = []
        try:
            used = decoder.feed(data, pieces)
        except HttpError:
            self.keep = False
            client.response_broken(self)
            return
        if used < len(data):
            self.keep = False
        if self.raw_chunks:
            pieces = [data[:used] if used < len(data) else data]
        if decoder.done:
            self.state = DONE
            if not self.raw_chunks:
                client.response_data(pieces)
                pieces = []
            client.response_end(self, b"".join(pieces))
        else:
            client.response_data(pieces)

    def _head(self, client: ClientProtocol, data: bytes) -> None:
        if not self.buffer and not self.no_body:
            # The fast path: one whole keep-alive response with a head seen before.
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                response = client.snapshot.responses.get(data[:end])
                if response is not None and response.plain \
                        and len(data) == end + 4 + response.content_length:  # type: ignore[operator]
                    self.state = DONE
                    client.plain_response(self, response, data[end + 4 :])
                    return
        if self.buffer:
            data = self.buffer + data
            self.buffer = b""
        while True:
            end = data.find(b"\r\n\r\n")
            if end < 0:
                if len(data) > MAX_RESPONSE_HEAD:
                    self.keep = False
                    client.upstream_failed(self, HttpError(502, "response head too large"))
                else:
                    self.buffer = data
                return
            head, data = data[:end], data[end + 4 :]
            responses = client.snapshot.responses
            try:
                response = responses.get(head) or parse_response_cached(responses, head)
            except HttpError as exc:
                self.keep = False
                client.upstream_failed(self, exc)
                return
            if response.status >= 200 or response.status == 101:
                break
            client.interim(interim_response(response))
        head_out = self._begin(client, response)
        if head_out is None:  # failed, or a tunnel (already started)
            if data and self.state == TUNNEL and self.client is not None:
                self.data_received(data)
            return
        state = self.state
        if state == LENGTH and len(data) >= self.left:
            # The usual small response: head and whole body in one write (one syscall).
            self.state = DONE
            if len(data) > self.left:
                self.keep = False  # bytes after a complete response: never reuse
            client.response_start(self, response, head_out + data[: self.left])
            client.response_end(self, b"")
        elif state == DONE:
            if data:
                self.keep = False
            client.response_start(self, response, head_out)
            client.response_end(self, b"")
        else:
            client.response_start(self, response, head_out)
            if data and self.client is not None:
                self.data_received(data)

    def _begin(self, client: ClientProtocol, response: Response) -> bytes | None:
        """Decide the body's framing; the head for the client (None: failed or tunnel)."""
        if response.close:
            self.keep = False
        extra = client.listener.via[response.minor]
        status = response.status
        if status == 101:
            problem = _switch_problem(self.upgrade, response.upgrade)
            if problem:
                self.keep = False
                client.upstream_failed(self, HttpError(502, problem))
                return None
            self.state = TUNNEL
            extra += b"\r\nConnection: upgrade"
            if response.upgrade is not None:
                extra += b"\r\nUpgrade: " + response.upgrade
            client.response_start(self, response, response_head(response, extra), tunnel=True)
            return None
        # A backend closing after an error may have lost track of the stream: so do we.
        close_client = response.close and status >= 400
        if self.no_body or status in (204, 304):
            self.state = DONE
        elif response.chunked:
            self.state = CHUNKED
            self.decoder = ChunkedDecoder()
            self.raw_chunks = client.minor == 1
            if self.raw_chunks:
                extra += CHUNKED_LINE
            else:
                close_client = True
        elif response.content_length is not None:
            self.left = response.content_length
            self.state = LENGTH if self.left else DONE
        else:
            self.state = UNTIL_CLOSE
            self.keep = False
            self.chunk_out = client.minor == 1
            if self.chunk_out:
                extra += CHUNKED_LINE
            else:
                close_client = True
        if self.no_body and response.chunked:
            extra += CHUNKED_LINE
        return response_head(response, extra + client.connection_header(close_client))
