"""Certificate pairs (a directory's, the control plane's, or both), indexed by host name,
with contexts built lazily.

Start-up reads and checks every pair (cheap: parsing, no SSL context) and builds the
index; an SSL context is made the first time a handshake needs it and cached per
(policy, group). A *group* is the pairs serving one name, at most one per key kind,
so an ECDSA and an RSA certificate for the same name share a context and OpenSSL
picks the one the client supports.

Rotation: :meth:`CertStore.scan` (run off the event loop) stats the files and reads
what changed; :meth:`CertStore.apply` (on the loop) swaps the index and drops the
contexts that served changed pairs. A pair that fails its checks is refused and the
one loaded before keeps serving. Pairs from the control plane (regional_lb.tls.control)
come through :meth:`CertStore.control_changes` under the same rules; a directory pair
and a control-plane pair of the same name: the directory's is served.
"""

from __future__ import annotations

import datetime as dt
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from gtm import log
from gtm.errors import CertificateError
from regional_lb.tls import PLACEHOLDER_ISSUER_CN
from regional_lb.tls.certs import CertInfo, Signature, find_pairs, load_pair, signature
from regional_lb.tls.contexts import TlsPolicy, server_context
from regional_lb.tls.control import ControlFeed

Group = tuple[str, ...]  # pair names serving one host, one per key kind, sorted


@dataclass
class Changes:
    """What a scan found: pairs read anew, pairs refused (with why), pairs gone."""

    loaded: dict[str, CertInfo] = field(default_factory=dict)
    refused: dict[str, tuple[Signature, str]] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)
    control: bool = False  # from the control plane, not the directory

    def __bool__(self) -> bool:
        return bool(self.loaded or self.refused or self.removed)


@dataclass(frozen=True)
class Index:
    exact: dict[str, Group]
    wildcard: dict[str, Group]  # "example.com" for "*.example.com"
    default: Group


