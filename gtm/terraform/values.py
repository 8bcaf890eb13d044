"""Normal forms: two spellings of one value compare equal, so plans stay quiet.

A value the user wrote and the value the API gives back may differ only in spelling
(``2001:DB8::1`` / ``2001:db8::1``, a name with or without its final dot, a zone whose
SOA serial moved). The resources keep the user's spelling in state whenever the two
normal forms agree; a real difference (drift) shows as it is.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

import dns.name
import dns.rdatatype

from gtm.errors import ConfigError, GtmError


def ip(text: Any) -> Any:
    try:
        return str(ipaddress.ip_address(str(text)))
    except ValueError:
        return text


def cidr(text: Any) -> Any:
    try:
        return str(ipaddress.ip_network(str(text), strict=False))
    except ValueError:
        return text


def zone_name(text: Any) -> Any:
    """An absolute DNS name in lower case: ``Example.test`` -> ``example.test.``."""
    return text.rstrip(".").lower() + "." if isinstance(text, str) else text


def number(value: Any) -> Any:
    """Integral numbers as int (msgpack and JSON may give 2 or 2.0)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def with_defaults(values: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    return {k: defaults.get(k) if v is None else v for k, v in values.items()}


def keyed(items: Iterable[Any]) -> Any:
    """A hashable normal form of nested JSON-like values (dict order ignored)."""
    if isinstance(items, dict):
        return tuple(sorted((k, keyed(v)) for k, v in items.items()))
    if isinstance(items, list | tuple):
        return tuple(keyed(v) for v in items)
    return number(items)


def zone_records(name: str, text: str) -> frozenset[tuple[str, int, str, str]]:
    """What a zone's master text means, with the SOA serial left out (the server's).

    Raises ConfigError for text that does not parse."""
    from gtm.dns.zonefile import read_master_text

    origin = dns.name.from_text(zone_name(name))
    try:
        records = read_master_text(text, origin, "text")
    except GtmError as exc:
        raise ConfigError(str(exc)) from exc
    meaning = set()
    for record in records:
        rdata = record.rdata
        if rdata.rdtype == dns.rdatatype.SOA:
            rdata = rdata.replace(serial=0)
        meaning.add((record.name.to_text().lower(), record.ttl,
                     dns.rdatatype.to_text(rdata.rdtype), rdata.to_text(origin=None).lower()))
    return frozenset(meaning)


def same_zone_text(name: str, a: Any, b: Any) -> bool:
    if a == b or not isinstance(a, str) or not isinstance(b, str):
        return bool(a == b)
    try:
        return zone_records(name, a) == zone_records(name, b)
    except ConfigError:
        return False
