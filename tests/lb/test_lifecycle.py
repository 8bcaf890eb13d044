"""Operating the balancer as a process: workers, SIGHUP reload, admin drain, SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.lb.conftest import Env, connect, exchange, read_response, status_of
from tests.lb.process import LbProcess, LoadLoop, free_port

TOKEN = "s3cret"


def write_config(path: Path, port: int, backends: list[str], admin_port: int = 0,
                 algorithm: str = "round_robin", extra: str = "") -> None:
    admin = f'admin = "127.0.0.1:{admin_port}"\nadmin_token = "{TOKEN}"\n' if admin_port else ""
    listed = ", ".join(f'"{b}"' for b in backends)
    path.write_text(f"""[lb]
{admin}{extra}
[lb.timeouts]
shutdown_grace = 0.5
shutdown_deadline = 5
[[lb.listeners]]
name = "web"
bind = "127.0.0.1:{port}"
[[lb.pools]]
name = "app"
algorithm = "{algorithm}"
backends = [{listed}]
""")


def admin_call(port: int, method: str, path: str, body: dict[str, Any] | None = None,
               token: str = TOKEN) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def wait_admin(port: int, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.05)


def test_sighup_reload_under_load_loses_nothing(env: Env, tmp_path: Path) -> None:
    a, b = env.recorder("a"), env.recorder("b")
    port = free_port()
    config = tmp_path / "lb.toml"
    write_config(config, port, [a.address])
    lb = LbProcess(config, workers=2)
    try:
        lb.wait_serving(("127.0.0.1", port))
        load = LoadLoop(("127.0.0.1", port), clients=4)
        time.sleep(0.5)
        for i in range(3):  # add b, switch algorithm, remove a: each a reload under load
            backends = [[a.address, b.address], [a.address, b.address], [b.address]][i]
            algorithm = ["round_robin", "least_request", "round_robin"][i]
            write_config(config, port, backends, algorithm=algorithm)
            lb.signal(signal.SIGHUP)
            lb.wait_for_log(r"configuration \d+ is live", count=2 * (i + 1))
            time.sleep(0.5)
        after = len(a.requests)
        time.sleep(0.5)
        load.stop()
        assert load.failures == [] and load.ok > 100
        assert len(a.requests) - after <= 8  # a removed: at most requests already under way
        assert len(b.requests) > 0
    finally:
        assert lb.stop() == 0


def test_admin_drain_under_load_loses_nothing(env: Env, tmp_path: Path) -> None:
    a, b = env.recorder("a"), env.recorder("b")
    port, admin_port = free_port(), free_port()
    config = tmp_path / "lb.toml"
    write_config(config, port, [a.address, b.address], admin_port=admin_port)
    lb = LbProcess(config, workers=1)
    try:
        lb.wait_serving(("127.0.0.1", port))
        wait_admin(admin_port)
        assert admin_call(admin_port, "GET", "/pools", token="wrong")[0] == 401
        load = LoadLoop(("127.0.0.1", port), clients=4)
        time.sleep(0.5)
        status, drained = admin_call(admin_port, "POST",
                                     f"/pools/app/backends/{a.address}/drain?wait=5")
        assert status == 200 and drained["drained"] is True and drained["in_flight"] == 0
        before = len(a.requests)
        time.sleep(0.5)
        assert len(a.requests) == before  # no new requests once drained
        status, pools = admin_call(admin_port, "GET", "/pools")
        states = {x["address"]: x["state"] for x in pools["pools"][0]["backends"]}
        assert states == {a.address: "drain", b.address: "enabled"}
        lb.signal(signal.SIGHUP)  # a reload of the file keeps the admin's drain
        lb.wait_for_log(r"configuration \d+ is live", count=2)
        pools = admin_call(admin_port, "GET", "/pools")[1]
        assert pools["pools"][0]["backends"][0]["state"] == "drain"
        # Weight, re-enable, remove, add: all through the API, all under load.
        assert admin_call(admin_port, "PATCH", f"/pools/app/backends/{a.address}",
                          {"state": "enabled", "weight": 3})[0] == 200
        assert admin_call(admin_port, "PATCH", f"/pools/app/backends/{a.address}",
                          {"weight": -1})[0] == 400
        assert admin_call(admin_port, "DELETE", f"/pools/app/backends/{b.address}")[0] == 200
        assert admin_call(admin_port, "POST", "/pools/app/backends",
                          {"address": b.address, "weight": 1})[0] == 201
        time.sleep(0.3)
        load.stop()
        assert load.failures == [] and load.ok > 100
        report = admin_call(admin_port, "GET", "/report")[1]
        assert report["healthy"] is True and report["backends_up"] == 2
        with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/health", timeout=5) as r:
            assert r.status == 200
    finally:
        assert lb.stop() == 0


def test_sigterm_fails_health_then_finishes_in_flight(env: Env, tmp_path: Path) -> None:
    async def slow(request: web.Request, body: bytes) -> web.StreamResponse:
        await asyncio.sleep(1.0 if request.path == "/slow" else 0)
        return web.Response(text="done\n")
    a = env.recorder("a")
    a.handler = slow
    port = free_port()
    config = tmp_path / "lb.toml"
    write_config(config, port, [a.address])
    lb = LbProcess(config, workers=1)
    try:
        address = ("127.0.0.1", port)
        lb.wait_serving(address)
        idle = connect(address)
        idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(idle)[0] == 200
        busy = connect(address)
        busy.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.2)
        started = time.monotonic()
        lb.signal(signal.SIGTERM)
        time.sleep(0.1)
        health = exchange(address, b"GET /.gtm/health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status_of(health) == 503  # failing health first, still accepting
        status, headers, body = read_response(busy)  # the in-flight request finishes
        assert status == 200 and body == b"done\n" and headers.get("connection") == "close"
        assert idle.recv(1) == b""  # idle keep-alive connection closed
        assert lb.proc.wait(10) == 0
        assert time.monotonic() - started < 6
        try:
            connect(address, 1.0).close()
            raise AssertionError("still accepting after stop")
        except OSError:
            pass
    finally:
        lb.stop()


def test_crashed_worker_is_restarted(env: Env, tmp_path: Path) -> None:
    a = env.recorder("a")
    port = free_port()
    config = tmp_path / "lb.toml"
    write_config(config, port, [a.address])
    lb = LbProcess(config, workers=2)
    try:
        address = ("127.0.0.1", port)
        lb.wait_serving(address)
        end = time.monotonic() + 5
        while len(lb.children()) < 2 and time.monotonic() < end:
            time.sleep(0.05)
        victim = lb.children()[0]
        os.kill(victim, signal.SIGKILL)
        lb.wait_for_log(r"exited with status")
        end = time.monotonic() + 5
        while (len(lb.children()) < 2 or victim in lb.children()) and time.monotonic() < end:
            time.sleep(0.05)
        assert len(lb.children()) == 2 and victim not in lb.children()
        for _ in range(20):
            assert status_of(exchange(address, b"GET / HTTP/1.1\r\nHost: x\r\n"
                                      b"Connection: close\r\n\r\n")) == 200
    finally:
        assert lb.stop() == 0


def test_bad_config_reload_keeps_serving(env: Env, tmp_path: Path) -> None:
    a = env.recorder("a")
    port = free_port()
    config = tmp_path / "lb.toml"
    write_config(config, port, [a.address])
    lb = LbProcess(config, workers=1)
    try:
        address = ("127.0.0.1", port)
        lb.wait_serving(address)
        config.write_text(config.read_text().replace('algorithm = "round_robin"',
                                                     'algorithm = "fastest"'))
        lb.signal(signal.SIGHUP)
        match = lb.wait_for_log(r"reload failed.*")
        assert "lb.pools[0].algorithm" in match.group(0) and str(config) in match.group(0)
        assert status_of(exchange(address, b"GET / HTTP/1.1\r\nHost: x\r\n"
                                  b"Connection: close\r\n\r\n")) == 200
    finally:
        assert lb.stop() == 0


def test_admin_change_reaches_every_worker(env: Env, tmp_path: Path) -> None:
    a, b = env.recorder("a"), env.recorder("b")
    port, admin_port = free_port(), free_port()
    config = tmp_path / "lb.toml"
    write_config(config, port, [a.address, b.address], admin_port=admin_port)
    lb = LbProcess(config, workers=2)
    try:
        address = ("127.0.0.1", port)
        lb.wait_serving(address)
        wait_admin(admin_port)
        status, _ = admin_call(admin_port, "PATCH", f"/pools/app/backends/{a.address}",
                               {"state": "maintenance"})
        assert status == 200
        lb.wait_for_log(r"configuration \d+ is live", count=3)  # admin worker, then both
        before = len(a.requests)
        for _ in range(40):  # new connections: the kernel spreads them over both workers
            response = exchange(address, b"GET / HTTP/1.1\r\nHost: x\r\n"
                                b"Connection: close\r\n\r\n")
            assert status_of(response) == 200 and response.endswith(b"b\n")
        assert len(a.requests) == before
        assert (config.parent / "lb.toml.runtime.json").exists()
    finally:
        assert lb.stop() == 0


def test_drain_with_several_workers_waits_for_all_of_them(env: Env, tmp_path: Path) -> None:
    async def slow(request: web.Request, body: bytes) -> web.StreamResponse:
        await asyncio.sleep(1.0 if request.path == "/slow" else 0)
        return web.Response(text="a\n")
    a, b = env.recorder("a"), env.recorder("b")
    a.handler = slow
    port, admin_port = free_port(), free_port()
    config = tmp_path / "lb.toml"
    write_config(config, port, [a.address], admin_port=admin_port)
    lb = LbProcess(config, workers=2)
    try:
        address = ("127.0.0.1", port)
        lb.wait_serving(address)
        wait_admin(admin_port)
        results: list[bytes] = []
        clients = [threading.Thread(target=lambda: results.append(exchange(
            address, b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")))
            for _ in range(8)]  # new connections: spread over both workers
        for thread in clients:
            thread.start()
        time.sleep(0.3)
        assert admin_call(admin_port, "POST", "/pools/app/backends",
                          {"address": b.address})[0] == 201
        started = time.monotonic()
        status, report = admin_call(admin_port, "POST",
                                    f"/pools/app/backends/{a.address}/drain?wait=10")
        waited = time.monotonic() - started
        assert status == 200 and report["drained"] is True and report["workers"] == 2
        assert waited > 0.3  # it waited for the slow requests, in both workers
        for thread in clients:
            thread.join(10)
        assert len(results) == 8 and all(status_of(r) == 200 for r in results)
    finally:
        assert lb.stop() == 0
