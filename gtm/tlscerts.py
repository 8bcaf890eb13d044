"""Checking a certificate chain and its private key, from bytes.

One set of checks for every way a pair arrives: files read by the balancer, uploads to
the control plane's API, and rows the balancer reads back from the control plane. So
each refuses the same things in the same words: the leaf parses, the key parses and
belongs to the leaf, the leaf has not expired, it names a host, and OpenSSL loads it.

Errors are :class:`CertificateError` naming where the bytes came from (a file, an API
field, a control-plane certificate) and the reason; they never carry key material.
:class:`Pem` keeps the checked bytes and shows no key in its repr. Contexts are built
from those bytes through an anonymous in-memory file, so a key is never written to disk.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import NameOID

from gtm.errors import CertificateError

# TLS 1.2 suites: ECDHE key exchange (forward secrecy) with AEAD ciphers only. Every
# TLS 1.3 suite is forward-secret and AEAD already.
TLS12_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
))
Signature = tuple[tuple[int, int, int], ...]  # (mtime_ns, size, inode) of each file
KEY_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]*PRIVATE KEY)-----.+?-----END \1-----", re.S)
# Certificate names: what a pair's file is called, and the control plane's key for it.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class Pem:
    """The chain and key as they were checked: contexts are built from these bytes, never
    from their source again (which may have changed since). Its repr shows no key."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data

    def __repr__(self) -> str:
        return f"<PEM chain and key, {len(self.data)} bytes>"


@dataclass(frozen=True)
class CheckedPair:
    """What the checks learnt. ``chain`` holds certificates only (safe to store in the
    clear); ``key`` is the private key block alone."""

    names: tuple[str, ...]    # DNS names from the SAN (lower case), else the CN
    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    key_type: str             # "EC P-256", "RSA 2048", "Ed25519"
    key_kind: str             # "EC", "RSA", ... : one certificate per kind per context
    fingerprint: str          # SHA-256 of the leaf's DER, hex
    chain: bytes = field(repr=False)
    key: Pem = field(repr=False)

    @property
    def pem(self) -> Pem:
        """Chain then key, as OpenSSL reads them."""
        return Pem(self.chain + self.key.data + b"\n")

    def metadata(self) -> dict[str, object]:
        """What may be shown, logged and audited about the pair (nothing secret)."""
        return {"names": list(self.names), "subject": self.subject, "issuer": self.issuer,
                "not_before": self.not_before.isoformat(), "not_after": self.not_after.isoformat(),
                "key_type": self.key_type, "fingerprint_sha256": self.fingerprint}


def check_pair(chain_pem: bytes, key_pem: bytes, *, chain_source: str, key_source: str,
               key_label: str = "", mismatch_source: str | None = None,
               chain_may_hold_key: bool = True, now: dt.datetime | None = None,
               allow_expired: bool = False) -> CheckedPair:
    """Check a chain and key; CertificateError (source and reason) when it cannot be served.

    ``key_label`` names the key's file in the mismatch message; ``mismatch_source`` is
    whom that message blames (the chain's source unless given). ``chain_may_hold_key`` is
    false where the chain is kept in the clear (uploads): a key there is refused.
    ``allow_expired`` is for inventories, which list what is there, expired or not.
    """
    if not chain_may_hold_key and KEY_BLOCK.search(chain_pem):
        raise CertificateError("holds a private key: the chain is stored in the clear, send "
                               "the key on its own", chain_source)
    chain = _certificates(chain_pem, chain_source)
    leaf = chain[0]
    key = _private_key(key_pem, key_source)
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        where = f" in {key_label}" if key_label else ""
        raise CertificateError(f"the private key{where} does not belong to the certificate",
                               mismatch_source or chain_source)
    now = now or dt.datetime.now(dt.UTC)
    not_after = leaf.not_valid_after_utc
    if not_after <= now and not allow_expired:
        raise CertificateError(f"expired on {not_after:%Y-%m-%d %H:%M} UTC", chain_source)
    names = dns_names(leaf)
    if not names:
        raise CertificateError("names no host (no DNS name in the SAN, no CN)", chain_source)
    key_type, kind = describe_key(key.public_key())
    block = KEY_BLOCK.search(key_pem)
    assert block is not None  # _private_key found it
    return CheckedPair(
        names=names, subject=leaf.subject.rfc4514_string(), issuer=leaf.issuer.rfc4514_string(),
        not_before=leaf.not_valid_before_utc, not_after=not_after, key_type=key_type,
        key_kind=kind, fingerprint=hashlib.sha256(
            leaf.public_bytes(serialization.Encoding.DER)).hexdigest(),
        chain=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain),
        key=Pem(block.group(0)),
    )


