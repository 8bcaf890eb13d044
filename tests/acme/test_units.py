"""The pure parts of ACME: JWS, challenge values, renewal decisions, configuration,
the HTTP-01 responder and the challenges section of the document."""

from __future__ import annotations

import base64
import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from gtm.acme.jws import AccountKey, dns01_value
from gtm.config.document import compile_document
from gtm.errors import ConfigError
from regional_lb.acme import renewal_due
from regional_lb.acme_store import Held, held_pair, placeholder_pem
from regional_lb.config import AcmeCertificate, build_config
from regional_lb.l7.acme_http import CHALLENGE_PREFIX, challenge_response
from tests.control.conftest import example_document

NOW = dt.datetime(2026, 11, 26, tzinfo=dt.UTC)
WWW = AcmeCertificate("www", ("www.example.test",))


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


# -- JWS --------------------------------------------------------------------------------------
def test_a_signed_request_verifies_with_the_account_key() -> None:
    account = AccountKey.generate()
    jws = account.sign("https://ca/new-order", "nonce-1", {"identifiers": []}, "https://ca/acct/7")
    protected = json.loads(unb64(jws["protected"]))
    assert protected == {"alg": "ES256", "nonce": "nonce-1", "url": "https://ca/new-order",
                         "kid": "https://ca/acct/7"}
    raw = unb64(jws["signature"])
    assert len(raw) == 64  # r || s, as JWS wants, not DER
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    signed = f"{jws['protected']}.{jws['payload']}".encode()
    account.key.public_key().verify(der, signed, ec.ECDSA(hashes.SHA256()))
    with pytest.raises(InvalidSignature):
        account.key.public_key().verify(der, signed + b"x", ec.ECDSA(hashes.SHA256()))


def test_new_account_embeds_the_jwk_and_post_as_get_has_an_empty_payload() -> None:
    account = AccountKey.generate()
    jws = account.sign("https://ca/acct", "n", None, None)
    assert jws["payload"] == ""
    assert json.loads(unb64(jws["protected"]))["jwk"] == account.jwk


def test_key_authorization_and_dns_value() -> None:
    account = AccountKey.generate()
    assert len(account.thumbprint) == 43 and "=" not in account.thumbprint
    assert account.key_authorization("tok") == f"tok.{account.thumbprint}"
    assert AccountKey.generate().thumbprint != account.thumbprint
    value = dns01_value("tok.abc")
    assert len(unb64(value)) == 32 and dns01_value("tok.abd") != value


def test_the_account_key_is_kept_private_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "acme" / "account.key"
    first = AccountKey.load_or_create(path)
    assert path.stat().st_mode & 0o077 == 0
    assert AccountKey.load_or_create(path).thumbprint == first.thumbprint


# -- renewal ------------------------------------------------------------------------------------
def held(days_left: float, lifetime: float = 90, names: tuple[str, ...] = ("www.example.test",),
         placeholder: bool = False) -> Held:
    not_after = NOW + dt.timedelta(days=days_left)
    return Held(frozenset(names), not_after - dt.timedelta(days=lifetime), not_after,
                placeholder)


@pytest.mark.parametrize(("state", "due"), [
    (None, "no certificate yet"),
    (held(80, placeholder=True), "only a placeholder serves"),
    (held(80, names=("old.example.test",)), "the configured names changed"),
    (held(29), "expires"),
    (held(31), None),
    (held(2.9, lifetime=10), "expires"),   # short-lived: the last third of its life
    (held(3.5, lifetime=10), None),
])
def test_renewal_is_due(state: Held | None, due: str | None) -> None:
    reason, _ = renewal_due(state, WWW, NOW, before_days=30)
    assert (reason is None) == (due is None) and (due is None or due in (reason or ""))


def test_a_placeholder_names_the_domains_and_is_recognised(tmp_path: Path) -> None:
    (tmp_path / "www.pem").write_bytes(placeholder_pem(("www.example.test",)))
    found = held_pair(tmp_path, "www")
    assert found is not None and found.placeholder and found.names == {"www.example.test"}
    assert held_pair(tmp_path, "missing") is None


# -- configuration -------------------------------------------------------------------------------
def lb(acme: dict[str, object], tls: bool = False, plain: bool = True) -> dict[str, object]:
    listeners: list[dict[str, object]] = []
    if plain:
        listeners.append({"bind": "127.0.0.1:8080"})
    return {"pools": [{"name": "web", "backends": ["127.0.0.1:9001"]}],
            "listeners": listeners or [{"bind": "127.0.0.1:8443", "mode": "tcp"}],
            "acme": {"directory": "https://ca/dir", "output": "certs", **acme}}


