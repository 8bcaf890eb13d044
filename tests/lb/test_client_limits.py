"""Per-client limits at the balancer (issue 11, part 3): rate limits with 429 and
Retry-After, the allow list, prefix aggregation, connection and request caps, config
errors, and nothing kept after 10,000 refused requests.

Clients come from different loopback addresses (the whole 127.0.0.0/8 is local), so one
test has several "clients" with addresses of its choosing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import re
import socket
import time
import tracemalloc
from collections import Counter
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest

from gtm.errors import ConfigError
from regional_lb.config import build_config
from tests.lb.conftest import TIMEOUT, Client, Env, read_request, read_response
from tests.lb.process import LbProcess, free_port

H = b"Host: example.test\r\n"
GET = b"GET / HTTP/1.1\r\n" + H + b"\r\n"


def connect_from(address: tuple[str, int], source: str) -> Client:
    sock = socket.create_connection(address, timeout=TIMEOUT, source_address=(source, 0))
    sock.settimeout(TIMEOUT)
    return Client(sock)


def get(address: tuple[str, int], source: str, extra: bytes = b"") -> tuple[int, dict[str, str]]:
    with connect_from(address, source) as client:
        client.sendall(b"GET / HTTP/1.1\r\n" + H + extra + b"\r\n")
        status, headers, _ = read_response(client)
        return status, headers


def limited(env: Env, client_limits: dict[str, Any], **settings: Any) -> tuple[str, int]:
    backend = env.recorder("b")
    listener = {"name": "web", "bind": "127.0.0.1:0", "limits": client_limits,
                **settings.pop("listener", {})}
    return env.balancer([backend.address], listeners=[listener], **settings)


# -- rate limits --------------------------------------------------------------------------
def test_a_limited_client_gets_429_with_retry_after_while_another_is_served(env: Env) -> None:
    address = limited(env, {"rate": 0.01, "burst": 3})  # 3 at once, then one per 100 s
    with connect_from(address, "127.0.0.2") as client:
        for _ in range(3):
            client.sendall(GET)
            assert read_response(client)[0] == 200
        client.sendall(GET)
        status, headers, body = read_response(client)
        assert status == 429 and body == b"too many requests\n"
        assert 1 <= int(headers["retry-after"]) <= 100
        assert headers["cache-control"] == "no-store"
        assert abs(parsedate_to_datetime(headers["date"]).timestamp() - time.time()) < 60
        assert "connection" not in headers  # read whole: the connection stays open
        client.sendall(GET)  # and is still refused, not closed
        assert read_response(client)[0] == 429
    assert get(address, "127.0.0.3")[0] == 200  # another client is served meanwhile


def test_a_refused_request_with_an_unread_body_closes_the_connection(env: Env) -> None:
    address = limited(env, {"rate": 0.01, "burst": 1})
    with connect_from(address, "127.0.0.2") as client:
        client.sendall(GET)
        assert read_response(client)[0] == 200
        client.sendall(b"POST / HTTP/1.1\r\n" + H + b"Content-Length: 100000\r\n\r\n")
        status, headers, _ = read_response(client)
        assert (status, headers["connection"]) == (429, "close")
        assert "retry-after" in headers


def test_the_allow_list_is_never_limited(env: Env) -> None:
    address = limited(env, {"rate": 0.01, "burst": 1, "allow": ["127.0.0.9/32"]})
    assert [get(address, "127.0.0.9")[0] for _ in range(5)] == [200] * 5
    assert [get(address, "127.0.0.10")[0] for _ in range(2)] == [200, 429]


def test_clients_of_one_prefix_share_a_bucket(env: Env) -> None:
    address = limited(env, {"rate": 0.01, "burst": 2, "ipv4_prefix": 24})
    assert get(address, "127.0.5.1")[0] == 200
    assert get(address, "127.0.5.2")[0] == 200
    assert get(address, "127.0.5.3")[0] == 429  # same /24: the bucket is spent
    assert get(address, "127.0.6.1")[0] == 200  # another /24


def test_without_aggregation_each_address_has_its_own_bucket(env: Env) -> None:
    address = limited(env, {"rate": 0.01, "burst": 1})
    assert [get(address, f"127.0.5.{n}")[0] for n in (1, 2, 3)] == [200, 200, 200]
    assert get(address, "127.0.5.1")[0] == 429


def test_a_rate_limit_keyed_by_header_or_cookie(env: Env) -> None:
    address = limited(env, {"rate": 0.01, "burst": 1, "key": "header:X-Api-Key"})
    assert get(address, "127.0.0.2", b"X-Api-Key: one\r\n")[0] == 200
    assert get(address, "127.0.0.3", b"X-Api-Key: one\r\n")[0] == 429  # same key elsewhere
    assert get(address, "127.0.0.2", b"X-Api-Key: two\r\n")[0] == 200
    assert get(address, "127.0.0.4")[0] == 200  # no key: by address
    assert get(address, "127.0.0.4")[0] == 429
    env.close()
    env.handle = None
    address = limited(env, {"rate": 0.01, "burst": 1, "key": "cookie:session"})
    assert get(address, "127.0.0.2", b"Cookie: a=1; session=s1\r\n")[0] == 200
    assert get(address, "127.0.0.3", b"Cookie: session=s1\r\n")[0] == 429
    assert get(address, "127.0.0.3", b"Cookie: session=s2\r\n")[0] == 200


def test_a_route_limit_applies_to_its_requests_as_well_as_the_listeners(env: Env) -> None:
    backend = env.recorder("b")
    address = env.balancer([backend.address], listeners=[{
        "name": "web", "bind": "127.0.0.1:0", "limits": {"rate": 0.01, "burst": 4},
        "routes": [{"pool": "app", "path_prefix": "/login",
                    "limits": {"rate": 0.01, "burst": 1}}]}])

    def fetch(path: bytes) -> int:
        with connect_from(address, "127.0.0.2") as client:
            client.sendall(b"GET " + path + b" HTTP/1.1\r\n" + H + b"\r\n")
            return read_response(client)[0]

    assert [fetch(b"/login"), fetch(b"/login")] == [200, 429]  # the route's bucket
    assert [fetch(b"/"), fetch(b"/"), fetch(b"/")] == [200, 200, 200]  # 1+3 of 4 spent
    assert fetch(b"/") == 429
    assert fetch(b"/login") == 429


def test_route_limits_alone_cost_other_routes_nothing(env: Env) -> None:
    backend = env.recorder("b")
    address = env.balancer([backend.address], listeners=[{
        "name": "web", "bind": "127.0.0.1:0",
        "routes": [{"pool": "app", "path_prefix": "/api", "limits": {"rate": 0.01}}]}])
    assert [get(address, "127.0.0.2")[0] for _ in range(3)] == [200] * 3


# -- connection and request caps ---------------------------------------------------------
def test_the_connection_cap_closes_at_accept_per_client_network(env: Env) -> None:
    address = limited(env, {"max_connections": 2, "ipv4_prefix": 24})
    held = [connect_from(address, "127.0.7.1"), connect_from(address, "127.0.7.2")]
    for client in held:  # both accepted and served: counted
        client.sendall(GET)
        assert read_response(client)[0] == 200
    with connect_from(address, "127.0.7.3") as refused:
        assert _closed(refused)
    assert get(address, "127.0.8.1")[0] == 200  # another network
    held.pop().close()
    deadline = time.monotonic() + TIMEOUT  # the close reaches the balancer soon
    while time.monotonic() < deadline:
        with connect_from(address, "127.0.7.3") as client:
            try:  # refused until the close is seen: reset, or closed without an answer
                client.sendall(GET)
                if read_response(client)[0] == 200:
                    break
            except OSError:  # ConnectionError is one
                time.sleep(0.02)
    else:
        raise AssertionError("a freed connection slot was never given again")
    for client in held:
        client.close()


def _closed(client: Client) -> bool:
    """The balancer closed the connection without answering."""
    try:
        client.sendall(GET)
        return client.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def test_the_request_cap_answers_429_while_requests_are_in_flight(env: Env) -> None:
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await release.wait()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()

    backend = env.raw(slow)
    address = env.balancer([backend.address], listeners=[{
        "name": "web", "bind": "127.0.0.1:0", "limits": {"max_requests": 1}}])
    first = connect_from(address, "127.0.0.2")
    first.sendall(GET)
    _wait_for(lambda: backend.connections == 1)  # the first request reached the backend
    with connect_from(address, "127.0.0.2") as second:
        second.sendall(GET)
        status, headers, _ = read_response(second)
        assert (status, headers["retry-after"]) == (429, "1")
    assert get_with_release(address, "127.0.0.3", env, release) == 200
    assert read_response(first)[0] == 200
    with connect_from(address, "127.0.0.2") as again:  # the first one is over: room again
        again.sendall(GET)
        assert read_response(again)[0] == 200
    first.close()
    assert _table_totals(env) == (0, 0)


def get_with_release(address: tuple[str, int], source: str, env: Env,
                     release: asyncio.Event) -> int:
    with connect_from(address, source) as client:
        client.sendall(GET)
        env.loop.call(release.set)
        return read_response(client)[0]


def _wait_for(condition: Any, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.01)


def _table_totals(env: Env) -> tuple[int, int]:
    """Every connection and request count of the worker's tables, summed."""
    assert env.handle is not None
    counts = env.handle.worker.limiter.tables.counts

    def totals() -> tuple[int, int]:
        return sum(counts.connections), sum(counts.requests)

    deadline = time.monotonic() + TIMEOUT  # closes reach the balancer soon
    while env.loop.call(totals) != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.01)
    return env.loop.call(totals)  # type: ignore[no-any-return]


