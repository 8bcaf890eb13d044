"""Certificates from the control plane's store, for listeners with ``tls.control = true``.

A :class:`ControlFeed` follows one store (URL, namespace, secret key file). Each poll
reads the rows changed since the highest revision it has seen
(``Store.certificates(since_revision)``), opens each private key with the secret key,
and checks the pair exactly as a file is checked (:mod:`gtm.tlscerts`, then OpenSSL),
off the event loop. It keeps the outcome per name; the :class:`CertStore` of each
listener using the feed takes what changed from there, under the same rules as files:
a replacement that cannot be served is refused and the pair before keeps serving.

Plaintext keys exist only in memory (contexts are built through memfd). A store that
cannot be reached changes nothing that is served: what was read keeps serving and the
next poll tries again; a balancer starting meanwhile serves its last copy of the rows
(``control_cache``, keys still sealed: regional_lb.tls.control_cache). A changed secret
key file is read again and every row checked anew, so fixing a wrong key needs no
restart.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gtm import log
from gtm.errors import ConfigError, GtmError, SealingError
from gtm.sealing import Sealed, SecretKey, read_key
from gtm.store_access import (
    CertificateReader,
    CertificateRecord,
    describe,
    open_certificate_reader,
)
from gtm.tlscerts import check_pair
from regional_lb.tls.certs import CertInfo, Signature
from regional_lb.tls.contexts import TlsPolicy, server_context
from regional_lb.tls.control_cache import read_cache, write_cache

RESYNC_SECONDS = 60.0   # a full read now and then: finds rows a reset store renumbered
FIRST_READ_TIMEOUT = 15.0


@dataclass(frozen=True)
class ControlSource:
    """Where a listener's control-plane certificates come from (``[lb.tls]``)."""

    store_url: str | None          # None until [lb.tls] control_store (or gtm up) names one
    key_file: Path | None          # the control plane's secret key (a copy of it)
    namespace: str = "gtm"
    cache: Path | None = None      # the last rows read, for a start without the store

    def describe(self) -> str:
        namespace = f" (namespace {self.namespace})" if self.namespace != "gtm" else ""
        return f"{describe(self.store_url or 'none')}{namespace}"

    def check(self, where: str) -> None:
        """Raise unless the source is usable: set at parse time, checked at start."""
        if self.store_url is None:
            raise ConfigError("control = true needs lb.tls.control_store (the control "
                              "plane's store: sqlite:///... or postgresql://...)", where)
        if self.key_file is None:
            raise ConfigError("control = true needs lb.tls.secret_key_file (a copy of the "
                              "control plane's secret key; or $GTM_SECRET_KEY_FILE)", where)


@dataclass(frozen=True)
class Entry:
    """One name's latest row, as checked: a pair (``info``), a refusal (``error``), or
    neither (deleted). ``mark`` changes whenever the row or the secret key does."""

    mark: Signature
    info: CertInfo | None = None
    error: str | None = None

    @property
    def deleted(self) -> bool:
        return self.info is None and self.error is None


@dataclass
class _Key:
    key: SecretKey | None
    problem: str | None
    stamp: tuple[int, int, int] | None  # (mtime_ns, size, inode) of the file as read


