"""Failover drills as the control plane keeps them: records, overrides with expiries,
the restore loop and the practice-run scheduler.

"A fault cannot outlive its drill": every admin override a drill sets is recorded here
*before* it is applied, with an expiry. The control-plane process (`gtm api`, `gtm up`)
restores every override whose expiry has passed, by itself, whether or not the drill's
runner is still alive; `gtm drill recover` and `gtm drill abort` restore at once.
Overrides are restored newest first, and a restore changes a value back only while it
still holds what the drill set (an operator's later change is left alone).

Kinds of override:
- ``state``: endpoints' admin state in the document's ``state`` section (force-down);
- ``ttl``: steered names' TTLs in the ``steering`` section (the ramp-down);
- ``balancer``: backends drained or removed through a region balancer's admin API;
- ``lab``: a network fault of `gtm lab`, undone by `gtm drill restore-override`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import secrets
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

from gtm import log
from gtm.config.drills import DRILLS, Scheduled, due_slot, parse_scheduled
from gtm.config_reader import Reader
from gtm.control.service import ConfigService, Document
from gtm.control.store import AuditEntry, DrillRecord, hash_secret, new_token
from gtm.errors import ConfigError, GtmError, NotFound, RequestError, VersionConflict
from gtm.toml_input import read_toml

KINDS = ("state", "ttl", "balancer", "lab")
FINAL = ("succeeded", "failed", "aborted", "refused", "abandoned")
MAX_OVERRIDES = 64           # per drill: each is a thing the control plane must undo
MAX_EXPIRY = 2 * 86400.0     # no override may be set to live longer than this
TICK = 0.5                   # seconds between looks at expiries
SCHEDULE_TICK = 15.0
ATTEMPTS = 8                 # document writes retried when another write lands first


@dataclass(frozen=True)
class BalancerAccess:
    """How to reach a region balancer's admin API, read from its config file (the token
    stays in that file: the control plane keeps only the file's path)."""

    url: str
    token: str


def balancer_access(config: Path) -> BalancerAccess:
    table = Reader(read_toml(config), str(config)).child("lb")
    admin = table.address("admin")
    token = table.text("admin_token", empty=False)
    return BalancerAccess(f"http://{admin}", token)


class BalancerAdmin:
    """The few admin API calls a drill makes (regional_lb/admin.py)."""

    def __init__(self, access: BalancerAccess, timeout: float = 5.0):
        self.access = access
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Authorization": f"Bearer {self.access.token}"}
        async with aiohttp.ClientSession(timeout=self.timeout) as session, \
                session.request(method, self.access.url + path, json=body,
                                headers=headers) as response:
            data = await response.json(content_type=None)
            if response.status >= 400:
                message = (data or {}).get("error", {}).get("message", "") \
                    if isinstance(data, dict) else ""
                raise GtmError(f"balancer admin API {method} {path}: HTTP {response.status} "
                               f"{message}")
            return data

    async def backends(self, pool: str | None) -> list[dict[str, Any]]:
        """``[{"pool", "address", "state", "weight"}]`` of one pool or all."""
        listing = await self.call("GET", "/pools")
        return [{"pool": p["name"], "address": b["address"], "state": b["state"],
                 "weight": b["weight"]}
                for p in listing["pools"] if pool is None or p["name"] == pool
                for b in p["backends"]]

    async def set_state(self, pool: str, address: str, state: str) -> None:
        await self.call("PATCH", f"/pools/{pool}/backends/{address}", {"state": state})

    async def remove(self, pool: str, address: str) -> None:
        await self.call("DELETE", f"/pools/{pool}/backends/{address}")

    async def add(self, pool: str, address: str, weight: int, state: str) -> None:
        await self.call("POST", f"/pools/{pool}/backends",
                        {"address": address, "weight": weight, "state": state})


# ---- document changes of the state and ttl kinds (pure) ----


def _zone_key(table: dict[str, Any], zone: str) -> str:
    return next((k for k in table if k.rstrip(".").lower() == zone.rstrip(".").lower()), zone)


