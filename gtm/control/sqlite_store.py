"""The embedded config store: one SQLite file, standard library only, zero setup.

sqlite3 is blocking, so every call runs in a worker thread (one connection,
serialised by a lock); the event loop never waits on the disk. WAL mode lets
follower processes read the same file while the control plane writes. New
versions are announced in-process to subscribed listeners; other processes learn
of them through their reconcile loop (or Redis when configured).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from gtm import log
from gtm.control.store import (
    CERTIFICATE_COLUMNS,
    DRILL_COLUMNS,
    EVENT_COLUMNS,
    EVENTS_KEPT,
    IDEMPOTENCY_TTL,
    AuditEntry,
    CertificateRecord,
    DrillRecord,
    Event,
    IdempotencyKey,
    KeptOutcome,
    KeyAlreadyUsed,
    Listener,
    NewCertificate,
    NewVersion,
    NodeStatus,
    Outcome,
    Receipt,
    Store,
    StoredEvent,
    TokenRecord,
    VersionRecord,
    certificate_from_row,
    drill_active,
    drill_from_row,
    drill_values,
    dump,
    event_from_row,
)
from gtm.errors import StoreUnavailable, VersionConflict

T = TypeVar("T")
R = TypeVar("R")

MIGRATIONS = (
    """
    CREATE TABLE versions (
        number INTEGER PRIMARY KEY, created_at REAL NOT NULL, author TEXT NOT NULL,
        message TEXT NOT NULL, digest TEXT NOT NULL, rollback_of INTEGER,
        diff TEXT NOT NULL, document TEXT NOT NULL);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT, at REAL NOT NULL, actor TEXT NOT NULL,
        action TEXT NOT NULL, target TEXT NOT NULL, outcome TEXT NOT NULL,
        detail TEXT NOT NULL);
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,
        secret_hash TEXT NOT NULL UNIQUE, created_at REAL NOT NULL,
        created_by TEXT NOT NULL, revoked_at REAL);
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY, kind TEXT NOT NULL, version INTEGER NOT NULL,
        last_contact REAL NOT NULL, info TEXT NOT NULL);
    """,
    # Certificates: the chain in the clear, the private key sealed (gtm.sealing).
    # A deletion keeps the row as a tombstone under a new revision, so pollers see it.
    """
    CREATE TABLE certificates (
        name TEXT PRIMARY KEY, revision INTEGER NOT NULL UNIQUE, chain TEXT NOT NULL,
        sealed_key BLOB NOT NULL, key_nonce BLOB NOT NULL, key_id TEXT NOT NULL,
        names TEXT NOT NULL, not_after REAL NOT NULL, fingerprint TEXT NOT NULL,
        updated_at REAL NOT NULL, updated_by TEXT NOT NULL, deleted INTEGER NOT NULL);
    """,
    # The answers kept for Idempotency-Keys, per token (gtm.control.idempotency).
    """
    CREATE TABLE idempotency (
        scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
        outcome TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (scope, key));
    CREATE INDEX idempotency_created_at ON idempotency (created_at);
    """,
    # The event stream's copy in the store (gtm.control.events): seq is the API's cursor.
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL, at REAL NOT NULL,
        type TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL, actor TEXT NOT NULL);
    CREATE INDEX events_type ON events (type, seq);
    """,
    # Failover drills (gtm.control.drills): plan, overrides with expiries, report.
    """
    CREATE TABLE drills (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at REAL NOT NULL,
        created_by TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL,
        updated_at REAL NOT NULL, plan TEXT NOT NULL, overrides TEXT NOT NULL,
        abort_requested TEXT NOT NULL, report TEXT, active INTEGER NOT NULL);
    CREATE INDEX drills_active ON drills (active);
    """,
)

VERSION_COLUMNS = "number, created_at, author, message, digest, rollback_of, diff"