def _certificates(data: bytes, source: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateError("holds no PEM certificate", source) from exc


def _private_key(data: bytes, source: str) -> PrivateKeyTypes:
    block = KEY_BLOCK.search(data)
    if block is None:
        raise CertificateError("holds no PEM private key", source)
    if block.group(1) == b"ENCRYPTED PRIVATE KEY" or b"ENCRYPTED" in block.group(0)[:200]:
        raise CertificateError("the private key is encrypted (not supported)", source)
    try:
        # RSA's full consistency check costs milliseconds per key; OpenSSL checks the pair
        # again when it loads it, so the cheap public-key comparison is enough here.
        return serialization.load_pem_private_key(block.group(0), password=None,
                                                  unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError) as exc:  # the message never holds key bytes
        raise CertificateError("the private key cannot be parsed", source) from exc


def _public_der(public: PublicKeyTypes) -> bytes:
    return public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def dns_names(leaf: x509.Certificate) -> tuple[str, ...]:
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = san.value.get_values_for_type(x509.DNSName)
    except x509.ExtensionNotFound:
        names = [str(a.value) for a in leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return tuple(dict.fromkeys(n.lower().rstrip(".") for n in names if n))


def describe_key(public: object) -> tuple[str, str]:
    """A readable key type and its kind (contexts hold at most one certificate per kind)."""
    if isinstance(public, ec.EllipticCurvePublicKey):
        curve = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
        return f"EC {curve.get(public.curve.name, public.curve.name)}", "EC"
    if isinstance(public, rsa.RSAPublicKey):
        return f"RSA {public.key_size}", "RSA"
    if isinstance(public, ed25519.Ed25519PublicKey):
        return "Ed25519", "Ed25519"
    if isinstance(public, ed448.Ed448PublicKey):
        return "Ed448", "Ed448"
    return type(public).__name__, type(public).__name__


def file_signature(paths: Iterable[Path]) -> Signature:
    """What changes when a file is replaced or rewritten (mtime, size, inode of each);
    raises OSError when one is gone."""
    stats = [os.stat(path) for path in paths]
    return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats)


def load_into(ctx: ssl.SSLContext, pem: Pem, source: str) -> None:
    """Load checked bytes into a context; OpenSSL checks the pair again.

    ``load_cert_chain`` takes only paths: the PEM goes through an anonymous in-memory
    file (memfd), so no key is ever written anywhere.
    """
    fd = os.memfd_create("gtm-tls-pair", os.MFD_CLOEXEC)
    try:
        view = memoryview(pem.data)
        while view:
            view = view[os.write(fd, view):]
        ctx.load_cert_chain(f"/proc/self/fd/{fd}")
    except (OSError, ssl.SSLError) as exc:
        raise CertificateError(f"OpenSSL refused the pair: {ssl_reason(exc)}", source) from exc
    finally:
        os.close(fd)


def openssl_check(pem: Pem, source: str) -> None:
    """Refuse what OpenSSL would refuse at the first handshake (say, an RSA key too small
    for its security level), while the caller can still say no."""
    load_into(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), pem, source)


def ssl_reason(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)