class ControlFeed:
    def __init__(self, source: ControlSource):
        self.source = source
        self.entries: dict[str, Entry] = {}
        self.revision = 0
        self.generation = 0       # bumped when the secret key file changes
        self.loaded = False       # a first read was attempted
        self.problem: str | None = None  # why the last poll failed (logged once)
        self.rows: dict[str, CertificateRecord] = {}  # the latest row of every name
        self._key = _Key(None, "not read yet", None)
        self._store: CertificateReader | None = None
        self._lock: asyncio.Lock | None = None
        self._resync_at = 0.0
        self._read_store = False   # rows came from the store at least once
        self._cache_tried = False

    @property
    def label(self) -> str:
        return f"control plane {self.source.describe()}"

    # -- polling (on the event loop; CPU work in the executor) ---------------------------
    async def poll(self, openssl: bool = True) -> None:
        """Read what changed; a failure is logged once and leaves everything as it was."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            loop = asyncio.get_running_loop()
            try:
                key_changed = await loop.run_in_executor(None, self._refresh_key)
                full = key_changed or time.monotonic() >= self._resync_at
                store = await self._open()
                rows = await store.certificates(0 if full else self.revision)
            except Exception as exc:  # unreachable, no table yet, a bad URL: wait and retry
                self._failed(str(exc) or type(exc).__name__)
                cached = await loop.run_in_executor(None, self._from_cache)
                if cached is not None:
                    self._merge(*cached, full=True, from_cache=True)
                return
            entries = await loop.run_in_executor(None, self._digest, rows, openssl)
            if self._merge(rows, entries, full) and self.source.cache is not None:
                await loop.run_in_executor(None, self._save)

    def load_blocking(self) -> None:
        """The first read where no event loop can be awaited (a worker being built): in a
        thread of its own, with a store of its own, closed after."""
        with concurrent.futures.ThreadPoolExecutor(1, "gtm-control-certs") as pool:
            try:
                rows = pool.submit(asyncio.run, self._read_all()).result(FIRST_READ_TIMEOUT)
            except Exception as exc:  # unreachable, timed out, no table yet: as in poll()
                self._failed(str(exc) or type(exc).__name__)
                cached = self._from_cache()
                if cached is not None:
                    self._merge(*cached, full=True, from_cache=True)
                return
        self._refresh_key()
        if self._merge(rows, self._digest(rows, openssl=False), full=True) and \
                self.source.cache is not None:
            self._save()

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.close()

    async def _open(self) -> CertificateReader:
        if self._store is None:
            assert self.source.store_url is not None  # ControlSource.check() passed
            store = open_certificate_reader(self.source.store_url, self.source.namespace)
            await store.open()
            self._store = store
        return self._store

    async def _read_all(self) -> list[CertificateRecord]:
        assert self.source.store_url is not None
        store = open_certificate_reader(self.source.store_url, self.source.namespace)
        try:
            await store.open()
            return await store.certificates(0)
        finally:
            await store.close()

    def _failed(self, problem: str) -> None:
        self.loaded = True
        if problem != self.problem:
            log.tls.error("%s: cannot read certificates (%s); what was read before keeps "
                          "serving", self.label, problem)
        self.problem = problem

    def _merge(self, rows: list[CertificateRecord], entries: dict[str, Entry], full: bool,
               from_cache: bool = False) -> bool:
        """Take a poll's outcome (on the loop's thread: stores read ``entries`` there);
        True when the rows changed."""
        if not from_cache:
            if self.problem is not None and self.loaded:
                log.tls.info("%s: reading certificates again", self.label)
            self.problem = None
            self._read_store = True
        self.loaded = True
        before = {name: row.revision for name, row in self.rows.items()}
        merged = dict(self.entries)
        if full:  # names a full read no longer has are gone
            for name in set(merged) - set(entries):
                merged[name] = Entry(((self.revision + 1, self.generation, 1),))
            self.rows = {}
            # After the last copy, the first read of the store is a full one.
            self._resync_at = 0.0 if from_cache else time.monotonic() + RESYNC_SECONDS
        merged.update(entries)
        self.entries = merged
        self.rows.update((row.name, row) for row in rows)
        self.revision = max([r.revision for r in rows], default=0 if full else self.revision)
        return before != {name: row.revision for name, row in self.rows.items()}

    def _from_cache(self) -> tuple[list[CertificateRecord], dict[str, Entry]] | None:
        """The last copy of the rows, once, while the store has never answered."""
        path = self.source.cache
        if self._read_store or self._cache_tried or path is None or not path.exists():
            return None
        self._cache_tried = True
        try:
            rows = read_cache(path)
        except ConfigError as exc:
            log.tls.error("%s: the last copy cannot be used: %s", self.label, exc)
            return None
        self._refresh_key()
        log.tls.warning("%s: serving the last copy of its %d certificates (%s) until the "
                        "store answers", self.label, sum(not r.deleted for r in rows), path)
        return rows, self._digest(rows, openssl=False)

    def _save(self) -> None:
        assert self.source.cache is not None
        try:
            write_cache(self.source.cache, self.rows.values())
        except OSError as exc:
            log.tls.warning("%s: cannot keep a copy in %s: %s", self.label, self.source.cache,
                            exc.strerror)

    # -- checking (in a worker thread) ---------------------------------------------------
    def _refresh_key(self) -> bool:
        """Read the secret key file again when it changed; True when it did."""
        path = self.source.key_file
        assert path is not None  # ControlSource.check() passed
        try:
            info = os.stat(path)
            stamp: tuple[int, int, int] | None = (info.st_mtime_ns, info.st_size, info.st_ino)
        except OSError:
            stamp = None
        if stamp == self._key.stamp and self._key.problem != "not read yet":
            return False
        try:
            self._key = _Key(read_key(path), None, stamp)
        except SealingError as exc:
            self._key = _Key(None, str(exc), stamp)
            log.tls.error("%s: %s", self.label, exc)
        self.generation += 1
        return True

    def _digest(self, rows: Iterable[CertificateRecord], openssl: bool) -> dict[str, Entry]:
        """Each row checked as a file would be; rows already checked are not again."""
        entries: dict[str, Entry] = {}
        for row in rows:
            mark: Signature = ((row.revision, self.generation, 0),)
            held = self.entries.get(row.name)
            if held is not None and held.mark == mark:
                entries[row.name] = held
            elif row.deleted:
                entries[row.name] = Entry(mark)
            else:
                entries[row.name] = self._check(row, mark, openssl)
        return entries

    def _check(self, row: CertificateRecord, mark: Signature, openssl: bool) -> Entry:
        source = f"{self.label}: certificate {row.name} (revision {row.revision})"
        try:
            key_pem = self._unseal(row)
            checked = check_pair(row.chain.encode("ascii"), key_pem, chain_source=source,
                                 key_source=source)
            info = CertInfo.of(row.name, checked, mark, source)
            if openssl:  # a new or replacement pair: OpenSSL must load it before we trust it
                server_context(TlsPolicy(), [info])
        except GtmError as exc:  # the reason, never key bytes (see gtm.tlscerts)
            return Entry(mark, error=str(exc))
        except Exception as exc:  # one odd row must not stop the others; name no bytes
            return Entry(mark, error=f"{source}: cannot be checked ({type(exc).__name__})")
        return Entry(mark, info=info)

    def _unseal(self, row: CertificateRecord) -> bytes:
        key = self._key.key
        if key is None:
            raise SealingError(f"cannot open its private key: {self._key.problem}",
                               f"certificate {row.name}")
        return key.unseal(row.name, Sealed(row.sealed_key, row.key_nonce, row.key_id))
