"""The ``challenges`` section: ACME DNS-01 TXT records the authoritative servers publish.

``{"_acme-challenge.www.example.test.": ["<value>", ...]}``. An ACME client (ours,
regional_lb.acme, or any other with an editor token) writes a value here while a CA
validates a name, and removes it afterwards. The records join the zone that holds the
name, so every node serves them from the same version, and each change is audited
like any other. Two values under one name are normal: an order for ``example.test``
and ``*.example.test`` proves both at ``_acme-challenge.example.test``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype

from gtm.dns.zonefile import Record
from gtm.errors import ConfigError

CHALLENGES = "challenges"
LABEL = b"_acme-challenge"
TTL = 10          # validators query the authoritative servers; resolvers should not keep it
MAX_VALUES = 32   # per name: a few orders at once, not a data store
MAX_NAMES = 1000

Challenges = Mapping[str, tuple[str, ...]]


def challenge_path(name: str) -> str:
    return f"{CHALLENGES}[{json.dumps(name)}]"


def check_challenges(value: Any, source: str, path: str) -> dict[str, tuple[str, ...]]:
    """The section validated: absolute ``_acme-challenge.`` names to lists of TXT values."""
    if not isinstance(value, dict):
        raise ConfigError("must be an object of _acme-challenge names to lists of values",
                          source, path)
    if len(value) > MAX_NAMES:
        raise ConfigError(f"holds more than {MAX_NAMES} names", source, path)
    checked: dict[str, tuple[str, ...]] = {}
    for name, values in value.items():
        where = challenge_path(name)
        _check_name(name, source, where)
        checked[name] = _check_values(values, source, where)
    return checked


def _check_name(name: str, source: str, where: str) -> None:
    if not name.endswith("."):
        raise ConfigError("must be an absolute name (end with '.')", source, where)
    try:
        parsed = dns.name.from_text(name)
    except dns.exception.DNSException as exc:
        raise ConfigError(f"not a domain name: {exc}", source, where) from exc
    if len(parsed.labels) < 3 or parsed.labels[0].lower() != LABEL:
        raise ConfigError("must start with the _acme-challenge label (RFC 8555 8.4)",
                          source, where)


def _check_values(values: Any, source: str, where: str) -> tuple[str, ...]:
    if not isinstance(values, list) or not values:
        raise ConfigError("must be a non-empty list of TXT values", source, where)
    if len(values) > MAX_VALUES:
        raise ConfigError(f"holds more than {MAX_VALUES} values", source, where)
    for i, text in enumerate(values):
        if not isinstance(text, str) or not 0 < len(text) <= 255 \
                or not text.isascii() or not text.isprintable() or '"' in text:
            raise ConfigError("must be printable ASCII of 1 to 255 characters, without '\"'",
                              source, f"{where}[{i}]")
    return tuple(dict.fromkeys(values))  # the same value twice is one record


def records_by_zone(challenges: Challenges, zone_names: Iterable[str], source: str
                    ) -> dict[str, list[Record]]:
    """TXT records grouped under the document zone (its key) that holds each name."""
    grouped: dict[str, list[Record]] = {}
    if not challenges:
        return grouped
    origins = {}
    for zone in zone_names:
        try:
            origins[zone] = dns.name.from_text(zone)
        except dns.exception.DNSException:
            continue  # the zone's own compile says what is wrong with its name
    for name, values in challenges.items():
        owner = dns.name.from_text(name)
        holders = [z for z, origin in origins.items() if owner.is_subdomain(origin)]
        if not holders:
            raise ConfigError("is in no zone of the document", source, challenge_path(name))
        zone = max(holders, key=lambda z: len(origins[z].labels))
        grouped.setdefault(zone, []).extend(
            Record(owner, TTL, _txt(value), challenge_path(name), 0) for value in values)
    return grouped


def _txt(value: str) -> dns.rdata.Rdata:
    return dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.TXT, f'"{value}"')