# -- config --------------------------------------------------------------------------------
@pytest.mark.parametrize(("listener", "where"), [
    ({"limits": {}}, "lb.listeners[0].limits"),
    ({"limits": {"rate": -1}}, "lb.listeners[0].limits.rate"),
    ({"limits": {"burst": 3}}, "lb.listeners[0].limits.burst"),
    ({"limits": {"rate": 1, "key": "ip"}}, "lb.listeners[0].limits.key"),
    ({"limits": {"rate": 1, "ipv4_prefix": 33}}, "lb.listeners[0].limits.ipv4_prefix"),
    ({"limits": {"rate": 1, "allow": ["nope"]}}, "lb.listeners[0].limits.allow[0]"),
    ({"limits": {"rate": 1, "extra": 1}}, "lb.listeners[0].limits"),
    ({"limits": {"max_connections": 1}, "mode": "tcp"}, "lb.listeners[0].limits"),
    ({"priority": "urgent"}, "lb.listeners[0].priority"),
    ({"priority_values": {"1": "high"}}, "lb.listeners[0].priority_values"),
    ({"priority_header": "X-P", "priority_values": {"1": "top"}},
     "lb.listeners[0].priority_values.1"),
    ({"routes": [{"pool": "app", "limits": {"burst": 2}}]}, "lb.listeners[0].routes[0].limits"),
    ({"routes": [{"pool": "app", "priority": 3}]}, "lb.listeners[0].routes[0].priority"),
])
def test_config_errors_name_the_key(listener: dict[str, Any], where: str) -> None:
    raw = {"listeners": [{"bind": "127.0.0.1:0", **listener}],
           "pools": [{"name": "app", "backends": ["127.0.0.1:9"]}]}
    with pytest.raises(ConfigError) as error:
        build_config(raw, "lb.toml")
    assert error.value.where.startswith(where), error.value


