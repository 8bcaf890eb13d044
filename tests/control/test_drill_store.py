"""Drill records on both stores (SQLite and PostgreSQL, each test in its own schema): put,
replace, read, list (newest first, active only, without reports) with the audit row in
the same transaction; and the control plane's drill service over them: overrides set and
restored newest first, the restore at expiry, abandon, abort and recover."""

from __future__ import annotations

import datetime as dt
import time
import tomllib
from pathlib import Path
from typing import Any

from gtm.control.drills import DrillService
from gtm.control.service import ConfigService
from gtm.control.store import AuditEntry, DrillRecord, Store

REPO = Path(__file__).resolve().parents[2]
ZONE = "gslb.example.test."
PLAN = {"name": "p", "zone": "gslb.example.test", "target": {"region": "eu-west"},
        "fault": {"type": "force_down", "duration": 5},
        "observe": {"names": ["www.gslb.example.test"],
                    "vantage": [{"name": "GB", "subnet": "81.2.69.0/24"}]}}


def record(drill_id: str, created_at: float, status: str = "running",
           overrides: list[dict[str, Any]] | None = None,
           report: dict[str, Any] | None = None) -> DrillRecord:
    return DrillRecord(drill_id, "p", created_at, "alice", status, "", created_at, PLAN,
                       overrides or [], report)


async def test_drills_are_kept_listed_newest_first_and_filtered_by_activity(store: Store
                                                                           ) -> None:
    await store.open()
    try:
        now = time.time()
        restored = {"id": 1, "kind": "state", "expires_at": now, "restored_at": now}
        pending = {"id": 1, "kind": "state", "expires_at": now + 60, "restored_at": None}
        await store.put_drill(record("a", now - 30, "succeeded", [restored], {"n": 1}),
                              AuditEntry("alice", "drill.finish", "drill a", "succeeded"))
        await store.put_drill(record("b", now - 20, "running"))
        await store.put_drill(record("c", now - 10, "aborted", [pending], {"n": 3}))
        assert [r.id for r in await store.drills(10)] == ["c", "b", "a"]
        assert [r.id for r in await store.drills(2)] == ["c", "b"]
        # Active: still running, or holding an override not yet restored.
        assert [r.id for r in await store.drills(10, active=True)] == ["c", "b"]
        assert all(r.report is None for r in await store.drills(10))  # listings stay small
        got = await store.drill("a")
        assert got is not None and got.report == {"n": 1} and got.overrides == [restored]
        assert got.plan == PLAN and got.created_by == "alice"
        assert await store.drill("nope") is None
        # Replaced by id: the new status, overrides and report; no longer active.
        await store.put_drill(record("c", now - 10, "aborted",
                                     [{**pending, "restored_at": now}], {"n": 4}))
        again = await store.drill("c")
        assert again is not None and again.report == {"n": 4}
        assert [r.id for r in await store.drills(10, active=True)] == ["b"]
        assert len(await store.drills(10)) == 3
        rows = [e for e in await store.audit(None, 50) if e.action == "drill.finish"]
        assert [(e.target, e.outcome) for e in rows] == [("drill a", "succeeded")]
    finally:
        await store.close()


def steered_document() -> dict[str, Any]:
    steering = tomllib.loads((REPO / "zones" / "gslb.example.test.steering.toml").read_text())
    steering["names"].pop("fast", None)  # its latency table is a file beside the zones
    return {"zones": {ZONE: (REPO / "zones" / "gslb.example.test.zone").read_text()},
            "steering": {ZONE: steering}}


def admin_of(document: dict[str, Any], endpoint: str) -> str:
    state = document.get("state", {}).get(ZONE, {})
    return str(state.get("endpoints", {}).get(endpoint, {}).get("admin", "none"))


def www_ttl(document: dict[str, Any]) -> Any:
    return document["steering"][ZONE]["names"]["www"].get("ttl")


