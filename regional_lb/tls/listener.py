"""What TLS listeners hold: a front context whose SNI callback picks the certificate.

The listening server is created once with the *front* context; every handshake then
switches (``SSLObject.context = ...``) to the context of the group serving its SNI
name. Because the switch happens on every handshake, a rotated certificate is used by
the next handshake without touching the server, and ticket keys (which OpenSSL takes
from the front context) stay the same, so clients resume across rotations.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from gtm import log
from gtm.errors import CertificateError
from gtm.process import cancel_and_wait
from regional_lb.tls import tickets
from regional_lb.tls.contexts import TlsPolicy, server_context
from regional_lb.tls.control import ControlFeed, ControlSource
from regional_lb.tls.store import CertStore

ADMIN_TLS = ".admin"  # the admin API's entry in a TlsRegistry, beside the listeners'


@dataclass(frozen=True)
class TlsSpec:
    """A listener's ``tls`` table, validated (see regional_lb.config)."""

    certificates: Path | None      # None: control-plane certificates only
    default: str | None = None
    policy: TlsPolicy = field(default_factory=TlsPolicy)
    unknown_sni: str = "default"   # default | refuse
    control: ControlSource | None = None  # certificates from the control plane too

    @property
    def key(self) -> str:
        """Stable text for the listener key: a change of any of it makes a new server."""
        control = self.control.describe() if self.control is not None else None
        return f"{self.certificates}|{control}|{self.default}|{self.policy}|{self.unknown_sni}"

    @property
    def store_key(self) -> StoreKey:
        """Listeners with the same sources and default share one certificate store."""
        return (self.certificates, self.control, self.default)


StoreKey = tuple[Path | None, ControlSource | None, str | None]


class TlsCounters:
    """Plain integers for the hot path; they outlive reloads (kept by listener name)."""

    __slots__ = ("full", "resumed")

    def __init__(self) -> None:
        self.full = 0
        self.resumed = 0


class ListenerTls:
    def __init__(self, spec: TlsSpec, store: CertStore, counters: TlsCounters,
                 ticket_keys: bytes):
        self.spec = spec
        self.store = store
        self.policy = spec.policy
        self.counters = counters
        self.refuse_unknown = spec.unknown_sni == "refuse"
        default = [store.pairs[name] for name in store.index.default]
        self.front = server_context(spec.policy, default)
        self.front.sni_callback = self._select
        self.apply_ticket_keys(ticket_keys)

    def apply_ticket_keys(self, keys: bytes) -> None:
        """The balancer's keys: its workers (and balancers with the same file) share them."""
        if self.policy.session_tickets:
            tickets.apply(self.front, keys)

    def _select(self, sslobj: ssl.SSLObject, server_name: str | None,
                front: ssl.SSLContext) -> int | None:
        store = self.store
        group = store.group_for(server_name)
        if group is None:
            if self.refuse_unknown and server_name is not None:
                return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
            group = store.index.default
            if not group:  # no default yet (control-plane certificates still to come)
                return (ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME if server_name is not None
                        else ssl.ALERT_DESCRIPTION_HANDSHAKE_FAILURE)
        try:
            sslobj.context = store.context(self.policy, group)
        except CertificateError:  # logged once by the store: the front's default serves
            pass
        except Exception:  # never let a bug here fail handshakes silently
            log.tls.exception("choosing a certificate for %r failed", server_name)
        return None

    def count(self, transport: asyncio.BaseTransport) -> bytes:
        """Called when a connection is made (after the handshake): full or resumed.

        Returns the header lines that tell backends about the client's certificate on
        listeners that ask for one (the parser drops any the client sent itself).
        """
        sslobj = transport.get_extra_info("ssl_object")
        if sslobj is not None and sslobj.session_reused:
            self.counters.resumed += 1
        else:
            self.counters.full += 1
        if self.policy.client_auth == "none" or sslobj is None:
            return b""
        return client_identity(sslobj)


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def client_identity(sslobj: ssl.SSLObject) -> bytes:
    """X-Client-Verify (SUCCESS | NONE) and X-Client-Cert-Subject (RFC 4514), CRLF-ended.
    Only verified certificates get this far: an unverified one fails the handshake."""
    der = sslobj.getpeercert(binary_form=True)
    if not der:
        return b"X-Client-Verify: NONE\r\n"
    subject = x509.load_der_x509_certificate(der).subject.rfc4514_string()
    safe = _CONTROL.sub("?", subject).encode("utf-8", "replace")  # no header injection
    return b"X-Client-Verify: SUCCESS\r\nX-Client-Cert-Subject: " + safe + b"\r\n"


@dataclass(frozen=True)
class TlsPlan:
    """A config's TLS state, prepared and not yet live (TlsRegistry.commit)."""

    stores: Mapping[StoreKey, CertStore]
    listeners: Mapping[str, ListenerTls]   # what the snapshot's listeners hold
    rekeyed: tuple[ListenerTls, ...]       # kept listeners, given the config's keys at commit
    ticket_keys: bytes = field(repr=False)


