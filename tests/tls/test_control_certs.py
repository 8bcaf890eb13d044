"""Certificates kept in the control plane, served by a running balancer: uploaded through the
API and used by the next handshakes within seconds, rotated, refused when broken (the old
one keeps serving), deleted; under load with no failed request; on both stores."""

from __future__ import annotations

import logging
import os
import re
import shutil
import ssl
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gtm.control.client import Client
from gtm.control.plane import ControlPlane, ControlSettings, start_control_plane
from gtm.control.store import NewCertificate
from gtm.errors import ConfigError
from gtm.sealing import SecretKey, read_key
from regional_lb.config import build_config, with_control_store
from tests.control.conftest import POSTGRES_URL
from tests.control.harness import TcpRelay
from tests.lb.conftest import Env
from tests.tls.conftest import Pki, client_context, get, served, tls_connect
from tests.tls.test_rotation import Load, wait_for

LISTENER = "web"


class Control:
    """A control plane on the balancers' loop, and a synchronous API client for the test."""

    def __init__(self, env: Env, state_dir: Path, store_url: str | None = None,
                 namespace: str = "gtm"):
        self.env = env
        self.settings = ControlSettings(port=0, state_dir=state_dir, store_url=store_url,
                                        namespace=namespace)
        self.plane: ControlPlane = env.loop.run(start_control_plane(self.settings))
        self.api = Client(self.plane.url, self.plane.admin_token_path.read_text().strip())
        self.key = read_key(self.settings.resolved_key_file())

    def upload(self, name: str, chain: bytes, key: bytes) -> dict[str, Any]:
        body = {"chain": chain.decode(), "key": key.decode()}
        reply = self.api.call("PUT", f"/v1/certificates/{name}", body).body
        assert isinstance(reply, dict)
        return reply

    def put_row(self, name: str, chain: bytes, key: bytes, sealer: SecretKey) -> None:
        """A row written straight into the store, past the API's checks: what a broken or
        foreign row looks like to a balancer."""
        sealed = sealer.seal(name, key)
        self.env.loop.run(self.plane.store.put_certificate(NewCertificate(
            name=name, chain=chain.decode(), sealed_key=sealed.ciphertext,
            key_nonce=sealed.nonce, key_id=sealed.key_id, names=(f"{name}.example.com",),
            not_after=4e9, fingerprint="00", updated_by="test")))

    def tls_settings(self, **extra: Any) -> dict[str, Any]:
        return {"watch_interval": 0.1, "control_store": self.settings.resolved_store_url(),
                "control_namespace": self.settings.namespace,
                "secret_key_file": str(self.settings.resolved_key_file()), **extra}

    def close(self) -> None:
        self.env.loop.run(self.plane.stop())


@pytest.fixture(params=["sqlite", "postgres"])
def control(env: Env, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Control]:
    if request.param == "sqlite":
        world = Control(env, tmp_path / "control")
    else:
        request.getfixturevalue("postgres_url")
        world = Control(env, tmp_path / "control", POSTGRES_URL,
                        request.getfixturevalue("namespace"))
    yield world
    world.close()


@pytest.fixture
def sqlite_control(env: Env, tmp_path: Path) -> Iterator[Control]:
    world = Control(env, tmp_path / "control")
    yield world
    world.close()


def balancer(env: Env, control: Control, backends: list[str], tls: dict[str, Any] | None = None,
             **settings: Any) -> tuple[str, int]:
    return env.balancer(backends, listeners=[{
        "name": LISTENER, "bind": "127.0.0.1:0", "tls": {"control": True, **(tls or {})}}],
        tls=control.tls_settings(**settings))


def serial(address: tuple[str, int], pki: Pki, name: str | None = "www.example.com") -> int:
    ctx = client_context(pki.ca_file if name else None)
    with tls_connect(address, name, ctx) as sock:
        return int(served(sock).serial_number)


def fails(address: tuple[str, int], name: str | None) -> bool:
    try:
        tls_connect(address, name, client_context(None)).close()
    except (ssl.SSLError, ConnectionError):
        return True
    return False


def store_of(env: Env) -> Any:
    assert env.handle is not None
    (store,) = env.handle.worker.tls.stores.values()
    return store


