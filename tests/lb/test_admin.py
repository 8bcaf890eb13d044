"""The balancer's admin API under hostile input, over real sockets.

A balancer runs in-process from a config file (so runtime overrides are written beside
it) with its admin API on a kernel-chosen loopback port; requests are raw bytes on a
blocking socket, so headers that no HTTP client library would send can be sent.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from gtm.errors import ConfigError
from regional_lb import start_balancer
from regional_lb.config import build_config, load_config
from tests.lb.conftest import Env, connect, read_response
from tests.tls.pki import CA, write_pair

TOKEN = "s3cret"
AUTH = f"Bearer {TOKEN}".encode()


class Admin:
    """A balancer started from ``dir/lb.toml`` and a raw client for its admin API."""

    def __init__(self, env: Env, directory: Path, backends: list[str], extra: str = "",
                 listener: str = ""):
        self.env = env
        self.config = directory / "lb.toml"
        self.runtime = directory / "lb.toml.runtime.json"
        self.write(backends, extra, listener)
        env.handle = env.loop.run(start_balancer(self.config))
        self.port = env.handle.admin.port

    def write(self, backends: list[str], extra: str = "", listener: str = "") -> None:
        listed = ", ".join(f'"{b}"' for b in backends)
        self.config.write_text(f"""[lb]
