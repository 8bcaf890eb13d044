"""The DNS transports: thin asyncio protocols in front of the Engine."""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable

from gtm import log
from gtm.dns.engine import Engine
from gtm.dns.operations import is_operation


class UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, engine: Engine):
        self.engine = engine
        # The engine clears this dict in place on every swap, so holding it is safe
        # and saves an attribute lookup per packet.
        self.cache = engine.udp_cache
        self.cache_hit = engine.cache_hit
        self.sendto: Callable[..., None] = _not_connected

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sendto = transport.sendto  # type: ignore[attr-defined]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = self.cache_hit(self.cache, data)
        trusted = False  # a valid server cookie: never rate-limited
        if reply is None:
            operations = self.engine.operations
            if operations is not None and is_operation(data, False):
                operations.datagram(data, addr, self.sendto)
                return
            reply = self.engine.respond_uncached(data, False, addr[0])
            trusted = self.engine.verified_cookie
        limiter = self.engine.limiter
        if reply is not None and limiter is not None and not trusted:
            reply = limiter.limit_text(addr[0], reply, time.monotonic())
        if reply is not None:
            self.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.dns.debug("UDP socket error: %s", exc)


def _not_connected(data: bytes, addr: object) -> None:
    raise RuntimeError("datagram received before the transport was made")


class TcpProtocol(asyncio.Protocol):
    """DNS over TCP (RFC 7766): length-prefixed messages, pipelined, answered in order.

    Two clocks bound what a client can make the server hold: the idle timeout (no
    bytes at all) and the message deadline, which starts with a message's first byte
    and ends the connection unless the whole message is in by then, so a client
    trickling one byte every few seconds is closed as Knot closes it. ``per_client``
    counts this worker's connections by client address; beyond ``max_per_client``
    (0: no cap) a new one is closed at once.
    """

    def __init__(self, engine: Engine, idle_timeout: float, connections: set[TcpProtocol],
                 message_timeout: float = 3.0, per_client: dict[str, int] | None = None,
                 max_per_client: int = 0):
        self.engine = engine
        self.idle_timeout = idle_timeout
        self.message_timeout = message_timeout
        self.connections = connections
        self.per_client = per_client if per_client is not None else {}
        self.max_per_client = max_per_client
        self.counted: str | None = None  # the address whose place in per_client it holds
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.idle_timer: asyncio.TimerHandle | None = None
        self.message_timer: asyncio.TimerHandle | None = None
        self.peer: str | None = None
        # A transfer or an update being answered: later messages wait in the buffer, so
        # answers stay in order; a full send buffer pauses the transfer (drain).
        self.operation: asyncio.Task[None] | None = None
        self.writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peername = transport.get_extra_info("peername")
        self.peer = peername[0] if peername else None
        self.connections.add(self)
        if self.peer is not None and self.max_per_client:
            held = self.per_client.get(self.peer, 0)
            if held >= self.max_per_client:
                log.dns.debug("TCP client %s is at its %d connections: closing a new one",
                              self.peer, self.max_per_client)
                self.close()
                return
            self.per_client[self.peer] = held + 1
            self.counted = self.peer
        self._arm_idle_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self.connections.discard(self)
        peer, self.counted = self.counted, None
        if peer is not None:
            held = self.per_client.get(peer, 1) - 1
            if held > 0:
                self.per_client[peer] = held
            else:
                del self.per_client[peer]
        for timer in (self.idle_timer, self.message_timer):
            if timer is not None:
                timer.cancel()
        if self.operation is not None:
            self.operation.cancel()
        self._wake_writer()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._arm_idle_timer()
        self._answer_buffered()

    def _answer_buffered(self) -> None:
        while len(self.buffer) >= 2 and self.operation is None:
            (length,) = struct.unpack_from("!H", self.buffer)
            if len(self.buffer) < 2 + length:
                break
            message = bytes(self.buffer[2 : 2 + length])
            del self.buffer[: 2 + length]
            self._message_done()
            operations = self.engine.operations
            if operations is not None and is_operation(message, True):
                self.operation = asyncio.ensure_future(
                    operations.stream(message, self.peer, self))
                self.operation.add_done_callback(self._operation_done)
                break
            reply = self.engine.respond(message, tcp=True, peer=self.peer)
            if reply is None:
                # A packet that gets no reply over UDP ends a TCP conversation.
                self.close()
                return
            assert self.transport is not None
            self.transport.write(struct.pack("!H", len(reply)) + reply)
        self._watch_partial_message()

    def _watch_partial_message(self) -> None:
        """Start the message deadline when the buffer begins with an incomplete message
        (a whole one waiting behind a transfer is ours to answer, not late)."""
        buffer = self.buffer
        partial = bool(buffer) and (len(buffer) < 2
                                    or len(buffer) < 2 + struct.unpack_from("!H", buffer)[0])
        if partial and self.message_timer is None:
            self.message_timer = asyncio.get_running_loop().call_later(
                self.message_timeout, self._message_late)
        elif not partial:
            self._message_done()

    def _message_done(self) -> None:
        if self.message_timer is not None:
            self.message_timer.cancel()
            self.message_timer = None

    def _message_late(self) -> None:
        self.message_timer = None
        log.dns.debug("TCP client %s did not finish a message within %s s: closing",
                      self.peer, self.message_timeout)
        self.close()

    def _operation_done(self, task: asyncio.Task[None]) -> None:
        self.operation = None
        if not task.cancelled() and task.exception() is not None:
            log.dns.error("a transfer or update failed: %s", task.exception())
            self.close()
        elif self.transport is not None and not self.transport.is_closing():
            self._answer_buffered()

    def send(self, message: bytes) -> None:
        """One message of an operation's answer (a transfer sends many)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(struct.pack("!H", len(message)) + message)
            self._arm_idle_timer()

    async def drain(self) -> None:
        """Until the client has read enough of what was sent (or is gone)."""
        if self.writable is not None:
            await asyncio.shield(self.writable)

    def pause_writing(self) -> None:
        # A client that does not read its answers gets no more of them read for it.
        if self.transport is not None:
            self.transport.pause_reading()
        if self.writable is None:
            self.writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        self._wake_writer()

    def _wake_writer(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _arm_idle_timer(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
        loop = asyncio.get_running_loop()
        self.idle_timer = loop.call_later(self.idle_timeout, self.close)