def test_upload_rotate_refuse_and_delete(env: Env, control: Control, pki: Pki,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    address = balancer(env, control, ["127.0.0.1:1"], {"default": "www"})
    assert fails(address, "www.example.com") and fails(address, None)  # nothing yet

    chain, key, first = pki.ca.issue(["www.example.com"])
    assert control.upload("www", chain, key)["revision"] == 1
    assert wait_for(lambda: not fails(address, "www.example.com"), timeout=5)
    assert serial(address, pki) == first.serial_number
    assert serial(address, pki, None) == first.serial_number  # the default, without SNI

    api_chain, api_key, api_cert = pki.ca.issue(["api.example.com"])
    control.upload("api", api_chain, api_key)
    # Until it is loaded the default answers for api.example.com: wait for the new one.
    assert wait_for(lambda: _served_for(address, "api.example.com") == api_cert.serial_number)
    assert serial(address, pki, "api.example.com") == api_cert.serial_number

    chain2, key2, second = pki.ca.issue(["www.example.com"])
    control.upload("www", chain2, key2)  # rotation through the API, no restart
    assert wait_for(lambda: serial(address, pki) == second.serial_number)

    store = store_of(env)
    foreign = SecretKey(os.urandom(32))
    broken = [  # (chain, key, sealer, what the refusal says)
        (pki.ca.issue(["www.example.com"])[0], pki.ca.issue(["x.example.com"])[1],
         control.key, "does not belong"),
        (*pki.ca.issue(["www.example.com"], days=-1, start_days=-9)[:2], control.key,
         "expired on"),
        (*pki.ca.issue(["www.example.com"])[:2], foreign, f"{foreign.id}.*{control.key.id}"),
    ]
    for bad_chain, bad_key, sealer, reason in broken:
        refusals = store.refusals
        control.put_row("www", bad_chain, bad_key, sealer)
        assert wait_for(lambda: store.refusals > refusals)  # noqa: B023
        assert "www" in store.errors
        assert re.search(reason, store.errors["www"]), store.errors
        assert serial(address, pki) == second.serial_number  # the old one serves on

    chain3, key3, third = pki.ca.issue(["www.example.com"])
    control.upload("www", chain3, key3)
    assert wait_for(lambda: serial(address, pki) == third.serial_number)
    assert wait_for(lambda: "www" not in store.errors)

    control.api.call("DELETE", "/v1/certificates/api")
    assert wait_for(lambda: serial(address, pki, None) == third.serial_number and
                    _served_for(address, "api.example.com") == third.serial_number)
    control.api.call("DELETE", "/v1/certificates/www")  # the default: still served
    assert wait_for(lambda: "is the default: removal ignored" in caplog.text)
    assert serial(address, pki) == third.serial_number
    for secret in (key, key2, key3, api_key):
        assert secret.split(b"\n")[1].decode() not in caplog.text


def _served_for(address: tuple[str, int], name: str) -> int:
    with tls_connect(address, name, client_context(None)) as sock:
        return int(served(sock).serial_number)


def test_rotation_under_load_drops_nothing(env: Env, sqlite_control: Control, pki: Pki) -> None:
    backend = env.recorder("app")
    chain, key, first = pki.ca.issue(["www.example.com"])
    sqlite_control.upload("www", chain, key)
    address = balancer(env, sqlite_control, [backend.address])
    ctx = client_context(pki.ca_file)
    before = tls_connect(address, "www.example.com", ctx)  # open across the rotations
    assert get(before, "www.example.com")[0] == 200
    serials = [first.serial_number]
    with Load(address, pki) as load:  # stops when the block ends: bounded by the waits
        assert wait_for(lambda: len(load.serials) >= 20, timeout=10)
        for _ in range(3):
            chain, key, cert = pki.ca.issue(["www.example.com"])
            sqlite_control.upload("www", chain, key)
            serials.append(cert.serial_number)
            assert wait_for(lambda: load.serials[-1] == cert.serial_number,  # noqa: B023
                            timeout=5)
        count = len(load.serials)
        assert wait_for(lambda: len(load.serials) >= count + 20, timeout=10)
    assert load.failures == []
    assert load.serials[0] == first.serial_number and set(load.serials) == set(serials)
    assert get(before, "www.example.com")[0] == 200  # the old connection never noticed
    before.close()


def test_a_wrong_key_file_is_fixed_without_restart(env: Env, sqlite_control: Control,
                                                   pki: Pki, tmp_path: Path) -> None:
    chain, key, cert = pki.ca.issue(["www.example.com"])
    sqlite_control.upload("www", chain, key)
    wrong = tmp_path / "copy.key"
    wrong.write_text("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
    os.chmod(wrong, 0o600)
    address = balancer(env, sqlite_control, ["127.0.0.1:1"], secret_key_file=str(wrong))
    store = store_of(env)
    assert "www" in store.errors and sqlite_control.key.id in store.errors["www"]
    assert fails(address, "www.example.com")
    shutil.copyfile(sqlite_control.settings.resolved_key_file(), wrong)  # the right copy
    assert wait_for(lambda: not fails(address, "www.example.com"))
    assert serial(address, pki) == cert.serial_number


def test_an_unreachable_store_changes_nothing_served(env: Env, pki: Pki, tmp_path: Path,
                                                     postgres_url: str, namespace: str,
                                                     caplog: pytest.LogCaptureFixture
                                                     ) -> None:
    control = Control(env, tmp_path / "control", postgres_url, namespace)
    relay = TcpRelay(("127.0.0.1", 5432))
    try:
        chain, key, first = pki.ca.issue(["www.example.com"])
        control.upload("www", chain, key)
        address = balancer(env, control, ["127.0.0.1:1"], {"default": "www"},
                           control_store=relay.url(postgres_url))
        assert serial(address, pki) == first.serial_number
        relay.cut()
        chain2, key2, second = pki.ca.issue(["www.example.com"])
        control.upload("www", chain2, key2)  # the control plane itself is fine
        assert wait_for(lambda: "cannot read certificates" in caplog.text)
        assert serial(address, pki) == first.serial_number  # serving goes on
        relay.restore()
        assert wait_for(lambda: serial(address, pki) == second.serial_number, timeout=10)
    finally:
        relay.close()
        control.close()


def test_config_for_control_plane_certificates(tmp_path: Path) -> None:
    def config(tls: dict[str, Any], settings: dict[str, Any] | None = None) -> Any:
        return build_config({"pools": [{"name": "app", "backends": ["127.0.0.1:1"]}],
                             "listeners": [{"bind": "127.0.0.1:0", "tls": tls}],
                             "tls": settings or {}}, "test")

    unbound = config({"control": True, "default": "www"})  # certificates optional now
    spec = unbound.listeners[0].tls
    assert spec.certificates is None and spec.control is not None
    assert spec.control.store_url is None
    with pytest.raises(ConfigError, match=r"needs lb\.tls\.control_store"):
        spec.control.check("listener web: tls.control")
    key = tmp_path / "secret.key"
    key.write_text("x")
    bound = with_control_store(unbound, "sqlite:///somewhere/gtm.db", key)  # what gtm up does
    assert bound.listeners[0].tls.control.store_url == "sqlite:///somewhere/gtm.db"
    assert bound.listeners[0].tls.control.key_file == key
    own = config({"control": True}, {"control_store": "postgresql://db/gtm",
                                     "secret_key_file": str(key), "control_namespace": "prod"})
    kept = with_control_store(own, "sqlite:///other.db", tmp_path / "other.key")
    assert kept.listeners[0].tls.control.store_url == "postgresql://db/gtm"
    assert kept.listeners[0].tls.control.namespace == "prod"
    for settings, message in [
        ({"control_store": "mysql://x"}, r"lb\.tls\.control_store: must be postgresql"),
        ({"control_namespace": "1bad"}, r"lb\.tls\.control_namespace: a namespace"),
        ({"secret_key_file": str(tmp_path / "none.key")}, "secret_key_file: .* is not a file"),
    ]:
        with pytest.raises(ConfigError, match=message):
            config({"control": True}, settings)
    with pytest.raises(ConfigError, match=r"tls\.certificates: is required .* unless control"):
        config({})
    with pytest.raises(ConfigError, match=r"tls\.control: must be true or false"):
        config({"control": "yes"})


def test_a_start_without_the_store_serves_the_last_copy(env: Env, sqlite_control: Control,
                                                        pki: Pki, tmp_path: Path) -> None:
    cache = tmp_path / "lb.certificates.json"
    chain, key, cert = pki.ca.issue(["www.example.com"])
    sqlite_control.upload("www", chain, key)
    address = balancer(env, sqlite_control, ["127.0.0.1:1"], control_cache=str(cache))
    assert serial(address, pki) == cert.serial_number
    assert wait_for(cache.exists)
    kept = cache.read_bytes()
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" not in kept and key.split(b"\n")[1] not in kept
    assert env.handle is not None
    env.loop.run(env.handle.stop(grace=0, deadline=0.5))
    env.handle = None
    # Restarted while the store cannot be reached: the last copy serves, keys unsealed
    # in memory with the secret key as before.
    address = balancer(env, sqlite_control, ["127.0.0.1:1"], control_cache=str(cache),
                       control_store="postgresql://postgres@127.0.0.1:9/test")
    assert serial(address, pki) == cert.serial_number
    assert cache.read_bytes() == kept  # nothing read, nothing rewritten