@pytest.mark.parametrize(("pool", "top", "where"), [
    ({"queue_size": -1}, {}, "lb.pools[0].queue_size"),
    ({"queue_timeout": 1.0}, {}, "lb.pools[0].queue_timeout"),
    ({"queue_size": 1, "queue_timeout": 0}, {}, "lb.pools[0].queue_timeout"),
    ({}, {"priority_classes": []}, "lb.priority_classes"),
    ({}, {"priority_classes": ["a", "a"]}, "lb.priority_classes[1]"),
    ({}, {"limits": {"client_table": 10}}, "lb.limits.client_table"),
])
def test_queue_config_errors_name_the_key(pool: dict[str, Any], top: dict[str, Any],
                                          where: str) -> None:
    raw = {"listeners": [{"bind": "127.0.0.1:0"}],
           "pools": [{"name": "app", "backends": ["127.0.0.1:9"], **pool}], **top}
    with pytest.raises(ConfigError) as error:
        build_config(raw, "lb.toml")
    assert error.value.where == where, error.value


# -- nothing kept ---------------------------------------------------------------------------
def test_nothing_leaks_after_10000_limited_requests(env: Env) -> None:
    """Refused requests on keep-alive connections and fresh connections from 1,000
    addresses (more than the 64-entry table holds): the table stays its size, counts go
    back to 0, connections are gone, and Python's heap does not grow with the count."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:  # keeps nothing per request (a Recorder would)
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    backend = env.raw(answer)
    address = env.balancer([backend.address], limits={"client_table": 64}, listeners=[{
        "name": "web", "bind": "127.0.0.1:0", "limits": {
            "rate": 0.001, "burst": 1, "max_connections": 50, "max_requests": 50}}])
    sources = [f"127.0.{10 + n // 200}.{1 + n % 200}" for n in range(1_000)]
    assert env.handle is not None
    worker = env.handle.worker
    baseline = env.loop.call(lambda: len(worker.connections))

    def round_of(keep_alive: int) -> tuple[Counter[int], Counter[int]]:
        """Statuses on one keep-alive connection, and on a connection per address."""
        kept: Counter[int] = Counter()  # counted, not listed: the test keeps no list
        fresh: Counter[int] = Counter()
        with connect_from(address, "127.0.0.2") as client:
            for _ in range(keep_alive):
                client.sendall(GET)
                kept[read_response(client)[0]] += 1
        for source in sources:
            fresh[get(address, source)[0]] += 1
        return kept, fresh

    kept, fresh = round_of(500)  # warm-up: every bucket taken once, caches filled
    assert kept[429] == 499 and fresh[200] + fresh[429] == 1_000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept, fresh = round_of(9_000)  # 10,000 requests
        _wait_for(lambda: env.loop.call(lambda: len(worker.connections)) == baseline)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # A 64-entry table under 1,000 addresses evicts: an evicted client gets its one
    # request of burst again, but the keep-alive client stays refused after that.
    assert kept[429] >= 8_999 and fresh[200] + fresh[429] == 1_000
    tables = worker.limiter.tables
    assert env.loop.call(tables.rate.used) <= 64 and len(tables.rate.memory) == 64 * 16
    assert _table_totals(env) == (0, 0)
    assert grown < 100_000, f"{grown} bytes more after 10,000 refused requests"


# -- across the workers of one balancer ------------------------------------------------------
def test_two_workers_enforce_one_shared_limit(env: Env, tmp_path: Path) -> None:
    """`gtm lb serve --workers 2`: the rate limit and the connection cap hold for the
    balancer, not per worker (each worker alone would let through twice as much)."""
    backend = env.recorder("b")
    port = free_port()
    config = tmp_path / "lb.toml"
    config.write_text(f"""[lb]
