"""One suite, both stores: versions, optimistic concurrency, rollback, audit, tokens, nodes."""

from __future__ import annotations

import asyncio
import time

import pytest

from gtm.config.document import canonical_json, digest
from gtm.control.service import ConfigService
from gtm.control.store import (
    AuditEntry,
    IdempotencyKey,
    KeyAlreadyUsed,
    NewCertificate,
    NewVersion,
    NodeStatus,
    Outcome,
    Receipt,
    Store,
    VersionRecord,
    hash_secret,
    new_token,
)
from gtm.errors import ConfigError, VersionConflict
from tests.control.conftest import example_document


def new_version(base: int, www: str = "192.0.2.1") -> NewVersion:
    doc = example_document(www)
    return NewVersion(base, canonical_json(doc), "alice", f"www {www}", digest(doc), [])


async def test_empty_store_has_no_version(store: Store) -> None:
    await store.open()
    try:
        assert await store.head() == 0
        assert await store.latest() is None
        assert await store.history(None, 10) == []
    finally:
        await store.close()


async def test_versions_are_numbered_and_kept(store: Store) -> None:
    await store.open()
    try:
        first = await store.commit(new_version(0, "192.0.2.1"))
        second = await store.commit(new_version(1, "192.0.2.2"))
        assert (first.number, second.number) == (1, 2)
        assert await store.head() == 2
        got = await store.get(1)
        assert got is not None and got.document == example_document("192.0.2.1")
        assert got.author == "alice" and got.message == "www 192.0.2.1"
        assert [v.number for v in await store.history(None, 10)] == [2, 1]
        assert [v.number for v in await store.history(2, 10)] == [1]
        assert await store.get(3) is None
    finally:
        await store.close()


async def test_stale_write_conflicts_and_stores_nothing(store: Store) -> None:
    await store.open()
    try:
        await store.commit(new_version(0))
        await store.commit(new_version(1, "192.0.2.2"))
        with pytest.raises(VersionConflict) as caught:
            await store.commit(new_version(1, "192.0.2.3"))
        assert (caught.value.base, caught.value.current) == (1, 2)
        with pytest.raises(VersionConflict):
            await store.commit(new_version(7))
        assert await store.head() == 2
    finally:
        await store.close()


