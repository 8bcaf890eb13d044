"""One certificate/key pair on disk: found, read, checked, described.

A pair is ``NAME.crt`` + ``NAME.key``, or ``NAME.pem`` holding the chain and the key.
Checking reads the files once; the checks themselves (leaf, key, match, expiry, names)
are :mod:`gtm.tlscerts`, shared with the control plane, which checks uploads the same
way. Errors name the file and the reason and never carry key material.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from gtm.errors import CertificateError
from gtm.tlscerts import CheckedPair, Pem, Signature, check_pair, describe_key, file_signature

__all__ = ["CERT_SUFFIXES", "KEY_SUFFIX", "CertInfo", "PairFiles", "Pem", "Signature",
           "describe_key", "find_pairs", "load_pair", "signature"]

CERT_SUFFIXES = (".crt", ".pem")
KEY_SUFFIX = ".key"

# What changes when a pair's source changes: (mtime_ns, size, inode) of each file; for a
# pair from the control plane, ((revision, key generation, 0),).



@dataclass(frozen=True)
class PairFiles:
    name: str
    cert: Path
    key: Path | None  # None: the key is inside the .pem

    @property
    def paths(self) -> tuple[Path, ...]:
        return (self.cert,) if self.key is None else (self.cert, self.key)


@dataclass(frozen=True)
class CertInfo:
    name: str                 # the pair's file name without suffix, or its control-plane name
    files: PairFiles | None   # None: from the control plane
    names: tuple[str, ...]    # DNS names from the SAN (lower case), else the CN
    subject: str
    issuer: str
    not_before: dt.datetime
    not_after: dt.datetime
    key_type: str             # "EC P-256", "RSA 2048", "Ed25519"
    key_kind: str             # "EC", "RSA", ... : one certificate per kind per context
    signature: Signature      # of the source as read, to notice a change
    pem: Pem = field(repr=False, compare=False, default=Pem(b""))
    source: str = ""          # where it came from, for messages: a file, a control store
    fingerprint: str = ""     # SHA-256 of the leaf's DER, hex

    def days_left(self, now: dt.datetime) -> float:
        return (self.not_after - now).total_seconds() / 86400

    @classmethod
    def of(cls, name: str, checked: CheckedPair, signature: Signature, source: str,
           files: PairFiles | None = None) -> CertInfo:
        return cls(name=name, files=files, names=checked.names, subject=checked.subject,
                   issuer=checked.issuer, not_before=checked.not_before,
                   not_after=checked.not_after, key_type=checked.key_type,
                   key_kind=checked.key_kind, signature=signature, pem=checked.pem,
                   source=source, fingerprint=checked.fingerprint)


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
    return file_signature(files.paths)


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
    key_source = files.key or files.cert
    checked = check_pair(chain_pem, key_pem, chain_source=str(files.cert),
                         key_source=str(key_source), key_label=key_source.name, now=now,
                         allow_expired=allow_expired)
    return CertInfo.of(files.name, checked, sig, str(files.cert), files)
