"""Where a region's auto-scalers meet: the leader lease with fencing tokens, the backends
the scaler owns, scaling events, each balancer's facts, operator settings (min/max,
pause), the leader's status and the pools' load history.

Shared core: the balancer's scaler (regional_lb.autoscale) writes it, the control
plane's API and CLI (gtm scale ...) read it and write operator settings, and neither
imports the other. Three backends behave alike: Redis (``redis://``); PostgreSQL
(``postgresql://``, tables ``scale_*`` in the control plane's schema) for a control
plane on PostgreSQL without Redis, whose balancers may be on several hosts; and an
SQLite file (``sqlite:///path``; `gtm up` uses its control plane's database file) for a
setup without either, whose balancers share the file's host.

**Fencing.** ``acquire`` gives the leader a token that grows with every new leader;
every write of the scaler's decisions (``fenced``) names it and is refused with
:class:`Fenced` once another leader has a newer one, in the same atomic step (a Lua
script, an SQLite ``BEGIN IMMEDIATE`` transaction, a PostgreSQL transaction that
holds the lease row's lock). A paused or partitioned old leader
therefore cannot change the pool after it lost the lease, even if it still believes it
leads.
"""

from __future__ import annotations

import abc
import asyncio
import json
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from gtm.errors import GtmError

T = TypeVar("T")
MAX_EVENTS = 1000  # per region; older ones are dropped (the audit log keeps them all)
Json = dict[str, Any]


class Fenced(GtmError):
    """A write with a fencing token that is no longer the newest: refused."""


class ScaleStore(abc.ABC):
    """Every method may raise OSError or a driver error when the store is down."""

    @abc.abstractmethod
    async def acquire(self, region: str, member: str, ttl: float) -> int | None:
        """Take or renew the region's lease: the fencing token, or None (another leads)."""

    @abc.abstractmethod
    async def release(self, region: str, member: str) -> None: ...

    @abc.abstractmethod
    async def leader(self, region: str) -> tuple[str, int] | None: ...

    @abc.abstractmethod
    async def fenced(self, region: str, token: int, layer: Json | None = None,
                     event: Json | None = None) -> int | None:
        """Write the owned backends and/or append an event, if ``token`` is the newest;
        the event's id. Raises Fenced otherwise, writing nothing."""

    @abc.abstractmethod
    async def layer(self, region: str) -> Json: ...

    @abc.abstractmethod
    async def events(self, region: str, limit: int = 100) -> list[Json]:
        """Newest first."""

    @abc.abstractmethod
    async def put_facts(self, region: str, member: str, facts: Json) -> None: ...

    @abc.abstractmethod
    async def facts(self, region: str, fresh: float) -> dict[str, Json]:
        """Each member's latest facts written within ``fresh`` seconds."""

    @abc.abstractmethod
    async def settings(self, region: str) -> dict[str, Json]:
        """Operator settings by pool: ``{"min", "max", "paused"}`` (each optional)."""

    @abc.abstractmethod
    async def set_settings(self, region: str, pool: str, changes: Json) -> Json:
        """Merge changes (a None value removes the key); the pool's settings after."""

    @abc.abstractmethod
    async def put_status(self, region: str, status: Json) -> None: ...

    @abc.abstractmethod
    async def statuses(self) -> dict[str, Json]:
        """Every region's latest status, by region."""

    @abc.abstractmethod
    async def add_history(self, region: str, pool: str, points: dict[int, float]) -> None:
        """One-minute load points (minute = Unix time // 60), replacing those there."""

    @abc.abstractmethod
    async def history(self, region: str, pool: str, since_minute: int) -> dict[int, float]: ...

    @abc.abstractmethod
    async def compact(self, region: str, pool: str, before_minute: int) -> int:
        """Drop points before ``before_minute``; how many."""

    @abc.abstractmethod
    async def advance_cursor(self, name: str, old: int, new: int) -> bool:
        """Move the cursor ``name`` from ``old`` to ``new``; False when it was not at
        ``old`` (another reader moved it first). Cursors start at 0."""

    @abc.abstractmethod
    async def cursor(self, name: str) -> int: ...

    @abc.abstractmethod
    async def regions(self) -> list[str]:
        """Regions that have written anything (facts, status, settings)."""

    @abc.abstractmethod
    async def close(self) -> None: ...


