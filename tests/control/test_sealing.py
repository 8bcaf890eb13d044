"""Sealing private keys: AES-256-GCM under a key file, bound to the certificate name."""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import replace
from pathlib import Path

import pytest

from gtm.errors import GtmError, SealingError
from gtm.sealing import (
    KEY_BYTES,
    SecretKey,
    create_key,
    ensure_key,
    key_file,
    read_key,
)

PLAINTEXT = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n"


def test_round_trip_and_fresh_nonces() -> None:
    key = SecretKey(os.urandom(KEY_BYTES))
    first, second = key.seal("www", PLAINTEXT), key.seal("www", PLAINTEXT)
    assert first.key_id == key.id and len(key.id) == 16
    assert first.nonce != second.nonce and first.ciphertext != second.ciphertext
    assert PLAINTEXT not in first.ciphertext and b"PRIVATE KEY" not in first.ciphertext
    assert key.unseal("www", first) == PLAINTEXT == key.unseal("www", second)
    assert "PRIVATE" not in repr(first) and repr(key).startswith("<secret key ")


def test_wrong_key_names_both_ids() -> None:
    sealer, other = SecretKey(os.urandom(KEY_BYTES)), SecretKey(os.urandom(KEY_BYTES))
    sealed = sealer.seal("www", PLAINTEXT)
    with pytest.raises(SealingError) as caught:
        other.unseal("www", sealed)
    message = str(caught.value)
    assert sealer.id in message and other.id in message and "certificate www" in message
    assert isinstance(caught.value, GtmError)


def test_tampered_ciphertext_nonce_or_name_do_not_open() -> None:
    key = SecretKey(os.urandom(KEY_BYTES))
    sealed = key.seal("www", PLAINTEXT)
    flipped = bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]
    for bad in (replace(sealed, ciphertext=flipped),
                replace(sealed, nonce=os.urandom(len(sealed.nonce))),
                replace(sealed, ciphertext=sealed.ciphertext[:-1])):
        with pytest.raises(SealingError, match="does not open"):
            key.unseal("www", bad)
    # A row's sealed key moved under another name (same key id) is refused too.
    with pytest.raises(SealingError, match=r"certificate api: .*another certificate name"):
        key.unseal("api", sealed)


def test_key_files_are_private_and_never_replaced(tmp_path: Path) -> None:
    path = tmp_path / "control" / "secret.key"
    key, created = ensure_key(path)
    assert created and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(base64.b64decode(path.read_text().strip())) == KEY_BYTES
    again, created = ensure_key(path)
    assert not created and again.id == key.id
    assert read_key(path).unseal("x", key.seal("x", b"k")) == b"k"
    with pytest.raises(SealingError, match="refusing to replace"):
        create_key(path)
    assert read_key(path).id == key.id


def test_bad_key_files_say_what_is_wrong(tmp_path: Path) -> None:
    missing = tmp_path / "nope.key"
    with pytest.raises(SealingError, match=r"nope\.key: cannot read the secret key"):
        read_key(missing)
    short = tmp_path / "short.key"
    short.write_text(base64.b64encode(b"x" * 16).decode())
    with pytest.raises(SealingError, match="32 random bytes in base64, not 16"):
        read_key(short)
    junk = tmp_path / "junk.key"
    junk.write_text("not base64 at all!")
    with pytest.raises(SealingError, match="gtm certs keygen"):
        read_key(junk)


def test_key_file_from_flag_env_or_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                           ) -> None:
    default = tmp_path / "default.key"
    monkeypatch.delenv("GTM_SECRET_KEY_FILE", raising=False)
    assert key_file(None, default) == default
    monkeypatch.setenv("GTM_SECRET_KEY_FILE", str(tmp_path / "env.key"))
    assert key_file(None, default) == tmp_path / "env.key"
    assert key_file(tmp_path / "flag.key", default) == tmp_path / "flag.key"
