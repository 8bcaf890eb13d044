"""Configuration errors, the example configs, reload semantics, metrics, report, access log."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import generate_latest

from gtm import metrics
from gtm.errors import ConfigError
from gtm.health.reports import REPORTS
from regional_lb.config import LbConfig, build_config, load_config
from tests.integration.servers import example_regions_held
from tests.lb.conftest import Env, connect, exchange, read_response, status_of
from tests.lb.process import free_port

REPO = Path(__file__).resolve().parents[2]
GOOD = """[[lb.listeners]]
bind = "127.0.0.1:8000"
[[lb.pools]]
name = "app"
backends = ["127.0.0.1:9001", "127.0.0.1:9002"]
"""


@pytest.mark.parametrize(("change", "where", "reason"), [
    (('name = "app"', 'name = "app"\nfoo = 1'), "lb.pools[0].foo",
     "unknown key 'foo' (expected one of algorithm, autoscale, backends, check,"),
    (('name = "app"', 'name = "app"\nalgorithm = "fastest"'), "lb.pools[0].algorithm",
     "must be one of"),
    (('"127.0.0.1:9002"', '"127.0.0.1"'), "lb.pools[0].backends[1].address", "needs a port"),
    (('"127.0.0.1:9002"', '"127.0.0.1:9001"'), "lb.pools[0].backends[1]", "listed twice"),
    (('"127.0.0.1:9002"', '{ address = "127.0.0.1:9002", weight = -1 }'),
     "lb.pools[0].backends[1].weight", "must be from 0 to 10000"),
    (('bind = "127.0.0.1:8000"', 'bind = "127.0.0.1:8000"\npool = "nope"'),
     "lb.listeners[0].pool", "names no pool"),
    (('bind = "127.0.0.1:8000"', 'bind = "127.0.0.1:8000"\nproxy_protocol = true'),
     "lb.listeners[0].trusted_networks", "is required"),
    (('bind = "127.0.0.1:8000"', 'bind = "not-an-ip:8000"'), "lb.listeners[0].bind",
     "not an IP address"),
    (("", "[lb.timeouts]\nheader_read = -1\n"), "lb.timeouts.header_read",
     "must be from 0.001 to 86400"),
    (("", '[lb]\naccess_log = "xml"\n'), "lb.access_log", "must be one of"),
    (('name = "app"', 'name = "app"\nproxy_protocol = "v2"'), "lb.pools[0].proxy_protocol",
     "tcp listeners only"),
])
def test_config_errors_name_file_key_and_reason(tmp_path: Path, change: tuple[str, str],
                                                where: str, reason: str) -> None:
    path = tmp_path / "lb.toml"
    old, new = change
    path.write_text(GOOD.replace(old, new) if old else new + GOOD)  # tables go first
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{where}: "), message
    assert reason in message


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lb.toml"
    path.write_text("[[lb.listeners]\n")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path)


def test_readme_five_line_config_and_examples_load() -> None:
    config = load_config(REPO / "examples/lb/two-servers.toml")
    assert len((REPO / "examples/lb/two-servers.toml").read_text().strip().splitlines()) == 5
    assert [b.key for b in config.pools[0].backends] == ["127.0.0.1:9001", "127.0.0.1:9002"]
    for region in ("eu-west", "us-east", "ap-northeast", "sa-east"):
        assert load_config(REPO / f"examples/lb/{region}.toml").region == region


def test_reload_in_flight_finishes_on_old_snapshot(env: Env) -> None:
    async def slow(request: web.Request, body: bytes) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        return web.Response(text="old\n")
    old, new = env.recorder("old"), env.recorder("new")
    old.handler = slow
    address = env.balancer([old.address])
    done: list[bytes] = []
    thread = threading.Thread(target=lambda: done.append(
        exchange(address, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")))
    thread.start()
    time.sleep(0.2)
    assert env.handle is not None
    snapshot = env.loop.run(env.handle.reload(build_config({
        "listeners": [{"name": "web", "bind": "127.0.0.1:0"}],
        "pools": [{"name": "app", "backends": [new.address]}]}, "reload")))
    assert snapshot.version == 2
    response = exchange(address, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert response.endswith(b"new\n")
    thread.join(5)
    assert status_of(done[0]) == 200 and done[0].endswith(b"old\n")


def test_invalid_reload_keeps_running_config(env: Env) -> None:
    a = env.recorder("a")
    address = env.balancer([a.address])
    assert env.handle is not None
    with pytest.raises(ConfigError):
        env.loop.run(env.handle.reload(build_config({"pools": []}, "bad")))
    assert env.handle.snapshot.version == 1
    assert status_of(exchange(address, b"GET / HTTP/1.1\r\nHost: x\r\n"
                              b"Connection: close\r\n\r\n")) == 200


def test_metrics_report_and_access_log(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    a = env.recorder("a")
    address = env.balancer([a.address], region="test-region", access_log="json",
                           report_interval=0.1)
    caplog.set_level(logging.INFO, logger="gtm.lb.access")
    with connect(address) as client:
        for _ in range(5):
            client.sendall(b"GET /m HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(client)[0] == 200
    time.sleep(0.3)
    text = generate_latest(metrics.REGISTRY).decode()
    sample = f'gtm_lb_backend_requests_total{{backend="{a.address}",pool="app"}} 5.0'
    assert sample in text
    assert f'gtm_lb_backend_responses_total{{backend="{a.address}",class="2xx",pool="app"}} 5.0' \
        in text
    assert "gtm_lb_backend_response_seconds_bucket" in text
    report = REPORTS["test-region"]
    assert report["healthy"] is True and report["in_flight"] == 0
    assert report["backends_up"] == 1 and 0.0 <= report["headroom"] <= 1.0
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gtm.lb.access"]
    assert len(lines) == 5
    assert lines[0]["status"] == 200 and lines[0]["target"] == "/m"
    assert lines[0]["backend"] == a.address and lines[0]["pool"] == "app"


def test_http10_client_gets_host_and_close(env: Env) -> None:
    a = env.recorder("a")
    address = env.balancer([a.address])
    response = exchange(address, b"GET /old HTTP/1.0\r\n\r\n")
    assert status_of(response) == 200
    assert a.header(0, "Host") == [f"127.0.0.1:{address[1]}"]  # the listener's address
    assert b"Connection: close" in response


def test_http10_keep_alive(env: Env) -> None:
    a = env.recorder("a")
    address = env.balancer([a.address])
    with connect(address) as client:
        for _ in range(2):
            client.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            status, headers, _ = read_response(client)
            assert status == 200 and headers["connection"] == "keep-alive"


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_region_report_published_to_redis(env: Env, tmp_path: Path) -> None:
    import redis

    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no", "--dir", str(tmp_path)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        end = time.monotonic() + 5
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < end, "redis-server did not start"
                time.sleep(0.05)
        pubsub = client.pubsub()
        pubsub.subscribe("gtm:lb:regions")
        a = env.recorder("a")
        env.balancer([a.address], region="redis-region", redis_url=f"redis://127.0.0.1:{port}",
                     report_interval=0.1)
        end = time.monotonic() + 5
        stored = None
        while stored is None and time.monotonic() < end:
            stored = client.get("gtm:lb:region:redis-region:0")
            time.sleep(0.05)
        assert stored is not None
        report = json.loads(stored)
        assert report["region"] == "redis-region" and report["healthy"] is True
        assert 0 < client.pttl("gtm:lb:region:redis-region:0") <= 300
        messages: list[dict[str, Any]] = []
        while time.monotonic() < end and not messages:
            message = pubsub.get_message(timeout=0.5)
            if message and message["type"] == "message":
                messages.append(json.loads(message["data"]))
        assert messages and messages[0]["region"] == "redis-region"
        client.close()
    finally:
        server.terminate()
        server.wait(5)


@pytest.mark.serial
def test_example_regions_serve_in_one_loop(env: Env, tmp_path: Path) -> None:
    """What `gtm up` runs: the four example regions in one event loop, demo backends too."""
    with example_regions_held():  # their addresses are fixed: one test at a time
        _example_regions_serve_in_one_loop(env, tmp_path)


def _example_regions_serve_in_one_loop(env: Env, state: Path) -> None:
    from gtm.errors import ServeError
    from regional_lb.autoscale.start import with_scale_store
    from regional_lb.node import start_regions

    paths = [REPO / f"examples/lb/{r}.toml" for r in ("eu-west", "us-east", "ap-northeast",
                                                       "sa-east")]

    def load(path: Path) -> LbConfig:
        # sa-east scales: its scale store goes here, as gtm up puts it in its state
        # directory, not beside the example in the repository.
        return with_scale_store(load_config(path), None, directory=state)
    try:
        handles = env.loop.run(start_regions(paths, loader=load))
    except ServeError as exc:  # someone runs the examples on this machine right now
        pytest.skip(str(exc))
    try:
        for ip in ("127.0.1.1", "127.0.1.2", "127.0.2.1", "127.0.3.1", "127.0.4.1"):
            response = exchange((ip, 8080), b"GET / HTTP/1.1\r\nHost: www.gslb.example.test\r\n"
                                b"Connection: close\r\n\r\n")
            assert status_of(response) == 200
            assert b"hello from 127.0." + ip.split(".")[2].encode() in response
        reports = [h.report() for h in handles]
        assert [r["region"] for r in reports] == ["eu-west", "us-east", "ap-northeast",
                                                  "sa-east"]
        assert all(r["healthy"] and r["backends_up"] == 2 for r in reports)
    finally:
        for handle in handles:
            env.loop.run(handle.stop(grace=0, deadline=1))


def test_removed_listener_finishes_its_connections(env: Env) -> None:
    a = env.recorder("a")
    address = env.balancer([a.address])
    assert env.handle is not None
    with connect(address) as client:
        client.sendall(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert read_response(client)[0] == 200
        env.loop.run(env.handle.reload(build_config({
            "listeners": [{"name": "other", "bind": f"127.0.0.1:{free_port()}"}],
            "pools": [{"name": "app", "backends": [a.address]}]}, "reload")))
        client.sendall(b"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = read_response(client)
        assert status == 200 and headers["connection"] == "close"
    with pytest.raises(OSError):
        connect(address, 1.0).close()
    assert [r["path"] for r in a.requests] == ["/1", "/2"]


def test_failed_start_leaves_nothing_behind(env: Env) -> None:
    import socket as socketlib

    from gtm.errors import ServeError
    from regional_lb import start_balancer

    listen_port = free_port()
    with socketlib.socket() as taken:  # the admin port is taken (and without SO_REUSEPORT)
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        config = build_config({
            "admin": f"127.0.0.1:{taken.getsockname()[1]}", "admin_token": "t",
            "listeners": [{"name": "web", "bind": f"127.0.0.1:{listen_port}"}],
            "pools": [{"name": "app", "backends": ["127.0.0.1:9"]}]}, "test")
        with pytest.raises(ServeError, match="admin API"):
            env.loop.run(start_balancer(config))
    with pytest.raises(OSError):
        connect(("127.0.0.1", listen_port), 1.0).close()  # the listener is gone again