access_log = "text"
[lb.timeouts]
shutdown_grace = 0.2
shutdown_deadline = 2
[[lb.listeners]]
name = "web"
bind = "127.0.0.1:{port}"
[lb.listeners.limits]
rate = 0.001
burst = 5
key = "header:X-Key"
max_connections = 3
[[lb.pools]]
name = "app"
backends = ["{backend.address}"]
""")
    lb = LbProcess(config, workers=2)
    try:
        address = ("127.0.0.1", port)
        lb.wait_serving(address)
        # 40 connections (the kernel spreads them over both workers), one key.
        statuses = [get(address, "127.0.0.2", b"X-Key: shared\r\n")[0] for _ in range(40)]
        assert (statuses.count(200), statuses.count(429)) == (5, 35)
        lb.wait_for_log(r'gtm\.lb\.access\[\d+\] 127\.0\.0\.2 "GET /" 429', count=35)
        pids = {m.group(1) for line in lb.lines
                if (m := re.search(r'gtm\.lb\.access\[(\d+)\] 127\.0\.0\.2 "GET /"', line))}
        assert len(pids) == 2, "both workers answered the key"
        # Three connections held by one client; every further one is refused, in
        # whichever worker it lands.
        held = [connect_from(address, "127.0.3.1") for _ in range(3)]
        for n, client in enumerate(held):
            client.sendall(b"GET / HTTP/1.1\r\n" + H + b"X-Key: held-%d\r\n\r\n" % n)
            assert read_response(client)[0] == 200
        for _ in range(10):
            with connect_from(address, "127.0.3.1") as refused:
                assert _closed(refused)
        assert get(address, "127.0.3.2", b"X-Key: other\r\n")[0] == 200
        for client in held:
            client.close()
    finally:
        assert lb.stop() == 0


def test_behind_a_proxy_the_connection_cap_counts_the_client_the_header_names(
        env: Env) -> None:
    address = limited(env, {"max_connections": 1}, listener={
        "proxy_protocol": True, "trusted_networks": ["127.0.0.0/8"]})

    def via_proxy(client_ip: str) -> Client:
        client = connect_from(address, "127.0.0.2")  # the proxy: one address for all
        client.sendall(f"PROXY TCP4 {client_ip} 127.0.0.1 4000 80\r\n".encode() + GET)
        return client

    first = via_proxy("198.51.100.1")
    assert read_response(first)[0] == 200
    other = via_proxy("198.51.100.2")  # another client through the same proxy
    assert read_response(other)[0] == 200
    # The first client's second connection: closed without an answer (a reset when the
    # close raced the request's bytes).
    with via_proxy("198.51.100.1") as again, contextlib.suppress(ConnectionResetError):
        assert again.recv(1) == b""
    for client in (first, other):
        client.close()
    assert _table_totals(env) == (0, 0)
