"""The config store: what both backends (SQLite, PostgreSQL) promise, and their records.

A store keeps numbered versions of the document and never changes one once
written. ``commit`` is the only way to add a version and it is atomic: it names
the version it was based on and fails with VersionConflict, storing nothing, when
that is no longer the latest. A write's receipt (its audit row, and the answer kept
for an Idempotency-Key) is stored in the write's own transaction: a connection lost
after COMMIT cannot leave a version without its audit row, nor a retry without its
answer. Every backend behaves the same; one test suite runs against each.
"""

from __future__ import annotations

import abc
import base64
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from gtm.errors import ConfigError, RequestError
from gtm.store_access import CertificateRecord

ROLES = ("viewer", "editor", "admin")  # each role can do everything the previous can
TOKEN_PREFIX = "gtm_"

Listener = Callable[[int], None]
R = TypeVar("R")
IDEMPOTENCY_TTL = 24 * 3600.0  # how long the answer to an Idempotency-Key is kept
EVENTS_KEPT = 100_000  # the store keeps the newest events; older ones are dropped


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
class Event:
    """One event of the event stream (gtm.control.events): the shape every reader sees,
    from the API, from the store and from the Redis stream alike."""

    id: str                 # time-ordered and unique: readers of both sinks can deduplicate
    time: float             # Unix seconds
    type: str               # health.flip, config.version, steer.region, certificate.put ...
    subject: str            # what it is about: "region eu-west", "version 12"
    detail: dict[str, Any]
    actor: str              # who or what caused it: a token's name#id, health:<observer>

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "time": self.time, "type": self.type, "subject": self.subject,
                "detail": self.detail, "actor": self.actor}


@dataclass(frozen=True)
class StoredEvent:
    """An event with its place in the store: ``cursor`` grows with every event stored."""

    cursor: int
    event: Event


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
    key_id: str                # which secret key sealed it (gtm.sealing)
    names: tuple[str, ...]     # DNS names the leaf serves
    not_after: float           # Unix time
    fingerprint: str           # SHA-256 of the leaf, hex
    updated_by: str