MAX_BACKENDS = 1000


def operator_changes(body: Any) -> Json:
    """``{"min": n, "max": n}`` of `gtm scale set` (either; null removes the override):
    whole numbers 0..MAX_BACKENDS, min not above max. ConfigError names the field."""
    from gtm.config_reader import Reader

    reader = Reader(body, "request", "", ("min", "max"))
    changes: Json = {}
    for key in ("min", "max"):
        if key in reader:
            changes[key] = None if reader.value(key) is None else \
                reader.integer(key, low=0 if key == "min" else 1, high=MAX_BACKENDS)
    if not changes:
        raise reader.fail("min", "give min and/or max")
    if changes.get("min") is not None and changes.get("max") is not None \
            and changes["min"] > changes["max"]:
        raise reader.fail("min", f"must not be above max ({changes['max']})")
    return changes


def open_scale_store(url: str, namespace: str = "gtm") -> ScaleStore:
    if url.startswith(("redis://", "rediss://")):
        return RedisScaleStore(url, namespace)
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresScaleStore(url, namespace)
    if url.startswith("sqlite://"):
        return SqliteScaleStore(Path(url.removeprefix("sqlite://")))
    raise GtmError(f"unknown scale store {url.split(':', 1)[0]!r} (redis://, "
                   "postgresql:// or sqlite:///)")


STORE_SCHEMES = ("redis://", "rediss://", "postgresql://", "postgres://", "sqlite://")


def control_plane_scale_store(store_url: str | None, redis_url: str | None) -> str | None:
    """Where a control plane and the balancers following it meet their scalers: its
    Redis, else its own store (PostgreSQL, or the SQLite file of a one-host setup)."""
    return redis_url or store_url


# -- Redis ---------------------------------------------------------------------------------

_ACQUIRE = """
local holder = redis.call('HGET', KEYS[1], 'member')
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return tonumber(redis.call('HGET', KEYS[1], 'token'))
end
if holder then return -1 end
local token = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'member', ARGV[1], 'token', token)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return token
"""
_RELEASE = """
if redis.call('HGET', KEYS[1], 'member') == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 0
"""
_FENCED = """
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then return -1 end
if ARGV[2] ~= '' then redis.call('SET', KEYS[2], ARGV[2]) end
if ARGV[3] == '' then return 0 end
local id = redis.call('INCR', KEYS[4])
redis.call('LPUSH', KEYS[3], '{"id":' .. id .. ',' .. string.sub(ARGV[3], 2))
redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[4]) - 1)
return id
"""

