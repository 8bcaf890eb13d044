"""The config store: what both backends (SQLite, PostgreSQL) promise, and their records.

A store keeps numbered versions of the document and never changes one once
written. ``commit`` is the only way to add a version and it is atomic: it names
the version it was based on and fails with VersionConflict, storing nothing, when
that is no longer the latest. Every backend behaves the same; one test suite
runs against each.
"""

from __future__ import annotations

import abc
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from gtm.errors import ConfigError

ROLES = ("viewer", "editor", "admin")  # each role can do everything the previous can
TOKEN_PREFIX = "gtm_"

Listener = Callable[[int], None]


@dataclass(frozen=True)
class VersionRecord:
    number: int
    created_at: float
    author: str
    message: str
    digest: str
    diff: list[dict[str, Any]]
    rollback_of: int | None = None
    document: dict[str, Any] | None = None  # None in listings, to keep them small

    def summary(self) -> dict[str, Any]:
        return {
            "version": self.number,
            "created_at": self.created_at,
            "author": self.author,
            "message": self.message,
            "digest": self.digest,
            "rollback_of": self.rollback_of,
            "changes": len(self.diff),
        }


@dataclass(frozen=True)
class NewVersion:
    """What a writer hands to commit; the store adds the number and the time."""

    base: int
    document_json: str
    author: str
    message: str
    digest: str
    diff: list[dict[str, Any]]
    rollback_of: int | None = None


@dataclass(frozen=True)
class TokenRecord:
    id: str
    name: str
    role: str
    created_at: float
    created_by: str
    revoked_at: float | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "role": self.role,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "revoked_at": self.revoked_at,
        }


@dataclass(frozen=True)
class AuditEntry:
    actor: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)
    id: int = 0

    def __post_init__(self) -> None:
        # An audit row records what a client sent (a refused request's path), which may
        # hold characters no store can keep: they are kept escaped rather than lost.
        for name in ("actor", "action", "target", "outcome"):
            object.__setattr__(self, name, storable(getattr(self, name)))

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class NodeStatus:
    node_id: str
    kind: str
    version: int
    last_contact: float
    info: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {
            "node_id": self.node_id,
            "kind": self.kind,
            "version": self.version,
            "last_contact": self.last_contact,
            "info": self.info,
        }


@dataclass(frozen=True)
class NewCertificate:
    """A checked pair, its private key already sealed; the store adds revision and time."""

    name: str
    chain: str                 # PEM certificates, public
    sealed_key: bytes = field(repr=False)
    key_nonce: bytes = field(repr=False)
    key_id: str                # which secret key sealed it (gtm.control.sealing)
    names: tuple[str, ...]     # DNS names the leaf serves
    not_after: float           # Unix time
    fingerprint: str           # SHA-256 of the leaf, hex
    updated_by: str


@dataclass(frozen=True)
class CertificateRecord:
    """A stored certificate, or the tombstone of a deleted one (``deleted``, no chain, no
    key), kept so that pollers reading ``certificates(since_revision)`` see the removal.

    ``revision`` grows by one with every change to any certificate (a put or a delete)."""

    name: str
    revision: int
    chain: str
    sealed_key: bytes = field(repr=False)
    key_nonce: bytes = field(repr=False)
    key_id: str
    names: tuple[str, ...]
    not_after: float
    fingerprint: str
    updated_at: float
    updated_by: str
    deleted: bool = False

    def tombstone(self, deleted_by: str) -> CertificateRecord:
        """What stays of it once deleted: its metadata, never its chain or key."""
        return replace(self, chain="", sealed_key=b"", key_nonce=b"", updated_at=time.time(),
                       updated_by=deleted_by, deleted=True)

    def public(self) -> dict[str, Any]:
        """Metadata only: never the sealed key (nor its nonce)."""
        return {
            "name": self.name,
            "revision": self.revision,
            "names": list(self.names),
            "not_after": self.not_after,
            "fingerprint_sha256": self.fingerprint,
            "key_id": self.key_id,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }


