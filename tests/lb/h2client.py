"""A blocking HTTP/2 client over a raw socket, built on h2, for frame-level tests.

It speaks prior knowledge (h2c) or, given an SSL context, h2 over TLS; tests can also
write raw frames (hyperframe) to act as a broken or hostile client.
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    InformationalResponseReceived,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
)
from h2.settings import SettingCodes, Settings
from hyperframe.frame import Frame

TIMEOUT = 5.0


def require(binary: str, package: str) -> str:
    """A client tool's path; a loud skip without it, a failure under CI (CI=true)."""
    path = shutil.which(binary)
    if path is not None:
        return path
    message = f"{binary} is not installed (apt-get install {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must have it")
    pytest.skip(message)


@dataclass
class Reply:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    informational: list[int] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None  # RST_STREAM error code

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name.encode():
                return value.decode()
        return None


class H2Client:
    def __init__(self, address: tuple[str, int], context: ssl.SSLContext | None = None,
                 settings: dict[SettingCodes, int] | None = None, timeout: float = TIMEOUT):
        sock = socket.create_connection(address, timeout=timeout)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname="localhost")
        sock.settimeout(timeout)
        self.sock = sock
        # What we send is not checked (tests send malformed requests on purpose); what we
        # receive is, by h2: the balancer's frames and headers must be valid HTTP/2.
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding=None,
                                                 validate_outbound_headers=False,
                                                 normalize_outbound_headers=False))
        if settings:
            self.conn.local_settings = Settings(client=True, initial_values=settings)
        self.conn.initiate_connection()
        self.replies: dict[int, Reply] = {}
        self.terminated: ConnectionTerminated | None = None
        self.closed = False
        self.flush()

    # -- sending ----------------------------------------------------------------------
    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def start(self, method: str = "GET", path: str = "/", authority: str = "example.test",
              headers: list[tuple[str, str]] | None = None, end: bool = True) -> int:
        stream_id = self.conn.get_next_available_stream_id()
        self.conn.send_headers(stream_id, [(":method", method), (":path", path),
                                           (":scheme", "http"), (":authority", authority),
                                           *(headers or [])], end_stream=end)
        self.replies[stream_id] = Reply()
        self.flush()
        return stream_id

    def send_body(self, stream_id: int, data: bytes, end: bool = True) -> None:
        """All of data, as the windows allow (reading the server's frames meanwhile)."""
        while data:
            window = min(self.conn.local_flow_control_window(stream_id),
                         self.conn.max_outbound_frame_size)
            if window <= 0:
                self.read_once()
                continue
            piece, data = data[:window], data[window:]
            self.conn.send_data(stream_id, piece, end_stream=end and not data)
            self.flush()

    def request(self, method: str = "GET", path: str = "/", body: bytes | None = None,
                headers: list[tuple[str, str]] | None = None) -> Reply:
        stream_id = self.start(method, path, headers=headers, end=body is None)
        if body is not None:
            if body:
                self.send_body(stream_id, body)
            else:
                self.conn.end_stream(stream_id)
                self.flush()
        return self.wait(stream_id)

    # -- receiving --------------------------------------------------------------------
    def read_once(self) -> bool:
        """One read from the socket and its events; False once the server closed."""
        try:
            data = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return False
        for event in self.conn.receive_data(data):
            self._event(event)
        self.flush()
        return True

    def _event(self, event: Any) -> None:
        reply = self.replies.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, ResponseReceived) and reply is not None:
            reply.headers = list(event.headers)
            reply.status = int(dict(event.headers)[b":status"])
        elif isinstance(event, InformationalResponseReceived) and reply is not None:
            reply.informational.append(int(dict(event.headers)[b":status"]))
        elif isinstance(event, DataReceived) and reply is not None:
            reply.body += event.data
            self.conn.acknowledge_received_data(event.flow_controlled_length,
                                                event.stream_id)
        elif isinstance(event, TrailersReceived) and reply is not None:
            reply.trailers = list(event.headers)
        elif isinstance(event, StreamEnded) and reply is not None:
            reply.ended = True
        elif isinstance(event, StreamReset) and reply is not None:
            reply.reset = event.error_code
        elif isinstance(event, ConnectionTerminated):
            self.terminated = event

    def wait(self, stream_id: int, timeout: float = TIMEOUT) -> Reply:
        reply = self.replies[stream_id]
        end = time.monotonic() + timeout
        while not reply.ended and reply.reset is None and time.monotonic() < end:
            if not self.read_once():
                break
        return reply

    def wait_closed(self, timeout: float = TIMEOUT) -> None:
        """Read (answering nothing) until the server closes the connection."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and not self.closed:
            try:
                self.read_once()
            except Exception:  # a GOAWAY'd connection may refuse what we read further
                self.closed = True
        assert self.closed, "the server kept the connection open"

    def raw_frames(self, timeout: float = TIMEOUT) -> list[Frame]:
        """Every frame the server sends until it closes, parsed by hyperframe alone (h2's
        client state machine takes nothing after a GOAWAY, though streams may still end)."""
        data = b""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            data += chunk
        self.closed = True
        frames = []
        while len(data) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(data[:9]))
            if len(data) < 9 + length:
                break
            frame.parse_body(memoryview(data[9 : 9 + length]))
            frames.append(frame)
            data = data[9 + length :]
        return frames

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