async def test_overrides_are_restored_newest_first_at_expiry_and_the_drill_abandoned(
        store: Store) -> None:
    await store.open()
    try:
        config = ConfigService(store)
        await config.propose(steered_document(), 0, "alice", "steering")
        drills = DrillService(config)
        created = await drills.create("p", PLAN, "alice")
        soon = time.time() + 0.5
        ttl_before = www_ttl(await config.document_at(await store.head()))
        await drills.add_override(created.id, {
            "kind": "ttl", "zone": ZONE, "expires_at": soon,
            "names": {"www": {"value": 5, "previous": ttl_before}}}, "alice")
        await drills.add_override(created.id, {
            "kind": "state", "zone": ZONE, "expires_at": soon,
            "endpoints": {"eu-west-1": {"value": "force_down", "previous": "none"}}}, "alice")
        document = await config.document_at(await store.head())
        assert admin_of(document, "eu-west-1") == "force_down" and www_ttl(document) == 5

        await drills.expire_once(now=soon - 1)  # nothing has expired yet
        assert (await drills.get(created.id)).status == "running"
        await drills.expire_once(now=soon + 1)
        document = await config.document_at(await store.head())
        assert admin_of(document, "eu-west-1") == "none" and www_ttl(document) == ttl_before
        done = await drills.get(created.id)
        assert done.status == "abandoned"
        assert all(o["restored_by"] == "control-plane" and o["restore_reason"] == "expired"
                   for o in done.overrides)
        # Newest first: the state override (set second) went back before the TTL.
        state, ttl = done.overrides[1], done.overrides[0]
        assert state["restored_at"] <= ttl["restored_at"]
        assert await store.drills(10, active=True) == []
        actions = [e.action for e in await store.audit(None, 50)]
        assert {"drill.start", "drill.override", "drill.restore", "drill.finish"} <= set(actions)
    finally:
        await store.close()


async def test_abort_and_recover_restore_at_once_on_both_stores(store: Store) -> None:
    await store.open()
    try:
        config = ConfigService(store)
        await config.propose(steered_document(), 0, "alice", "steering")
        drills = DrillService(config)
        later = time.time() + 600
        ids = []
        for endpoint in ("eu-west-1", "us-east-1"):
            created = await drills.create("p", PLAN, "alice")
            await drills.add_override(created.id, {
                "kind": "state", "zone": ZONE, "expires_at": later,
                "endpoints": {endpoint: {"value": "force_down", "previous": "none"}}}, "alice")
            ids.append(created.id)
        aborted = await drills.request_abort(ids[0], "bob", "enough")
        assert aborted.status == "aborted" and aborted.overrides[0]["restored_by"] == "bob"
        results = await drills.recover("carol")
        assert results == [{"id": ids[1], "restored": 1}]
        document = await config.document_at(await store.head())
        assert admin_of(document, "eu-west-1") == admin_of(document, "us-east-1") == "none"
        assert (await drills.get(ids[1])).status == "aborted"
        assert await store.drills(10, active=True) == []
    finally:
        await store.close()


async def test_a_blocked_slot_is_skipped_and_audited_once(store: Store) -> None:
    await store.open()
    try:
        config = ConfigService(store)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        day = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")[now.weekday()]
        document = {**steered_document(), "drills": {
            "plans": {"p": PLAN},
            "schedule": {"weekly": {"plan": "p", "weekly": [{"days": [day],
                                                             "at": f"{now:%H:%M:%S}"}],
                                    "blocked_dates": [now.date().isoformat()]}}}}
        await config.propose(document, 0, "alice", "a schedule")
        drills = DrillService(config)
        assert await drills.schedule_once(now + dt.timedelta(seconds=1)) == []
        assert await drills.schedule_once(now + dt.timedelta(seconds=2)) == []
        skipped = [e for e in await store.audit(None, 50) if e.action == "drill.skipped"]
        assert len(skipped) == 1 and skipped[0].target == "schedule weekly"
        assert skipped[0].detail["reason"] == f"blocked date {now.date().isoformat()}"
        assert await store.drills(10) == []
    finally:
        await store.close()
