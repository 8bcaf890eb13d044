"""Changing the configuration: validate, diff, commit, audit, announce.

This is the one path every change takes (API, CLI, rollback), so the rules hold
everywhere: the document is compiled by the same compiler the nodes run before
anything is stored; a change names the version it was based on; a rejected change
stores nothing; every outcome lands in the audit log, refusals the same way whichever
check caught them, and coalesced per client (gtm.control.refusals).
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gtm import log, metrics
from gtm.config.document import CompiledConfig, canonical_json, compile_document, digest
from gtm.control.diff import diff_documents
from gtm.control.events import EventLog
from gtm.control.fanout import RedisFanout
from gtm.control.refusals import DEFAULT_WINDOW, RefusalLog
from gtm.control.state_events import state_changes
from gtm.control.store import (
    AuditEntry,
    IdempotencyKey,
    NewVersion,
    Outcome,
    Receipt,
    Store,
    VersionRecord,
)
from gtm.errors import ConfigError, NotFound, StoreUnavailable, VersionConflict
from gtm.wording import counted

Document = dict[str, Any]
# What refuses a change, and the audit outcome it is recorded under.
REFUSALS: dict[type[Exception], str] = {
    ConfigError: "invalid", VersionConflict: "conflict", NotFound: "not_found"}


@dataclass(frozen=True)
class Caller:
    """Where a change comes from, beyond its author's name: the client's address, by
    which repeated refusals are coalesced ("" for in-process callers), and for an API
    request with an Idempotency-Key the key and the answer to keep with the version."""

    client: str = ""
    key: IdempotencyKey | None = None
    answer: Callable[[Proposal], Outcome] | None = None


IN_PROCESS = Caller()


@dataclass(frozen=True)
class Proposal:
    """The outcome of a change: its diff, and the stored version unless it was a dry run."""

    base: int
    diff: list[dict[str, Any]]
    version: VersionRecord | None
    warnings: tuple[str, ...] = ()


class ConfigService:
    def __init__(self, store: Store, fanout: RedisFanout | None = None,
                 refusal_window: float = DEFAULT_WINDOW, events: EventLog | None = None):
        self.store = store
        self.fanout = fanout
        # The event stream (gtm.control.events); without one, events go nowhere.
        self.events = events or EventLog(None, None)
        self.refusals = RefusalLog(self._write_audit, refusal_window)

    async def document_at(self, number: int) -> Document:
        """The document of a version; version 0 is the empty document."""
        if number == 0:
            return {}
        record = await self.store.get(number)
        if record is None or record.document is None:
            raise NotFound(f"no version {number}")
        return record.document

    async def propose(
        self, document: Any, base: int, author: str, message: str, dry_run: bool = False,
        rollback_of: int | None = None, caller: Caller = IN_PROCESS,
    ) -> Proposal:
        action = "config.rollback" if rollback_of is not None else "config.commit"
        try:
            compiled = await compile_off_loop(document, "document")
            await self._check_base(base)
            before = await self.document_at(base)
            changes = diff_documents(before, document)
            if dry_run:
                return Proposal(base, changes, None, compiled.warnings)
            receipt = self._receipt(author, action, message, changes, base, caller,
                                    compiled.warnings)
            record = await self.store.commit(NewVersion(
                base, canonical_json(document), author, message, digest(document), changes,
                rollback_of,
            ), receipt)
        except tuple(REFUSALS) as exc:
            metrics.config_commits.labels(REFUSALS[_refusal(exc)]).inc()
            if not dry_run:
                await self.refused(author, action, base, exc, caller)
            raise
        except StoreUnavailable:
            metrics.config_commits.labels("unavailable").inc()
            raise
        metrics.config_commits.labels("ok").inc()
        log.control.info("version %d by %s: %s (%s)", record.number, author, message,
                         counted(len(changes), "change"))
        log.audit.info("%s %s version %d: ok", author, action, record.number)
        if self.fanout is not None:
            self.fanout.announce_soon(record.number)
        self._publish_version(record, before, document, base)
        return Proposal(base, changes, record, compiled.warnings)

    def _publish_version(self, record: VersionRecord, before: Document, after: Document,
                         base: int) -> None:
        """The new version's event, then one per hand-set state it changed (gtm steer)."""
        self.events.publish("config.version", f"version {record.number}", {
            "version": record.number, "base": base, "message": record.message,
            "changes": len(record.diff), "rollback_of": record.rollback_of,
            "paths": [c["path"] for c in record.diff[:20]]}, record.author)
        for kind, subject, detail in state_changes(before, after):
            self.events.publish(kind, subject, {**detail, "version": record.number},
                                record.author)

    @staticmethod
    def _receipt(author: str, action: str, message: str, changes: list[dict[str, Any]],
                 base: int, caller: Caller, warnings: tuple[str, ...],
                 ) -> Receipt[VersionRecord]:
        """The audit row (and kept answer) stored in the commit's own transaction: a
        connection lost after COMMIT cannot leave the version without them."""
        answer = caller.answer

        def audit(record: VersionRecord) -> AuditEntry:
            return AuditEntry(author, action, f"version {record.number}", "ok",
                              {"message": message, "changes": len(changes), "base": base})

        def kept(record: VersionRecord) -> Outcome:
            assert answer is not None
            return answer(Proposal(base, changes, record, warnings))

        return Receipt(audit, caller.key, kept if answer is not None else None)

    async def edit(
        self, base: int, author: str, message: str, change: Callable[[Document], Document],
        dry_run: bool = False, caller: Caller = IN_PROCESS,
    ) -> Proposal:
        """A change to part of the document at ``base`` (one zone, one section)."""
        try:
            await self._check_base(base)  # before the change: a newer base may not exist
            document = change(copy.deepcopy(await self.document_at(base)))
        except tuple(REFUSALS) as exc:
            if not dry_run:
                await self.refused(author, "config.commit", base, exc, caller)
            raise
        return await self.propose(document, base, author, message, dry_run, caller=caller)

    async def rollback(self, target: int, base: int, author: str, message: str = "",
                       caller: Caller = IN_PROCESS) -> Proposal:
        """A new version whose document is that of version ``target``."""
        try:
            document = await self.document_at(target)
        except NotFound as exc:
            await self.refused(author, "config.rollback", base, exc, caller)
            raise
        return await self.propose(
            document, base, author, message or f"rollback to version {target}",
            rollback_of=target, caller=caller,
        )

    async def _check_base(self, base: int) -> None:
        head = await self.store.head()
        if base != head:
            raise VersionConflict(base, head)

    async def refused(self, author: str, action: str, base: int, exc: Exception,
                      caller: Caller) -> None:
        """A refused change, audited the same way whichever check refused it."""
        outcome = REFUSALS[_refusal(exc)]
        await self.refusals.add(
            AuditEntry(author, action, f"base {base}", outcome, {"error": str(exc)}),
            caller.client, outcome)

    async def audit(
        self, actor: str, action: str, target: str, outcome: str, detail: dict[str, Any]
    ) -> None:
        await self._write_audit(AuditEntry(actor, action, target, outcome, detail))

    async def _write_audit(self, entry: AuditEntry) -> None:
        log.audit.info("%s %s %s: %s", entry.actor, entry.action, entry.target, entry.outcome)
        try:
            await self.store.add_audit(entry)
        except StoreUnavailable as exc:
            # The action itself already failed or succeeded; losing its audit line to
            # an outage is logged rather than turned into a second failure.
            log.audit.error("audit entry lost (%s): %s %s %s", exc, entry.actor, entry.action,
                            entry.target)


def _refusal(exc: Exception) -> type[Exception]:
    return next(kind for kind in REFUSALS if isinstance(exc, kind))


async def compile_off_loop(document: Any, source: str) -> CompiledConfig:
    """Compile in a worker thread: a large zone must not stall the API's event loop."""
    return await asyncio.get_running_loop().run_in_executor(
        None, compile_document, document, source
    )
