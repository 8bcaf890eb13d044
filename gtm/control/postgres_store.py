"""The config store on PostgreSQL (asyncpg), for deployments across regions.

Everything lives in one schema named after the namespace, so several deployments
(or test runs) share a database without meeting. The pool connects lazily and
reconnects on its own: a store created while PostgreSQL is down works as soon as
it is back, and meanwhile every call raises StoreUnavailable quickly (short
timeouts) rather than hanging a caller. A server that hangs (accepts, never answers)
is bounded the same way: connects, statements and waits for a pooled connection all
time out, on the client and (statement_timeout) on the server, and the error says so.

A commit sends ``NOTIFY <namespace>_config`` inside its transaction, so the
announcement goes out exactly when the version becomes visible.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import asyncpg

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
from gtm.store_access import validate_namespace

T = TypeVar("T")
R = TypeVar("R")

CONNECT_TIMEOUT = 2.0
COMMAND_TIMEOUT = 5.0

MIGRATIONS = (
    """
    CREATE TABLE versions (
        number BIGINT PRIMARY KEY, created_at DOUBLE PRECISION NOT NULL,
        author TEXT NOT NULL, message TEXT NOT NULL, digest TEXT NOT NULL,
        rollback_of BIGINT, diff TEXT NOT NULL, document TEXT NOT NULL);
    CREATE TABLE audit (
        id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, actor TEXT NOT NULL,
        action TEXT NOT NULL, target TEXT NOT NULL, outcome TEXT NOT NULL,
        detail TEXT NOT NULL);
    CREATE TABLE tokens (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, role TEXT NOT NULL,
        secret_hash TEXT NOT NULL UNIQUE, created_at DOUBLE PRECISION NOT NULL,
        created_by TEXT NOT NULL, revoked_at DOUBLE PRECISION);
    CREATE TABLE nodes (
        node_id TEXT PRIMARY KEY, kind TEXT NOT NULL, version BIGINT NOT NULL,
        last_contact DOUBLE PRECISION NOT NULL, info TEXT NOT NULL);
    """,
    # Certificates: the chain in the clear, the private key sealed (gtm.sealing).
    # A deletion keeps the row as a tombstone under a new revision, so pollers see it.
    """
    CREATE TABLE certificates (
        name TEXT PRIMARY KEY, revision BIGINT NOT NULL UNIQUE, chain TEXT NOT NULL,
        sealed_key BYTEA NOT NULL, key_nonce BYTEA NOT NULL, key_id TEXT NOT NULL,
        names TEXT NOT NULL, not_after DOUBLE PRECISION NOT NULL, fingerprint TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL, updated_by TEXT NOT NULL,
        deleted BOOLEAN NOT NULL);
    """,
    # The answers kept for Idempotency-Keys, per token (gtm.control.idempotency).
    """
    CREATE TABLE idempotency (
        scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
        outcome TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (scope, key));
    CREATE INDEX idempotency_created_at ON idempotency (created_at);
    """,
    # The event stream's copy in the store (gtm.control.events): seq is the API's cursor.
    """
    CREATE TABLE events (
        seq BIGSERIAL PRIMARY KEY, id TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
        type TEXT NOT NULL, subject TEXT NOT NULL, detail TEXT NOT NULL, actor TEXT NOT NULL);
    CREATE INDEX events_type ON events (type, seq);
    """,
    # Failover drills (gtm.control.drills): plan, overrides with expiries, report.
    """
    CREATE TABLE drills (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL,
        created_by TEXT NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL, plan TEXT NOT NULL, overrides TEXT NOT NULL,
        abort_requested TEXT NOT NULL, report TEXT, active BOOLEAN NOT NULL);
    CREATE INDEX drills_active ON drills (active);
    """,
)

VERSION_COLUMNS = "number, created_at, author, message, digest, rollback_of, diff"
TOKEN_COLUMNS = "id, name, role, created_at, created_by, revoked_at"

# What a lost or refused connection looks like through asyncpg.
UNAVAILABLE = (
    OSError,
    asyncio.TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
)


class PostgresStore(Store):
    def __init__(self, url: str, namespace: str = "gtm", migrate: bool = True,
                 timeout: float = COMMAND_TIMEOUT):
        self.url = url
        # The longest any one statement may take; connecting gets at most CONNECT_TIMEOUT.
        self.timeout = timeout
        self.connect_timeout = min(CONNECT_TIMEOUT, timeout)
        self.namespace = validate_namespace(namespace)
        # Readers that must not need DDL rights (balancers reading certificates) skip
        # migrations: the control plane has made the schema, or they wait until it has.
        self.migrate = migrate
        self.channel = f"{self.namespace}_config"
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._listen_conn: asyncpg.Connection | None = None
        self._listeners: list[Listener] = []

    @property
    def schema(self) -> str:
        return self.namespace

    async def open(self) -> None:
        await self._ready()

    async def close(self) -> None:
        if self._listen_conn is not None:
            await _quietly(self._listen_conn.close(timeout=1))
            self._listen_conn = None
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await asyncio.wait_for(pool.close(), 2)
            except (TimeoutError, *UNAVAILABLE):
                pool.terminate()

    async def _ready(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                try:
                    if self.migrate:
                        await self._migrate()
                    self._pool = await asyncpg.create_pool(
                        self.url, min_size=0, max_size=4, timeout=self.connect_timeout,
                        command_timeout=self.timeout,
                        server_settings={"search_path": self.schema,
                                         "statement_timeout": str(int(self.timeout * 1000))},
                    )
                except UNAVAILABLE as exc:
                    raise self._unavailable(exc, self.connect_timeout) from exc
            return self._pool

    def _unavailable(self, exc: BaseException, waited: float) -> StoreUnavailable:
        """The reason, always non-empty: a timeout's own text is empty."""
        if isinstance(exc, TimeoutError | asyncpg.QueryCanceledError):
            return StoreUnavailable(f"PostgreSQL did not answer within {waited:g} s")
        return StoreUnavailable(f"PostgreSQL is unreachable: {exc or type(exc).__name__}")

    async def _migrate(self) -> None:
        conn = await asyncpg.connect(self.url, timeout=self.connect_timeout)
        try:
            # One migrator at a time across every process of the deployment.
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.schema)
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                await conn.execute(
                    f'CREATE TABLE IF NOT EXISTS "{self.schema}".migrations '
                    "(number INT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)"
                )
                done = await conn.fetchval(
                    f'SELECT COALESCE(MAX(number), 0) FROM "{self.schema}".migrations'
                )
                await conn.execute(f'SET LOCAL search_path TO "{self.schema}"')
                for index, script in enumerate(MIGRATIONS[done:], start=done + 1):
                    await conn.execute(script)
                    await conn.execute(
                        "INSERT INTO migrations VALUES ($1, $2)", index, time.time()
                    )
        finally:
            await conn.close()

    async def _run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        pool = await self._ready()
        try:
            async with pool.acquire(timeout=self.connect_timeout) as conn:
                return await work(conn)
        except (*UNAVAILABLE, asyncpg.QueryCanceledError) as exc:
            raise self._unavailable(exc, self.timeout) from exc

    async def head(self) -> int:
        return await self._run(_head)

    async def get(self, number: int) -> VersionRecord | None:
        async def get(conn: asyncpg.Connection) -> VersionRecord | None:
            row = await conn.fetchrow(
                f"SELECT {VERSION_COLUMNS}, document FROM versions WHERE number = $1", number
            )
            return _version(row) if row else None

        return await self._run(get)

    async def history(self, before: int | None, limit: int) -> list[VersionRecord]:
        async def history(conn: asyncpg.Connection) -> list[VersionRecord]:
            rows = await conn.fetch(
                f"SELECT {VERSION_COLUMNS} FROM versions WHERE number < $1 "
                "ORDER BY number DESC LIMIT $2",
                before if before is not None else 2**62, limit,
            )
            return [_version(row) for row in rows]

        return await self._run(history)

    async def commit(self, new: NewVersion,
                     receipt: Receipt[VersionRecord] | None = None) -> VersionRecord:
        async def commit(conn: asyncpg.Connection) -> VersionRecord:
            async with conn.transaction():
                current = await _head(conn)
                if current != new.base:
                    raise VersionConflict(new.base, current)
                record = VersionRecord(
                    current + 1, time.time(), new.author, new.message, new.digest,
                    new.diff, new.rollback_of,
                )
                try:
                    await conn.execute(
                        "INSERT INTO versions VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                        record.number, record.created_at, record.author, record.message,
                        record.digest, record.rollback_of, dump(record.diff),
                        new.document_json,
                    )
                except asyncpg.UniqueViolationError as exc:
                    # Two writers read the same head; the primary key lets one win.
                    raise VersionConflict(new.base, current + 1) from exc
                await _write_receipt(conn, receipt, record)
                await conn.execute("SELECT pg_notify($1, $2)", self.channel, str(record.number))
                return record

        return await self._run(commit)

    async def add_audit(self, entry: AuditEntry) -> None:
        await self._run(lambda conn: _insert_audit(conn, entry))

    async def audit(self, before: int | None, limit: int) -> list[AuditEntry]:
        async def audit(conn: asyncpg.Connection) -> list[AuditEntry]:
            rows = await conn.fetch(
                "SELECT actor, action, target, outcome, detail, at, id FROM audit "
                "WHERE id < $1 ORDER BY id DESC LIMIT $2",
                before if before is not None else 2**62, limit,
            )
            return [AuditEntry(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

        return await self._run(audit)

    async def add_token(self, token: TokenRecord, secret_hash: str,
                        receipt: Receipt[TokenRecord] | None = None) -> None:
        async def add(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO tokens VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    token.id, token.name, token.role, secret_hash, token.created_at,
                    token.created_by, token.revoked_at,
                )
                await _write_receipt(conn, receipt, token)

        await self._run(add)

    async def token_by_hash(self, secret_hash: str) -> TokenRecord | None:
        async def find(conn: asyncpg.Connection) -> TokenRecord | None:
            row = await conn.fetchrow(
                f"SELECT {TOKEN_COLUMNS} FROM tokens WHERE secret_hash = $1", secret_hash
            )
            return TokenRecord(*row) if row else None

        return await self._run(find)

    async def tokens(self) -> list[TokenRecord]:
        async def tokens(conn: asyncpg.Connection) -> list[TokenRecord]:
            rows = await conn.fetch(f"SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created_at, id")
            return [TokenRecord(*row) for row in rows]

        return await self._run(tokens)

    async def revoke_token(self, token_id: str, receipt: Receipt[str] | None = None) -> bool:
        async def revoke(conn: asyncpg.Connection) -> bool:
            async with conn.transaction():
                status = await conn.execute(
                    "UPDATE tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
                    time.time(), token_id,
                )
                if status != "UPDATE 1":
                    return False
                await _write_receipt(conn, receipt, token_id)
                return True

        return await self._run(revoke)

    async def kept_outcome(self, scope: str, key: str) -> KeptOutcome | None:
        async def find(conn: asyncpg.Connection) -> KeptOutcome | None:
            row = await conn.fetchrow(
                "SELECT fingerprint, outcome, created_at FROM idempotency "
                "WHERE scope = $1 AND key = $2 AND created_at >= $3",
                scope, key, time.time() - IDEMPOTENCY_TTL)
            return KeptOutcome(row[0], Outcome.from_json(row[1]), row[2]) if row else None

        return await self._run(find)

    async def keep_outcome(self, key: IdempotencyKey, outcome: Outcome) -> KeptOutcome | None:
        async def keep(conn: asyncpg.Connection) -> KeptOutcome | None:
            async with conn.transaction():
                if await _keep(conn, key, outcome):
                    return None
                row = await conn.fetchrow(
                    "SELECT fingerprint, outcome, created_at FROM idempotency "
                    "WHERE scope = $1 AND key = $2", key.scope, key.key)
                return KeptOutcome(row[0], Outcome.from_json(row[1]), row[2])

        return await self._run(keep)

    async def forget_outcomes(self, before: float) -> int:
        async def forget(conn: asyncpg.Connection) -> int:
            status = await conn.execute("DELETE FROM idempotency WHERE created_at < $1", before)
            return int(status.split()[-1])

        return await self._run(forget)

    async def report_node(self, status: NodeStatus) -> None:
        await self._run(lambda conn: conn.execute(
            "INSERT INTO nodes VALUES ($1, $2, $3, $4, $5) ON CONFLICT (node_id) DO UPDATE SET "
            "kind = excluded.kind, version = excluded.version, "
            "last_contact = excluded.last_contact, info = excluded.info",
            status.node_id, status.kind, status.version, status.last_contact,
            dump(status.info),
        ))

    async def nodes(self) -> list[NodeStatus]:
        async def nodes(conn: asyncpg.Connection) -> list[NodeStatus]:
            rows = await conn.fetch(
                "SELECT node_id, kind, version, last_contact, info FROM nodes ORDER BY node_id"
            )
            return [NodeStatus(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows]

        return await self._run(nodes)

    async def subscribe(self, listener: Listener) -> bool:
        if listener not in self._listeners:
            self._listeners.append(listener)
        conn = self._listen_conn
        if conn is not None and not conn.is_closed():
            return True
        try:
            conn = await asyncpg.connect(self.url, timeout=self.connect_timeout)
            await conn.add_listener(self.channel, self._on_notify)
        except UNAVAILABLE as exc:
            log.control.debug("cannot LISTEN on PostgreSQL: %s", exc)
            return False
        self._listen_conn = conn
        return True

    async def put_certificate(self, new: NewCertificate) -> CertificateRecord:
        record = CertificateRecord(
            new.name, 0, new.chain, new.sealed_key, new.key_nonce, new.key_id, new.names,
            new.not_after, new.fingerprint, time.time(), new.updated_by)

        async def put(conn: asyncpg.Connection) -> CertificateRecord:
            async with conn.transaction():
                return await _upsert(conn, record)

        return await self._run(put)

    async def delete_certificate(self, name: str, deleted_by: str) -> CertificateRecord | None:
        async def delete(conn: asyncpg.Connection) -> CertificateRecord | None:
            async with conn.transaction():
                await _lock_certificates(conn)
                live = await _live_certificate(conn, name)
                if live is None:
                    return None
                return await _upsert(conn, live.tombstone(deleted_by))

        return await self._run(delete)

    async def certificate(self, name: str) -> CertificateRecord | None:
        return await self._run(lambda conn: _live_certificate(conn, name))

    async def certificates(self, since_revision: int = 0) -> list[CertificateRecord]:
        async def rows(conn: asyncpg.Connection) -> list[CertificateRecord]:
            found = await conn.fetch(
                f"SELECT {CERTIFICATE_COLUMNS} FROM certificates WHERE revision > $1 "
                "ORDER BY revision", since_revision)
            return [certificate_from_row(row) for row in found]

        return await self._run(rows)

    async def add_events(self, events: Sequence[Event]) -> None:
        async def add(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.executemany(
                    "INSERT INTO events (id, at, type, subject, detail, actor) "
                    "VALUES ($1, $2, $3, $4, $5, $6)",
                    [(e.id, e.time, e.type, e.subject, dump(e.detail), e.actor)
                     for e in events])
                await conn.execute("DELETE FROM events WHERE seq <= "
                                   "(SELECT MAX(seq) FROM events) - $1", EVENTS_KEPT)

        await self._run(add)

    async def events(self, after: int, limit: int, types: tuple[str, ...] = (),
                     since: float = 0.0) -> list[StoredEvent]:
        async def read(conn: asyncpg.Connection) -> list[StoredEvent]:
            rows = await conn.fetch(
                f"SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 AND at >= $2 "
                "AND (cardinality($3::text[]) = 0 OR type = ANY($3::text[])) "
                "ORDER BY seq LIMIT $4", after, since, list(types), limit)
            return [event_from_row(row) for row in rows]

        return await self._run(read)

    async def last_events(self, limit: int, types: tuple[str, ...] = ()) -> list[StoredEvent]:
        async def read(conn: asyncpg.Connection) -> list[StoredEvent]:
            rows = await conn.fetch(
                f"SELECT {EVENT_COLUMNS} FROM events "
                "WHERE cardinality($1::text[]) = 0 OR type = ANY($1::text[]) "
                "ORDER BY seq DESC LIMIT $2", list(types), limit)
            return [event_from_row(row) for row in reversed(rows)]

        return await self._run(read)

    async def put_drill(self, record: DrillRecord, audit: AuditEntry | None = None) -> None:
        async def put(conn: asyncpg.Connection) -> None:
            async with conn.transaction():
                await conn.execute(
                    f"INSERT INTO drills ({DRILL_COLUMNS}, active) VALUES ($1, $2, $3, $4, $5, "
                    "$6, $7, $8, $9, $10, $11, $12) ON CONFLICT (id) DO UPDATE SET "
                    "status = excluded.status, reason = excluded.reason, "
                    "updated_at = excluded.updated_at, overrides = excluded.overrides, "
                    "abort_requested = excluded.abort_requested, report = excluded.report, "
                    "active = excluded.active",
                    *drill_values(record), drill_active(record))
                if audit is not None:
                    await _insert_audit(conn, audit)

        await self._run(put)

    async def drill(self, drill_id: str) -> DrillRecord | None:
        async def get(conn: asyncpg.Connection) -> DrillRecord | None:
            row = await conn.fetchrow(f"SELECT {DRILL_COLUMNS} FROM drills WHERE id = $1",
                                      drill_id)
            return drill_from_row(row) if row else None

        return await self._run(get)

    async def drills(self, limit: int, active: bool = False) -> list[DrillRecord]:
        async def rows(conn: asyncpg.Connection) -> list[DrillRecord]:
            found = await conn.fetch(
                f"SELECT {DRILL_COLUMNS} FROM drills WHERE active OR NOT $1 "
                "ORDER BY created_at DESC LIMIT $2", active, limit)
            return [drill_from_row(row, with_report=False) for row in found]

        return await self._run(rows)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            number = int(payload)
        except ValueError:
            log.control.warning("ignoring a malformed NOTIFY payload %r", payload)
            return
        for listener in list(self._listeners):
            try:
                listener(number)
            except Exception:  # one bad listener must not hide the version from the rest
                log.control.exception("config listener failed")

    async def drop_schema(self) -> None:
        """Remove everything of this namespace (used by tests and teardown)."""
        await self.close()
        conn = await asyncpg.connect(self.url, timeout=self.connect_timeout)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
        finally:
            await conn.close()


async def _insert_audit(conn: asyncpg.Connection, entry: AuditEntry) -> None:
    await conn.execute(
        "INSERT INTO audit (at, actor, action, target, outcome, detail) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
        entry.at, entry.actor, entry.action, entry.target, entry.outcome, dump(entry.detail),
    )


async def _write_receipt(conn: asyncpg.Connection, receipt: Receipt[R] | None,
                         result: R) -> None:
    """A write's audit row and kept answer, inside the write's transaction."""
    if receipt is None:
        return
    await _insert_audit(conn, receipt.audit(result))
    if receipt.key is not None and receipt.answer is not None \
            and not await _keep(conn, receipt.key, receipt.answer(result)):
        raise KeyAlreadyUsed()


async def _keep(conn: asyncpg.Connection, key: IdempotencyKey, outcome: Outcome) -> bool:
    """Keep the answer unless the key holds a live one (inside a transaction). A
    concurrent insert of the same key waits for the other transaction, then yields."""
    now = time.time()
    await conn.execute("DELETE FROM idempotency WHERE scope = $1 AND key = $2 "
                       "AND created_at < $3", key.scope, key.key, now - IDEMPOTENCY_TTL)
    status = await conn.execute(
        "INSERT INTO idempotency VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        key.scope, key.key, key.fingerprint, outcome.to_json(), now)
    return bool(status == "INSERT 0 1")


async def _head(conn: asyncpg.Connection) -> int:
    return int(await conn.fetchval("SELECT COALESCE(MAX(number), 0) FROM versions"))


def _version(row: Any) -> VersionRecord:
    document = json.loads(row["document"]) if "document" in row else None
    return VersionRecord(
        row["number"], row["created_at"], row["author"], row["message"], row["digest"],
        json.loads(row["diff"]), row["rollback_of"], document,
    )


async def _lock_certificates(conn: asyncpg.Connection) -> None:
    # Writers take turns (readers are not blocked): revisions are then handed out in
    # commit order, so a poller that saw revision N never later meets a smaller one.
    await conn.execute("LOCK TABLE certificates IN SHARE ROW EXCLUSIVE MODE")


async def _live_certificate(conn: asyncpg.Connection, name: str) -> CertificateRecord | None:
    row = await conn.fetchrow(f"SELECT {CERTIFICATE_COLUMNS} FROM certificates "
                              "WHERE name = $1 AND NOT deleted", name)
    return certificate_from_row(row) if row else None


async def _upsert(conn: asyncpg.Connection, record: CertificateRecord) -> CertificateRecord:
    """Write ``record`` under the next revision (inside a transaction)."""
    await _lock_certificates(conn)
    revision = int(await conn.fetchval(
        "SELECT COALESCE(MAX(revision), 0) + 1 FROM certificates"))
    stored = replace(record, revision=revision)
    await conn.execute(
        f"INSERT INTO certificates ({CERTIFICATE_COLUMNS}) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
        "ON CONFLICT (name) DO UPDATE SET revision = excluded.revision, "
        "chain = excluded.chain, sealed_key = excluded.sealed_key, "
        "key_nonce = excluded.key_nonce, key_id = excluded.key_id, names = excluded.names, "
        "not_after = excluded.not_after, fingerprint = excluded.fingerprint, "
        "updated_at = excluded.updated_at, updated_by = excluded.updated_by, "
        "deleted = excluded.deleted",
        stored.name, stored.revision, stored.chain, stored.sealed_key, stored.key_nonce,
        stored.key_id, dump(list(stored.names)), stored.not_after, stored.fingerprint,
        stored.updated_at, stored.updated_by, stored.deleted,
    )
    return stored


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except (TimeoutError, *UNAVAILABLE):
        pass
