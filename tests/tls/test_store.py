"""The certificate store without sockets: pairing, names, refusals, expiry, config errors."""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

import pytest

from gtm.cli import main as gtm_main
from gtm.errors import CertificateError, ConfigError
from regional_lb.config import build_config, load_config
from regional_lb.tls.certs import find_pairs, load_pair
from regional_lb.tls.contexts import TlsPolicy
from regional_lb.tls.store import CertStore
from tests.tls.conftest import Pki
from tests.tls.pki import new_key, write_pair


def test_pairs_by_name_exact_wildcard_and_default(pki: Pki) -> None:
    pki.add("www", ["www.example.com", "example.com"])
    pki.add("wild", ["*.apps.example.com"], combined=True)
    pki.add("api-rsa", ["api.example.com"], kind="rsa")
    pki.add("api-ec", ["api.example.com"])
    (pki.certs / "lonely.crt").write_bytes(b"half a pair")  # no .key: ignored, not an error
    store = CertStore(pki.certs, "www")
    store.load()
    assert set(store.pairs) == {"www", "wild", "api-rsa", "api-ec"}
    assert store.group_for("WWW.Example.com") == ("www",)
    assert store.group_for("example.com") == ("www",)
    assert store.group_for("x.apps.example.com") == ("wild",)
    assert store.group_for("a.b.apps.example.com") is None  # a wildcard covers one label
    assert store.group_for("apps.example.com") is None
    assert store.group_for("api.example.com") == ("api-ec", "api-rsa")
    assert store.group_for("nowhere.test") is None
    assert store.index.default == ("www",)
    assert store.contexts == {}  # nothing built until a handshake asks
    assert {store.pairs["api-rsa"].key_type, store.pairs["api-ec"].key_type} == \
        {"RSA 2048", "EC P-256"}


def test_a_thousand_pairs_index_without_contexts(pki: Pki) -> None:
    key = new_key()  # one key for all: generating keys is not what is under test
    for i in range(1000):
        chain, key_pem, _ = pki.ca.issue([f"host{i}.example.com"], key)
        write_pair(pki.certs, f"host{i}", chain, key_pem)
    store = CertStore(pki.certs)
    store.load()
    assert len(store.pairs) == 1000 and store.contexts == {}
    assert all(store.group_for(f"host{i}.example.com") == (f"host{i}",) for i in range(1000))
    store.context(TlsPolicy(), ("host7",))
    assert list(store.contexts) == [(TlsPolicy(), ("host7",))]


def test_broken_pairs_are_refused_with_the_file_and_reason(pki: Pki) -> None:
    chain, _, _ = pki.ca.issue(["a.example.com"])
    write_pair(pki.certs, "mismatch", chain, pki.ca.issue(["b.example.com"])[1])
    expired_chain, expired_key, _ = pki.ca.issue(["old.example.com"], days=-1, start_days=-30)
    write_pair(pki.certs, "expired", expired_chain, expired_key)
    (pki.certs / "garbage.crt").write_bytes(b"not a certificate")
    (pki.certs / "garbage.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nxx\n")
    files = find_pairs(pki.certs)
    with pytest.raises(CertificateError, match=r"mismatch\.crt.*does not belong"):
        load_pair(files["mismatch"])
    with pytest.raises(CertificateError, match=r"expired\.crt.*expired on"):
        load_pair(files["expired"])
    with pytest.raises(CertificateError, match=r"garbage\.crt.*no PEM certificate"):
        load_pair(files["garbage"])
    store = CertStore(pki.certs)
    with pytest.raises(CertificateError, match="no usable certificate pair"):
        store.load()
    assert set(store.errors) == {"mismatch", "expired", "garbage"}


def test_key_material_never_in_errors_or_logs(pki: Pki, caplog: pytest.LogCaptureFixture
                                            ) -> None:
    pki.add("good", ["good.example.com"])
    store = CertStore(pki.certs, "good")
    store.load()
    chain, _, _ = pki.ca.issue(["good.example.com"])
    other_key = pki.ca.issue(["x.example.com"])[1]
    write_pair(pki.certs, "good", chain, other_key)
    with caplog.at_level(logging.DEBUG, logger="gtm.lb.tls"):
        store.apply(store.scan())
    body = other_key.split(b"\n")[1].decode()
    assert "refused" in caplog.text and body not in caplog.text
    assert all(body not in why for why in store.errors.values())


def test_replacements_rotate_and_broken_ones_keep_the_old(pki: Pki) -> None:
    first = pki.add("www", ["www.example.com"])
    store = CertStore(pki.certs, "www")
    store.load()
    store.context(TlsPolicy(), ("www",))

    def bump(name: str) -> None:  # a second write within the same mtime tick still counts
        for path in pki.certs.glob(f"{name}.*"):
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))

    for bad in ("mismatch", "expired", "garbage"):
        if bad == "mismatch":
            chain, _, _ = pki.ca.issue(["www.example.com"])
            write_pair(pki.certs, "www", chain, pki.ca.issue(["x.example.com"])[1])
        elif bad == "expired":
            chain, key, _ = pki.ca.issue(["www.example.com"], days=-1, start_days=-9)
            write_pair(pki.certs, "www", chain, key)
        else:
            write_pair(pki.certs, "www", b"garbage", b"garbage")
        bump("www")
        store.apply(store.scan())
        assert store.pairs["www"].signature != store.seen["www"], bad
        assert store.pairs["www"].not_after == first.not_valid_after_utc
        assert "www" in store.errors
    assert store.refusals == 3
    assert (TlsPolicy(), ("www",)) in store.contexts  # the old context kept serving
    second = pki.add("www", ["www.example.com"], days=200)
    bump("www")
    store.apply(store.scan())
    assert store.pairs["www"].not_after == second.not_valid_after_utc
    assert "www" not in store.errors and store.contexts == {}