_CAS = """
if tonumber(redis.call('GET', KEYS[1]) or '0') ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


class RedisScaleStore(ScaleStore):
    def __init__(self, url: str, namespace: str = "gtm"):
        from gtm.redis_client import client

        self.redis: Any = client(url)  # typed loosely: its stubs type replies as bytes | str
        self.ns = f"{namespace}:scale"

    def _key(self, region: str, what: str) -> str:
        return f"{self.ns}:{region}:{what}"

    async def acquire(self, region: str, member: str, ttl: float) -> int | None:
        token = int(await self.redis.eval(
            _ACQUIRE, 2, self._key(region, "lease"), self._key(region, "fence"), member,
            max(1, int(ttl * 1000))))
        return token if token > 0 else None

    async def release(self, region: str, member: str) -> None:
        await self.redis.eval(_RELEASE, 1, self._key(region, "lease"), member)

    async def leader(self, region: str) -> tuple[str, int] | None:
        held = await self.redis.hgetall(self._key(region, "lease"))
        return (held["member"], int(held["token"])) if held else None

    async def fenced(self, region: str, token: int, layer: Json | None = None,
                     event: Json | None = None) -> int | None:
        result = int(await self.redis.eval(
            _FENCED, 4, self._key(region, "fence"), self._key(region, "layer"),
            self._key(region, "events"), self._key(region, "event_id"), token,
            json.dumps(layer) if layer is not None else "",
            json.dumps({"region": region, "at": time.time(), **event})
            if event is not None else "", MAX_EVENTS))
        if result < 0:
            raise Fenced(f"fencing token {token} of region {region} is stale: another "
                         "scaler leads now")
        return result or None

    async def layer(self, region: str) -> Json:
        text = await self.redis.get(self._key(region, "layer"))
        return json.loads(text) if text else {}

    async def events(self, region: str, limit: int = 100) -> list[Json]:
        rows = await self.redis.lrange(self._key(region, "events"), 0, limit - 1)
        return [json.loads(row) for row in rows]

    async def put_facts(self, region: str, member: str, facts: Json) -> None:
        await self.redis.hset(self._key(region, "facts"), member,
                              json.dumps({**facts, "at": time.time()}))
        await self.redis.sadd(f"{self.ns}:regions", region)

    async def facts(self, region: str, fresh: float) -> dict[str, Json]:
        rows = await self.redis.hgetall(self._key(region, "facts"))
        now, kept = time.time(), {}
        for member, text in rows.items():
            facts = json.loads(text)
            if now - facts["at"] <= fresh:
                kept[member] = facts
            elif now - facts["at"] > 3600:  # a member long gone
                await self.redis.hdel(self._key(region, "facts"), member)
        return kept

    async def settings(self, region: str) -> dict[str, Json]:
        rows = await self.redis.hgetall(self._key(region, "settings"))
        return {pool: json.loads(text) for pool, text in rows.items()}

    async def set_settings(self, region: str, pool: str, changes: Json) -> Json:
        key = self._key(region, "settings")
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    text = await pipe.hget(key, pool)
                    merged = _merge(json.loads(text) if text else {}, changes)
                    pipe.multi()
                    pipe.hset(key, pool, json.dumps(merged))
                    await pipe.execute()
                    await self.redis.sadd(f"{self.ns}:regions", region)
                    return merged
                except Exception as exc:
                    from redis.exceptions import WatchError

                    if not isinstance(exc, WatchError):
                        raise

    async def put_status(self, region: str, status: Json) -> None:
        await self.redis.set(self._key(region, "status"), json.dumps(status))
        await self.redis.sadd(f"{self.ns}:regions", region)

    async def statuses(self) -> dict[str, Json]:
        regions = sorted(await self.redis.smembers(f"{self.ns}:regions"))
        found = {}
        for region in regions:
            text = await self.redis.get(self._key(region, "status"))
            if text:
                found[region] = json.loads(text)
        return found

    async def add_history(self, region: str, pool: str, points: dict[int, float]) -> None:
        if points:
            await self.redis.hset(self._key(region, f"history:{pool}"),
                                  mapping={str(m): repr(v) for m, v in points.items()})

    async def history(self, region: str, pool: str, since_minute: int) -> dict[int, float]:
        rows = await self.redis.hgetall(self._key(region, f"history:{pool}"))
        return {int(m): float(v) for m, v in rows.items() if int(m) >= since_minute}

    async def compact(self, region: str, pool: str, before_minute: int) -> int:
        key = self._key(region, f"history:{pool}")
        old = [m for m in await self.redis.hkeys(key) if int(m) < before_minute]
        if old:
            await self.redis.hdel(key, *old)
        return len(old)

    async def advance_cursor(self, name: str, old: int, new: int) -> bool:
        moved = await self.redis.eval(_CAS, 1, f"{self.ns}:cursor:{name}", old, new)
        return bool(moved)

    async def cursor(self, name: str) -> int:
        return int(await self.redis.get(f"{self.ns}:cursor:{name}") or 0)

    async def regions(self) -> list[str]:
        return sorted(await self.redis.smembers(f"{self.ns}:regions"))

    async def close(self) -> None:
        await self.redis.aclose()


# -- SQLite --------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS scale_lease (region TEXT PRIMARY KEY, member TEXT NOT NULL,
    token INTEGER NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS scale_fence (region TEXT PRIMARY KEY, token INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS scale_layer (region TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scale_events (id INTEGER PRIMARY KEY AUTOINCREMENT,
    region TEXT NOT NULL, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scale_facts (region TEXT NOT NULL, member TEXT NOT NULL,
    at REAL NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (region, member));
CREATE TABLE IF NOT EXISTS scale_settings (region TEXT NOT NULL, pool TEXT NOT NULL,
    doc TEXT NOT NULL, PRIMARY KEY (region, pool));
CREATE TABLE IF NOT EXISTS scale_status (region TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scale_cursor (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS scale_history (region TEXT NOT NULL, pool TEXT NOT NULL,
    minute INTEGER NOT NULL, value REAL NOT NULL, PRIMARY KEY (region, pool, minute));
"""


