"""HTTP/2 toward clients: one protocol object per connection, owning an h2 state machine.

A connection comes here from :class:`ClientProtocol` once it is known to speak HTTP/2:
ALPN ``h2`` after a TLS handshake, or the connection preface on an ``h2c`` listener
(prior knowledge; never by ``Upgrade: h2c``). Frames are parsed and answered by the
``h2`` library (a sans-IO state machine); each stream is an
:class:`regional_lb.l7.http2_stream.Http2Stream`, which goes to the backends (over
HTTP/1.1) exactly as an HTTP/1.1 request would.

Limits, and what a client that passes one gets (counted in
``gtm_lb_http2_goaways_total{reason}`` and ``gtm_lb_http2_stream_errors_total{reason}``):

- ``max_concurrent_streams`` (SETTINGS): more open at once is h2's connection error,
  GOAWAY(PROTOCOL_ERROR) (reason ``too_many_streams``).
- Header lists: SETTINGS_MAX_HEADER_LIST_SIZE says ``max_header_bytes``; a request
  whose head is larger gets 431, as in HTTP/1.1 (RFC 9113 10.5.1: the block is still
  decoded, for HPACK's state). Twice that is the hard cap: a decoded list over it is
  GOAWAY(ENHANCE_YOUR_CALM) (h2's HPACK bomb guard, ``header_list``), and so is an
  encoded block (HEADERS plus every CONTINUATION, with their frame heads) counted over
  it as it arrives: a CONTINUATION flood ends there (``continuation_flood``) before h2
  buffers it (h2 alone would hold up to 64 frames of 16 KiB).
- Frames longer than 16384 bytes (our SETTINGS_MAX_FRAME_SIZE) are GOAWAY
  (FRAME_SIZE_ERROR) at their 9-byte head (``frame_size``), before their payload is
  buffered (h2 would wait for all of an announced 16 MiB).
- Rapid reset (CVE-2023-44487): more than ``max_resets`` RST_STREAM frames from the
  client within ``abuse_window`` seconds is GOAWAY(ENHANCE_YOUR_CALM) (``rapid_reset``).
  Each reset stream's backend connection is aborted and its slot freed at once.
- SETTINGS, PING, PRIORITY and unknown frames: more than ``max_control_frames`` per
  window is GOAWAY(ENHANCE_YOUR_CALM) (``control_flood``). While the client does not
  read what we send (PING answers included) we stop reading from it.
- A malformed request (RFC 9113 8.1.1: connection-specific fields, TE other than
  trailers, upper-case names, missing or unknown pseudo-headers, whitespace around a
  value, CR/LF/NUL, Host differing from :authority, content-length not matching DATA)
  is RST_STREAM(PROTOCOL_ERROR) on that stream only (``malformed``); what HTTP/1.1
  answers with a status (431, 413, 400 for a bad Host, 501 for CONNECT) is that status.
- Flow control: a stream's request body is acknowledged (WINDOW_UPDATE) only as it is
  written to the backend, so a slow backend slows its client; response bytes are sent
  within the client's windows, and a stream holding more than 64 KiB unsent (or whose
  window is shut) stops reading its backend. A stream that makes no progress either way
  for ``backend_response`` seconds is RST_STREAM(CANCEL) and its backend connection
  aborted (``stalled``): a zero-window client cannot hold a backend slot.
- Idle: a connection without streams is closed after ``idle_keepalive`` (before its
  first stream, ``header_read``) with GOAWAY(NO_ERROR) (``idle``).
- Drain (SIGTERM, or a reload that removes the listener or its HTTP/2): GOAWAY(NO_ERROR)
  naming the last stream taken (``drain``); streams after it are REFUSED_STREAM (safe to
  retry elsewhere), those before it finish, then the connection closes (at the latest
  at ``shutdown_deadline``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import (
    DenialOfServiceError,
    FlowControlError,
    ProtocolError,
    StreamClosedError,
    TooManyStreamsError,
)
from h2.settings import SettingCodes, Settings
from hyperframe.frame import GoAwayFrame

from gtm import log
from regional_lb.l7.client_base import CLOSED
from regional_lb.l7.http2_stream import Http2Stream

if TYPE_CHECKING:
    from regional_lb.config_http2 import Http2Settings
    from regional_lb.snapshot import Listener, Snapshot
    from regional_lb.worker import Worker

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
MAX_FRAME = 16384  # SETTINGS_MAX_FRAME_SIZE: h2's default, which we never raise
CONNECTION_WINDOW_STREAMS = 16  # the connection's window: this many streams' worth
HEADER_CAP_FACTOR = 2  # header blocks up to this many max_header_bytes get 431, not GOAWAY
# Frame types (RFC 9113 6) the guard looks at.
HEADERS, PRIORITY, RST_STREAM, SETTINGS, PING, CONTINUATION = 1, 2, 3, 4, 6, 9
END_HEADERS = 0x4
KNOWN_FRAMES = 10  # types 0-9; ALTSVC, ORIGIN and the like count as control frames

# Headers are bytes both ways; the balancer checks requests itself (a malformed request
# is a stream error, where h2's own check would end the whole connection) and what it
# sends was parsed strictly from the backend already.
H2_CONFIG = H2Configuration(client_side=False, header_encoding=None,
                            validate_inbound_headers=False,
                            normalize_inbound_headers=False,
                            validate_outbound_headers=False,
                            normalize_outbound_headers=False)


class Http2Counters:
    """One listener's HTTP/2 figures in one worker (read by gtm/metrics.py)."""

    __slots__ = ("connections", "goaways", "open", "stream_errors", "streams")

    def __init__(self) -> None:
        self.connections = 0  # accepted, ever
        self.open = 0
        self.streams = 0
        self.goaways: dict[str, int] = {}        # reason -> GOAWAY frames sent
        self.stream_errors: dict[str, int] = {}  # reason -> RST_STREAM frames sent


