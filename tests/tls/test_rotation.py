"""Certificates changed on disk while the balancer serves: rotated in, or refused."""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from gtm.errors import CertificateError
from tests.lb.conftest import Env
from tests.tls.conftest import Pki, client_context, get, served, tls_connect, tls_listener
from tests.tls.pki import write_pair

WATCH = {"watch_interval": 0.1}


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def serial_of(address: tuple[str, int], pki: Pki, name: str = "www.example.com",
              verify: bool = True) -> int:
    ctx = client_context(pki.ca_file if verify else None)
    with tls_connect(address, name, ctx) as sock:
        return int(served(sock).serial_number)


class Load:
    """New connections (full handshakes, no resumption) one after another, each with a
    request, until stopped: every failure is kept."""

    def __init__(self, address: tuple[str, int], pki: Pki):
        self.address, self.ctx = address, client_context(pki.ca_file)
        self.serials: list[int] = []
        self.failures: list[Any] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.is_set():
            try:
                with tls_connect(self.address, "www.example.com", self.ctx) as sock:
                    self.serials.append(served(sock).serial_number)
                    status = get(sock, "www.example.com")[0]
                    if status != 200:
                        self.failures.append(status)
            except Exception as exc:  # any failure at all is what this counts
                self.failures.append(repr(exc))

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(10)


def test_rotation_under_load_drops_nothing(env: Env, pki: Pki) -> None:
    backend = env.recorder("app")
    first = pki.add("www", ["www.example.com"])
    address = env.balancer([backend.address], listeners=[tls_listener(pki)], tls=WATCH)
    ctx = client_context(pki.ca_file)
    before = tls_connect(address, "www.example.com", ctx)  # open across the rotation
    assert get(before, "www.example.com")[0] == 200
    with Load(address, pki) as load:
        assert wait_for(lambda: len(load.serials) >= 20)
        second = pki.add("www", ["www.example.com"])  # .crt, then .key: mismatched between
        rotated = wait_for(lambda: load.serials[-1] == second.serial_number, timeout=5)
        count = len(load.serials)
        assert wait_for(lambda: len(load.serials) >= count + 20)
    assert rotated and load.failures == []
    assert load.serials[0] == first.serial_number
    assert set(load.serials) == {first.serial_number, second.serial_number}
    assert get(before, "www.example.com")[0] == 200  # the old connection never noticed
    before.close()


def test_broken_replacements_keep_the_old_one(env: Env, pki: Pki) -> None:
    first = pki.add("www", ["www.example.com"])
    address = env.balancer(["127.0.0.1:1"], listeners=[tls_listener(pki)], tls=WATCH)
    assert env.handle is not None
    (store,) = env.handle.worker.tls.stores.values()
    mismatched = (pki.ca.issue(["www.example.com"])[0], pki.ca.issue(["x.example.com"])[1])
    expired = pki.ca.issue(["www.example.com"], days=-1, start_days=-9)[:2]
    for chain, key in (mismatched, expired, (b"garbage", b"garbage")):
        refusals = store.refusals
        write_pair(pki.certs, "www", chain, key)
        assert wait_for(lambda: store.refusals > refusals)  # noqa: B023
        assert "www" in store.errors
        assert serial_of(address, pki) == first.serial_number
    third = pki.add("www", ["www.example.com"])
    assert wait_for(lambda: "www" not in store.errors)
    assert serial_of(address, pki) == third.serial_number


def test_new_and_removed_pairs(env: Env, pki: Pki) -> None:
    pki.add("www", ["www.example.com"])
    address = env.balancer(["127.0.0.1:1"], listeners=[tls_listener(pki, default="www")],
                           tls=WATCH)
    api = pki.add("api", ["api.example.com"])
    assert wait_for(lambda: serial_of(address, pki, "api.example.com", verify=False)
                    == api.serial_number)
    assert serial_of(address, pki, "api.example.com") == api.serial_number
    for path in pki.certs.glob("api.*"):
        path.unlink()
    loose = client_context(None)

    def fallback_served() -> bool:
        with tls_connect(address, "api.example.com", loose) as sock:
            return served(sock).serial_number != api.serial_number
    assert wait_for(fallback_served)
    for path in pki.certs.glob("www.*"):  # the default cannot go away
        path.unlink()
    time.sleep(0.3)
    assert serial_of(address, pki) > 0