def apply_override(doc: Document, override: dict[str, Any], restoring: bool) -> bool:
    """Set (or put back) what a ``state`` or ``ttl`` override names; True when changed."""
    zone = override["zone"]
    changed = False
    if override["kind"] == "state":
        states = doc.setdefault("state", {})
        state = states.setdefault(_zone_key(states, zone), {})
        endpoints = state.setdefault("endpoints", {})
        for name, change in override["endpoints"].items():
            entry = endpoints.setdefault(name, {})
            current = entry.get("admin", "none")
            if restoring and current == change["value"]:
                entry["admin"] = change["previous"]
                entry["reason"] = "drill restored"
                changed = True
            elif not restoring and current != change["value"]:
                entry["admin"] = change["value"]
                entry["reason"] = f"drill {override['drill']}"
                changed = True
        return changed
    steering = doc.get("steering", {})
    names = steering.get(_zone_key(steering, zone), {}).get("names", {})
    for name, change in override["names"].items():
        entry = names.get(name)
        if entry is None:
            continue
        if restoring and entry.get("ttl") == change["value"]:
            if change["previous"] is None:
                del entry["ttl"]
            else:
                entry["ttl"] = change["previous"]
            changed = True
        elif not restoring and entry.get("ttl") != change["value"]:
            entry["ttl"] = change["value"]
            changed = True
    return changed


def check_override(raw: Any) -> dict[str, Any]:
    """An override as a runner sends it: checked strictly (a 400 names the field)."""
    try:
        table = Reader(raw, "request", "override")
        kind = table.choice("kind", KINDS)
        expires_at = table.number("expires_at", low=0)
        if expires_at > time.time() + MAX_EXPIRY:
            raise table.fail("expires_at", f"must be within {MAX_EXPIRY:g} s from now")
        keys = {"state": ("zone", "endpoints"), "ttl": ("zone", "names"),
                "balancer": ("config", "action", "backends"), "lab": ("fault", "args")}[kind]
        table.only(("kind", "expires_at", "description", *keys))
        for key in keys:
            table.value(key)
        if kind == "balancer":
            table.choice("action", ("drain", "remove"))
            path = Path(table.text("config", empty=False))
            if not path.is_absolute():
                raise table.fail("config", "must be an absolute path")
            for reader in table.tables("backends", ("pool", "address", "state", "weight")):
                reader.text("pool", empty=False)
                reader.text("address", empty=False)
                reader.text("state", empty=False)
                reader.integer("weight", low=0, high=1_000_000)
        if kind in ("state", "ttl"):
            table.text("zone", empty=False)
            items = table.child(keys[1])
            for name in items.table:
                change = items.child(name, ("value", "previous"))
                change.value("value")
                change.value("previous")
        return {**raw, "description": table.text("description", "")}
    except ConfigError as exc:
        raise RequestError(400, exc.reason, str(exc.where or "override")) from exc


