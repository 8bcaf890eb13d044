"""The account key and the flattened JWS that carries every ACME request (RFC 8555 6.2).

Accounts use ECDSA P-256 (ES256): small keys, fast signatures, accepted by every CA.
The signature is the raw 64-byte r||s form that JWS requires (RFC 7518 3.4), not the
DER that ``cryptography`` produces.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from gtm.atomic import PRIVATE, write_atomic
from gtm.errors import AcmeError

_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_bytes(value: int, size: int = 32) -> bytes:
    return value.to_bytes(size, "big")


class AccountKey:
    """An ES256 key with its JWK and RFC 7638 thumbprint."""

    def __init__(self, key: ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise AcmeError(f"the account key must be EC P-256, not {key.curve.name}")
        self.key = key
        numbers = key.public_key().public_numbers()
        # Members in lexicographic order, no whitespace: the form the thumbprint hashes.
        self.jwk = {"crv": "P-256", "kty": "EC", "x": b64url(_int_bytes(numbers.x)),
                    "y": b64url(_int_bytes(numbers.y))}
        canonical = json.dumps(self.jwk, sort_keys=True, separators=(",", ":")).encode()
        self.thumbprint = b64url(hashlib.sha256(canonical).digest())

    @classmethod
    def generate(cls) -> AccountKey:
        return cls(ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def load_or_create(cls, path: Path) -> AccountKey:
        """The key in ``path``; a new one is written there (mode 0600) when it is missing."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            account = cls.generate()
            path.parent.mkdir(parents=True, exist_ok=True)
            write_private(path, account.pem())
            return account
        except OSError as exc:
            raise AcmeError(f"cannot read the account key {path}: {exc.strerror}") from exc
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except ValueError as exc:
            raise AcmeError(f"the account key {path} is not a PEM private key") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise AcmeError(f"the account key {path} must be an EC P-256 key")
        return cls(key)

    def pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    def key_authorization(self, token: str) -> str:
        """What proves control of a challenge: token "." thumbprint (RFC 8555 8.1)."""
        return f"{token}.{self.thumbprint}"

    def sign(self, url: str, nonce: str, payload: Any, kid: str | None) -> dict[str, str]:
        """A flattened JWS. ``payload`` None is POST-as-GET (an empty payload); ``kid``
        None embeds the JWK (only for newAccount and revocation by certificate key)."""
        protected: dict[str, Any] = {"alg": "ES256", "nonce": nonce, "url": url}
        if kid is None:
            protected["jwk"] = self.jwk
        else:
            protected["kid"] = kid
        header = b64url(json.dumps(protected, separators=(",", ":")).encode())
        body = "" if payload is None else b64url(json.dumps(payload).encode())
        der = self.key.sign(f"{header}.{body}".encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return {"protected": header, "payload": body,
                "signature": b64url(_int_bytes(r) + _int_bytes(s))}


def external_account_binding(account: AccountKey, kid: str, mac_key: bytes, url: str
                             ) -> dict[str, str]:
    """The inner JWS binding this account key to an account the CA already knows
    (RFC 8555 7.3.4): HS256 over the account's JWK, with the key identifier the CA
    gave and its MAC key."""
    protected = b64url(json.dumps({"alg": "HS256", "kid": kid, "url": url},
                                  separators=(",", ":")).encode())
    payload = b64url(json.dumps(account.jwk, separators=(",", ":")).encode())
    mac = hmac.new(mac_key, f"{protected}.{payload}".encode("ascii"), hashlib.sha256).digest()
    return {"protected": protected, "payload": payload, "signature": b64url(mac)}


def decode_mac_key(text: str) -> bytes:
    """A CA's EAB MAC key as they hand it out: base64url, padded or not."""
    cleaned = text.strip().rstrip("=")
    # urlsafe_b64decode skips characters outside the alphabet; a typo must not pass.
    if not _BASE64URL.fullmatch(cleaned):
        raise AcmeError("the EAB MAC key is not base64url")
    try:
        key = base64.urlsafe_b64decode(cleaned + "=" * (-len(cleaned) % 4))
    except (ValueError, binascii.Error) as exc:
        raise AcmeError("the EAB MAC key is not base64url") from exc
    if len(key) < 16:
        raise AcmeError("the EAB MAC key is shorter than 16 bytes")
    return key


def dns01_value(key_authorization: str) -> str:
    """The TXT value of a DNS-01 challenge (RFC 8555 8.4)."""
    return b64url(hashlib.sha256(key_authorization.encode("ascii")).digest())


def write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically, readable by its owner only, from the first byte on."""
    write_atomic(path, data, PRIVATE)