def test_expiry_warnings_once_per_threshold(pki: Pki, caplog: pytest.LogCaptureFixture) -> None:
    pki.add("soon", ["soon.example.com"], days=5)
    pki.add("later", ["later.example.com"], days=300)
    store = CertStore(pki.certs)
    store.load()
    with caplog.at_level(logging.WARNING, logger="gtm.lb.tls"):
        store.check_expiry((30, 7, 1))
        store.check_expiry((30, 7, 1))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "soon" in warnings[0] and "expires in 5.0 days" in warnings[0]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="gtm.lb.tls"):
        store.check_expiry((30, 7, 1), dt.datetime.now(dt.UTC) + dt.timedelta(days=4.5))
    assert "soon" in caplog.text  # crossed the 1-day threshold: warned again


def test_certs_list_command(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    pki.add("www", ["www.example.com", "example.com"])
    pki.add("rsa", ["rsa.example.com"], kind="rsa", days=10)
    assert gtm_main(["certs", "list", "--dir", str(pki.certs)]) == 0
    out = capsys.readouterr().out
    assert "www" in out and "EC P-256" in out and "RSA 2048" in out
    assert "gtm test CA" in out and "www.example.com,example.com" in out
    assert "WARN" in out  # 10 days < 30
    chain, key, _ = pki.ca.issue(["old.example.com"], days=-1, start_days=-9)
    write_pair(pki.certs, "old", chain, key)
    assert gtm_main(["certs", "list", "--dir", str(pki.certs), "--json"]) == 1
    assert '"status": "EXPIRED"' in capsys.readouterr().out


def _config(tls: dict[str, object], mode: str = "http", **listener: object) -> None:
    build_config({"pools": [{"name": "app", "backends": ["127.0.0.1:1"]}],
                  "listeners": [{"bind": "127.0.0.1:0", "mode": mode, "tls": tls,
                                 **listener}]}, "test")


def test_config_errors_name_the_key(pki: Pki, tmp_path: Path) -> None:
    pki.add("www", ["www.example.com"])
    certs = str(pki.certs)
    cases = [
        ({}, r"lb\.listeners\[0\]\.tls\.certificates: is required"),
        ({"certificates": str(tmp_path / "nope")}, "tls.certificates: .* is not a directory"),
        ({"certificates": certs, "default": "api"}, "tls.default: names no pair"),
        ({"certificates": certs, "client_auth": "required"}, "tls.client_ca: is required"),
        ({"certificates": certs, "alpn": ["spdy/3"]},
         r"tls.alpn\[0\]: this server speaks h2 and http/1.1 only"),
        ({"certificates": certs, "alpn": ["h2", "h2"]}, r"tls.alpn\[1\]: h2 is listed twice"),
        ({"certificates": certs, "min_version": "1.1"}, "tls.min_version: must be one of"),
        ({"certificates": certs, "ciphers": "ALL"}, "unknown key 'ciphers'"),
    ]
    for tls, message in cases:
        with pytest.raises(ConfigError, match=message):
            _config(tls)
    with pytest.raises(ConfigError, match="proxy_protocol: cannot be combined with tls"):
        _config({"certificates": certs}, proxy_protocol=True, trusted_networks=["127.0.0.1"])
    _config({"certificates": certs, "alpn": ["smtp"]}, mode="tcp")  # any protocol for tcp
    _config({"certificates": certs, "alpn": ["h2"]})  # HTTP/2 only (by ALPN)


def test_paths_are_relative_to_the_config_file(pki: Pki) -> None:
    pki.add("www", ["www.example.com"])
    path = pki.root / "lb.toml"
    path.write_text('[[lb.listeners]]\nbind = "127.0.0.1:0"\n'
                    'tls = { certificates = "certs", default = "www", client_auth = "optional",'
                    ' client_ca = "ca.pem" }\n'
                    '[[lb.pools]]\nname = "app"\nbackends = ["127.0.0.1:1"]\n')
    spec = load_config(path).listeners[0].tls
    assert spec is not None and spec.certificates == pki.certs.resolve()
    assert spec.policy.client_ca == pki.ca_file.resolve()
    assert spec.policy.alpn == ("http/1.1",) and spec.policy.min_version == "1.2"


def test_certs_list_from_a_config(pki: Pki, capsys: pytest.CaptureFixture[str]) -> None:
    pki.add("www", ["www.example.com"])
    path = pki.root / "lb.toml"
    path.write_text('[[lb.listeners]]\nbind = "127.0.0.1:0"\ntls = { certificates = "certs" }\n'
                    '[[lb.pools]]\nname = "app"\nbackends = ["127.0.0.1:1"]\n')
    assert gtm_main(["certs", "list", "--config", str(path)]) == 0
    assert "www.example.com" in capsys.readouterr().out