@dataclass(frozen=True)
class Outcome:
    """An API answer, kept so that a retry with the same Idempotency-Key gets it again."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)
    # Kept to complete a replay and never sent: what a new token's secret is derived from.
    private: dict[str, str] = field(default_factory=dict, repr=False)

    def to_json(self) -> str:
        return dump({"status": self.status, "body": self.body, "headers": self.headers,
                     "private": self.private})

    @staticmethod
    def from_json(text: str) -> Outcome:
        data = json.loads(text)
        return Outcome(int(data["status"]), data["body"], data.get("headers", {}),
                       data.get("private", {}))


@dataclass(frozen=True)
class IdempotencyKey:
    scope: str        # the token that sent it: keys of different callers never meet
    key: str          # as the client sent it
    fingerprint: str  # of the request (method, path, body): one key, one request


@dataclass(frozen=True)
class KeptOutcome:
    fingerprint: str
    outcome: Outcome
    created_at: float


@dataclass(frozen=True)
class Receipt(Generic[R]):
    """What a write leaves in the store besides itself, in the same transaction: its audit
    row and, for an API request with an Idempotency-Key, the answer a retry gets. Both
    are made from the write's result (a version, a token record, a revoked token's id)."""

    audit: Callable[[R], AuditEntry]
    key: IdempotencyKey | None = None
    answer: Callable[[R], Outcome] | None = None


@dataclass(frozen=True)
class DrillRecord:
    """A failover drill as the control plane keeps it (gtm.control.drills): its plan, who
    started it, the admin overrides it set (each with its expiry, so the control plane
    restores them if the drill's runner dies), and at the end its outcome and report."""

    id: str
    name: str
    created_at: float
    created_by: str
    status: str                 # running, succeeded, failed, aborted, refused, abandoned
    reason: str
    updated_at: float
    plan: dict[str, Any]
    overrides: list[dict[str, Any]] = field(default_factory=list)
    report: dict[str, Any] | None = None  # None in listings, to keep them small
    abort_requested: str = ""   # who asked to abort ("" none)

    def public(self, with_report: bool = False) -> dict[str, Any]:
        body = {
            "id": self.id, "name": self.name, "created_at": self.created_at,
            "created_by": self.created_by, "status": self.status, "reason": self.reason,
            "updated_at": self.updated_at, "plan": self.plan, "overrides": self.overrides,
            "abort_requested": self.abort_requested,
        }
        if with_report:
            body["report"] = self.report
        return body


DRILL_COLUMNS = ("id, name, created_at, created_by, status, reason, updated_at, plan, "
                 "overrides, abort_requested, report")


def drill_from_row(row: Any, with_report: bool = True) -> DrillRecord:
    """A record from a row of DRILL_COLUMNS (SQLite tuple or asyncpg Record)."""
    report = json.loads(row[10]) if with_report and row[10] else None
    return DrillRecord(row[0], row[1], float(row[2]), row[3], row[4], row[5], float(row[6]),
                       json.loads(row[7]), json.loads(row[8]), report, row[9])


def drill_active(record: DrillRecord) -> bool:
    """Still running, or holding an override not yet restored: the control plane's
    expiry loop looks at these only."""
    return record.status == "running" or any(not o.get("restored_at")
                                             for o in record.overrides)


def drill_values(record: DrillRecord) -> tuple[Any, ...]:
    """A record as the values of DRILL_COLUMNS."""
    return (record.id, record.name, record.created_at, record.created_by, record.status,
            record.reason, record.updated_at, dump(record.plan), dump(record.overrides),
            record.abort_requested, None if record.report is None else dump(record.report))


class KeyAlreadyUsed(RequestError):
    """The Idempotency-Key of a write already holds an answer (a concurrent request with
    the same key got there first); the write was not made. The API answers with the kept
    answer instead, so this is never seen by a client."""

    def __init__(self) -> None:
        super().__init__(409, "another request with this Idempotency-Key was answered first",
                         "Idempotency-Key")


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
    async def commit(self, new: NewVersion,
                     receipt: Receipt[VersionRecord] | None = None) -> VersionRecord:
        """Store version base+1 (and its receipt), or raise VersionConflict when base is
        not the head, or KeyAlreadyUsed when the receipt's key holds an answer."""

    @abc.abstractmethod
    async def add_audit(self, entry: AuditEntry) -> None: ...

    @abc.abstractmethod
    async def audit(self, before: int | None, limit: int) -> list[AuditEntry]: ...

    @abc.abstractmethod
    async def add_token(self, token: TokenRecord, secret_hash: str,
                        receipt: Receipt[TokenRecord] | None = None) -> None: ...

    @abc.abstractmethod
    async def token_by_hash(self, secret_hash: str) -> TokenRecord | None: ...

    @abc.abstractmethod
    async def tokens(self) -> list[TokenRecord]: ...

    @abc.abstractmethod
    async def revoke_token(self, token_id: str, receipt: Receipt[str] | None = None) -> bool:
        """True when a live token was revoked (only then is the receipt stored)."""

    @abc.abstractmethod
    async def kept_outcome(self, scope: str, key: str) -> KeptOutcome | None:
        """The answer kept for an Idempotency-Key, unless it is older than IDEMPOTENCY_TTL."""

    @abc.abstractmethod
    async def keep_outcome(self, key: IdempotencyKey, outcome: Outcome) -> KeptOutcome | None:
        """Keep ``outcome`` for ``key``; when the key already holds one, keep nothing and
        return that one (the first answer to a key is its answer)."""

    @abc.abstractmethod
    async def forget_outcomes(self, before: float) -> int:
        """Drop answers kept before ``before`` (Unix time); how many were dropped."""

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

    @abc.abstractmethod
    async def add_events(self, events: Sequence[Event]) -> None:
        """Append events (one transaction); only the newest EVENTS_KEPT are kept."""

    @abc.abstractmethod
    async def events(self, after: int, limit: int, types: tuple[str, ...] = (),
                     since: float = 0.0) -> list[StoredEvent]:
        """Events stored after cursor ``after``, oldest first; of ``types`` only (all when
        empty), and from Unix time ``since`` on."""

    @abc.abstractmethod
    async def last_events(self, limit: int, types: tuple[str, ...] = ()) -> list[StoredEvent]:
        """The newest ``limit`` events (of ``types``), oldest first."""

    @abc.abstractmethod
    async def put_drill(self, record: DrillRecord, audit: AuditEntry | None = None) -> None:
        """Store (or replace) a drill by id, with its audit row in the same transaction."""

    @abc.abstractmethod
    async def drill(self, drill_id: str) -> DrillRecord | None:
        """One drill with its report."""

    @abc.abstractmethod
    async def drills(self, limit: int, active: bool = False) -> list[DrillRecord]:
        """Drills newest first, without reports; ``active``: only those still running or
        holding an override not yet restored."""

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


def event_from_row(row: Any) -> StoredEvent:
    """A stored event from a row of EVENT_COLUMNS (SQLite tuple or asyncpg Record)."""
    return StoredEvent(int(row[0]), Event(row[1], float(row[2]), row[3], row[4],
                                          json.loads(row[5]), row[6]))


EVENT_COLUMNS = "seq, id, at, type, subject, detail, actor"


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
    record = TokenRecord(token_id, name, role, time.time(), created_by)
    return record, token_secret(token_id, secrets.token_bytes(32))


def token_secret(token_id: str, randomness: bytes) -> str:
    """A token's secret: ``gtm_``, the token's id, then 256 random bits (base64url)."""
    return f"{TOKEN_PREFIX}{token_id}_{base64.urlsafe_b64encode(randomness).decode().rstrip('=')}"


def role_allows(role: str, needed: str) -> bool:
    return role in ROLES and ROLES.index(role) >= ROLES.index(needed)


def dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


