"""The ``tsig``, ``transfers`` and ``updates`` sections: who may transfer and change zones.

``tsig``: ``{"keys": {"NAME": {"algorithm": "hmac-sha256", "sealed": B64, "nonce": B64,
"key_id": HEX, "created_at": UNIX}}}``. Each secret is sealed with the control plane's
secret key (gtm.sealing), like the DNS cookie secrets: the store, its backups and the API
show ciphertext only; a DNS node opens them with its copy of the key (gtm.control.tsig).

``transfers``: per zone, ``{"allow": ["192.0.2.0/24"], "keys": ["sec1"],
"notify": ["192.0.2.53:53"]}``. A transfer (AXFR, IXFR) needs every condition listed:
an address in ``allow`` when it is given, a TSIG signature by one of ``keys`` when they
are given; a zone with neither is never transferred. ``notify``: the secondaries told of
each new serial (RFC 1996), signed with the first of ``keys`` when there is one.

``updates``: per zone, grants ``[{"key": "acme", "names": ["_acme-challenge.example.test.",
"_acme-challenge.*.example.test."], "types": ["TXT"]}]``. A dynamic update (RFC 2136)
signed by ``key`` may change records whose owner matches one of ``names`` (``*`` stands
for one or more whole labels; no ``names``: any name of the zone) and whose type is one of
``types`` (none: any type but SOA). Anything else is refused.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.name
import dns.rdatatype

from gtm.config_reader import IpNetwork, Listen, Place, Reader, parse_listen
from gtm.errors import ConfigError

TSIG = "tsig"
TRANSFERS = "transfers"
UPDATES = "updates"
ALGORITHMS = ("hmac-sha256", "hmac-sha512")
KEY_FIELDS = ("algorithm", "sealed", "nonce", "key_id", "created_at")
MAX_KEYS = 256
MAX_LISTED = 64  # networks, keys, notify targets, grants, names or types in one list
KEY_NAME = re.compile(r"[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9_-]{0,61}"
                      r"[a-z0-9])?)*")
FORBIDDEN_TYPES = ("SOA", "ANY", "AXFR", "IXFR", "TSIG", "OPT", "TKEY")


@dataclass(frozen=True)
class SealedTsigKey:
    name: str
    algorithm: str
    ciphertext: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    key_id: str
    created_at: float


@dataclass(frozen=True)
class TransferRule:
    zone: str
    allow: tuple[IpNetwork, ...] = ()
    keys: tuple[str, ...] = ()
    notify: tuple[Listen, ...] = ()

    def permits(self, address: str | None, key: str | None) -> bool:
        """Every listed condition holds; a rule listing none permits nothing."""
        if not self.allow and not self.keys:
            return False
        if self.keys and key not in self.keys:
            return False
        if self.allow:
            if address is None:
                return False
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                return False
            if not any(ip in network for network in self.allow):
                return False
        return True


@dataclass(frozen=True)
class Grant:
    key: str
    names: tuple[str, ...] = ()  # lower-case absolute patterns; () is the whole zone
    types: tuple[int, ...] = ()  # () is any type but SOA

    def covers(self, key: str, owner: dns.name.Name, rdtype: int) -> bool:
        if key != self.key:
            return False
        if self.types and rdtype not in self.types:
            return False
        if not self.types and rdtype == dns.rdatatype.SOA:
            return False
        if not self.names:
            return True
        text = owner.to_text().lower()
        return any(_matches(pattern, text) for pattern in self.names)


def _matches(pattern: str, text: str) -> bool:
    """``*`` stands for one or more whole labels."""
    parts = [re.escape(part) for part in pattern.split("*")]
    return re.fullmatch(r"(?:[^.]+(?:\.[^.]+)*)".join(parts), text) is not None


def valid_key_name(name: str) -> bool:
    return len(name) <= 253 and KEY_NAME.fullmatch(name) is not None


def check_tsig(value: Any, source: str, path: str) -> Mapping[str, SealedTsigKey]:
    section = Place(source, path).table(value, ("keys",))
    found: dict[str, SealedTsigKey] = {}
    items = section.value("keys", {})
    if not isinstance(items, dict):
        raise section.fail("keys", "must be an object of key name to key")
    if len(items) > MAX_KEYS:
        raise section.fail("keys", f"holds more than {MAX_KEYS} keys")
    for name, item in items.items():
        place = Place(source, f"{path}.keys[{json.dumps(name)}]")
        if not isinstance(name, str) or not valid_key_name(name):
            raise place.fail("a key name is lower-case letters, digits, '-' and '_' in "
                             "dot-separated labels")
        table = place.table(item, KEY_FIELDS)
        found[name] = SealedTsigKey(
            name=name, algorithm=table.choice("algorithm", ALGORITHMS),
            ciphertext=_base64(table, "sealed"), nonce=_base64(table, "nonce"),
            key_id=table.text("key_id", empty=False),
            created_at=table.number("created_at", low=0))
    return found


def _base64(table: Reader, key: str) -> bytes:
    try:
        return base64.b64decode(table.text(key, empty=False), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise table.fail(key, "must be base64") from exc


def check_transfers(value: Any, source: str, path: str) -> Mapping[str, TransferRule]:
    rules: dict[str, TransferRule] = {}
    for zone, item in _zone_items(value, source, path):
        where = f"{path}[{json.dumps(zone)}]"
        table = Reader(item, source, where, keys=("allow", "keys", "notify")) \
            if isinstance(item, dict) else None
        if table is None:
            raise ConfigError("must be an object (allow, keys, notify)", source, where)
        allow = table.networks("allow", strict=False) if "allow" in table else ()
        keys = tuple(_key_names(table, "keys"))
        notify = tuple(_targets(table)) if "notify" in table else ()
        for listed, name in ((allow, "allow"), (keys, "keys"), (notify, "notify")):
            if len(listed) > MAX_LISTED:
                raise table.fail(name, f"lists more than {MAX_LISTED}")
        rules[zone] = TransferRule(zone, allow, keys, notify)
    return rules


def _targets(table: Reader) -> list[Listen]:
    targets = []
    for place, text in table.items("notify"):
        if not isinstance(text, str):
            raise place.fail("must be an address (HOST or HOST:PORT)")
        try:
            targets.append(parse_listen(text, 53))
        except ConfigError as exc:
            raise place.fail(exc.reason) from None
    return targets


def check_updates(value: Any, source: str, path: str) -> Mapping[str, tuple[Grant, ...]]:
    grants: dict[str, tuple[Grant, ...]] = {}
    for zone, items in _zone_items(value, source, path):
        where = f"{path}[{json.dumps(zone)}]"
        if not isinstance(items, list) or len(items) > MAX_LISTED:
            raise ConfigError(f"must be a list of at most {MAX_LISTED} grants", source, where)
        found = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ConfigError("must be an object (key, names, types)", source,
                                  f"{where}[{i}]")
            table = Reader(item, source, f"{where}[{i}]", keys=("key", "names", "types"))
            key = table.text("key", empty=False)
            if not valid_key_name(key):
                raise table.fail("key", "is not a key name")
            found.append(Grant(key, tuple(_patterns(table, zone)), tuple(_types(table))))
        grants[zone] = tuple(found)
    return grants


def _zone_items(value: Any, source: str, path: str) -> list[tuple[str, Any]]:
    if not isinstance(value, dict):
        raise ConfigError("must be an object of zone name to settings", source, path)
    items = []
    for zone, item in value.items():
        where = f"{path}[{json.dumps(zone)}]"
        try:
            if not zone.endswith("."):
                raise ValueError
            canonical = dns.name.from_text(zone).to_text().lower()
        except (ValueError, dns.exception.DNSException):
            raise ConfigError("must be an absolute zone name (ending with '.')", source,
                              where) from None
        items.append((canonical, item))
    return items


def _key_names(table: Reader, key: str) -> list[str]:
    names = []
    for place, name in (table.items(key) if key in table else ()):
        if not isinstance(name, str) or not valid_key_name(name):
            raise place.fail("is not a key name")
        names.append(name)
    return names


def _patterns(table: Reader, zone: str) -> list[str]:
    patterns = []
    for place, text in (table.items("names") if "names" in table else ()):
        if not isinstance(text, str) or not text.endswith(".") or len(text) > 255:
            raise place.fail("must be an absolute name (ending with '.'); '*' stands for "
                             "one or more labels")
        lowered = text.lower()
        if lowered != zone and not lowered.endswith("." + zone):
            raise place.fail(f"is not in the zone {zone}")
        patterns.append(lowered)
    if len(patterns) > MAX_LISTED:
        raise table.fail("names", f"lists more than {MAX_LISTED}")
    return patterns


def _types(table: Reader) -> list[int]:
    types = []
    for place, text in (table.items("types") if "types" in table else ()):
        if not isinstance(text, str) or text.upper() in FORBIDDEN_TYPES:
            raise place.fail("must be a record type an update may change (not SOA)")
        try:
            types.append(int(dns.rdatatype.from_text(text.upper())))
        except dns.exception.DNSException:
            raise place.fail("is not a record type") from None
    if len(types) > MAX_LISTED:
        raise table.fail("types", f"lists more than {MAX_LISTED}")
    return types


def check_references(sections: Mapping[str, Any], zones: Any, source: str) -> None:
    """Every key a transfer rule or grant names exists; every zone they name is served."""
    keys = sections.get(TSIG, {})
    served = {str(z).lower() for z in zones} if isinstance(zones, dict) else set()
    for section, zone_map in ((TRANSFERS, sections.get(TRANSFERS, {})),
                              (UPDATES, sections.get(UPDATES, {}))):
        for zone, value in zone_map.items():
            where = f"{section}[{json.dumps(zone)}]"
            if zone not in served:
                raise ConfigError("is not a zone of the document", source, where)
            named = value.keys if isinstance(value, TransferRule) else \
                tuple(g.key for g in value)
            for key in named:
                if key not in keys:
                    raise ConfigError(f"names the TSIG key {key!r}, which does not exist "
                                      "(gtm tsig add)", source, where)