class CertStore:
    def __init__(self, directory: Path | None, default: str | None = None,
                 feed: ControlFeed | None = None):
        self.directory = directory             # None: control-plane pairs only
        self.feed = feed
        self.default_name = default or ""
        self.pairs: dict[str, CertInfo] = {}
        self.seen: dict[str, Signature] = {}   # every pair looked at, loaded or refused
        self.control_seen: dict[str, Signature] = {}  # the same, for control-plane rows
        self.errors: dict[str, str] = {}        # refused pairs: why
        self.index = Index({}, {}, ())
        self.contexts: dict[tuple[TlsPolicy, Group], ssl.SSLContext] = {}
        self.failed: dict[tuple[TlsPolicy, Group], CertificateError] = {}  # until they change
        self.refusals = 0
        self.warned: dict[str, float] = {}      # pair -> smallest threshold already warned

    # -- loading ------------------------------------------------------------------------
    @property
    def label(self) -> str:
        sources = [str(self.directory)] if self.directory is not None else []
        return " + ".join(sources + ([self.feed.label] if self.feed is not None else []))

    def load(self) -> None:
        """First load: broken pairs are logged and skipped; no usable default is an error.

        With the control plane as a source, certificates may arrive after the start (they
        are uploaded to it, or it is not reachable yet): the listener starts, and until
        a pair serves a name (or the default arrives) handshakes for it fail."""
        # OpenSSL would build a context per pair to check it: at start-up that is most of
        # the cost with thousands of pairs, so it checks each one when first used instead.
        if self.directory is not None:
            self.apply(self.scan(openssl=False), starting=True)
        if self.feed is not None:
            if not self.feed.loaded:
                self.feed.load_blocking()
            self.apply(self.control_changes(), starting=True)
        if not self.default_name and self.pairs:  # the first of every source's
            self._choose_default()
            self._reindex()
        if not self.pairs:
            if self.feed is None:
                raise CertificateError("holds no usable certificate pair (NAME.crt + NAME.key "
                                       "or NAME.pem)", str(self.directory))
            log.tls.error("%s: no certificate to serve yet; handshakes fail until one is "
                          "uploaded (gtm certs upload)", self.label)
        if self.default_name and self.default_name not in self.pairs:
            why = self.errors.get(self.default_name, "no such pair")
            if self.feed is None:
                raise CertificateError(f"the default certificate {self.default_name!r} cannot "
                                       f"be served: {why}", str(self.directory))
            log.tls.warning("%s: the default certificate %r is not served yet (%s): clients "
                            "without SNI or with unknown names fail until it is", self.label,
                            self.default_name, why)

    def scan(self, now: dt.datetime | None = None, openssl: bool = True) -> Changes:
        """Stat every pair, read the changed ones. Touches no shared state: run it anywhere."""
        changes = Changes()
        if self.directory is None:
            return changes
        found = find_pairs(self.directory)
        for name in set(self.seen) - set(found):
            changes.removed.add(name)
        for name, files in found.items():
            try:
                sig = signature(files)
            except OSError:
                continue  # vanished between listing and stat: the next scan sees it
            if self.seen.get(name) == sig:
                continue
            try:
                info = load_pair(files, now)
                if openssl:  # a new or replacement pair: OpenSSL must load it before we trust it
                    server_context(TlsPolicy(), [info])
                changes.loaded[name] = info
            except CertificateError as exc:
                changes.refused[name] = (sig, str(exc))
        return changes

    def control_changes(self) -> Changes:
        """What the control-plane feed holds that this store has not taken yet (cheap:
        the feed has checked every row already)."""
        changes = Changes(control=True)
        if self.feed is None:
            return changes
        for name, entry in self.feed.entries.items():
            if self.control_seen.get(name) == entry.mark:
                continue
            if entry.deleted:
                if name in self.control_seen:
                    changes.removed.add(name)
            elif name in self.seen:  # the directory has a pair of this name: it wins
                changes.refused[name] = (entry.mark, f"{self.feed.label}: certificate {name} "
                                         f"is not served: {self.directory} has a pair of "
                                         "that name, which is")
            elif entry.info is None:
                changes.refused[name] = (entry.mark, entry.error or "refused")
            else:
                changes.loaded[name] = entry.info
        return changes

    def apply(self, changes: Changes, starting: bool = False) -> None:
        """Swap in what a scan found (on the event loop's thread)."""
        seen = self.control_seen if changes.control else self.seen
        for name, (sig, reason) in changes.refused.items():
            seen[name] = sig
            self.errors[name] = reason
            self.refusals += 1
            kept = " keeping the one loaded before" if name in self.pairs else ""
            log.tls.error("certificate %s refused:%s %s", name, kept, reason)
        gone = set()
        for name in changes.removed:
            seen.pop(name, None)
            self.errors.pop(name, None)
            if not changes.control:  # a control-plane pair of that name may serve now
                self.control_seen.pop(name, None)
            held = self.pairs.get(name)
            if held is not None and (held.files is None) != changes.control:
                continue  # the other source's pair of that name: not this one's to remove
            if name == self.default_name and name in self.pairs:
                log.tls.error("certificate %s is the default: removal ignored, still serving "
                              "it", name)
                continue
            gone.add(name)
            if self.pairs.pop(name, None) is not None:
                log.tls.info("certificate %s removed", name)
        for name, info in changes.loaded.items():
            replaced = name in self.pairs
            self.pairs[name] = info
            seen[name] = info.signature
            self.errors.pop(name, None)
            self.warned.pop(name, None)
            if replaced or not starting:
                log.tls.info("certificate %s %s: %s, not after %s", name,
                             "rotated" if replaced else "added", ", ".join(info.names[:4]),
                             f"{info.not_after:%Y-%m-%d}")
        if not self.default_name and self.pairs and not starting:
            self._choose_default()  # the first to arrive, when there was none at start
        if changes.loaded or gone:
            self._reindex(set(changes.loaded) | gone)

    def _choose_default(self) -> None:
        self.default_name = min(self.pairs)  # fixed from now on, as a named one is
        if self.feed is not None:
            log.tls.info("%s: certificate %s is the default (first by name)", self.label,
                         self.default_name)

    def _reindex(self, changed: Iterable[str] = ()) -> None:
        """Host -> group, newest certificate per key kind; contexts of changed pairs go."""
        chosen: dict[str, dict[str, CertInfo]] = {}
        for info in self.pairs.values():
            for host in info.names:
                kinds = chosen.setdefault(host, {})
                held = kinds.get(info.key_kind)
                if held is None or (info.not_after, info.name) > (held.not_after, held.name):
                    kinds[info.key_kind] = info
        exact: dict[str, Group] = {}
        wildcard: dict[str, Group] = {}
        for host, kinds in chosen.items():
            group = tuple(sorted(i.name for i in kinds.values()))
            if host.startswith("*."):
                wildcard[host[2:]] = group
            else:
                exact[host] = group
        self.index = Index(exact, wildcard, self._default_group(exact, wildcard))
        gone = set(changed)
        groups = set(exact.values()) | set(wildcard.values()) | {self.index.default}
        self.contexts = {key: ctx for key, ctx in self.contexts.items()
                         if key[1] in groups and not gone.intersection(key[1])}
        self.failed = {key: exc for key, exc in self.failed.items()
                       if key[1] in groups and not gone.intersection(key[1])}

    def _default_group(self, exact: dict[str, Group], wildcard: dict[str, Group]) -> Group:
        info = self.pairs.get(self.default_name)
        if info is None:
            return ()
        first = info.names[0]
        group = wildcard.get(first[2:]) if first.startswith("*.") else exact.get(first)
        return group if group is not None and info.name in group else (info.name,)

    # -- serving ------------------------------------------------------------------------
    def group_for(self, server_name: str | None) -> Group | None:
        """The group for an SNI name: exact, then wildcard (one label), else None."""
        if server_name is None:
            return None
        index = self.index
        host = server_name.lower()
        group = index.exact.get(host)
        if group is None:
            group = index.wildcard.get(host.partition(".")[2])
        return group

    def context(self, policy: TlsPolicy, group: Group) -> ssl.SSLContext:
        """The cached context for a group, built on first use.

        A group OpenSSL refuses (say, an RSA key too small for its security level) is
        remembered, so each later handshake falls back at once instead of trying again.
        """
        key = (policy, group)
        ctx = self.contexts.get(key)
        if ctx is None:
            failed = self.failed.get(key)
            if failed is not None:
                raise failed
            try:
                ctx = server_context(policy, [self.pairs[name] for name in group])
            except CertificateError as exc:
                self.failed[key] = exc
                self.errors.update(dict.fromkeys(group, str(exc)))
                log.tls.error("certificate %s cannot be served, the default serves its "
                              "names: %s", "+".join(group), exc)
                raise
            self.contexts[key] = ctx
        return ctx

    # -- inventory ----------------------------------------------------------------------
    def check_expiry(self, thresholds: tuple[float, ...], now: dt.datetime | None = None) -> None:
        """Warn once per pair each time it crosses a threshold (days), smallest last."""
        now = now or dt.datetime.now(dt.UTC)
        for info in self.pairs.values():
            if info.issuer == f"CN={PLACEHOLDER_ISSUER_CN}":
                continue  # ACME's stand-in: replaced within seconds, not worth a warning
            left = info.days_left(now)
            crossed = [t for t in thresholds if left <= t]
            if not crossed or min(crossed) >= self.warned.get(info.name, float("inf")):
                continue
            self.warned[info.name] = min(crossed)
            log.tls.warning("certificate %s (%s) expires in %.1f days (not after %s UTC)",
                            info.name, ", ".join(info.names[:4]), left,
                            f"{info.not_after:%Y-%m-%d %H:%M}")