admin = "127.0.0.1:0"
admin_token = "{TOKEN}"
{extra}
[lb.timeouts]
shutdown_grace = 0.0
[[lb.listeners]]
name = "web"
bind = "127.0.0.1:0"
{listener}
[[lb.pools]]
name = "app"
backends = [{listed}]
""")

    def raw(self, method: str, path: str, body: bytes = b"", auth: bytes | None = AUTH,
            headers: bytes = b"", timeout: float = 5.0) -> tuple[int, dict[str, str], Any]:
        head = (f"{method} {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n"
                f"Content-Length: {len(body)}\r\n").encode()
        if auth is not None:
            head += b"Authorization: " + auth + b"\r\n"
        with connect(("127.0.0.1", self.port), timeout) as client:
            client.sendall(head + headers + b"\r\n" + body)
            status, response_headers, data = read_response(client)
        return status, response_headers, json.loads(data)

    def call(self, method: str, path: str, body: Any = None,
             **options: Any) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else b""
        status, _, answer = self.raw(method, path, data,
                                     headers=b"Content-Type: application/json\r\n", **options)
        return status, answer

    def backends(self) -> dict[str, dict[str, Any]]:
        status, pools = self.call("GET", "/pools")
        assert status == 200
        return {b["address"]: b for b in pools["pools"][0]["backends"]}

    def runtime_data(self) -> Any:
        return json.loads(self.runtime.read_text()) if self.runtime.exists() else None


@pytest.fixture
def admin(env: Env, tmp_path: Path) -> Admin:
    a, b = env.recorder("a"), env.recorder("b")
    return Admin(env, tmp_path, [a.address, b.address])


# -- Authorization ---------------------------------------------------------------------
@pytest.mark.parametrize("header", [TOKEN.encode(), b"Basic " + TOKEN.encode(),
                                    b"Token " + TOKEN.encode(), b"Bearer", b"Bearer wrong",
                                    None])
def test_authorization_needs_the_bearer_scheme_and_the_token(admin: Admin,
                                                              header: bytes | None) -> None:
    status, headers, body = admin.raw("GET", "/pools", auth=header)
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    assert body["error"]["message"]  # the reason, in the admin API's error shape


@pytest.mark.parametrize("scheme", [b"Bearer", b"bearer", b"BEARER"])
def test_bearer_scheme_is_case_insensitive(admin: Admin, scheme: bytes) -> None:
    assert admin.raw("GET", "/pools", auth=scheme + b" " + TOKEN.encode())[0] == 200


@pytest.mark.parametrize("header", [AUTH + b"\xff", AUTH + "é".encode(),
                                    b"Bearer\t" + TOKEN.encode(),
                                    "Bearer sécret".encode("latin-1")])
def test_authorization_outside_printable_ascii_is_400_with_a_reason(admin: Admin,
                                                                    header: bytes) -> None:
    status, headers, body = admin.raw("GET", "/pools", auth=header)
    assert status == 400
    assert headers["www-authenticate"] == 'Bearer error="invalid_request"'
    assert "ASCII" in body["error"]["message"]


def test_two_authorization_headers_are_refused(admin: Admin) -> None:
    status, _, body = admin.raw("GET", "/pools", headers=b"Authorization: Bearer x\r\n")
    assert status == 400 and "more than one" in body["error"]["message"]


def test_a_token_no_client_could_send_is_a_config_error() -> None:
    config = {"admin": "127.0.0.1:0", "admin_token": "pass word",
              "listeners": [{"bind": "127.0.0.1:0"}], "pools": [{"name": "app"}]}
    with pytest.raises(ConfigError) as caught:
        build_config(config, "test")
    assert caught.value.where == "lb.admin_token" and "ASCII" in caught.value.reason


# -- bodies ------------------------------------------------------------------------------
@pytest.mark.parametrize(("body", "reason"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"\xff\xfe{}", "not JSON"),
    (b'{"address": "127.0.0.1:9", "weight": ' + b"9" * 5000 + b"}", "not JSON"),
    (b"[]", "JSON object"),
])
def test_bodies_that_are_not_json_objects_are_400(admin: Admin, body: bytes,
                                                  reason: str) -> None:
    status, _, answer = admin.raw("POST", "/pools/app/backends", body)
    assert status == 400 and reason in answer["error"]["message"]


def test_unknown_charset_is_400(admin: Admin) -> None:
    status, _, answer = admin.raw("POST", "/pools/app/backends", b'{"address": "127.0.0.1:9"}',
                                  headers=b"Content-Type: application/json; charset=nope\r\n")
    assert status == 400 and "nope" in answer["error"]["message"]


@pytest.mark.parametrize(("body", "field"), [
    (b'{"weight": true}', "weight"), (b'{"weight": false}', "weight"),
    (b'{"weight": 1.5}', "weight"), (b'{"weight": "3"}', "weight"),
    (b'{"weight": null}', "weight"), (b'{"weight": NaN}', "weight"),
    (b'{"weight": Infinity}', "weight"), (b'{"weight": 1e400}', "weight"),
    (b'{"weight": 100000000000000000000000000000}', "weight"), (b'{"weight": -1}', "weight"),
    (b'{"state": ["drain"]}', "state"), (b'{"state": {"a": 1}}', "state"),
    (b'{"state": "gone"}', "state"), (b'{"removed": true}', "removed"),
])
def test_patch_types_are_strict_and_change_nothing(admin: Admin, body: bytes,
                                                   field: str | None) -> None:
    before = admin.backends()
    address = next(iter(before))
    status, _, answer = admin.raw("PATCH", f"/pools/app/backends/{address}", body)
    assert status == 400 and answer["error"]["field"] == field and answer["error"]["message"]
    assert admin.backends()[address]["weight"] == before[address]["weight"] == 1
    assert admin.backends()[address]["state"] == "enabled"
    assert admin.runtime_data() is None  # nothing was written


@pytest.mark.parametrize("entry", [
    {"address": "127.0.0.1:9100", "weight": True},
    {"address": "127.0.0.1:9100", "weight": 2.5},
    {"address": "127.0.0.1:9100", "state": "off"},
    {"address": "127.0.0.1"},
    {"address": "[::1]"},
    {"address": "127.0.0.1:0"},
    {"address": "127.0.0.1:\u0661"},  # an Arabic-Indic digit one: int() would take it
    {"address": "[::1%\n]:80"},
    {"address": 9100},
    {"address": "169.254.169.254:80"},
    {"address": "127.0.0.1:9100", "port": 1},
])
def test_admin_and_config_refuse_a_backend_for_the_same_reason(admin: Admin,
                                                               entry: dict[str, Any]) -> None:
    """One reader for both: the admin API's 400 says what the config file's error says."""
    config = {"listeners": [{"bind": "127.0.0.1:0"}],
              "pools": [{"name": "app", "backends": [entry]}]}
    with pytest.raises(ConfigError) as caught:
        build_config(config, "lb.toml")
    status, answer = admin.call("POST", "/pools/app/backends", entry)
    assert status == 400
    assert answer["error"]["message"] == caught.value.reason
    where = str(caught.value.where).removeprefix("lb.pools[0].backends[0]")
    assert answer["error"]["field"] == (where.removeprefix(".") or None)
    assert len(admin.backends()) == 2 and admin.runtime_data() is None


def test_a_backend_without_a_port_is_refused_not_stored_with_port_0(admin: Admin) -> None:
    status, answer = admin.call("POST", "/pools/app/backends", {"address": "127.0.0.1"})
    error = answer["error"]
    assert status == 400 and error["field"] == "address" and "port" in error["message"]
    assert not any(key.endswith(":0") for key in admin.backends())


# -- drain -----------------------------------------------------------------------------
@pytest.mark.parametrize("query", ["wait=abc", "wait=nan", "wait=inf", "wait=-1", "wait=1e3",
                                   "wait=3601", "wait=", "wait=%D9%A1", "wait=1&wait=2",
                                   "wiat=5"])
def test_drain_checks_its_query_before_draining(admin: Admin, query: str) -> None:
    address = next(iter(admin.backends()))
    status, answer = admin.call("POST", f"/pools/app/backends/{address}/drain?{query}")
    error = answer["error"]
    assert status == 400 and error["field"] in ("wait", "wiat") and error["message"]
    assert admin.backends()[address]["state"] == "enabled"  # nothing was applied


def test_drain_with_a_wait_in_range_answers(admin: Admin) -> None:
    address = next(iter(admin.backends()))
    status, answer = admin.call("POST", f"/pools/app/backends/{address}/drain?wait=0.5")
    assert status == 200 and answer["drained"] is True and answer["state"] == "drain"


# -- allowed_backend_networks ------------------------------------------------------------
REFUSED = ["169.254.169.254:80", "0.0.0.0:80", "[::]:80", "224.0.0.1:80", "[ff02::1]:80",
           "[fe80::1]:80", "[fe80::1%lo]:80", "[::ffff:169.254.169.254]:80"]


@pytest.mark.parametrize("address", REFUSED)
def test_default_networks_refuse_link_local_unspecified_and_multicast(
        admin: Admin, tmp_path: Path, address: str) -> None:
    status, answer = admin.call("POST", "/pools/app/backends", {"address": address})
    assert status == 400 and answer["error"]["field"] == "address"
    host = address.rpartition(":")[0].strip("[]")
    message = answer["error"]["message"]
    assert host in message and "allowed_backend_networks" in message
    assert address not in admin.backends()
    path = tmp_path / "other.toml"
    path.write_text(f'[[lb.listeners]]\nbind = "127.0.0.1:0"\n'
                    f'[[lb.pools]]\nname = "app"\nbackends = ["{address}"]\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.where == "lb.pools[0].backends[0].address"
    assert host in caught.value.reason and "allowed_backend_networks" in caught.value.reason


def test_configured_networks_are_the_only_ones_allowed(env: Env, tmp_path: Path) -> None:
    a = env.recorder("a")
    admin = Admin(env, tmp_path, [a.address],
                  extra='allowed_backend_networks = ["127.0.0.0/8", "169.254.0.0/16"]')
    assert admin.call("POST", "/pools/app/backends", {"address": "127.0.0.2:80"})[0] == 201
    assert admin.call("POST", "/pools/app/backends", {"address": "169.254.1.1:80"})[0] == 201
    status, answer = admin.call("POST", "/pools/app/backends", {"address": "10.0.0.1:80"})
    assert status == 400
    assert "10.0.0.1 is not in allowed_backend_networks" in answer["error"]["message"]


@pytest.mark.parametrize(("value", "where"), [
    ('"10.0.0.0/8"', "lb.allowed_backend_networks"),
    ('["10.0.0.1/8"]', "lb.allowed_backend_networks[0]"),  # host bits set: a typo?
    ('["not-a-net"]', "lb.allowed_backend_networks[0]"),
    ('["10.0.0.0/8", 5]', "lb.allowed_backend_networks[1]"),
])
def test_bad_allowed_backend_networks_are_config_errors(tmp_path: Path, value: str,
                                                        where: str) -> None:
    path = tmp_path / "lb.toml"
    path.write_text(f'[lb]\nallowed_backend_networks = {value}\n[[lb.listeners]]\n'
                    f'bind = "127.0.0.1:0"\n[[lb.pools]]\nname = "app"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.where == where and caught.value.source == str(path)


def test_runtime_file_is_checked_like_the_config(env: Env, tmp_path: Path) -> None:
    """A hand-edited runtime file cannot add what the admin API would refuse."""
    a = env.recorder("a")
    (tmp_path / "lb.toml.runtime.json").write_text(json.dumps(
        {"app": {"169.254.169.254:80": {"added": True}}}))
    with pytest.raises(ConfigError) as caught:
        Admin(env, tmp_path, [a.address])
    assert "runtime.json" in str(caught.value.source)
    assert "169.254.169.254 is not in allowed_backend_networks" in caught.value.reason


# -- FILE.runtime.json keeps what is live ---------------------------------------------
def test_added_then_removed_backend_leaves_no_trace(env: Env, admin: Admin) -> None:
    c = env.recorder("c")
    assert admin.call("POST", "/pools/app/backends", {"address": c.address, "weight": 3})[0] == 201
    assert admin.runtime_data() == {"app": {c.address: {"added": True, "weight": 3}}}
    assert admin.call("PATCH", f"/pools/app/backends/{c.address}", {"state": "drain"})[0] == 200
    assert admin.call("DELETE", f"/pools/app/backends/{c.address}")[0] == 200
    assert c.address not in admin.runtime.read_text()
    assert admin.runtime_data() == {}
    assert c.address not in admin.backends()


def test_removed_file_backend_keeps_only_its_marker(admin: Admin) -> None:
    a, b = admin.backends()
    assert admin.call("PATCH", f"/pools/app/backends/{a}", {"weight": 7})[0] == 200
    assert admin.call("DELETE", f"/pools/app/backends/{a}")[0] == 200
    assert admin.runtime_data() == {"app": {a: {"removed": True}}}  # weight 7 went with it
    assert admin.call("POST", "/pools/app/backends", {"address": a})[0] == 201
    assert admin.runtime_data() == {}  # back as the file has it
    assert admin.backends()[a]["weight"] == 1
    # A backend the file no longer lists takes its changes with it at the next write.
    assert admin.call("PATCH", f"/pools/app/backends/{b}", {"weight": 2})[0] == 200
    admin.write([a])
    admin.env.loop.run(admin.env.handle.reload())  # type: ignore[union-attr]
    assert set(admin.backends()) == {a}  # b's change did not bring it back
    assert admin.call("PATCH", f"/pools/app/backends/{a}", {"weight": 4})[0] == 200
    assert admin.runtime_data() == {"app": {a: {"weight": 4}}}


def test_runtime_file_of_the_earlier_format_still_adds(env: Env, tmp_path: Path) -> None:
    a, c = env.recorder("a"), env.recorder("c")
    (tmp_path / "lb.toml.runtime.json").write_text(json.dumps(
        {"app": {c.address: {"removed": False, "weight": 2}}}))  # what add used to write
    admin = Admin(env, tmp_path, [a.address])
    assert admin.backends()[c.address]["weight"] == 2


def test_concurrent_changes_are_all_kept(env: Env, tmp_path: Path) -> None:
    """Each change edits the overrides of the one before: none is lost to a race (a TLS
    listener makes every reload wait on a thread, so the changes would interleave)."""
    certs = tmp_path / "certs"
    certs.mkdir()
    chain, key, _ = CA().issue(["localhost"])
    write_pair(certs, "www", chain, key)
    admin = Admin(env, tmp_path, [env.recorder("a").address],
                  listener='[lb.listeners.tls]\ncertificates = "certs/"')
    added = [f"127.0.0.1:{port}" for port in range(9201, 9213)]
    results: list[int] = []

    def add(address: str) -> None:
        results.append(admin.call("POST", "/pools/app/backends", {"address": address})[0])

    threads = [threading.Thread(target=add, args=(address,)) for address in added]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results == [201] * len(added)
    assert set(added) <= set(admin.backends())
    assert set(admin.runtime_data()["app"]) == set(added)


# -- everything else a client can get wrong: 4xx, the error shape, nothing changed ----
@pytest.mark.parametrize(("method", "path", "body", "status", "reason"), [
    ("POST", "/pools/nope/backends", {"address": "127.0.0.1:9"}, 404, "no pool 'nope'"),
    ("DELETE", "/pools/app/backends/127.0.0.1:1", None, 404, "no backend '127.0.0.1:1'"),
    ("PATCH", "/pools/nope/backends/127.0.0.1:1", {"weight": 1}, 404, "no pool"),
    ("POST", "/pools/app/backends/127.0.0.1:1/drain", None, 404, "no backend"),
    ("GET", "/nothing", None, 404, "Not Found"),
    ("POST", "/pools/app/backends", {"address": "127.0.0.1:9", "extra": 1}, 400, "unknown key"),
    ("POST", "/pools/app/backends", {}, 400, "is required"),
    ("POST", "/pools/app/backends?force=1", {"address": "127.0.0.1:9"}, 400,
     "unknown query parameter"),
    ("POST", "/reload?x=1", None, 400, "unknown query parameter"),
    ("POST", "/acme/www/renew", None, 404, "no [lb.acme]"),
])
def test_hostile_requests_get_4xx_with_a_reason(admin: Admin, method: str, path: str,
                                                body: Any, status: int, reason: str) -> None:
    before = admin.backends()
    answer_status, answer = admin.call(method, path, body)
    assert answer_status == status and reason in answer["error"]["message"]
    assert admin.backends().keys() == before.keys() and admin.runtime_data() is None


def test_wrong_method_is_405_with_allow_in_the_error_shape(admin: Admin) -> None:
    status, headers, answer = admin.raw("PUT", "/pools")
    assert status == 405 and "GET" in headers["allow"] and answer["error"]["message"]


def test_oversized_body_is_413_in_the_error_shape(admin: Admin) -> None:
    body = b'{"address": "' + b"1" * (2 * 1024 * 1024) + b'"}'
    status, _, answer = admin.raw("POST", "/pools/app/backends", body)
    assert status == 413 and "body size" in answer["error"]["message"]
