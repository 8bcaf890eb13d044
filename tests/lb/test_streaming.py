"""Bodies stream with backpressure: the proxy's memory stays bounded through a slow peer.

The proxy runs as its own process so its peak resident memory (VmHWM) is its own.
Default size 64 MiB; LB_STREAM_BYTES=1073741824 runs the 1 GB variant.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from tests.lb.conftest import Env, connect, read_request, read_response
from tests.lb.process import LbProcess, free_port
from tests.lb.test_lifecycle import write_config

SIZE = int(os.environ.get("LB_STREAM_BYTES", 64 * 1024 * 1024))
BLOCK = 256 * 1024
ALLOWED_GROWTH_KB = 24 * 1024


def start(env: Env, tmp_path: Path, backend: str) -> tuple[LbProcess, tuple[str, int], int]:
    port = free_port()
    config = tmp_path / "lb.toml"
    write_config(config, port, [backend])
    lb = LbProcess(config)
    address = ("127.0.0.1", port)
    lb.wait_serving(address)
    with connect(address) as client:  # warm up: one proxied request
        client.sendall(b"GET /warm HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        read_response(client)
    return lb, address, lb.rss_peak_kb()


def test_download_through_slow_reader_is_bounded(env: Env, tmp_path: Path) -> None:
    async def big(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            if b"/warm" in head:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                continue
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % SIZE)
            block = b"x" * BLOCK
            for _ in range(SIZE // BLOCK):
                writer.write(block)
                await writer.drain()
    backend = env.raw(big)
    lb, address, baseline = start(env, tmp_path, backend.address)
    try:
        with connect(address, timeout=120) as client:
            client.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(1.0)  # a reader that does not read: the backend must be paused
            stalled = lb.rss_peak_kb()
            received = 0
            while received < SIZE:
                chunk = client.recv(1 << 20)
                assert chunk
                received += len(chunk)
                if received < SIZE // 8:
                    time.sleep(0.001)  # slow at first
        peak = lb.rss_peak_kb()
        assert stalled - baseline < ALLOWED_GROWTH_KB, (baseline, stalled)
        assert peak - baseline < ALLOWED_GROWTH_KB, (baseline, peak)
        assert received >= SIZE
    finally:
        lb.stop()


def test_upload_to_slow_backend_is_bounded(env: Env, tmp_path: Path) -> None:
    async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")  # the body is read slowly, below
            if b"/warm" in head:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                continue
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await asyncio.sleep(1.0)  # a backend that does not read yet
            left = length
            while left:
                data = await reader.read(min(left, 1 << 20))
                left -= len(data)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%d"
                         % (len(str(length)), length))
            await writer.drain()
    backend = env.raw(sink)
    lb, address, baseline = start(env, tmp_path, backend.address)
    try:
        with connect(address, timeout=120) as client:
            client.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % SIZE)
            block = b"y" * BLOCK
            for _ in range(SIZE // BLOCK):
                client.sendall(block)
            status, _, body = read_response(client)
        assert status == 200 and int(body) == SIZE
        peak = lb.rss_peak_kb()
        assert peak - baseline < ALLOWED_GROWTH_KB, (baseline, peak)
    finally:
        lb.stop()