@pytest.mark.parametrize(("acme", "plain", "where", "words"), [
    ({"certificates": [{"name": "w", "domains": ["*.example.test"]}]}, True,
     "lb.acme.certificates[0].domains[0]", "dns-01"),
    ({"certificates": [{"name": "w", "domains": ["www.example.test"]}]}, False,
     "lb.acme.certificates", "plain http listener"),
    ({"certificates": [{"name": "w", "domains": ["x.example.test"], "challenge": "dns-01"}]},
     True, "lb.acme.control_api", "control_token_file"),
    ({"certificates": [{"name": "../w", "domains": ["x.example.test"]}]}, True,
     "lb.acme.certificates[0].name", "file name"),
    ({"certificates": [{"name": "w", "domains": ["bad_name.test"]}]}, True,
     "lb.acme.certificates[0].domains[0]", "host name"),
    ({"certificates": [{"name": "w", "domains": ["a.test"]}, {"name": "w", "domains": ["b.test"]}]},
     True, "lb.acme.certificates[1].name", "twice"),
    ({"certificates": []}, True, "lb.acme.certificates", "at least one"),
    ({"certificates": [{"name": "w", "domains": ["a.test"]}], "key_type": "dsa"}, True,
     "lb.acme.key_type", "one of"),
])
def test_bad_acme_settings_name_the_key(acme: dict[str, object], plain: bool, where: str,
                                        words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(lb(acme, plain=plain), "region.toml")
    assert caught.value.where == where and words in caught.value.reason


def test_good_acme_settings() -> None:
    config = build_config(lb({"certificates": [
        {"name": "www", "domains": ["WWW.example.test", "example.test"]},
        {"name": "wild", "domains": ["*.example.test"], "challenge": "dns-01"}],
        "control_api": "http://127.0.0.1:8080", "control_token_file": "t",
        "dns_servers": ["127.0.0.1:53"]}), "region.toml")
    assert config.acme is not None
    assert config.acme.certificates[0].domains == ("www.example.test", "example.test")
    assert config.acme.dns_servers[0].port == 53


# -- HTTP-01 responder ---------------------------------------------------------------------------
def test_only_published_tokens_are_answered(tmp_path: Path) -> None:
    (tmp_path / "tok-1").write_text("tok-1.thumb")
    (tmp_path.parent / "secret").write_text("no")
    reply = challenge_response(tmp_path, CHALLENGE_PREFIX + b"tok-1", head_only=False)
    assert reply is not None and reply.startswith(b"HTTP/1.1 200 OK\r\n")
    assert reply.endswith(b"\r\n\r\ntok-1.thumb")
    head = challenge_response(tmp_path, CHALLENGE_PREFIX + b"tok-1", head_only=True)
    assert head is not None and head.endswith(b"\r\n\r\n") and b"Content-Length: 11" in head
    for path in (b"unknown", b"../secret", b"..%2fsecret", b"", b"tok-1/x"):
        assert challenge_response(tmp_path, CHALLENGE_PREFIX + path, False) is None


# -- the challenges section ----------------------------------------------------------------------
def test_challenges_become_txt_records_in_their_zone() -> None:
    doc = example_document()
    doc["challenges"] = {"_acme-challenge.www.example.test.": ["a", "b", "a"]}
    zones = compile_document(doc, "t").zones
    zone = next(iter(zones.zones.values()))
    owner = (b"_acme-challenge", b"www", b"example", b"test", b"")
    texts = sorted(r.strings[0] for r in zone.nodes[owner][16])
    assert texts == [b"a", b"b"]


@pytest.mark.parametrize(("section", "where"), [
    ({"_acme-challenge.www.other.": ["a"]}, 'challenges["_acme-challenge.www.other."]'),
    ({"www.example.test.": ["a"]}, 'challenges["www.example.test."]'),
    ({"_acme-challenge.www.example.test": ["a"]}, 'challenges["_acme-challenge.www.example.test"]'),
    ({"_acme-challenge.www.example.test.": []}, 'challenges["_acme-challenge.www.example.test."]'),
    ({"_acme-challenge.www.example.test.": ["x" * 256]},
     'challenges["_acme-challenge.www.example.test."][0]'),
    (["_acme-challenge.www.example.test."], "challenges"),
])
def test_bad_challenges_are_refused(section: object, where: str) -> None:
    doc = example_document()
    doc["challenges"] = section
    with pytest.raises(ConfigError) as caught:
        compile_document(doc, "t")
    assert caught.value.where == where


def test_external_account_binding_is_an_hmac_over_the_account_key() -> None:
    import hashlib
    import hmac

    from gtm.acme.jws import decode_mac_key, external_account_binding

    account = AccountKey.generate()
    key = decode_mac_key("zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W")
    jws = external_account_binding(account, "kid-1", key, "https://ca/new-acct")
    assert json.loads(unb64(jws["protected"])) == {"alg": "HS256", "kid": "kid-1",
                                                   "url": "https://ca/new-acct"}
    assert json.loads(unb64(jws["payload"])) == account.jwk
    expected = hmac.new(key, f"{jws['protected']}.{jws['payload']}".encode(),
                        hashlib.sha256).digest()
    assert unb64(jws["signature"]) == expected
    from gtm.errors import AcmeError

    for bad, why in (("zWNDZM6eQGHWpSRTPal5eIUYFTu7Eaj+Ioguysq", "not base64url"),
                     ("c2hvcnQ", "shorter than 16 bytes")):
        with pytest.raises(AcmeError, match=why):
            decode_mac_key(bad)


def test_eab_settings_go_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        build_config(lb({"certificates": [{"name": "w", "domains": ["a.test"]}],
                         "eab_kid": "kid-1"}), "region.toml")
    assert caught.value.where == "lb.acme.eab_kid"
