"""Dynamic updates (RFC 2136) applied to a zone's records. Pure: records in, records out.

:func:`apply_update` checks the prerequisites (section 3.2), prescans the update section
(3.4.1), checks every change against the signer's grants, then applies it (3.4.2) and
moves the serial when anything changed (3.6). A refusal is an :class:`UpdateRefused`
carrying the rcode and the reason for the log.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.serial

from gtm.dns.zonefile import Record

SOA = dns.rdatatype.SOA
NS = dns.rdatatype.NS
CNAME = dns.rdatatype.CNAME
ANY = dns.rdatatype.ANY
NONE = dns.rdataclass.NONE
CLASS_ANY = dns.rdataclass.ANY
META = frozenset({dns.rdatatype.AXFR, dns.rdatatype.IXFR, dns.rdatatype.MAILA,
                  dns.rdatatype.MAILB, dns.rdatatype.TSIG, dns.rdatatype.TKEY,
                  dns.rdatatype.OPT})
Key = tuple[dns.name.Name, int]
Rrsets = dict[Key, dns.rrset.RRset]
Allowed = Callable[[dns.name.Name, int], bool]


class UpdateRefused(Exception):
    def __init__(self, rcode: int, reason: str):
        super().__init__(reason)
        self.rcode = rcode
        self.reason = reason


@dataclass(frozen=True)
class Applied:
    rrsets: Rrsets
    changes: int  # records added or removed; 0: nothing to store
    serial: int


def rrsets_of(records: Iterable[Record]) -> Rrsets:
    rrsets: Rrsets = {}
    for record in records:
        key = (record.name, record.rdtype)
        rrset = rrsets.get(key)
        if rrset is None:
            rrset = rrsets[key] = dns.rrset.RRset(record.name, dns.rdataclass.IN,
                                                  record.rdata.rdtype)
            rrset.update_ttl(record.ttl)
        rrset.add(record.rdata, min(record.ttl, rrset.ttl))
    return rrsets


def apply_update(rrsets: Rrsets, origin: dns.name.Name,
                 prerequisites: Sequence[dns.rrset.RRset],
                 updates: Sequence[dns.rrset.RRset], allowed: Allowed) -> Applied:
    check_prerequisites(rrsets, origin, prerequisites)
    prescan(origin, updates)
    for rrset in updates:
        _check_grant(rrsets, rrset, allowed)
    result = {key: _copy(rrset) for key, rrset in rrsets.items()}
    changes = sum(_apply_one(result, origin, rrset) for rrset in updates)
    serial = int(rrsets[(origin, SOA)][0].serial)
    new_soa = result[(origin, SOA)]
    if changes and int(new_soa[0].serial) == serial:
        bumped = (serial + 1) % 2**32 or 1  # serial arithmetic; 0 reads as "unset" to some
        soa = new_soa[0].replace(serial=bumped)
        new_soa.clear()
        new_soa.add(soa)
    return Applied(result, changes, int(new_soa[0].serial))


def check_prerequisites(rrsets: Rrsets, origin: dns.name.Name,
                        prerequisites: Sequence[dns.rrset.RRset]) -> None:
    wanted: dict[Key, dns.rrset.RRset] = {}
    for rrset in prerequisites:
        name, rdtype = rrset.name, rrset.rdtype
        if rrset.ttl != 0:
            raise UpdateRefused(dns.rcode.FORMERR, f"prerequisite {name} {_t(rdtype)} has a TTL")
        if not name.is_subdomain(origin):
            raise UpdateRefused(dns.rcode.NOTZONE, f"prerequisite {name} is outside {origin}")
        deleting = rrset.deleting
        if deleting in (CLASS_ANY, NONE) and len(rrset):
            raise UpdateRefused(dns.rcode.FORMERR, f"prerequisite {name} has data")
        in_use = any(key[0] == name for key in rrsets)
        if deleting == CLASS_ANY:
            if rdtype == ANY and not in_use:
                raise UpdateRefused(dns.rcode.NXDOMAIN, f"{name} is not in use")
            if rdtype != ANY and (name, rdtype) not in rrsets:
                raise UpdateRefused(dns.rcode.NXRRSET, f"{name} has no {_t(rdtype)} records")
        elif deleting == NONE:
            if rdtype == ANY and in_use:
                raise UpdateRefused(dns.rcode.YXDOMAIN, f"{name} is in use")
            if rdtype != ANY and (name, rdtype) in rrsets:
                raise UpdateRefused(dns.rcode.YXRRSET, f"{name} has {_t(rdtype)} records")
        elif deleting is None and rrset.rdclass == dns.rdataclass.IN:
            collected = wanted.setdefault((name, rdtype), dns.rrset.RRset(
                name, dns.rdataclass.IN, rdtype))
            collected.union_update(rrset)
        else:
            raise UpdateRefused(dns.rcode.FORMERR, f"prerequisite {name} has a bad class")
    for key, collected in wanted.items():
        present = rrsets.get(key)
        if present is None or set(present) != set(collected):
            raise UpdateRefused(dns.rcode.NXRRSET,
                                f"{key[0]} {_t(key[1])} is not the RRset the update expects")


def prescan(origin: dns.name.Name, updates: Sequence[dns.rrset.RRset]) -> None:
    for rrset in updates:
        name, rdtype = rrset.name, rrset.rdtype
        if not name.is_subdomain(origin):
            raise UpdateRefused(dns.rcode.NOTZONE, f"{name} is outside {origin}")
        deleting = rrset.deleting
        if rdtype in META or (rdtype == ANY and deleting != CLASS_ANY):
            raise UpdateRefused(dns.rcode.FORMERR, f"{name}: cannot update type {_t(rdtype)}")
        if deleting is None:
            if rrset.rdclass != dns.rdataclass.IN or not len(rrset):
                raise UpdateRefused(dns.rcode.FORMERR, f"{name}: bad class or no data")
        elif deleting == CLASS_ANY:
            if rrset.ttl != 0 or len(rrset):
                raise UpdateRefused(dns.rcode.FORMERR, f"{name}: a deletion carries no data")
        elif deleting == NONE:
            if rrset.ttl != 0:
                raise UpdateRefused(dns.rcode.FORMERR, f"{name}: a deletion has no TTL")
        else:
            raise UpdateRefused(dns.rcode.FORMERR, f"{name}: bad class")


def _check_grant(rrsets: Rrsets, rrset: dns.rrset.RRset, allowed: Allowed) -> None:
    name, rdtype = rrset.name, rrset.rdtype
    types = [t for (n, t) in rrsets if n == name] if rdtype == ANY else [rdtype]
    for each in types:
        if not allowed(name, each):
            raise UpdateRefused(dns.rcode.REFUSED,
                                f"the key may not change {name} {_t(each)}")


def _apply_one(rrsets: Rrsets, origin: dns.name.Name, rrset: dns.rrset.RRset) -> int:
    name, rdtype, deleting = rrset.name, rrset.rdtype, rrset.deleting
    apex = name == origin
    if deleting is None:
        return _add(rrsets, origin, rrset)
    if deleting == CLASS_ANY:
        keys = [k for k in rrsets if k[0] == name and (rdtype == ANY or k[1] == rdtype)]
        if apex:
            keys = [k for k in keys if k[1] not in (SOA, NS)]
        return sum(len(rrsets.pop(k)) for k in keys)
    present = rrsets.get((name, rdtype))
    if present is None or (apex and rdtype == SOA):
        return 0
    removed = 0
    for rdata in rrset:
        if rdata in present and not (apex and rdtype == NS and len(present) == 1):
            present.discard(rdata)
            removed += 1
    if not len(present):
        del rrsets[(name, rdtype)]
    return removed


def _add(rrsets: Rrsets, origin: dns.name.Name, rrset: dns.rrset.RRset) -> int:
    name, rdtype = rrset.name, rrset.rdtype
    types = {t for (n, t) in rrsets if n == name}
    if (rdtype == CNAME and types - {CNAME}) or (rdtype != CNAME and CNAME in types):
        return 0  # RFC 2136 3.4.2.2: ignored
    if rdtype == SOA:
        if name != origin:
            return 0
        current = rrsets[(origin, SOA)]
        if dns.serial.Serial(int(rrset[0].serial)) <= dns.serial.Serial(
                int(current[0].serial)):
            return 0
        current.clear()
        current.add(rrset[0], rrset.ttl)
        return 1
    present = rrsets.get((name, rdtype))
    if present is None:
        present = rrsets[(name, rdtype)] = dns.rrset.RRset(name, dns.rdataclass.IN, rdtype)
        present.update_ttl(rrset.ttl)
    added = sum(1 for rdata in rrset if rdata not in present)
    if dns.rdatatype.is_singleton(rdtype):
        present.clear()
    present.ttl = rrset.ttl
    for rdata in rrset:
        present.add(rdata)
    return added


def zone_text(rrsets: Rrsets, origin: dns.name.Name, note: str) -> str:
    """The zone as master-file text, one record per line, the SOA first."""
    keys = sorted(rrsets, key=lambda k: (k[0] != origin or k[1] != SOA, k[0], k[1]))
    lines = [f"; {note}"]
    lines += [rrsets[key].to_text() for key in keys]
    return "\n".join(lines) + "\n"


def _copy(rrset: dns.rrset.RRset) -> dns.rrset.RRset:
    copied = dns.rrset.RRset(rrset.name, rrset.rdclass, rrset.rdtype)
    copied.update(rrset)
    return copied


def _t(rdtype: int) -> str:
    return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(rdtype))
