"""What the control plane writes to its log, as an operator reads it: `gtm api`'s stderr.

A client must not be able to forge a log line (control characters in a request path)
nor get a credential printed (an over-long or broken header line, which aiohttp's
parser refuses and used to log with its first bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

LISTENING = re.compile(r"control plane API on http://127\.0\.0\.1:(\d+)")
RECORD_START = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ")


class ApiProcess:
    """`gtm api` on the embedded SQLite store, every record logged (DEBUG); stopped by PID."""

    def __init__(self, state_dir: Path):
        self.log_path = state_dir / "api.log"
        state_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GTM_LOG_LEVEL": "DEBUG", "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gtm.cli", "api", "--listen", "127.0.0.1:0",
                 "--state-dir", str(state_dir)],
                stdout=log_file, stderr=log_file, stdin=subprocess.DEVNULL, env=env)
        self.port = self._wait_listening()

    def _wait_listening(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            match = LISTENING.search(self.log())
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"gtm api did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> str:
        """Stop it (SIGTERM, by PID) and return everything it logged."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        return self.log()


@pytest.fixture
def api_process(tmp_path: Path) -> Iterator[ApiProcess]:
    process = ApiProcess(tmp_path / "control")
    try:
        yield process
    finally:
        process.stop()


async def raw_request(port: int, head: bytes) -> bytes:
    """Send ``head`` exactly as given (no client re-encodes it); the whole response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


async def test_a_newline_in_the_path_cannot_forge_a_log_line(api_process: ApiProcess) -> None:
    forged = "2030-01-01 00:00:00,000 INFO gtm.control.audit[1] admin-0 token.create x: ok"
    path = "/v1/config/zones/x%0a" + forged.replace(" ", "%20") + "%0d%1b[31m"
    response = await raw_request(
        api_process.port,
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    assert status_of(response) == 401  # no token: refused, and audited
    lines = api_process.stop().splitlines()
    carrying = [line for line in lines if "token.create x: ok" in line]
    assert len(carrying) == 1, carrying
    [line] = carrying
    assert "auth.refused" in line and "x\\n2030-01-01" in line and "\\r\\x1b[31m" in line
    assert not any(line.startswith("2030-01-01") for line in lines)
    assert "\x1b" not in "\n".join(lines) and "\r" not in "\n".join(lines)


async def test_an_overlong_or_broken_header_never_logs_the_credential(
    api_process: ApiProcess,
) -> None:
    secret = f"gtm_{secrets.token_hex(6)}_{secrets.token_urlsafe(24)}"
    overlong = f"Authorization: Bearer {secret}{'A' * 9000}\r\n".encode()
    broken = f"Authorization: Bearer {secret}".encode() + b"\x01\xff\r\n"
    for header in (overlong, broken):
        response = await raw_request(
            api_process.port,
            b"GET /v1/config HTTP/1.1\r\nHost: 127.0.0.1\r\n" + header + b"\r\n")
        assert 400 <= status_of(response) < 500, response[:200]
    text = api_process.stop()
    assert "refused a malformed HTTP request from 127.0.0.1: LineTooLong (HTTP 400)" in text
    assert "BadHttpMessage" in text
    assert secret not in text and secret[:12] not in text
    assert all(RECORD_START.match(line) or line.startswith(" ") or "control plane API on"
               in line for line in text.splitlines())
