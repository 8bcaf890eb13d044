"""Changing the configuration: validate, diff, commit, audit, announce.

This is the one path every change takes (API, CLI, rollback), so the rules hold
everywhere: the document is compiled by the same compiler the nodes run before
anything is stored; a change names the version it was based on; a rejected change
stores nothing; every outcome lands in the audit log.
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
from gtm.control.fanout import RedisFanout
from gtm.control.store import AuditEntry, NewVersion, Store, VersionRecord
from gtm.errors import ConfigError, NotFound, StoreUnavailable, VersionConflict

Document = dict[str, Any]


@dataclass(frozen=True)
class Proposal:
    """The outcome of a change: its diff, and the stored version unless it was a dry run."""

    base: int
    diff: list[dict[str, Any]]
    version: VersionRecord | None
    warnings: tuple[str, ...] = ()


class ConfigService:
    def __init__(self, store: Store, fanout: RedisFanout | None = None):
        self.store = store
        self.fanout = fanout

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
        rollback_of: int | None = None,
    ) -> Proposal:
        action = "config.rollback" if rollback_of is not None else "config.commit"
        try:
            compiled = await compile_off_loop(document, "document")
            head = await self.store.head()
            if base != head:
                raise VersionConflict(base, head)
            changes = diff_documents(await self.document_at(base), document)
            if dry_run:
                return Proposal(base, changes, None, compiled.warnings)
            record = await self.store.commit(NewVersion(
                base, canonical_json(document), author, message, digest(document), changes,
                rollback_of,
            ))
        except (ConfigError, VersionConflict) as exc:
            result = "invalid" if isinstance(exc, ConfigError) else "conflict"
            metrics.config_commits.labels(result).inc()
            if not dry_run:
                await self.audit(author, action, f"base {base}", result, {"error": str(exc)})
            raise
        except StoreUnavailable:
            metrics.config_commits.labels("unavailable").inc()
            raise
        metrics.config_commits.labels("ok").inc()
        log.control.info("version %d by %s: %s (%d changes)", record.number, author, message,
                         len(changes))
        await self.audit(author, action, f"version {record.number}", "ok",
                         {"message": message, "changes": len(changes), "base": base})
        if self.fanout is not None:
            self.fanout.announce_soon(record.number)
        return Proposal(base, changes, record, compiled.warnings)

    async def edit(
        self, base: int, author: str, message: str, change: Callable[[Document], Document],
        dry_run: bool = False,
    ) -> Proposal:
        """A change to part of the document at ``base`` (one zone, one section)."""
        head = await self.store.head()
        if base != head:
            raise VersionConflict(base, head)
        document = change(copy.deepcopy(await self.document_at(base)))
        return await self.propose(document, base, author, message, dry_run)

    async def rollback(self, target: int, base: int, author: str, message: str = "") -> Proposal:
        """A new version whose document is that of version ``target``."""
        document = await self.document_at(target)
        return await self.propose(
            document, base, author, message or f"rollback to version {target}",
            rollback_of=target,
        )

    async def audit(
        self, actor: str, action: str, target: str, outcome: str, detail: dict[str, Any]
    ) -> None:
        log.audit.info("%s %s %s: %s", actor, action, target, outcome)
        try:
            await self.store.add_audit(AuditEntry(actor, action, target, outcome, detail))
        except StoreUnavailable as exc:
            # The action itself already failed or succeeded; losing its audit line to
            # an outage is logged rather than turned into a second failure.
            log.audit.error("audit entry lost (%s): %s %s %s", exc, actor, action, target)


async def compile_off_loop(document: Any, source: str) -> CompiledConfig:
    """Compile in a worker thread: a large zone must not stall the API's event loop."""
    return await asyncio.get_running_loop().run_in_executor(
        None, compile_document, document, source
    )