class Store(abc.ABC):
    """The contract of a config store. Every method may raise StoreUnavailable."""

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect and apply schema migrations (idempotent)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def head(self) -> int:
        """The latest version number, 0 when nothing has been stored yet."""

    @abc.abstractmethod
    async def get(self, number: int) -> VersionRecord | None:
        """One version with its document."""

    @abc.abstractmethod
    async def history(self, before: int | None, limit: int) -> list[VersionRecord]:
        """Versions below ``before`` (all when None), newest first, without documents."""

    @abc.abstractmethod
    async def commit(self, new: NewVersion) -> VersionRecord:
        """Store version base+1, or raise VersionConflict when base is not the head."""

    @abc.abstractmethod
    async def add_audit(self, entry: AuditEntry) -> None: ...

    @abc.abstractmethod
    async def audit(self, before: int | None, limit: int) -> list[AuditEntry]: ...

    @abc.abstractmethod
    async def add_token(self, token: TokenRecord, secret_hash: str) -> None: ...

    @abc.abstractmethod
    async def token_by_hash(self, secret_hash: str) -> TokenRecord | None: ...

    @abc.abstractmethod
    async def tokens(self) -> list[TokenRecord]: ...

    @abc.abstractmethod
    async def revoke_token(self, token_id: str) -> bool:
        """True when a live token was revoked."""

    @abc.abstractmethod
    async def report_node(self, status: NodeStatus) -> None: ...

    @abc.abstractmethod
    async def nodes(self) -> list[NodeStatus]: ...

    @abc.abstractmethod
    async def subscribe(self, listener: Listener) -> bool:
        """Call ``listener(version)`` on every new version; True while that works.

        Idempotent: followers call it on every reconcile tick, so a subscription
        lost with its connection is made again.
        """

    @abc.abstractmethod
    async def put_certificate(self, new: NewCertificate) -> CertificateRecord:
        """Store (or replace) a certificate under the next revision."""

    @abc.abstractmethod
    async def delete_certificate(self, name: str, deleted_by: str) -> CertificateRecord | None:
        """Turn a live certificate into a tombstone under the next revision; None when
        there is no live certificate of that name."""

    @abc.abstractmethod
    async def certificate(self, name: str) -> CertificateRecord | None:
        """A live certificate by name (tombstones are None)."""

    @abc.abstractmethod
    async def certificates(self, since_revision: int = 0) -> list[CertificateRecord]:
        """Rows changed after ``since_revision``, tombstones included, oldest change first.

        Changes are numbered in commit order (writers are serialised), so a poller that
        remembers the highest revision it saw never misses one."""

    async def latest(self) -> VersionRecord | None:
        number = await self.head()
        return await self.get(number) if number else None


CERTIFICATE_COLUMNS = ("name, revision, chain, sealed_key, key_nonce, key_id, names, not_after, "
                       "fingerprint, updated_at, updated_by, deleted")


def certificate_from_row(row: Any) -> CertificateRecord:
    """A record from a row of CERTIFICATE_COLUMNS (SQLite tuple or asyncpg Record)."""
    return CertificateRecord(
        name=row[0], revision=int(row[1]), chain=row[2], sealed_key=bytes(row[3]),
        key_nonce=bytes(row[4]), key_id=row[5], names=tuple(json.loads(row[6])),
        not_after=float(row[7]), fingerprint=row[8], updated_at=float(row[9]),
        updated_by=row[10], deleted=bool(row[11]),
    )


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    """``text`` as both stores can keep it: NUL (PostgreSQL refuses it in text) and lone
    surrogates (not UTF-8, so SQLite's driver refuses them) escaped as ``\\x00``, ``\\udXXX``."""
    if _UNSTORABLE.search(text) is None:
        return text
    return _UNSTORABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if m.group() == "\x00"
                           else f"\\u{ord(m.group()):04x}", text)


def unstorable(text: str) -> bool:
    """True when ``text`` holds a character no store keeps as it is (see storable)."""
    return _UNSTORABLE.search(text) is not None


def hash_secret(secret: str) -> str:
    # Token secrets are 256 random bits, not passwords: a plain SHA-256 cannot be
    # brute-forced, and a fast hash keeps authentication off the critical path.
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token(name: str, role: str, created_by: str) -> tuple[TokenRecord, str]:
    """A token record and its secret; the secret is shown once and stored hashed."""
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r} (one of {', '.join(ROLES)})", "token", "role")
    if not name or len(name) > 100 or unstorable(name):
        raise ConfigError("a token needs a name of 1 to 100 characters, without NUL or lone "
                          "surrogates", "token", "name")
    token_id = secrets.token_hex(6)
    secret = f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    record = TokenRecord(token_id, name, role, time.time(), created_by)
    return record, secret


def role_allows(role: str, needed: str) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def validate_namespace(namespace: str) -> str:
    """Namespaces become a schema name, a NOTIFY channel and a Redis key prefix."""
    if not namespace.isidentifier() or not namespace.isascii() or len(namespace) > 40:
        raise ConfigError(
            "a namespace is 1-40 ASCII letters, digits or '_' and starts with a letter",
            "settings",
            "namespace",
        )
    return namespace.lower()