class TlsRegistry:
    """A worker's certificate stores (one per sources and default), the control-plane feeds
    they read (one per store URL), its TLS listeners, and its session ticket keys."""

    def __init__(self, own_keys: bytes | None = None) -> None:
        # Ticket keys when no key file is given: the balancer's (made before its workers
        # forked, so they share them), else this registry's own. Never another balancer's.
        self.own_keys = own_keys if own_keys is not None else tickets.new_keys()
        self.stores: dict[StoreKey, CertStore] = {}
        self.feeds: dict[ControlSource, ControlFeed] = {}
        self.listeners: dict[str, ListenerTls] = {}
        self.counters: dict[str, TlsCounters] = {}
        self.preloaded: dict[StoreKey, CertStore] = {}
        self.retired: list[ControlFeed] = []  # feeds no store reads any more: to close

    async def preload(self, listeners: Iterable[tuple[str, TlsSpec | None]]) -> None:
        """Read sources new to this worker off the event loop (before a reload's prepare);
        raises, changing nothing, when one cannot be served."""
        loop = asyncio.get_running_loop()
        for name, spec in listeners:
            if spec is None:
                continue
            key = spec.store_key
            if key in self.stores or key in self.preloaded:
                continue
            feed = self._feed(name, spec)
            if feed is not None and not feed.loaded:
                await feed.poll(openssl=False)
            store = CertStore(spec.certificates, spec.default, feed)
            await loop.run_in_executor(None, store.load)
            self.preloaded[key] = store

    def ticket_keys(self, key_file: Path | None) -> bytes:
        """The keys for a config: its key file's (read now: call off the event loop), else
        the balancer's own."""
        return tickets.read_key_file(key_file) if key_file is not None else self.own_keys

    def prepare(self, listeners: Iterable[tuple[str, TlsSpec | None]],
                ticket_keys: bytes) -> TlsPlan:
        """TLS state for a config's listeners, not yet live: :meth:`commit` makes it so
        when the snapshot it belongs to goes live. Raises when a store fails; either way
        what serves is unchanged (a new feed or a store read ahead is kept for later)."""
        stores: dict[StoreKey, CertStore] = {}
        result: dict[str, ListenerTls] = {}
        rekeyed: list[ListenerTls] = []
        for name, spec in listeners:
            if spec is None:
                continue
            key = spec.store_key
            store = stores.get(key) or self.stores.get(key) or self.preloaded.get(key)
            if store is None:
                store = CertStore(spec.certificates, spec.default, self._feed(name, spec))
                store.load()
            stores[key] = store
            held = self.listeners.get(name)
            if held is not None and held.spec == spec and held.store is store:
                rekeyed.append(held)  # the key file may have changed: applied at commit
                result[name] = held
            else:
                result[name] = ListenerTls(spec, store, self.counters.get(name) or TlsCounters(),
                                           ticket_keys)
        return TlsPlan(stores, result, tuple(rekeyed), ticket_keys)

    def commit(self, plan: TlsPlan) -> None:
        """Make a prepared plan live (with its snapshot, in the same synchronous step)."""
        for held in plan.rekeyed:
            held.apply_ticket_keys(plan.ticket_keys)
        self.stores, self.listeners = dict(plan.stores), dict(plan.listeners)
        self.preloaded.clear()
        for name, tls in plan.listeners.items():
            self.counters[name] = tls.counters
        self._retire_unused()

    def _feed(self, listener: str, spec: TlsSpec) -> ControlFeed | None:
        if spec.control is None:
            return None
        spec.control.check(f"listener {listener}: tls.control")
        feed = self.feeds.get(spec.control)
        if feed is None:
            feed = self.feeds[spec.control] = ControlFeed(spec.control)
        return feed

    def _retire_unused(self) -> None:
        used = {store.feed.source for store in self.stores.values() if store.feed is not None}
        for source in set(self.feeds) - used:
            self.retired.append(self.feeds.pop(source))

    async def close(self) -> None:
        """Close the feeds' store connections (the worker is stopping)."""
        for feed in [*self.feeds.values(), *self.retired]:
            await feed.close()
        self.feeds.clear()
        self.retired.clear()

    async def watch(self, interval: float, thresholds: tuple[float, ...]) -> None:
        """Poll the directories: changed pairs rotate in within ``interval`` seconds."""
        self.check_expiry(thresholds)
        while True:
            await asyncio.sleep(interval)
            await self.rescan()
            self.check_expiry(thresholds)

    async def rescan(self) -> None:
        """Look at every source once (files are read and rows checked off the event loop)."""
        loop = asyncio.get_running_loop()
        while self.retired:
            await self.retired.pop().close()
        for feed in list(self.feeds.values()):
            try:
                await feed.poll()  # an unreachable store is logged by the feed, no change
            except Exception:  # the watcher outlives any one bad source
                log.tls.exception("%s: poll failed", feed.label)
        for store in list(self.stores.values()):
            try:
                if store.directory is not None:
                    changes = await loop.run_in_executor(None, store.scan)
                    if changes:
                        store.apply(changes)
                changes = store.control_changes()
                if changes:
                    store.apply(changes)
            except Exception:  # the watcher outlives any one bad source
                log.tls.exception("certificates of %s: scan failed", store.label)

    def check_expiry(self, thresholds: tuple[float, ...]) -> None:
        now = dt.datetime.now(dt.UTC)
        for store in self.stores.values():
            store.check_expiry(thresholds, now)

    def sample(self) -> tuple[list[tuple[str, int, int]], dict[str, float], int]:
        """(listener, full, resumed) rows; certificate -> not-after (unix time); refusals."""
        handshakes = [(name, c.full, c.resumed) for name, c in self.counters.items()]
        expiry = {name: info.not_after.timestamp()
                  for store in self.stores.values() for name, info in store.pairs.items()}
        refusals = sum(store.refusals for store in self.stores.values())
        return handshakes, expiry, refusals


async def stop_task(task: asyncio.Task[Any] | None) -> None:
    await cancel_and_wait(task)