class Http2Stats:
    """A worker's HTTP/2 counters, by listener name (they outlive reloads)."""

    def __init__(self) -> None:
        self.listeners: dict[str, Http2Counters] = {}

    def counters(self, listener: str) -> Http2Counters:
        counters = self.listeners.get(listener)
        if counters is None:
            counters = self.listeners[listener] = Http2Counters()
        return counters

    def sample(self) -> list[tuple[str, int, int, int, dict[str, int], dict[str, int]]]:
        return [(name, c.connections, c.open, c.streams, dict(c.goaways),
                 dict(c.stream_errors)) for name, c in self.listeners.items()]


class Abuse(Exception):
    def __init__(self, code: ErrorCodes, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason = code, reason


class FrameGuard:
    """Reads the 9-byte head of every frame before h2 gets the bytes, for the limits h2
    checks too late (after buffering) or not at all: see the module's docstring."""

    __slots__ = ("block", "controls", "head", "max_block", "preface", "resets", "settings",
                 "skip", "window_end")

    def __init__(self, settings: Http2Settings, max_block: int):
        self.settings = settings
        self.max_block = max_block
        self.preface = len(PREFACE)  # checked by h2; only skipped here
        self.head = b""   # a frame head split across reads
        self.skip = 0     # payload bytes of the current frame still to come
        self.block = 0    # bytes of the header block being received
        self.resets = self.controls = 0
        self.window_end = 0.0

    def check(self, data: bytes, now: Callable[[], float]) -> None:
        """Raise Abuse when these bytes pass a limit."""
        pos, size = 0, len(data)
        if self.preface:
            pos = min(self.preface, size)
            self.preface -= pos
        while pos < size:
            if self.skip:
                take = min(self.skip, size - pos)
                self.skip -= take
                pos += take
                continue
            if self.head or size - pos < 9:
                need = 9 - len(self.head)
                self.head += data[pos : pos + need]
                pos += need
                if len(self.head) < 9:
                    return
                head, self.head = self.head, b""
            else:
                head = data[pos : pos + 9]
                pos += 9
            length = int.from_bytes(head[:3], "big")
            if length > MAX_FRAME:
                raise Abuse(ErrorCodes.FRAME_SIZE_ERROR, "frame_size",
                            f"a frame of {length} bytes (limit {MAX_FRAME})")
            self.skip = length
            kind = head[3]
            if kind in (HEADERS, CONTINUATION) or self.block:
                self._header_block(length, kind, head[4])
            elif kind == RST_STREAM:
                self._count_reset(now)
            elif kind in (SETTINGS, PING, PRIORITY) or kind >= KNOWN_FRAMES:
                self._count_control(now)

    def _header_block(self, length: int, kind: int, flags: int) -> None:
        if kind not in (HEADERS, CONTINUATION):
            return  # h2 refuses anything between HEADERS and its last CONTINUATION
        self.block += length + 9
        if self.block > self.max_block:
            raise Abuse(ErrorCodes.ENHANCE_YOUR_CALM, "continuation_flood",
                        f"a header block over {self.max_block} bytes")
        if flags & END_HEADERS:
            self.block = 0

    def _window(self, now: Callable[[], float]) -> None:
        current = now()
        if current >= self.window_end:
            self.window_end = current + self.settings.abuse_window
            self.resets = self.controls = 0

    def _count_reset(self, now: Callable[[], float]) -> None:
        self._window(now)
        self.resets += 1
        if self.resets > self.settings.max_resets:
            raise Abuse(ErrorCodes.ENHANCE_YOUR_CALM, "rapid_reset",
                        f"more than {self.settings.max_resets} streams reset in "
                        f"{self.settings.abuse_window:g} s")

    def _count_control(self, now: Callable[[], float]) -> None:
        self._window(now)
        self.controls += 1
        if self.controls > self.settings.max_control_frames:
            raise Abuse(ErrorCodes.ENHANCE_YOUR_CALM, "control_flood",
                        f"more than {self.settings.max_control_frames} SETTINGS, PING, "
                        f"PRIORITY or unknown frames in {self.settings.abuse_window:g} s")


class Http2Connection(asyncio.Protocol):
    def __init__(self, worker: Worker, snapshot: Snapshot, listener_name: str,
                 listener: Listener, client_ip: bytes, tls_headers: bytes,
                 connection_cell: int = 0):
        self.worker = worker
        # The connection's settings come from the snapshot it started with; its timers
        # from its latest stream's (each stream takes the worker's as it begins).
        self.snapshot = snapshot
        self.connection_cell = connection_cell  # per-client connection count it holds
        self.listener_name = listener_name
        self.listener = listener
        self.client_ip = client_ip
        self.tls_headers = tls_headers
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Http2Stream] = {}
        self.deadline = 0.0
        self.closed = False
        self.draining = False
        self.last_stream_id = 0
        self.writing_paused = False
        self.counters = worker.http2.counters(listener_name)
        settings = snapshot.config.http2
        hard_cap = HEADER_CAP_FACTOR * snapshot.limits.max_header_bytes
        self.guard = FrameGuard(settings, hard_cap)
        self.h2 = h2 = H2Connection(config=H2_CONFIG)
        h2.local_settings = Settings(client=False, initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: settings.max_concurrent_streams,
            SettingCodes.MAX_HEADER_LIST_SIZE: snapshot.limits.max_header_bytes,
            SettingCodes.INITIAL_WINDOW_SIZE: settings.initial_window_size,
        })
        h2.decoder.max_header_list_size = hard_cap
        self.window = settings.initial_window_size

    # -- connection -----------------------------------------------------------------------
    def take_over(self, transport: asyncio.Transport, data: bytes) -> None:
        """Become the protocol of a connection ClientProtocol accepted; ``data`` is what it
        read already (the preface, for h2c)."""
        transport.set_protocol(self)
        self.connection_made(transport)
        if data:
            self.data_received(data)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        worker = self.worker
        worker.connections.add(self)
        self.counters.connections += 1
        self.counters.open += 1
        h2 = self.h2
        h2.initiate_connection()
        extra = self.window * CONNECTION_WINDOW_STREAMS - 65535
        if extra > 0:
            h2.increment_flow_control_window(min(extra, 2**31 - 1 - 65535))
        self._flush()
        self.deadline = worker.loop.time() + self.snapshot.timeouts.header_read

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed:
            self.closed = True
            self.counters.open -= 1
        self.worker.connections.discard(self)
        for stream in list(self.streams.values()):
            stream.cancel()
        self.streams.clear()
        if self.connection_cell:
            self.worker.limiter.close_connection(self.connection_cell)
            self.connection_cell = 0

    def eof_received(self) -> bool | None:
        return None  # a client that stops sending is gone: close

    def pause_writing(self) -> None:
        """The client is not reading: send nothing more and read nothing more (its
        frames would only make us answer) until it does."""
        self.writing_paused = True
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if self.transport is not None and not self.closed:
            self.transport.resume_reading()
        self._send_all()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            try:
                self.guard.check(data, self.worker.loop.time)
            except Abuse as abuse:
                self._abuse(abuse)
                return
            try:
                events = self.h2.receive_data(data)
            except ProtocolError as exc:
                self._protocol_error(exc)
                return
            for event in events:
                handler = _HANDLERS.get(type(event))
                if handler is not None:
                    try:
                        handler(self, event)
                    except Exception:
                        self._event_failed(event)
            self._flush()
        except Exception:
            self._internal_error("data_received")

    # -- events ---------------------------------------------------------------------------
    def _request(self, event: RequestReceived) -> None:
        stream_id = event.stream_id
        if self.draining and stream_id > self.last_stream_id:
            self._refuse(stream_id)
            return
        stream = Http2Stream(self, stream_id)
        self.snapshot = stream.snapshot
        self.streams[stream_id] = stream
        self.counters.streams += 1
        stream.begin(event.headers, event.stream_ended is not None)
        current = stream.snapshot.listeners.get(self.listener_name)
        if self.worker.stopping or current is None or not current.h2:
            self.drain()  # this stream is served; the client takes the next ones elsewhere

    def _data(self, event: DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:  # a stream we are done with: its window is given back at once
            self.acknowledge(event.stream_id, event.flow_controlled_length)
            return
        stream.data(event.data, event.flow_controlled_length)

    def _ended(self, event: StreamEnded) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is not None:
            stream.end()

    def _reset_by_client(self, event: StreamReset) -> None:
        stream = self.streams.pop(event.stream_id, None)
        if stream is not None:
            stream.cancel()
            self._after_stream()

    def _window_opened(self, event: WindowUpdated) -> None:
        if event.stream_id:
            stream = self.streams.get(event.stream_id)
            if stream is not None and stream.out:
                stream._send()
        else:
            self._send_all()

    def _settings(self, event: RemoteSettingsChanged) -> None:
        self._send_all()  # INITIAL_WINDOW_SIZE may have grown every stream's window

    def _terminated(self, event: ConnectionTerminated) -> None:
        """The client's GOAWAY: h2 sends nothing more after it, so we are done."""
        self._close()

    # -- for streams ----------------------------------------------------------------------
    def acknowledge(self, stream_id: int, size: int) -> None:
        if size and not self.closed:
            try:
                self.h2.acknowledge_received_data(size, stream_id)
            except ProtocolError:
                return
            self._flush()

    def send_informational(self, stream_id: int, headers: list[tuple[bytes, bytes]]) -> None:
        try:
            self.h2.send_headers(stream_id, headers)
        except ProtocolError:
            return
        self._flush()

    def blocked(self, stream: Http2Stream) -> bool:
        if self.writing_paused:
            return True
        try:
            return self.h2.local_flow_control_window(stream.stream_id) <= 0
        except ProtocolError:
            return True

    def send_stream(self, stream: Http2Stream) -> None:
        """Send what a stream has, as far as the windows allow."""
        if self.closed:
            return
        try:
            done = self._send_stream(stream)
        except (StreamClosedError, ProtocolError):
            stream.cancel()
            self.streams.pop(stream.stream_id, None)
            self._after_stream()
            return
        self._flush()
        if done:
            stream.sent()

    def _send_stream(self, stream: Http2Stream) -> bool:
        h2 = self.h2
        stream_id = stream.stream_id
        if stream.out_headers is not None:
            end = stream.out_end and not stream.out_size and not stream.trailers
            h2.send_headers(stream_id, stream.out_headers, end_stream=end)
            stream.out_headers = None
            if end:
                return True
        if self.writing_paused:
            return False
        out = stream.out
        sent = False
        while out:
            window = min(h2.local_flow_control_window(stream_id), h2.max_outbound_frame_size)
            if window <= 0:
                break
            piece = out[0]
            if len(piece) > window:
                out[0] = piece[window:]
                piece = piece[:window]
            else:
                out.popleft()
            stream.out_size -= len(piece)
            last = not out and stream.out_end and not stream.trailers
            h2.send_data(stream_id, piece, end_stream=last)
            sent = True
            if last:
                return True
        if sent:
            stream.deadline = self.worker.loop.time() \
                + stream.snapshot.timeouts.backend_response
        if out or not stream.out_end:
            return False
        if stream.trailers:
            h2.send_headers(stream_id, stream.trailers, end_stream=True)
        else:
            h2.end_stream(stream_id)
        return True

    def stream_done(self, stream: Http2Stream, reset_client: bool) -> None:
        """The response went out whole. A client still sending its request is told to
        stop (RFC 9113 8.1: RST_STREAM NO_ERROR after a complete response)."""
        self.streams.pop(stream.stream_id, None)
        if stream.unacked:
            self.acknowledge(stream.stream_id, stream.unacked)
            stream.unacked = 0
        if reset_client and not self.closed:
            self._rst(stream.stream_id, ErrorCodes.NO_ERROR)
        self._after_stream()

    def reset(self, stream: Http2Stream, code: ErrorCodes, reason: str) -> None:
        """Our stream error: RST_STREAM, counted by reason."""
        self.streams.pop(stream.stream_id, None)
        self._count(self.counters.stream_errors, reason)
        self._rst(stream.stream_id, code)
        if stream.unacked:
            self.acknowledge(stream.stream_id, stream.unacked)
        self._after_stream()

    def malformed(self, stream: Http2Stream, reason: str) -> None:
        log.lb.debug("HTTP/2 stream %d from %s malformed: %s", stream.stream_id,
                     self.client_ip.decode(), reason)
        stream.state = CLOSED  # nothing was started for it
        self.streams.pop(stream.stream_id, None)
        self._count(self.counters.stream_errors, "malformed")
        self._rst(stream.stream_id, ErrorCodes.PROTOCOL_ERROR)
        self._after_stream()

    def _rst(self, stream_id: int, code: ErrorCodes) -> None:
        try:
            self.h2.reset_stream(stream_id, code)
        except ProtocolError:
            return  # closed on both sides already
        self._flush()

    def _refuse(self, stream_id: int) -> None:
        self._count(self.counters.stream_errors, "refused")
        self._rst(stream_id, ErrorCodes.REFUSED_STREAM)

    def _after_stream(self) -> None:
        if self.streams:
            return
        if self.draining:
            self._close()
            return
        worker = self.worker
        self.deadline = worker.loop.time() + self.snapshot.timeouts.idle_keepalive

    # -- timers, drain, close -------------------------------------------------------------
    def on_timeout(self, now: float) -> None:
        """The worker's sweeper: a stream's deadline passed, or the idle one."""
        if not self.streams:
            if not self.draining:
                self._goaway(ErrorCodes.NO_ERROR, "idle")
            self._close()
            return
        for stream in list(self.streams.values()):
            deadline = stream.deadline
            if deadline and deadline < now:
                try:
                    stream.on_timeout(now)
                except Exception:
                    stream.internal_error("HTTP/2 stream timeout")
        soonest = 0.0
        for stream in self.streams.values():
            deadline = stream.deadline
            if deadline and (not soonest or deadline < soonest):
                soonest = deadline
        if self.streams:
            self.deadline = soonest

    def drain(self) -> None:
        """Graceful: GOAWAY(NO_ERROR) with the last stream taken; close once they end."""
        if not self.draining and not self.closed:
            self.draining = True
            self.last_stream_id = self.h2.highest_inbound_stream_id
            # h2's own close_connection() would stop the streams in flight from being
            # answered: this GOAWAY is written beside its state machine.
            self._flush()
            self._count(self.counters.goaways, "drain")
            frame = GoAwayFrame(0, last_stream_id=self.last_stream_id,
                                error_code=ErrorCodes.NO_ERROR)
            if self.transport is not None:
                self.transport.write(frame.serialize())
        if not self.streams:
            self._close()

    def _goaway(self, code: ErrorCodes, reason: str, message: str = "") -> None:
        self._count(self.counters.goaways, reason)
        with contextlib.suppress(ProtocolError):  # closed by the client's or h2's GOAWAY
            self.h2.close_connection(code, message.encode()[:200] or None)
        self._flush()

    def _abuse(self, abuse: Abuse) -> None:
        log.lb.warning("HTTP/2 client %s on %s: %s: GOAWAY (%s)", self.client_ip.decode(),
                       self.listener_name, abuse, abuse.code.name)
        self._goaway(abuse.code, abuse.reason, str(abuse))
        self._close()

    def _protocol_error(self, exc: ProtocolError) -> None:
        """h2 found a connection error and queued its GOAWAY already."""
        reason = ("too_many_streams" if isinstance(exc, TooManyStreamsError)
                  else "header_list" if isinstance(exc, DenialOfServiceError)
                  else "flow_control" if isinstance(exc, FlowControlError)
                  else "protocol_error")
        log.lb.info("HTTP/2 client %s on %s: %s: GOAWAY", self.client_ip.decode(),
                    self.listener_name, exc)
        self._count(self.counters.goaways, reason)
        self._flush()
        self._close()

    # -- the catch-all --------------------------------------------------------------------
    def _event_failed(self, event: Any) -> None:
        """A bug handling one stream's event ends that stream (500, or RST_STREAM once its
        response started); the connection and its other streams go on."""
        stream = self.streams.get(getattr(event, "stream_id", 0) or 0)
        if stream is None:
            self._internal_error(type(event).__name__)
            return
        stream.internal_error(f"HTTP/2 {type(event).__name__}")

    def _internal_error(self, where: str) -> None:
        """A bug outside any one stream: GOAWAY(INTERNAL_ERROR) and close, which cancels
        every stream (their backend slots and queue places given back)."""
        try:
            log.lb.exception("internal error in HTTP/2 %s: listener %s, client %s, %d "
                             "streams; GOAWAY", where, self.listener_name,
                             self.client_ip.decode(errors="replace"), len(self.streams))
            self._goaway(ErrorCodes.INTERNAL_ERROR, "internal_error")
            self._close()
        except Exception:
            log.lb.exception("internal error in the HTTP/2 catch-all (listener %s): "
                             "connection aborted", self.listener_name)
            for stream in list(self.streams.values()):
                with contextlib.suppress(Exception):
                    stream.cancel()  # each gives back its backend slot and queue place
            self.streams.clear()
            if self.transport is not None:
                self.transport.abort()  # connection_lost does the rest

    def close(self) -> None:
        self.drain()

    def _close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.counters.open -= 1
        for stream in list(self.streams.values()):
            stream.cancel()
        self.streams.clear()
        self._flush()
        if self.transport is not None:
            self.transport.close()

    def _send_all(self) -> None:
        for stream in list(self.streams.values()):
            if stream.out or stream.out_headers is not None or stream.out_end:
                stream._send()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    @staticmethod
    def _count(counts: dict[str, int], reason: str) -> None:
        counts[reason] = counts.get(reason, 0) + 1


_HANDLERS: dict[type, Callable[[Http2Connection, Any], None]] = {
    RequestReceived: Http2Connection._request,
    DataReceived: Http2Connection._data,
    StreamEnded: Http2Connection._ended,
    StreamReset: Http2Connection._reset_by_client,
    WindowUpdated: Http2Connection._window_opened,
    RemoteSettingsChanged: Http2Connection._settings,
    ConnectionTerminated: Http2Connection._terminated,
}