async def test_racing_writers_exactly_one_wins(store: Store) -> None:
    await store.open()
    try:
        await store.commit(new_version(0))
        results = await asyncio.gather(
            *(store.commit(new_version(1, f"192.0.2.{i}")) for i in range(10, 18)),
            return_exceptions=True,
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        losers = [r for r in results if isinstance(r, VersionConflict)]
        assert len(winners) == 1 and len(losers) == 7
        assert await store.head() == 2
    finally:
        await store.close()


async def test_service_diff_rollback_and_audit(store: Store) -> None:
    await store.open()
    service = ConfigService(store)
    try:
        await service.propose(example_document("192.0.2.1"), 0, "alice", "first")
        second = await service.propose(example_document("192.0.2.2"), 1, "bob", "second")
        assert second.version is not None and second.version.number == 2
        [change] = second.diff
        assert change["path"] == 'zones["example.test."]' and change["op"] == "change"
        assert "-www  A    192.0.2.1" in change["text_diff"]
        back = await service.rollback(1, base=2, author="carol")
        assert back.version is not None and back.version.number == 3
        assert back.version.rollback_of == 1
        assert await service.document_at(3) == example_document("192.0.2.1")
        entries = await store.audit(None, 10)
        assert [(e.actor, e.action) for e in entries][:3] == [
            ("carol", "config.rollback"), ("bob", "config.commit"), ("alice", "config.commit")
        ]
    finally:
        await store.close()


async def test_service_refuses_invalid_and_stale(store: Store) -> None:
    await store.open()
    service = ConfigService(store)
    try:
        await service.propose(example_document(), 0, "alice", "first")
        bad = example_document()
        bad["zones"]["example.test."] += "www CNAME elsewhere.\n"
        with pytest.raises(ConfigError) as caught:
            await service.propose(bad, 1, "alice", "bad")
        assert caught.value.where == 'zones["example.test."]:6'
        with pytest.raises(VersionConflict):
            await service.propose(example_document("192.0.2.9"), 0, "bob", "stale")
        dry = await service.propose(example_document("192.0.2.9"), 1, "bob", "dry", dry_run=True)
        assert dry.version is None and dry.diff
        assert await store.head() == 1
        outcomes = [e.outcome for e in await store.audit(None, 10)]
        assert outcomes[:2] == ["conflict", "invalid"]
    finally:
        await store.close()


async def test_tokens_stored_hashed_and_revocable(store: Store) -> None:
    await store.open()
    try:
        record, secret = new_token("ci", "editor", "test")
        await store.add_token(record, hash_secret(secret))
        found = await store.token_by_hash(hash_secret(secret))
        assert found is not None and found.role == "editor" and found.revoked_at is None
        assert await store.token_by_hash(hash_secret(secret + "x")) is None
        assert await store.revoke_token(record.id)
        assert not await store.revoke_token(record.id)
        again = await store.token_by_hash(hash_secret(secret))
        assert again is not None and again.revoked_at is not None
        assert [t.id for t in await store.tokens()] == [record.id]
    finally:
        await store.close()


async def test_audit_pages_and_node_reports(store: Store) -> None:
    await store.open()
    try:
        for i in range(5):
            await store.add_audit(AuditEntry("a", "auth.refused", f"t{i}", "refused"))
        page = await store.audit(None, 2)
        rest = await store.audit(page[-1].id, 10)
        assert [e.target for e in page + rest] == ["t4", "t3", "t2", "t1", "t0"]
        now = time.time()
        await store.report_node(NodeStatus("dns-1", "dns", 3, now, {"pid": 1}))
        await store.report_node(NodeStatus("dns-1", "dns", 4, now + 1, {"pid": 1}))
        [node] = await store.nodes()
        assert (node.node_id, node.version, node.info) == ("dns-1", 4, {"pid": 1})
    finally:
        await store.close()


async def test_subscribers_hear_of_new_versions(store: Store) -> None:
    await store.open()
    heard: asyncio.Queue[int] = asyncio.Queue()
    try:
        assert await store.subscribe(heard.put_nowait)
        await store.commit(new_version(0))
        assert await asyncio.wait_for(heard.get(), 5) == 1
    finally:
        await store.close()


async def test_reopening_keeps_everything(store: Store) -> None:
    await store.open()
    await store.commit(new_version(0))
    await store.close()
    await store.open()  # migrations are idempotent
    try:
        assert await store.head() == 1
    finally:
        await store.close()


async def test_unreachable_postgres_fails_fast_and_recovers_nothing_stored() -> None:
    from gtm.control.postgres_store import PostgresStore
    from gtm.errors import StoreUnavailable

    store = PostgresStore("postgresql://postgres@127.0.0.1:9/test", "gtm_unreachable")
    started = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await store.head()
    with pytest.raises(StoreUnavailable):
        await store.commit(new_version(0))
    assert not await store.subscribe(lambda _n: None)
    assert time.monotonic() - started < 7
    await store.close()


def new_certificate(name: str, fingerprint: str = "aa", by: str = "alice") -> NewCertificate:
    return NewCertificate(name=name, chain=f"-----BEGIN CERTIFICATE-----\n{name}\n",
                          sealed_key=b"\x00sealed\xff" + name.encode(), key_nonce=b"n" * 12,
                          key_id="0123456789abcdef", names=(f"{name}.example.com",),
                          not_after=2e9, fingerprint=fingerprint, updated_by=by)


async def test_certificates_revisions_and_tombstones(store: Store) -> None:
    await store.open()
    try:
        assert await store.certificates(0) == [] and await store.certificate("www") is None
        www = await store.put_certificate(new_certificate("www"))
        api = await store.put_certificate(new_certificate("api"))
        assert (www.revision, api.revision) == (1, 2) and not www.deleted
        got = await store.certificate("www")
        assert got is not None and got.sealed_key == b"\x00sealed\xffwww"
        assert got.key_nonce == b"n" * 12 and got.names == ("www.example.com",)
        assert got.updated_by == "alice" and got.updated_at > 0
        replaced = await store.put_certificate(new_certificate("www", fingerprint="bb"))
        assert replaced.revision == 3
        assert [(r.name, r.revision) for r in await store.certificates(0)] == \
            [("api", 2), ("www", 3)]
        assert [r.fingerprint for r in await store.certificates(2)] == ["bb"]
        tombstone = await store.delete_certificate("api", "bob")
        assert tombstone is not None and tombstone.deleted and tombstone.revision == 4
        assert tombstone.chain == "" and tombstone.sealed_key == b"" and tombstone.key_nonce == b""
        assert tombstone.updated_by == "bob" and tombstone.names == ("api.example.com",)
        assert await store.delete_certificate("api", "bob") is None  # already gone
        assert await store.certificate("api") is None
        since = await store.certificates(3)  # a poller at revision 3 sees the removal
        assert [(r.name, r.deleted) for r in since] == [("api", True)]
        again = await store.put_certificate(new_certificate("api"))  # a tombstone comes back
        assert again.revision == 5 and not again.deleted
        assert await store.certificates(5) == []
        assert "sealed" not in str(again.public()) and "sealed_key" not in again.public()
    finally:
        await store.close()


async def test_concurrent_certificate_writes_get_distinct_revisions(store: Store) -> None:
    await store.open()
    try:
        records = await asyncio.gather(*(store.put_certificate(new_certificate(f"c{i}"))
                                         for i in range(8)))
        assert sorted(r.revision for r in records) == list(range(1, 9))
        await store.close()
        await store.open()  # kept across reopening (migrations are idempotent)
        assert len(await store.certificates(0)) == 8
    finally:
        await store.close()


async def test_a_write_and_its_receipt_are_one_transaction(store: Store) -> None:
    await store.open()
    try:
        key = IdempotencyKey("token-a", "k1", "request-1")

        def audit(record: VersionRecord) -> AuditEntry:
            return AuditEntry("alice", "config.commit", f"version {record.number}", "ok")

        def answer(record: VersionRecord) -> Outcome:
            return Outcome(201, {"version": record.number}, {"ETag": f'"{record.number}"'})

        await store.commit(new_version(0), Receipt(audit, key, answer))
        kept = await store.kept_outcome("token-a", "k1")
        assert kept is not None and kept.fingerprint == "request-1"
        assert kept.outcome == Outcome(201, {"version": 1}, {"ETag": '"1"'})
        assert await store.kept_outcome("token-b", "k1") is None  # keys are per token
        # The key holds an answer: a second write with it makes nothing, audits nothing.
        with pytest.raises(KeyAlreadyUsed):
            await store.commit(new_version(1), Receipt(audit, key, answer))
        record, secret = new_token("ci", "editor", "alice")
        with pytest.raises(KeyAlreadyUsed):
            await store.add_token(record, hash_secret(secret), Receipt(
                lambda r: AuditEntry("alice", "token.create", r.id, "ok"), key,
                lambda r: Outcome(201, {"id": r.id})))
        assert await store.head() == 1 and await store.tokens() == []
        assert [e.target for e in await store.audit(None, 10)] == ["version 1"]
        # Outside a write, the first answer kept for a key stays its answer.
        other = IdempotencyKey("token-a", "k2", "request-2")
        assert await store.keep_outcome(other, Outcome(409, {"error": {"status": 409}})) is None
        earlier = await store.keep_outcome(other, Outcome(201, {}))
        assert earlier is not None and earlier.outcome.status == 409
        assert await store.forget_outcomes(time.time() - 3600) == 0
        assert await store.forget_outcomes(time.time() + 1) == 2
        assert await store.kept_outcome("token-a", "k1") is None
    finally:
        await store.close()