def _config(pki: Pki, backend: str, **tls: Any) -> Any:
    from regional_lb.config import build_config

    return build_config({"pools": [{"name": "app", "backends": [backend]}],
                         "listeners": [{"name": "web", "bind": "127.0.0.1:0",
                                        "tls": {"certificates": str(pki.certs), **tls}}]},
                        "test")


def test_reload_changes_tls_settings_and_refuses_broken_ones(env: Env, pki: Pki,
                                                             tmp_path: Path) -> None:
    backend = env.recorder("app")
    pki.add("www", ["www.example.com"])
    address = env.balancer([backend.address], listeners=[tls_listener(pki)])
    assert env.handle is not None
    ctx = client_context(pki.ca_file)
    with tls_connect(address, "www.example.com", ctx) as sock:
        assert get(sock, "www.example.com")[0] == 200
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = _config(pki, backend.address)
    broken = replace(broken, listeners=(replace(broken.listeners[0], bind=replace(
        broken.listeners[0].bind, port=address[1]), tls=replace(
            broken.listeners[0].tls, certificates=empty)),))
    with pytest.raises(CertificateError, match="no usable certificate pair"):
        env.loop.run(env.handle.reload(broken))
    with tls_connect(address, "www.example.com", ctx) as sock:  # the old one still serves
        assert get(sock, "www.example.com")[0] == 200
    env.loop.run(env.handle.reload(_config(pki, backend.address, min_version="1.3")))
    address = env.address("web")
    old = client_context(pki.ca_file, max_version="1.2")
    assert wait_for(lambda: _fails(address, old))
    with tls_connect(address, "www.example.com", ctx) as sock:
        assert sock.version() == "TLSv1.3" and get(sock, "www.example.com")[0] == 200


def test_changing_tls_settings_under_load_drops_nothing(env: Env, pki: Pki) -> None:
    """A listener whose TLS settings change gets a new server on the same address; the
    old one closes only after it is there, so a client never finds nothing listening."""
    backend = env.recorder("app")
    pki.add("www", ["www.example.com"])
    address = env.balancer([backend.address], listeners=[tls_listener(pki)])
    assert env.handle is not None
    with Load(address, pki) as load:
        assert wait_for(lambda: len(load.serials) >= 20)
        for tickets in (1, 3, 2, 4):
            env.loop.run(env.handle.reload(_config(pki, backend.address, tickets=tickets)))
            count = len(load.serials)
            assert wait_for(lambda: len(load.serials) >= count + 20)  # noqa: B023
    assert load.failures == [] and env.address("web") == address


def _fails(address: tuple[str, int], ctx: ssl.SSLContext) -> bool:
    try:
        tls_connect(address, "www.example.com", ctx).close()
    except (ssl.SSLError, ConnectionError):
        return True
    return False


def test_default_rotates_for_clients_without_sni(env: Env, pki: Pki) -> None:
    first = pki.add("www", ["www.example.com"])
    address = env.balancer(["127.0.0.1:1"], listeners=[tls_listener(pki, default="www")],
                           tls=WATCH)
    loose = client_context(None)

    def no_sni_serial() -> int:
        with tls_connect(address, None, loose) as sock:
            return int(served(sock).serial_number)
    assert no_sni_serial() == first.serial_number
    second = pki.add("www", ["www.example.com"])
    assert wait_for(lambda: no_sni_serial() == second.serial_number)


def test_expiry_warnings_and_gauge_from_a_running_balancer(
        env: Env, pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    soon = pki.add("soon", ["soon.example.com"], days=5)
    pki.add("later", ["later.example.com"], days=100)
    with caplog.at_level(logging.WARNING, logger="gtm.lb.tls"):
        env.balancer(["127.0.0.1:1"], listeners=[tls_listener(pki)],
                     tls={"watch_interval": 0.1, "expiry_warning_days": [10, 2]})
        assert wait_for(lambda: "soon" in caplog.text)
    assert "later" not in caplog.text and "expires in 5.0 days" in caplog.text
    assert env.handle is not None
    _, expiry, _ = env.handle.worker.tls.sample()
    assert expiry["soon"] == soon.not_valid_after_utc.timestamp()
