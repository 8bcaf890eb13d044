"""One certificate/key pair on disk: found, read, checked, described.

A pair is ``NAME.crt`` + ``NAME.key``, or ``NAME.pem`` holding the chain and the key.
Checking reads the files once with ``cryptography``: the leaf parses, the key parses
and belongs to the leaf, the leaf has not expired. Errors name the file and the reason
and never carry key material.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.x509.oid import NameOID

from gtm.errors import CertificateError

CERT_SUFFIXES = (".crt", ".pem")
KEY_SUFFIX = ".key"
_KEY_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]*PRIVATE KEY)-----.+?-----END \1-----", re.S)

Signature = tuple[tuple[int, int, int], ...]  # (mtime_ns, size, inode) of each file


@dataclass(frozen=True)
class PairFiles:
    name: str
    cert: Path
    key: Path | None  # None: the key is inside the .pem

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.cert,) if self.key is None else (self.cert, self.key)


class Pem:
    """The chain and key as they were checked: contexts are built from these bytes, never
    from the files again (which may have changed since). Its repr shows no key."""

    __slots__ = ("data",)

    def __init__(self, data: bytes):
        self.data = data

    def __repr__(self) -> str:
        return f"<PEM chain and key, {len(self.data)} bytes>"


@dataclass(frozen=True)
class CertInfo:
    name: str                 # the pair's file name without suffix
    files: PairFiles
    names: tuple[str, ...]    # DNS names from the SAN (lower case), else the CN
    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    key_type: str             # "EC P-256", "RSA 2048", "Ed25519"
    key_kind: str             # "EC", "RSA", ... : one certificate per kind per context
    signature: Signature      # of the files as read, to notice a change
    pem: Pem = field(repr=False, compare=False, default=Pem(b""))

    def days_left(self, now: dt.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400


def find_pairs(directory: Path) -> dict[str, PairFiles]:
    """Pairs by name. A ``.crt`` needs a ``.key``; a ``.pem`` without one holds its key."""
    try:
        entries = {p.name: p for p in directory.iterdir() if not p.name.startswith(".")}
    except OSError as exc:
        raise CertificateError(f"cannot list: {exc.strerror}", str(directory)) from exc
    pairs: dict[str, PairFiles] = {}
    for filename in sorted(entries):
        stem, dot, suffix = filename.rpartition(".")
        if not dot or f".{suffix}" not in CERT_SUFFIXES or stem in pairs:
            continue
        key = entries.get(stem + KEY_SUFFIX)
        if suffix == "crt" and key is None:
            continue  # half of a pair (perhaps being written): no certificate yet
        pairs[stem] = PairFiles(stem, entries[filename], key)
    return pairs


def signature(files: PairFiles) -> Signature:
    """What changes when a file is replaced or rewritten; raises OSError when one is gone."""
    stats = [os.stat(path) for path in files.paths]
    return tuple((s.st_mtime_ns, s.st_size, s.st_ino) for s in stats)


def load_pair(files: PairFiles, now: dt.datetime | None = None,
              allow_expired: bool = False) -> CertInfo:
    """Read and check one pair; CertificateError (file and reason) when it cannot be served.

    ``allow_expired`` is for the inventory, which lists what is there, expired or not.
    """
    try:
        sig = signature(files)
        chain_pem = files.cert.read_bytes()
        key_pem = chain_pem if files.key is None else files.key.read_bytes()
    except OSError as exc:
        raise CertificateError(f"cannot read: {exc.strerror}", str(exc.filename)) from exc
    leaf = _leaf(chain_pem, files.cert)
    key_source = files.key or files.cert
    key = _private_key(key_pem, key_source)
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        raise CertificateError(f"the private key in {key_source.name} does not belong to "
                               "the certificate", str(files.cert))
    now = now or dt.datetime.now(dt.UTC)
    not_after = leaf.not_valid_after_utc
    if not_after <= now and not allow_expired:
        raise CertificateError(f"expired on {not_after:%Y-%m-%d %H:%M} UTC", str(files.cert))
    names = _dns_names(leaf)
    if not names:
        raise CertificateError("names no host (no DNS name in the SAN, no CN)", str(files.cert))
    key_type, kind = describe_key(key.public_key())
    key_block = _KEY_BLOCK.search(key_pem)
    assert key_block is not None  # _private_key found it
    pem = Pem(chain_pem if files.key is None else
              chain_pem.rstrip(b"\n") + b"\n" + key_block.group(0) + b"\n")
    return CertInfo(
        name=files.name, files=files, names=names, subject=leaf.subject.rfc4514_string(),
        issuer=leaf.issuer.rfc4514_string(), not_before=leaf.not_valid_before_utc,
        not_after=not_after, key_type=key_type, key_kind=kind, signature=sig, pem=pem,
    )


def _leaf(data: bytes, path: Path) -> x509.Certificate:
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CertificateError("holds no PEM certificate", str(path)) from exc
    return chain[0]


def _private_key(data: bytes, path: Path) -> PrivateKeyTypes:
    block = _KEY_BLOCK.search(data)
    if block is None:
        raise CertificateError("holds no PEM private key", str(path))
    if block.group(1) == b"ENCRYPTED PRIVATE KEY" or b"ENCRYPTED" in block.group(0)[:200]:
        raise CertificateError("the private key is encrypted (not supported)", str(path))
    try:
        # RSA's full consistency check costs milliseconds per key; OpenSSL checks the pair
        # again when it loads it, so the cheap public-key comparison is enough here.
        return serialization.load_pem_private_key(block.group(0), password=None,
                                                  unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError) as exc:  # the message never holds key bytes
        raise CertificateError("the private key cannot be parsed", str(path)) from exc


def _public_der(public: PublicKeyTypes) -> bytes:
    return public.public_bytes(serialization.Encoding.DER,
                               serialization.PublicFormat.SubjectPublicKeyInfo)


def _dns_names(leaf: x509.Certificate) -> tuple[str, ...]:
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