class SqliteStore(Store):
    def __init__(self, path: Path):
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []

    async def open(self) -> None:
        await asyncio.to_thread(self._open_sync)

    def _open_sync(self) -> None:
        with self._lock:
            if self._conn is not None:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE below).
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=5000")
            _migrate(conn)
            self._conn = conn

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

        await asyncio.to_thread(close)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                if self._conn is None:
                    raise StoreUnavailable(f"the SQLite store {self.path} is not open")
                try:
                    return work(self._conn)
                except sqlite3.OperationalError as exc:
                    raise StoreUnavailable(f"SQLite store {self.path}: {exc}") from exc

        return await asyncio.to_thread(call)

    async def head(self) -> int:
        return await self._run(_head)

    async def get(self, number: int) -> VersionRecord | None:
        def get(conn: sqlite3.Connection) -> VersionRecord | None:
            row = conn.execute(
                f"SELECT {VERSION_COLUMNS}, document FROM versions WHERE number = ?", (number,)
            ).fetchone()
            return _version(row) if row else None

        return await self._run(get)

    async def history(self, before: int | None, limit: int) -> list[VersionRecord]:
        def history(conn: sqlite3.Connection) -> list[VersionRecord]:
            rows = conn.execute(
                f"SELECT {VERSION_COLUMNS} FROM versions WHERE number < ? "
                "ORDER BY number DESC LIMIT ?",
                (before if before is not None else 2**62, limit),
            ).fetchall()
            return [_version(row) for row in rows]

        return await self._run(history)

    async def commit(self, new: NewVersion,
                     receipt: Receipt[VersionRecord] | None = None) -> VersionRecord:
        def commit(conn: sqlite3.Connection) -> VersionRecord:
            def write() -> VersionRecord:
                current = _head(conn)
                if current != new.base:
                    raise VersionConflict(new.base, current)
                record = VersionRecord(
                    current + 1, time.time(), new.author, new.message, new.digest,
                    new.diff, new.rollback_of,
                )
                conn.execute(
                    "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (record.number, record.created_at, record.author, record.message,
                     record.digest, record.rollback_of, dump(record.diff), new.document_json),
                )
                _write_receipt(conn, receipt, record)
                return record

            # The write lock is taken up front (BEGIN IMMEDIATE), so the head read cannot
            # go stale before the insert: two writers on one base cannot both win.
            return _in_write(conn, write)

        record = await self._run(commit)
        self._announce(record.number)
        return record

    async def put_drill(self, record: DrillRecord, audit: AuditEntry | None = None) -> None:
        def put(conn: sqlite3.Connection) -> None:
            conn.execute(f"INSERT OR REPLACE INTO drills ({DRILL_COLUMNS}, active) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (*drill_values(record), int(drill_active(record))))
            if audit is not None:
                _insert_audit(conn, audit)

        await self._run(lambda conn: _in_write(conn, lambda: put(conn)))

    async def drill(self, drill_id: str) -> DrillRecord | None:
        def get(conn: sqlite3.Connection) -> DrillRecord | None:
            row = conn.execute(f"SELECT {DRILL_COLUMNS} FROM drills WHERE id = ?",
                               (drill_id,)).fetchone()
            return drill_from_row(row) if row else None

        return await self._run(get)

    async def drills(self, limit: int, active: bool = False) -> list[DrillRecord]:
        def rows(conn: sqlite3.Connection) -> list[DrillRecord]:
            found = conn.execute(
                f"SELECT {DRILL_COLUMNS} FROM drills WHERE active >= ? "
                "ORDER BY created_at DESC LIMIT ?", (int(active), limit)).fetchall()
            return [drill_from_row(row, with_report=False) for row in found]

        return await self._run(rows)

    def _announce(self, number: int) -> None:
        for listener in list(self._listeners):
            try:
                listener(number)
            except Exception:  # one bad listener must not hide the version from the rest
                log.control.exception("config listener failed")

    async def add_audit(self, entry: AuditEntry) -> None:
        await self._run(lambda conn: _insert_audit(conn, entry))

    async def audit(self, before: int | None, limit: int) -> list[AuditEntry]:
        def audit(conn: sqlite3.Connection) -> list[AuditEntry]:
            rows = conn.execute(
                "SELECT actor, action, target, outcome, detail, at, id FROM audit "
                "WHERE id < ? ORDER BY id DESC LIMIT ?",
                (before if before is not None else 2**62, limit),
            ).fetchall()
            return [AuditEntry(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

        return await self._run(audit)

    async def add_token(self, token: TokenRecord, secret_hash: str,
                        receipt: Receipt[TokenRecord] | None = None) -> None:
        def add(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?)",
                (token.id, token.name, token.role, secret_hash, token.created_at,
                 token.created_by, token.revoked_at),
            )
            _write_receipt(conn, receipt, token)

        await self._run(lambda conn: _in_write(conn, lambda: add(conn)))

    async def token_by_hash(self, secret_hash: str) -> TokenRecord | None:
        def find(conn: sqlite3.Connection) -> TokenRecord | None:
            row = conn.execute(
                f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE secret_hash = ?", (secret_hash,)
            ).fetchone()
            return TokenRecord(*row) if row else None

        return await self._run(find)

    async def tokens(self) -> list[TokenRecord]:
        def tokens(conn: sqlite3.Connection) -> list[TokenRecord]:
            rows = conn.execute(
                f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id"
            ).fetchall()
            return [TokenRecord(*row) for row in rows]

        return await self._run(tokens)

    async def revoke_token(self, token_id: str, receipt: Receipt[str] | None = None) -> bool:
        def revoke(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                (time.time(), token_id),
            )
            if cursor.rowcount != 1:
                return False
            _write_receipt(conn, receipt, token_id)
            return True

        return await self._run(lambda conn: _in_write(conn, lambda: revoke(conn)))

    async def kept_outcome(self, scope: str, key: str) -> KeptOutcome | None:
        def find(conn: sqlite3.Connection) -> KeptOutcome | None:
            row = conn.execute(
                "SELECT fingerprint, outcome, created_at FROM idempotency "
                "WHERE scope = ? AND key = ? AND created_at >= ?",
                (scope, key, time.time() - IDEMPOTENCY_TTL)).fetchone()
            return KeptOutcome(row[0], Outcome.from_json(row[1]), row[2]) if row else None

        return await self._run(find)

    async def keep_outcome(self, key: IdempotencyKey, outcome: Outcome) -> KeptOutcome | None:
        def keep(conn: sqlite3.Connection) -> KeptOutcome | None:
            if _keep(conn, key, outcome):
                return None
            row = conn.execute(
                "SELECT fingerprint, outcome, created_at FROM idempotency "
                "WHERE scope = ? AND key = ?", (key.scope, key.key)).fetchone()
            return KeptOutcome(row[0], Outcome.from_json(row[1]), row[2])

        return await self._run(lambda conn: _in_write(conn, lambda: keep(conn)))

    async def forget_outcomes(self, before: float) -> int:
        def forget(conn: sqlite3.Connection) -> int:
            return int(conn.execute("DELETE FROM idempotency WHERE created_at < ?",
                                    (before,)).rowcount)

        return await self._run(forget)

    async def report_node(self, status: NodeStatus) -> None:
        await self._run(lambda conn: conn.execute(
            "INSERT INTO nodes VALUES (?, ?, ?, ?, ?) ON CONFLICT (node_id) DO UPDATE SET "
            "kind = excluded.kind, version = excluded.version, "
            "last_contact = excluded.last_contact, info = excluded.info",
            (status.node_id, status.kind, status.version, status.last_contact,
             dump(status.info)),
        ))

    async def nodes(self) -> list[NodeStatus]:
        def nodes(conn: sqlite3.Connection) -> list[NodeStatus]:
            rows = conn.execute(
                "SELECT node_id, kind, version, last_contact, info FROM nodes ORDER BY node_id"
            ).fetchall()
            return [NodeStatus(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

        return await self._run(nodes)

    async def subscribe(self, listener: Listener) -> bool:
        if listener not in self._listeners:
            self._listeners.append(listener)
        return True

    async def put_certificate(self, new: NewCertificate) -> CertificateRecord:
        record = CertificateRecord(
            new.name, 0, new.chain, new.sealed_key, new.key_nonce, new.key_id, new.names,
            new.not_after, new.fingerprint, time.time(), new.updated_by)

        def put(conn: sqlite3.Connection) -> CertificateRecord:
            return _in_write(conn, lambda: _upsert(conn, record))

        return await self._run(put)

    async def delete_certificate(self, name: str, deleted_by: str) -> CertificateRecord | None:
        def delete(conn: sqlite3.Connection) -> CertificateRecord | None:
            def change() -> CertificateRecord | None:
                live = _live_certificate(conn, name)
                return None if live is None else _upsert(conn, live.tombstone(deleted_by))

            return _in_write(conn, change)

        return await self._run(delete)

    async def certificate(self, name: str) -> CertificateRecord | None:
        return await self._run(lambda conn: _live_certificate(conn, name))

    async def certificates(self, since_revision: int = 0) -> list[CertificateRecord]:
        def rows(conn: sqlite3.Connection) -> list[CertificateRecord]:
            found = conn.execute(
                f"SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE revision > ? "
                "ORDER BY revision", (since_revision,)).fetchall()
            return [certificate_from_row(row) for row in found]

        return await self._run(rows)

    async def add_events(self, events: Sequence[Event]) -> None:
        def add(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "INSERT INTO events (id, at, type, subject, detail, actor) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(e.id, e.time, e.type, e.subject, dump(e.detail), e.actor) for e in events])
            conn.execute("DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?",
                         (EVENTS_KEPT,))

        await self._run(lambda conn: _in_write(conn, lambda: add(conn)))

    async def events(self, after: int, limit: int, types: tuple[str, ...] = (),
                     since: float = 0.0) -> list[StoredEvent]:
        of_types = f" AND type IN ({', '.join('?' * len(types))})" if types else ""

        def read(conn: sqlite3.Connection) -> list[StoredEvent]:
            rows = conn.execute(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > ? AND at >= ?{of_types} "
                "ORDER BY seq LIMIT ?", (after, since, *types, limit)).fetchall()
            return [event_from_row(row) for row in rows]

        return await self._run(read)

    async def last_events(self, limit: int, types: tuple[str, ...] = ()) -> list[StoredEvent]:
        of_types = f" WHERE type IN ({', '.join('?' * len(types))})" if types else ""

        def read(conn: sqlite3.Connection) -> list[StoredEvent]:
            rows = conn.execute(f"SELECT {EVENT_COLUMNS} FROM events{of_types} "
                                "ORDER BY seq DESC LIMIT ?", (*types, limit)).fetchall()
            return [event_from_row(row) for row in reversed(rows)]

        return await self._run(read)


TOKEN_COLUMNS = "id, name, role, created_at, created_by, revoked_at"


def _head(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT COALESCE(MAX(number), 0) FROM versions").fetchone()
    return int(row[0])


def _insert_audit(conn: sqlite3.Connection, entry: AuditEntry) -> None:
    conn.execute(
        "INSERT INTO audit (at, actor, action, target, outcome, detail) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (entry.at, entry.actor, entry.action, entry.target, entry.outcome, dump(entry.detail)),
    )


def _write_receipt(conn: sqlite3.Connection, receipt: Receipt[R] | None, result: R) -> None:
    """A write's audit row and kept answer, inside the write's transaction."""
    if receipt is None:
        return
    _insert_audit(conn, receipt.audit(result))
    if receipt.key is not None and receipt.answer is not None \
            and not _keep(conn, receipt.key, receipt.answer(result)):
        raise KeyAlreadyUsed()


def _keep(conn: sqlite3.Connection, key: IdempotencyKey, outcome: Outcome) -> bool:
    """Keep the answer unless the key holds a live one (inside a write transaction)."""
    now = time.time()
    conn.execute("DELETE FROM idempotency WHERE scope = ? AND key = ? AND created_at < ?",
                 (key.scope, key.key, now - IDEMPOTENCY_TTL))
    cursor = conn.execute("INSERT OR IGNORE INTO idempotency VALUES (?, ?, ?, ?, ?)",
                          (key.scope, key.key, key.fingerprint, outcome.to_json(), now))
    return cursor.rowcount == 1


def _version(row: tuple[Any, ...]) -> VersionRecord:
    document = json.loads(row[7]) if len(row) > 7 else None
    return VersionRecord(row[0], row[1], row[2], row[3], row[4], json.loads(row[6]), row[5],
                         document)


def _live_certificate(conn: sqlite3.Connection, name: str) -> CertificateRecord | None:
    row = conn.execute(f"SELECT {CERTIFICATE_COLUMNS} FROM certificates "
                       "WHERE name = ? AND deleted = 0", (name,)).fetchone()
    return certificate_from_row(row) if row else None


def _in_write(conn: sqlite3.Connection, work: Callable[[], T]) -> T:
    """One write transaction. IMMEDIATE takes the write lock first, so revisions are
    handed out in commit order: a poller never sees revision N+1 before N."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = work()
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result


def _upsert(conn: sqlite3.Connection, record: CertificateRecord) -> CertificateRecord:
    """Write ``record`` under the next revision (inside a write transaction)."""
    revision = int(conn.execute(
        "SELECT COALESCE(MAX(revision), 0) + 1 FROM certificates").fetchone()[0])
    stored = replace(record, revision=revision)
    conn.execute(
        f"INSERT OR REPLACE INTO certificates ({CERTIFICATE_COLUMNS}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (stored.name, stored.revision, stored.chain, stored.sealed_key, stored.key_nonce,
         stored.key_id, dump(list(stored.names)), stored.not_after, stored.fingerprint,
         stored.updated_at, stored.updated_by, int(stored.deleted)),
    )
    return stored


def _migrate(conn: sqlite3.Connection) -> None:
    """Apply the migrations this file has not seen yet (PRAGMA user_version counts them)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        done = int(conn.execute("PRAGMA user_version").fetchone()[0])
        for index, script in enumerate(MIGRATIONS[done:], start=done + 1):
            for statement in filter(str.strip, script.split(";")):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {index}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