class SqliteScaleStore(ScaleStore):
    """One connection, used from worker threads under a lock (sqlite3 blocks)."""

    def __init__(self, path: Path):
        self.path = path
        self.lock = threading.Lock()
        self.db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self.db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=5.0, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            self.db = db
        return self.db

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self.lock:
                db = self._connect()
                db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(db)
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                db.execute("COMMIT")
                return result
        return await asyncio.to_thread(locked)

    async def acquire(self, region: str, member: str, ttl: float) -> int | None:
        def work(db: sqlite3.Connection) -> int | None:
            now = time.time()
            row = db.execute("SELECT member, token, expires FROM scale_lease WHERE region=?",
                             (region,)).fetchone()
            if row is not None and row[0] == member and row[2] > now:
                db.execute("UPDATE scale_lease SET expires=? WHERE region=?",
                           (now + ttl, region))
                return int(row[1])
            if row is not None and row[2] > now:
                return None
            fence = db.execute("SELECT token FROM scale_fence WHERE region=?",
                               (region,)).fetchone()
            token = (fence[0] if fence else 0) + 1
            db.execute("INSERT OR REPLACE INTO scale_fence VALUES (?, ?)", (region, token))
            db.execute("INSERT OR REPLACE INTO scale_lease VALUES (?, ?, ?, ?)",
                       (region, member, token, now + ttl))
            return token
        return await self._run(work)

    async def release(self, region: str, member: str) -> None:
        await self._run(lambda db: db.execute(
            "DELETE FROM scale_lease WHERE region=? AND member=?", (region, member)))

    async def leader(self, region: str) -> tuple[str, int] | None:
        row = await self._run(lambda db: db.execute(
            "SELECT member, token FROM scale_lease WHERE region=? AND expires>?",
            (region, time.time())).fetchone())
        return (row[0], int(row[1])) if row else None

    async def fenced(self, region: str, token: int, layer: Json | None = None,
                     event: Json | None = None) -> int | None:
        def work(db: sqlite3.Connection) -> int | None:
            fence = db.execute("SELECT token FROM scale_fence WHERE region=?",
                               (region,)).fetchone()
            if fence is None or fence[0] != token:
                raise Fenced(f"fencing token {token} of region {region} is stale: another "
                             "scaler leads now")
            if layer is not None:
                db.execute("INSERT OR REPLACE INTO scale_layer VALUES (?, ?)",
                           (region, json.dumps(layer)))
            if event is None:
                return None
            cursor = db.execute("INSERT INTO scale_events (region, doc) VALUES (?, ?)",
                                (region, json.dumps({"region": region, "at": time.time(),
                                                     **event})))
            db.execute("DELETE FROM scale_events WHERE region=? AND id <= ?",
                       (region, (cursor.lastrowid or 0) - MAX_EVENTS))
            return cursor.lastrowid
        return await self._run(work)

    async def layer(self, region: str) -> Json:
        row = await self._run(lambda db: db.execute(
            "SELECT doc FROM scale_layer WHERE region=?", (region,)).fetchone())
        return json.loads(row[0]) if row else {}

    async def events(self, region: str, limit: int = 100) -> list[Json]:
        rows = await self._run(lambda db: db.execute(
            "SELECT id, doc FROM scale_events WHERE region=? ORDER BY id DESC LIMIT ?",
            (region, limit)).fetchall())
        return [{"id": row[0], **json.loads(row[1])} for row in rows]

    async def put_facts(self, region: str, member: str, facts: Json) -> None:
        await self._run(lambda db: db.execute(
            "INSERT OR REPLACE INTO scale_facts VALUES (?, ?, ?, ?)",
            (region, member, time.time(), json.dumps(facts))))

    async def facts(self, region: str, fresh: float) -> dict[str, Json]:
        def work(db: sqlite3.Connection) -> list[Any]:
            now = time.time()
            db.execute("DELETE FROM scale_facts WHERE at < ?", (now - 3600,))
            return db.execute("SELECT member, at, doc FROM scale_facts WHERE region=? AND "
                              "at >= ?", (region, now - fresh)).fetchall()
        return {row[0]: {**json.loads(row[2]), "at": row[1]} for row in await self._run(work)}

    async def settings(self, region: str) -> dict[str, Json]:
        rows = await self._run(lambda db: db.execute(
            "SELECT pool, doc FROM scale_settings WHERE region=?", (region,)).fetchall())
        return {row[0]: json.loads(row[1]) for row in rows}

    async def set_settings(self, region: str, pool: str, changes: Json) -> Json:
        def work(db: sqlite3.Connection) -> Json:
            row = db.execute("SELECT doc FROM scale_settings WHERE region=? AND pool=?",
                             (region, pool)).fetchone()
            merged = _merge(json.loads(row[0]) if row else {}, changes)
            db.execute("INSERT OR REPLACE INTO scale_settings VALUES (?, ?, ?)",
                       (region, pool, json.dumps(merged)))
            return merged
        return await self._run(work)

    async def put_status(self, region: str, status: Json) -> None:
        await self._run(lambda db: db.execute(
            "INSERT OR REPLACE INTO scale_status VALUES (?, ?)", (region, json.dumps(status))))

    async def statuses(self) -> dict[str, Json]:
        rows = await self._run(lambda db: db.execute(
            "SELECT region, doc FROM scale_status ORDER BY region").fetchall())
        return {row[0]: json.loads(row[1]) for row in rows}

    async def add_history(self, region: str, pool: str, points: dict[int, float]) -> None:
        await self._run(lambda db: db.executemany(
            "INSERT OR REPLACE INTO scale_history VALUES (?, ?, ?, ?)",
            [(region, pool, m, v) for m, v in points.items()]))

    async def history(self, region: str, pool: str, since_minute: int) -> dict[int, float]:
        rows = await self._run(lambda db: db.execute(
            "SELECT minute, value FROM scale_history WHERE region=? AND pool=? AND minute>=?",
            (region, pool, since_minute)).fetchall())
        return {int(row[0]): float(row[1]) for row in rows}

    async def compact(self, region: str, pool: str, before_minute: int) -> int:
        return await self._run(lambda db: db.execute(
            "DELETE FROM scale_history WHERE region=? AND pool=? AND minute<?",
            (region, pool, before_minute)).rowcount)

    async def advance_cursor(self, name: str, old: int, new: int) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            row = db.execute("SELECT value FROM scale_cursor WHERE name=?", (name,)).fetchone()
            if (row[0] if row else 0) != old:
                return False
            db.execute("INSERT OR REPLACE INTO scale_cursor VALUES (?, ?)", (name, new))
            return True
        return await self._run(work)

    async def cursor(self, name: str) -> int:
        row = await self._run(lambda db: db.execute(
            "SELECT value FROM scale_cursor WHERE name=?", (name,)).fetchone())
        return int(row[0]) if row else 0

    async def regions(self) -> list[str]:
        rows = await self._run(lambda db: db.execute(
            "SELECT region FROM scale_facts UNION SELECT region FROM scale_status UNION "
            "SELECT region FROM scale_settings UNION SELECT region FROM scale_events "
            "ORDER BY 1").fetchall())
        return [row[0] for row in rows]

    async def close(self) -> None:
        def shut() -> None:
            with self.lock:
                if self.db is not None:
                    self.db.close()
                    self.db = None
        await asyncio.to_thread(shut)