class DrillService:
    """Drill records and the restore of their overrides, in the control-plane process."""

    def __init__(self, config: ConfigService, api_url: str = "",
                 dns: tuple[str, ...] = ()):
        self.config = config
        self.store = config.store
        self.api_url = api_url      # for scheduled runs' runner
        self.dns = dns              # the DNS listeners scheduled runs observe (gtm up)
        self.lock = asyncio.Lock()  # one change of a drill's record at a time
        self.tasks: list[asyncio.Task[None]] = []
        self.children: set[asyncio.subprocess.Process] = set()

    # ---- records ----

    async def get(self, drill_id: str) -> DrillRecord:
        record = await self.store.drill(drill_id)
        if record is None:
            raise NotFound(f"no drill {drill_id!r}")
        return record

    async def create(self, name: str, plan: dict[str, Any], who: str, status: str = "running",
                     reason: str = "", detail: dict[str, Any] | None = None) -> DrillRecord:
        now = time.time()
        record = DrillRecord(f"{time.strftime('%Y%m%d-%H%M%S', time.gmtime(now))}-"
                             f"{secrets.token_hex(3)}", name, now, who, status, reason, now, plan)
        action = "drill.refused" if status == "refused" else "drill.start"
        await self.store.put_drill(record, AuditEntry(
            who, action, f"drill {record.id}", status,
            {"plan": name, "reason": reason, **(detail or {})}))
        return record

    async def finish(self, drill_id: str, status: str, reason: str,
                     report: dict[str, Any] | None, who: str) -> DrillRecord:
        if status not in FINAL:
            raise RequestError(400, f"must be one of {', '.join(FINAL)}", "status")
        async with self.lock:
            record = await self.get(drill_id)
            if record.status in ("aborted", "abandoned") and status != record.status:
                # An operator's abort (or the expiry) decided first: the runner's report
                # is kept, its outcome does not overwrite theirs.
                reason = f"{record.reason}; runner: {status}: {reason}"
                status = record.status
            updated = replace(record, status=status, reason=reason, report=report,
                              updated_at=time.time())
            await self.store.put_drill(updated, AuditEntry(
                who, "drill.finish", f"drill {drill_id}", status,
                {"plan": record.name, "reason": reason}))
        return updated

    # ---- overrides ----

    async def add_override(self, drill_id: str, raw: Any, who: str) -> dict[str, Any]:
        """Record the override (with its expiry) first, then apply the document kinds."""
        override = check_override(raw)
        async with self.lock:
            record = await self.get(drill_id)
            if record.status != "running" or record.abort_requested:
                raise RequestError(409, f"drill {drill_id} is {record.status}"
                                   + (" (abort requested)" if record.abort_requested else "")
                                   + ": it sets no more overrides", "drill")
            if len(record.overrides) >= MAX_OVERRIDES:
                raise RequestError(409, f"a drill sets at most {MAX_OVERRIDES} overrides")
            override = {**override, "id": len(record.overrides) + 1, "drill": drill_id,
                        "set_at": time.time(), "set_by": who, "restored_at": None}
            await self.store.put_drill(replace(
                record, overrides=[*record.overrides, override], updated_at=time.time()),
                AuditEntry(who, "drill.override", f"drill {drill_id}", "set",
                           {"kind": override["kind"], "expires_at": override["expires_at"],
                            "description": override["description"]}))
        if override["kind"] in ("state", "ttl"):
            await self._edit_document(override, restoring=False, who=f"drill:{drill_id}")
        return override

    async def restore_all(self, drill_id: str, who: str, why: str,
                          only_expired: bool = False) -> int:
        """Restore a drill's overrides (newest first); how many were restored."""
        async with self.lock:
            record = await self.get(drill_id)
            now = time.time()
            done = 0
            overrides = [dict(o) for o in record.overrides]
            for override in reversed(overrides):
                if override.get("restored_at") or (only_expired and override["expires_at"] > now):
                    continue
                try:
                    await self._undo(override, who)
                except Exception as exc:  # kept for the next tick; the others go on
                    log.control.error("drill %s: cannot restore override %s (%s): %s",
                                      drill_id, override["id"], override["kind"], exc)
                    continue
                override["restored_at"] = time.time()
                override["restored_by"] = who
                override["restore_reason"] = why
                done += 1
            if done:
                await self.store.put_drill(
                    replace(record, overrides=overrides, updated_at=time.time()),
                    AuditEntry(who, "drill.restore", f"drill {drill_id}", why,
                               {"restored": done}))
        return done

    async def _undo(self, override: dict[str, Any], who: str) -> None:
        kind = override["kind"]
        if kind in ("state", "ttl"):
            await self._edit_document(override, restoring=True, who=who)
        elif kind == "balancer":
            await undo_balancer(override)
        else:
            await self._undo_lab(override)

    async def _edit_document(self, override: dict[str, Any], restoring: bool, who: str) -> None:
        what = "restore" if restoring else "set"
        message = (f"drill {override['drill']}: {what} {override['kind']} "
                   f"({override.get('description') or override['zone']})")
        for _ in range(ATTEMPTS):
            base = await self.store.head()
            document = await self.config.document_at(base)
            changed = json.loads(json.dumps(document))
            if not apply_override(changed, override, restoring):
                return
            try:
                await self.config.propose(changed, base, who, message)
                return
            except VersionConflict:
                continue
        raise GtmError(f"could not {what} override {override['id']}: the document kept changing")

    @staticmethod
    async def _undo_lab(override: dict[str, Any]) -> None:
        """A lab fault is undone by the lab's own code, which the control plane does not
        import: a child `gtm drill restore-override` does it."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gtm.cli", "drill", "restore-override", json.dumps(override),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        _, err = await process.communicate()
        if process.returncode != 0:
            raise GtmError(err.decode(errors="replace").strip()[-300:])

    async def request_abort(self, drill_id: str, who: str, reason: str) -> DrillRecord:
        """Flag the drill for its runner and restore everything it set, now."""
        async with self.lock:
            record = await self.get(drill_id)
            if record.status != "running":
                raise RequestError(409, f"drill {drill_id} is {record.status}, not running",
                                   "drill")
            await self.store.put_drill(
                replace(record, abort_requested=who, status="aborted",
                        reason=f"aborted by {who}: {reason}", updated_at=time.time()),
                AuditEntry(who, "drill.abort", f"drill {drill_id}", "aborted",
                           {"reason": reason}))
        await self.restore_all(drill_id, who, f"abort: {reason}")
        return await self.get(drill_id)

    async def recover(self, who: str, drill_id: str | None = None) -> list[dict[str, Any]]:
        """Restore every override of the drill (or of every active drill) at once."""
        records = [await self.get(drill_id)] if drill_id else \
            await self.store.drills(500, active=True)
        results = []
        for record in records:
            if record.status == "running":
                async with self.lock:
                    current = await self.get(record.id)
                    await self.store.put_drill(replace(
                        current, status="aborted", abort_requested=who,
                        reason=f"recovered by {who}", updated_at=time.time()))
            restored = await self.restore_all(record.id, who, "recover")
            results.append({"id": record.id, "restored": restored})
        return results

    # ---- the loops of the control-plane process ----

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self._expiry_loop(), name="drill-expiry"),
                      asyncio.create_task(self._schedule_loop(), name="drill-schedule")]

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for child in list(self.children):  # scheduled runs still going: they end here
            with contextlib.suppress(ProcessLookupError):
                child.terminate()

    async def _expiry_loop(self) -> None:
        while True:
            try:
                await self.expire_once()
            except Exception:  # the store may be down: try again next tick
                log.control.exception("drill expiry check failed")
            await asyncio.sleep(TICK)

    async def expire_once(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        for record in await self.store.drills(500, active=True):
            if any(not o.get("restored_at") and o["expires_at"] <= now
                   for o in record.overrides):
                await self.restore_all(record.id, "control-plane", "expired", only_expired=True)
            if record.status == "running" and record.overrides and \
                    all(o["expires_at"] <= now for o in record.overrides):
                await self._abandon(record.id)

    async def _abandon(self, drill_id: str) -> None:
        async with self.lock:
            record = await self.get(drill_id)
            if record.status != "running":
                return
            reason = ("the runner did not finish before its overrides expired; the control "
                      "plane restored them")
            await self.store.put_drill(
                replace(record, status="abandoned", reason=reason, updated_at=time.time()),
                AuditEntry("control-plane", "drill.finish", f"drill {drill_id}", "abandoned",
                           {"plan": record.name, "reason": reason}))

    async def _schedule_loop(self) -> None:
        while True:
            try:
                await self.schedule_once(dt.datetime.now(dt.UTC))
            except Exception:
                log.control.exception("drill schedule check failed")
            await asyncio.sleep(SCHEDULE_TICK)

    async def schedule_once(self, now: dt.datetime) -> list[str]:
        """Start the practice runs that are due; the names of those started."""
        head = await self.store.head()
        section = (await self.config.document_at(head)).get(DRILLS, {}) if head else {}
        started = []
        for name, raw in (section.get("schedule") or {}).items():
            entry = parse_scheduled(name, raw, f"version {head}", f"{DRILLS}.schedule")
            slot = due_slot(entry, now)
            if slot is None or await self._ran_since(entry, slot.timestamp()):
                continue
            await self._start_scheduled(entry)
            started.append(name)
        return started

    async def _ran_since(self, entry: Scheduled, since: float) -> bool:
        return any(r.name == entry.plan and r.created_at >= since
                   for r in await self.store.drills(200))

    async def _start_scheduled(self, entry: Scheduled) -> None:
        """A practice run in a child `gtm drill run`, with a token of its own (revoked
        when it ends) passed in its environment, never on its command line."""
        record, secret = new_token(f"drill-schedule-{entry.name}", "editor", "control-plane")
        await self.store.add_token(record, hash_secret(secret))
        command = [sys.executable, "-m", "gtm.cli", "drill", "run", "--stored", entry.plan,
                   "--scheduled", entry.name, "--api", self.api_url]
        for address in self.dns:
            command += ["--dns", address]
        if entry.force:
            command += ["--force", "--reason", f"scheduled practice run {entry.name}"]
        log.control.info("starting the scheduled drill %s (plan %s)", entry.name, entry.plan)
        child = await asyncio.create_subprocess_exec(
            *command, env={**os.environ, "GTM_TOKEN": secret},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        self.children.add(child)
        task = asyncio.create_task(self._reap(child, record.id))
        task.add_done_callback(lambda _t: None)

    async def _reap(self, child: asyncio.subprocess.Process, token_id: str) -> None:
        await child.wait()
        self.children.discard(child)
        await self.store.revoke_token(token_id)


async def undo_balancer(override: dict[str, Any]) -> None:
    admin = BalancerAdmin(balancer_access(Path(override["config"])))
    current = {(b["pool"], b["address"]): b for b in await admin.backends(None)}
    for backend in override["backends"]:
        key = (backend["pool"], backend["address"])
        if override["action"] == "drain":
            if key in current and current[key]["state"] == "drain":
                await admin.set_state(backend["pool"], backend["address"], backend["state"])
        elif key not in current:
            await admin.add(backend["pool"], backend["address"], backend["weight"],
                            backend["state"])
