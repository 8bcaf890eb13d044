"""Zone transfers and dynamic updates at a DNS node (the engine's ``operations``).

A node answers AXFR and IXFR over TCP from the version it serves, and takes UPDATE
messages (RFC 2136) over UDP and TCP. Every message is checked for TSIG (RFC 8945)
against the keys of the served version: an unknown key, a bad MAC or a clock outside the
fudge is NOTAUTH with the TSIG error (BADKEY, BADSIG, BADTIME), the signed ones signed.

Transfers are allowed by the zone's ``transfers`` rule (gtm.config.tsig), else REFUSED.
An IXFR is answered from the difference between the client's serial, found in the stored
versions (the store keeps every version), and the served one; with the client's serial
gone from the last ``IXFR_HISTORY`` versions, or a difference larger than the zone, the
answer is the whole zone (RFC 1995 4).

An update is checked against the signer's grants, then written through the node's
ConfigService on the store it follows: the one path every change takes (the same
compiler, the audit row in the commit's transaction, the version check), so an update is
a version like any other, its author ``tsig:<key>``. The node has that store already
(it follows it); going through the API would need a token and the API's address, which a
DNS node has no other use for.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import dns.tsig
import dns.update

from gtm import log
from gtm.config.document import ZONES, CompiledConfig, compile_document
from gtm.config.tsig import TRANSFERS, TSIG, UPDATES, Grant, TransferRule
from gtm.control.notify import Notifier
from gtm.control.service import ConfigService
from gtm.control.tsig import open_keys
from gtm.dns.operations import Channel
from gtm.dns.update import UpdateRefused, apply_update, rrsets_of, zone_text
from gtm.dns.wire import error_reply
from gtm.dns.xfr import (
    ZoneContent,
    axfr_rrsets,
    changed_records,
    ixfr_rrsets,
    messages,
    newer,
    unsigned_tsig_error,
    up_to_date,
    zone_content,
)
from gtm.dns.zone import Zone, name_key
from gtm.dns.zonefile import read_master_text
from gtm.errors import ConfigError, StoreUnavailable, VersionConflict
from gtm.sealing import SecretKey

IXFR_HISTORY = 32         # stored versions searched for an IXFR client's serial
CONTENTS_KEPT = 8         # zone contents of past versions kept for IXFR
TRANSFER_TIMEOUT = 120.0  # a whole transfer, however slowly the client reads
TRANSFERS_PER_CLIENT = 2  # at once, per client address
TRANSFERS_AT_ONCE = 16
DATAGRAMS_AT_ONCE = 64    # updates over UDP being worked on; more are dropped
UPDATE_ATTEMPTS = 3       # a concurrent change elsewhere: read again and retry
SERVED_WAIT = 5.0         # an update is answered once this node serves it (at most this)
BADTIME = dns.rcode.BADTIME
BADSIG = dns.rcode.BADSIG
BADKEY = dns.rcode.BADKEY


@dataclass(frozen=True)
class Signed:
    """A message, and the key that signed it (None: unsigned)."""

    message: dns.message.Message
    key: dns.tsig.Key | None

    @property
    def key_name(self) -> str | None:
        return None if self.key is None else self.key.name.to_text(omit_final_dot=True)


class Refusal(Exception):
    def __init__(self, reply: bytes):
        super().__init__("refused")
        self.reply = reply


class ZoneOperations:
    def __init__(self, secret_key: SecretKey | None, service: ConfigService | None = None,
                 notifier: Notifier | None = None):
        self.secret_key = secret_key
        self.service = service  # None: updates are refused (no store to write to)
        self.notifier = notifier
        self.version = 0
        self.compiled: CompiledConfig | None = None
        self.keys: dict[dns.name.Name, dns.tsig.Key] = {}
        self.rules: Mapping[str, TransferRule] = {}
        self.grants: Mapping[str, tuple[Grant, ...]] = {}
        self.contents: OrderedDict[tuple[int, str], ZoneContent | None] = OrderedDict()
        self.transfers: dict[str, int] = {}
        self.datagrams: set[asyncio.Task[None]] = set()
        self.update_lock = asyncio.Lock()
        self.applied = asyncio.Event()  # set (and replaced) on every version applied

    def apply(self, version: int, compiled: CompiledConfig) -> None:
        """Use a new version from the next message on (and notify its new serials)."""
        sections = compiled.sections
        self.keys = open_keys(sections.get(TSIG, {}), self.secret_key)
        self.rules = sections.get(TRANSFERS, {})
        self.grants = sections.get(UPDATES, {})
        self.version, self.compiled = version, compiled
        applied, self.applied = self.applied, asyncio.Event()
        applied.set()
        if self.notifier is not None:
            self.notifier.update(compiled.zones.zones.values(), self.rules, self.keys)

    async def close(self) -> None:
        for task in list(self.datagrams):
            task.cancel()
        if self.notifier is not None:
            await self.notifier.close()

    # The transports' side (gtm.dns.operations.Operations).

    def datagram(self, data: bytes, peer: tuple[str, int],
                 send: Callable[[bytes, tuple[str, int]], None]) -> None:
        if len(self.datagrams) >= DATAGRAMS_AT_ONCE:
            return  # the client retries, as for a lost packet

        async def answer() -> None:
            reply = await self._answer(data, peer[0], None)
            if reply is not None:
                send(reply, peer)

        task = asyncio.get_running_loop().create_task(answer())
        self.datagrams.add(task)
        task.add_done_callback(self.datagrams.discard)

    async def stream(self, data: bytes, peer: str | None, channel: Channel) -> None:
        try:
            async with asyncio.timeout(TRANSFER_TIMEOUT):
                reply = await self._answer(data, peer, channel)
        except TimeoutError:
            log.dns.warning("transfer to %s took longer than %gs: closed", peer,
                            TRANSFER_TIMEOUT)
            channel.close()
            return
        if reply is not None:
            channel.send(reply)

    async def _answer(self, data: bytes, peer: str | None, channel: Channel | None
                      ) -> bytes | None:
        try:
            signed = self._verified(data, peer)
            if signed.message.opcode() == dns.opcode.UPDATE:
                return await self._update(signed, peer)
            assert channel is not None
            await self._transfer(signed, peer, channel)
            return None
        except Refusal as refusal:
            return refusal.reply
        except Exception:  # the error boundary: one bad message never stops the server
            log.dns.exception("internal error answering a transfer or update from %s", peer)
            return _bare(data, dns.rcode.SERVFAIL)

    # TSIG (RFC 8945 5.2).

    def _verified(self, data: bytes, peer: str | None) -> Signed:
        try:
            unchecked = dns.message.from_wire(data, keyring=False)
        except Exception as exc:  # dnspython raises many kinds for malformed input
            log.dns.info("malformed transfer or update from %s: %s", peer, exc)
            raise Refusal(_bare(data, dns.rcode.FORMERR)) from None
        if not unchecked.had_tsig:
            return Signed(unchecked, None)
        key = self.keys.get(unchecked.keyname) if unchecked.keyname is not None else None
        if key is None:
            log.dns.warning("TSIG key %s from %s is unknown: NOTAUTH (BADKEY)",
                            unchecked.keyname, peer)
            raise Refusal(unsigned_tsig_error(_reply(unchecked, dns.rcode.NOTAUTH),
                                              unchecked, BADKEY))
        try:
            return Signed(dns.message.from_wire(data, keyring=key), key)
        except dns.tsig.BadTime:
            log.dns.warning("TSIG time from %s is outside the fudge: NOTAUTH (BADTIME)",
                            peer)
            raise Refusal(_badtime(unchecked, key)) from None
        except (dns.tsig.BadSignature, dns.tsig.BadAlgorithm, dns.tsig.BadKey,
                dns.tsig.PeerError, dns.exception.FormError) as exc:
            error = BADKEY if isinstance(exc, dns.tsig.BadAlgorithm | dns.tsig.BadKey) \
                else BADSIG
            log.dns.warning("TSIG from %s with key %s does not verify (%s): NOTAUTH (%s)",
                            peer, key.name, type(exc).__name__, dns.rcode.to_text(error))
            raise Refusal(unsigned_tsig_error(_reply(unchecked, dns.rcode.NOTAUTH),
                                              unchecked, error)) from None

    # Transfers.

    async def _transfer(self, signed: Signed, peer: str | None, channel: Channel) -> None:
        query = signed.message
        if len(query.question) != 1:
            raise Refusal(_signed_reply(query, dns.rcode.FORMERR))
        question = query.question[0]
        zone = self._zone(question.name)
        if zone is None:
            raise Refusal(_signed_reply(query, dns.rcode.NOTAUTH))
        origin = zone.origin.to_text().lower()
        rule = self.rules.get(origin)
        if rule is None or not rule.permits(peer, signed.key_name):
            log.dns.warning("transfer of %s to %s (key %s) refused: not allowed by "
                            "transfers[%r]", origin, peer, signed.key_name or "none", origin)
            raise Refusal(_signed_reply(query, dns.rcode.REFUSED))
        client = peer or "?"
        if self.transfers.get(client, 0) >= TRANSFERS_PER_CLIENT or \
                sum(self.transfers.values()) >= TRANSFERS_AT_ONCE:
            log.dns.warning("transfer of %s to %s refused: too many at once", origin, client)
            raise Refusal(_signed_reply(query, dns.rcode.REFUSED))
        self.transfers[client] = self.transfers.get(client, 0) + 1
        try:
            await self._send_transfer(signed, zone, question.rdtype, channel, client)
        finally:
            self.transfers[client] -= 1
            if not self.transfers[client]:
                del self.transfers[client]

    async def _send_transfer(self, signed: Signed, zone: Zone, rdtype: int,
                             channel: Channel, client: str) -> None:
        loop = asyncio.get_running_loop()
        current = await loop.run_in_executor(None, zone_content, zone)
        kind, rrsets = "AXFR", axfr_rrsets(current)
        if rdtype == dns.rdatatype.IXFR:
            kind, rrsets = await self._incremental(signed.message, current)
        count = 0
        for wire in messages(signed.message, rrsets, signed.key):
            channel.send(wire)
            count += 1
            await channel.drain()
        log.dns.info("%s of %s serial %d to %s (key %s): %d messages", kind,
                     zone.origin, current.serial, client, signed.key_name or "none", count)

    async def _incremental(self, query: dns.message.Message, current: ZoneContent
                           ) -> tuple[str, Any]:
        soa = next((r for r in query.authority if r.rdtype == dns.rdatatype.SOA), None)
        if soa is None or not len(soa):
            raise Refusal(_signed_reply(query, dns.rcode.FORMERR))
        serial = int(soa[0].serial)
        if not newer(current.serial, serial):
            return "IXFR (up to date)", up_to_date(current)
        old = await self._content_at(current.origin, serial)
        if old is None or changed_records(old, current) >= len(current.records):
            return "IXFR (as AXFR)", axfr_rrsets(current)
        return f"IXFR from {serial}", ixfr_rrsets(old, current)

    async def _content_at(self, origin: dns.name.Name, serial: int) -> ZoneContent | None:
        """The zone as it was at ``serial``, from the newest stored version that had it."""
        if self.service is None:
            return None
        low = max(1, self.version - IXFR_HISTORY)
        for number in range(self.version - 1, low - 1, -1):
            content = await self._content_of(number, origin)
            if content is not None and content.serial == serial:
                return content
        return None

    async def _content_of(self, number: int, origin: dns.name.Name) -> ZoneContent | None:
        key = (number, origin.to_text())
        if key in self.contents:
            self.contents.move_to_end(key)
            return self.contents[key]
        assert self.service is not None
        record = await self.service.store.get(number)

        def build() -> ZoneContent | None:
            if record is None or record.document is None:
                return None
            try:
                compiled = compile_document(record.document, f"version {number}")
            except ConfigError:
                return None
            zone = compiled.zones.zones.get(name_key(origin))
            return zone_content(zone) if zone is not None else None

        content = await asyncio.get_running_loop().run_in_executor(None, build)
        self.contents[key] = content
        while len(self.contents) > CONTENTS_KEPT:
            self.contents.popitem(last=False)
        return content

    def _zone(self, name: dns.name.Name) -> Zone | None:
        if self.compiled is None:
            return None
        return self.compiled.zones.zones.get(name_key(name))

    # Dynamic updates (RFC 2136).

    async def _update(self, signed: Signed, peer: str | None) -> bytes:
        query = signed.message
        assert isinstance(query, dns.update.UpdateMessage)
        if len(query.zone) != 1 or query.zone[0].rdtype != dns.rdatatype.SOA:
            return self._refuse_update(query, dns.rcode.FORMERR, "the zone section must "
                                       "hold one SOA question", peer, signed.key_name)
        zone = self._zone(query.zone[0].name)
        if zone is None:
            return self._refuse_update(query, dns.rcode.NOTAUTH,
                                       f"{query.zone[0].name} is not a zone served here",
                                       peer, signed.key_name)
        origin = zone.origin.to_text().lower()
        key = signed.key_name
        if key is None:
            return self._refuse_update(query, dns.rcode.REFUSED, "an update must be signed "
                                       "with a TSIG key", peer, key, origin)
        grants = [g for g in self.grants.get(origin, ()) if g.key == key]
        if not grants:
            return self._refuse_update(query, dns.rcode.REFUSED, f"the key {key} has no "
                                       f"grant in updates[{origin!r}]", peer, key, origin)
        if self.service is None:
            return self._refuse_update(query, dns.rcode.REFUSED, "this node cannot write "
                                       "to the control plane", peer, key, origin)

        def allowed(name: dns.name.Name, rdtype: int) -> bool:
            return any(g.covers(key, name, rdtype) for g in grants)

        async with self.update_lock:
            for _ in range(UPDATE_ATTEMPTS):
                try:
                    version = await self._commit(query, zone.origin, key, allowed)
                except VersionConflict:
                    continue
                except UpdateRefused as exc:
                    return self._refuse_update(query, exc.rcode, exc.reason, peer, key,
                                               origin)
                except ConfigError as exc:
                    return self._refuse_update(query, dns.rcode.REFUSED,
                                               f"the zone would not compile: {exc}", peer,
                                               key, origin)
                except StoreUnavailable as exc:
                    log.dns.error("update of %s by %s: the store is unavailable: %s",
                                  origin, key, exc)
                    return _signed_reply(query, dns.rcode.SERVFAIL)
                log.dns.info("update of %s by key %s from %s: %s", origin, key, peer,
                             f"version {version}" if version else "nothing to change")
                if version:  # a client reading its change back here finds it
                    await self._served(version)
                return _signed_reply(query, dns.rcode.NOERROR)
        return self._refuse_update(query, dns.rcode.SERVFAIL, "the configuration kept "
                                   "changing under the update", peer, key, origin)

    async def _commit(self, query: dns.update.UpdateMessage, origin: dns.name.Name,
                      key: str, allowed: Callable[[dns.name.Name, int], bool]) -> int | None:
        assert self.service is not None
        service = self.service
        head = await service.store.head()
        document = await service.document_at(head)
        zones = document.get(ZONES, {})
        name = next((n for n in zones if n.lower() == origin.to_text().lower()), None)
        if name is None:
            raise UpdateRefused(dns.rcode.NOTAUTH, f"{origin} is not in the latest version")
        records = read_master_text(zones[name], origin, f"zones[{name!r}]")
        applied = apply_update(rrsets_of(records), origin, query.prerequisite, query.update,
                               allowed)
        if not applied.changes:
            return None
        text = zone_text(applied.rrsets, origin, f"written by a dynamic update (RFC 2136); "
                         f"serial {applied.serial}")

        def change(doc: dict[str, Any]) -> dict[str, Any]:
            doc[ZONES][name] = text
            return doc

        proposal = await service.edit(head, f"tsig:{key}", f"dynamic update of {name} "
                                      f"({applied.changes} records, serial {applied.serial})",
                                      change)
        assert proposal.version is not None
        return proposal.version.number

    async def _served(self, version: int) -> None:
        deadline = time.monotonic() + SERVED_WAIT
        while self.version < version and time.monotonic() < deadline:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.applied.wait(), deadline - time.monotonic())

    def _refuse_update(self, query: dns.message.Message, rcode: int, reason: str,
                       peer: str | None, key: str | None, zone: str | None = None) -> bytes:
        log.dns.warning("update%s from %s (key %s) refused, %s: %s",
                        f" of {zone}" if zone else "", peer, key or "none",
                        dns.rcode.to_text(dns.rcode.Rcode.make(rcode)), reason)
        if self.service is not None and zone is not None:
            task = asyncio.get_running_loop().create_task(self.service.audit(
                f"tsig:{key}" if key else f"dns:{peer}", "dns.update", zone,
                dns.rcode.to_text(dns.rcode.Rcode.make(rcode)).lower(),
                {"error": reason, "client": peer}))
            self.datagrams.add(task)
            task.add_done_callback(self.datagrams.discard)
        return _signed_reply(query, rcode)


def _reply(query: dns.message.Message, rcode: int) -> bytes:
    """An unsigned reply with the question (or zone section) and ``rcode``."""
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.Rcode.make(rcode))
    return response.to_wire()


def _signed_reply(query: dns.message.Message, rcode: int) -> bytes:
    """A reply signed with the query's key when it had one (make_response does it)."""
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.Rcode.make(rcode))
    if query.opcode() == dns.opcode.QUERY:
        response.flags |= dns.flags.AA
    return response.to_wire()


def _badtime(query: dns.message.Message, key: dns.tsig.Key) -> bytes:
    """NOTAUTH with BADTIME, signed, our time in the other data (RFC 8945 5.2.3)."""
    response = dns.message.make_response(query)
    response.set_rcode(dns.rcode.NOTAUTH)
    now = int(time.time()).to_bytes(6, "big")
    response.use_tsig(key, tsig_error=BADTIME, other_data=now, algorithm=key.algorithm)
    response.request_mac = query.mac or b""
    return response.to_wire()


def _bare(data: bytes, rcode: int) -> bytes:
    return error_reply(data, rcode)