def _merge(current: Json, changes: Json) -> Json:
    merged = dict(current)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


# -- PostgreSQL ----------------------------------------------------------------------------

# The control plane's schema, tables of their own. Made by whoever opens the store first
# (a balancer may start before the control plane), under the control plane's migration
# lock on the schema, so the two never race on CREATE.
_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS scale_lease (region TEXT PRIMARY KEY, member TEXT NOT NULL,
    token BIGINT NOT NULL, expires DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS scale_layer (region TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scale_events (id BIGSERIAL PRIMARY KEY, region TEXT NOT NULL,
    doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS scale_events_region ON scale_events (region, id);
CREATE TABLE IF NOT EXISTS scale_facts (region TEXT NOT NULL, member TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL, doc TEXT NOT NULL, PRIMARY KEY (region, member));
CREATE TABLE IF NOT EXISTS scale_settings (region TEXT NOT NULL, pool TEXT NOT NULL,
    doc TEXT NOT NULL, PRIMARY KEY (region, pool));
CREATE TABLE IF NOT EXISTS scale_status (region TEXT PRIMARY KEY, doc TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scale_cursor (name TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS scale_history (region TEXT NOT NULL, pool TEXT NOT NULL,
    minute BIGINT NOT NULL, value DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (region, pool, minute));
"""
# The database's clock decides leases: balancers on several hosts need not agree on time.
_PG_NOW = "extract(epoch FROM clock_timestamp())::float8"
# One statement: renew our own live lease (same token), or take a free or expired one
# with the next token; a live lease of another member updates nothing (no row back).
# The lease row is never deleted (a release expires it), so its token only grows.
_PG_ACQUIRE = f"""
INSERT INTO scale_lease AS l (region, member, token, expires)
VALUES ($1, $2, 1, {_PG_NOW} + $3::float8)
ON CONFLICT (region) DO UPDATE SET
    token = CASE WHEN l.member = EXCLUDED.member AND l.expires > {_PG_NOW}
                 THEN l.token ELSE l.token + 1 END,
    member = EXCLUDED.member, expires = EXCLUDED.expires
WHERE l.member = EXCLUDED.member OR l.expires <= {_PG_NOW}
RETURNING token
"""
PG_CONNECT_TIMEOUT = 2.0
PG_COMMAND_TIMEOUT = 5.0


class PostgresScaleStore(ScaleStore):
    """Connects lazily (a balancer starts while PostgreSQL is down and meets it later);
    every failure to reach it is a StoreUnavailable, with short timeouts."""

    def __init__(self, url: str, namespace: str = "gtm"):
        from gtm.store_access import validate_namespace

        self.url = url
        self.schema = validate_namespace(namespace)
        self._pool: Any = None
        self._lock = asyncio.Lock()

    async def _ready(self) -> Any:
        import asyncpg

        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                await self._make_tables()
                self._pool = await asyncpg.create_pool(
                    self.url, min_size=0, max_size=2, timeout=PG_CONNECT_TIMEOUT,
                    command_timeout=PG_COMMAND_TIMEOUT,
                    server_settings={"search_path": self.schema,
                                     "statement_timeout": str(int(PG_COMMAND_TIMEOUT * 1000))})
            return self._pool

    async def _make_tables(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.url, timeout=PG_CONNECT_TIMEOUT)
        try:
            # Made already (by whichever process opened the store first): no DDL, so a
            # balancer's role then needs no CREATE right.
            if await conn.fetchval("SELECT to_regclass($1)", f'"{self.schema}".scale_history'):
                return
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.schema)
                await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                await conn.execute(f'SET LOCAL search_path TO "{self.schema}"')
                await conn.execute(_PG_SCHEMA)
        finally:
            await conn.close()

    async def _run(self, work: Callable[[Any], Any]) -> Any:
        """``work(conn)`` in one transaction."""
        import asyncpg

        from gtm.errors import StoreUnavailable

        try:
            pool = await self._ready()
            async with pool.acquire(timeout=PG_CONNECT_TIMEOUT) as conn, conn.transaction():
                return await work(conn)
        except (OSError, TimeoutError, asyncpg.PostgresConnectionError,
                asyncpg.InterfaceError, asyncpg.QueryCanceledError,
                asyncpg.exceptions.CannotConnectNowError) as exc:
            raise StoreUnavailable("the scale store (PostgreSQL) is unreachable: "
                                   f"{exc or type(exc).__name__}") from exc

    async def acquire(self, region: str, member: str, ttl: float) -> int | None:
        token = await self._run(lambda c: c.fetchval(_PG_ACQUIRE, region, member, ttl))
        return int(token) if token is not None else None

    async def release(self, region: str, member: str) -> None:
        await self._run(lambda c: c.execute(
            "UPDATE scale_lease SET expires = 0 WHERE region = $1 AND member = $2",
            region, member))

    async def leader(self, region: str) -> tuple[str, int] | None:
        row = await self._run(lambda c: c.fetchrow(
            f"SELECT member, token FROM scale_lease WHERE region = $1 AND expires > {_PG_NOW}",
            region))
        return (row[0], int(row[1])) if row else None

    async def fenced(self, region: str, token: int, layer: Json | None = None,
                     event: Json | None = None) -> int | None:
        async def work(conn: Any) -> int | None:
            # The conditional lock: only the newest token's holder gets the row, and holds
            # it until commit, so no new leader is made while this write lands.
            held = await conn.fetchval("SELECT token FROM scale_lease WHERE region = $1 "
                                       "AND token = $2 FOR SHARE", region, token)
            if held is None:
                raise Fenced(f"fencing token {token} of region {region} is stale: another "
                             "scaler leads now")
            if layer is not None:
                await conn.execute(
                    "INSERT INTO scale_layer VALUES ($1, $2) ON CONFLICT (region) DO UPDATE "
                    "SET doc = EXCLUDED.doc", region, json.dumps(layer))
            if event is None:
                return None
            event_id = await conn.fetchval(
                "INSERT INTO scale_events (region, doc) VALUES ($1, $2) RETURNING id", region,
                json.dumps({"region": region, "at": time.time(), **event}))
            await conn.execute(
                "DELETE FROM scale_events WHERE region = $1 AND id <= (SELECT id FROM "
                "scale_events WHERE region = $1 ORDER BY id DESC OFFSET $2 LIMIT 1)",
                region, MAX_EVENTS)
            return int(event_id)
        result: int | None = await self._run(work)
        return result

    async def layer(self, region: str) -> Json:
        text = await self._run(lambda c: c.fetchval(
            "SELECT doc FROM scale_layer WHERE region = $1", region))
        return json.loads(text) if text else {}

    async def events(self, region: str, limit: int = 100) -> list[Json]:
        rows = await self._run(lambda c: c.fetch(
            "SELECT id, doc FROM scale_events WHERE region = $1 ORDER BY id DESC LIMIT $2",
            region, limit))
        return [{"id": row[0], **json.loads(row[1])} for row in rows]

    async def put_facts(self, region: str, member: str, facts: Json) -> None:
        await self._run(lambda c: c.execute(
            "INSERT INTO scale_facts VALUES ($1, $2, $3, $4) ON CONFLICT (region, member) "
            "DO UPDATE SET at = EXCLUDED.at, doc = EXCLUDED.doc",
            region, member, time.time(), json.dumps(facts)))

    async def facts(self, region: str, fresh: float) -> dict[str, Json]:
        async def work(conn: Any) -> list[Any]:
            now = time.time()
            await conn.execute("DELETE FROM scale_facts WHERE at < $1", now - 3600)
            rows: list[Any] = await conn.fetch(
                "SELECT member, at, doc FROM scale_facts WHERE region = $1 AND at >= $2",
                region, now - fresh)
            return rows
        return {row[0]: {**json.loads(row[2]), "at": row[1]} for row in await self._run(work)}

    async def settings(self, region: str) -> dict[str, Json]:
        rows = await self._run(lambda c: c.fetch(
            "SELECT pool, doc FROM scale_settings WHERE region = $1", region))
        return {row[0]: json.loads(row[1]) for row in rows}

    async def set_settings(self, region: str, pool: str, changes: Json) -> Json:
        async def work(conn: Any) -> Json:
            await conn.execute("INSERT INTO scale_settings VALUES ($1, $2, '{}') "
                               "ON CONFLICT DO NOTHING", region, pool)
            text = await conn.fetchval("SELECT doc FROM scale_settings WHERE region = $1 AND "
                                       "pool = $2 FOR UPDATE", region, pool)
            merged = _merge(json.loads(text), changes)
            await conn.execute("UPDATE scale_settings SET doc = $3 WHERE region = $1 AND "
                               "pool = $2", region, pool, json.dumps(merged))
            return merged
        result: Json = await self._run(work)
        return result

    async def put_status(self, region: str, status: Json) -> None:
        await self._run(lambda c: c.execute(
            "INSERT INTO scale_status VALUES ($1, $2) ON CONFLICT (region) DO UPDATE "
            "SET doc = EXCLUDED.doc", region, json.dumps(status)))

    async def statuses(self) -> dict[str, Json]:
        rows = await self._run(lambda c: c.fetch(
            "SELECT region, doc FROM scale_status ORDER BY region"))
        return {row[0]: json.loads(row[1]) for row in rows}

    async def add_history(self, region: str, pool: str, points: dict[int, float]) -> None:
        if points:
            await self._run(lambda c: c.executemany(
                "INSERT INTO scale_history VALUES ($1, $2, $3, $4) ON CONFLICT "
                "(region, pool, minute) DO UPDATE SET value = EXCLUDED.value",
                [(region, pool, m, float(v)) for m, v in points.items()]))

    async def history(self, region: str, pool: str, since_minute: int) -> dict[int, float]:
        rows = await self._run(lambda c: c.fetch(
            "SELECT minute, value FROM scale_history WHERE region = $1 AND pool = $2 AND "
            "minute >= $3", region, pool, since_minute))
        return {int(row[0]): float(row[1]) for row in rows}

    async def compact(self, region: str, pool: str, before_minute: int) -> int:
        status = await self._run(lambda c: c.execute(
            "DELETE FROM scale_history WHERE region = $1 AND pool = $2 AND minute < $3",
            region, pool, before_minute))
        return int(status.split()[-1])

    async def advance_cursor(self, name: str, old: int, new: int) -> bool:
        async def work(conn: Any) -> bool:
            await conn.execute("INSERT INTO scale_cursor VALUES ($1, 0) ON CONFLICT DO NOTHING",
                               name)
            status = await conn.execute("UPDATE scale_cursor SET value = $3 WHERE name = $1 "
                                        "AND value = $2", name, old, new)
            return bool(status == "UPDATE 1")
        result: bool = await self._run(work)
        return result

    async def cursor(self, name: str) -> int:
        value = await self._run(lambda c: c.fetchval(
            "SELECT value FROM scale_cursor WHERE name = $1", name))
        return int(value or 0)

    async def regions(self) -> list[str]:
        rows = await self._run(lambda c: c.fetch(
            "SELECT region FROM scale_facts UNION SELECT region FROM scale_status UNION "
            "SELECT region FROM scale_settings UNION SELECT region FROM scale_events "
            "ORDER BY 1"))
        return [row[0] for row in rows]

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 2)
            except Exception:  # a server gone away: do not wait for it
                pool.terminate()
