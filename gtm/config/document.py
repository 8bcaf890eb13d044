"""The configuration document: one JSON object, validated and compiled as a whole.

``{"zones": {"example.test.": "<master-file text>"}, "steering": {...}, "lb": {...}}``

The same compiler runs at the API before anything is stored and on every node
before anything is served, so a document that passes here is one every node can
serve. Errors are ConfigErrors whose ``where`` is a JSON path into the document
(``zones["example.test."]:14``, ``steering.pools[2].weight``) so an operator can
find the offending field without knowing how the document is split up.

Sections other than ``zones`` belong to other parts of the system (steering, the
load balancer); they plug their validators in with :func:`register_section`, or, from a
package gtm does not import, through the ``gtm.sections`` entry points
(gtm.config.sections): regional_lb compiles ``lb`` that way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import dns.exception
import dns.name
import dns.rdatatype

from gtm.config.challenges import CHALLENGES, check_challenges, records_by_zone
from gtm.config.cookies import DNS_COOKIES, check_dns_cookies
from gtm.config.drills import DRILLS
from gtm.config.drills import parse_section as check_drills
from gtm.config.sections import SectionValidator, discovered_validators, valid_section_name
from gtm.config.steering import (
    STATE,
    STEERING,
    attach_all,
    check_zone_table,
    sections_from_zone_dir,
)
from gtm.config.tsig import (
    TRANSFERS,
    TSIG,
    UPDATES,
    check_references,
    check_transfers,
    check_tsig,
    check_updates,
)
from gtm.dns.answer import ZoneSet
from gtm.dns.zone import Zone, compile_zone
from gtm.dns.zonefile import Record, read_master_text
from gtm.errors import ConfigError, ZoneError

ZONES = "zones"


def accept_object(value: Any, source: str, path: str) -> Any:
    """The default validator: any JSON object, kept as it is."""
    if not isinstance(value, dict):
        raise ConfigError(f"must be an object, not {_json_type(value)}", source, path)
    return value


_SECTIONS: dict[str, SectionValidator] = {
    "steering": check_zone_table,
    "state": check_zone_table,
    # Compiled by regional_lb (its `gtm.sections` entry point) when it is installed;
    # without it, any object is kept as it is.
    "lb": accept_object,
    CHALLENGES: check_challenges,
    DNS_COOKIES: check_dns_cookies,
    DRILLS: check_drills,
    TSIG: check_tsig,
    TRANSFERS: check_transfers,
    UPDATES: check_updates,
    **discovered_validators(),
}


def register_section(name: str, validator: SectionValidator) -> None:
    """Make ``name`` a known top-level section, checked (and compiled) by ``validator``.

    Registering a name again replaces its validator: the steering and load balancer
    packages replace the permissive defaults with their own.
    """
    if not valid_section_name(name):
        raise ValueError(f"cannot register a section named {name!r}")
    _SECTIONS[name] = validator


def known_sections() -> tuple[str, ...]:
    return (ZONES, *sorted(_SECTIONS))


@dataclass(frozen=True)
class CompiledConfig:
    """Everything a node serves from one version of the document; never changes."""

    zones: ZoneSet
    sections: Mapping[str, Any]
    document: Mapping[str, Any]
    digest: str
    warnings: tuple[str, ...] = field(default=())


def compile_document(doc: Any, source: str) -> CompiledConfig:
    """Validate and compile a whole document, or raise the first ConfigError found."""
    if not isinstance(doc, dict):
        raise ConfigError(f"the document must be an object, not {_json_type(doc)}", source, "$")
    unknown = sorted(set(doc) - {ZONES, *_SECTIONS})
    if unknown:
        known = ", ".join(known_sections())
        raise ConfigError(f"unknown section (known: {known})", source, unknown[0])
    sections = {
        name: validator(doc[name], source, name)
        for name, validator in sorted(_SECTIONS.items())
        if name in doc
    }
    check_references(sections, doc.get(ZONES, {}), source)
    zones, warnings = _compile_zones(doc.get(ZONES, {}), source,
                                     sections.get(CHALLENGES, {}))
    zones = attach_all(zones, sections.get(STEERING, {}), sections.get(STATE, {}), source)
    return CompiledConfig(
        zones=ZoneSet.of(zones),
        sections=MappingProxyType(sections),
        document=MappingProxyType(dict(doc)),
        digest=digest(doc),
        warnings=tuple(warnings),
    )


def zone_path(name: str) -> str:
    return f"{ZONES}[{json.dumps(name)}]"


def _compile_zones(section: Any, source: str, challenges: Mapping[str, tuple[str, ...]]
                   ) -> tuple[list[Zone], list[str]]:
    if not isinstance(section, dict):
        raise ConfigError(
            f"must be an object of zone name to master-file text, not {_json_type(section)}",
            source,
            ZONES,
        )
    zones: list[Zone] = []
    warnings: list[str] = []
    seen: dict[tuple[bytes, ...], str] = {}
    extra = records_by_zone(challenges, section, source)
    for name, text in section.items():
        zone = compile_zone_text(name, text, source, extra.get(name, ()))
        if zone.key in seen:
            raise ConfigError(f"same zone as {seen[zone.key]!r}", source, zone_path(name))
        seen[zone.key] = name
        zones.append(zone)
        warnings.extend(zone.warnings)
    return zones, warnings


def compile_zone_text(name: str, text: Any, source: str, extra: Sequence[Record] = ()) -> Zone:
    """One zone of the document; errors point at ``zones["name"]`` and the line.

    ``extra`` records (ACME challenges) are checked with the zone's own: one that
    clashes (below a delegation, beside a CNAME) is named by its own path."""
    path = zone_path(name)
    if not name.endswith("."):
        raise ConfigError("a zone name must be absolute (end with '.')", source, path)
    try:
        origin = dns.name.from_text(name)
    except dns.exception.DNSException as exc:
        raise ConfigError(f"not a domain name: {exc}", source, path) from exc
    if not isinstance(text, str):
        raise ConfigError(f"must be master-file text, not {_json_type(text)}", source, path)
    try:
        return compile_zone(origin, [*read_master_text(text, origin, path), *extra], path)
    except ZoneError as exc:
        if exc.source is not None and exc.source.startswith(CHALLENGES):
            raise ConfigError(exc.reason, source, exc.source) from exc
        where = path if exc.where is None else f"{path}:{exc.where}"
        raise ConfigError(exc.reason, source, where) from exc


def canonical_json(doc: Any) -> str:
    """The one text of a document: stored, hashed and compared in this form."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def digest(doc: Any) -> str:
    return hashlib.sha256(canonical_json(doc).encode()).hexdigest()


def document_from_zone_dir(directory: Path) -> dict[str, Any]:
    """A document holding every ``<zone>.zone`` file of a directory (to seed a store).

    A document's zone has no directory for $INCLUDE to read from, so a file that
    includes others is flattened into one record per line (its comments are lost);
    other files are kept as written.
    """
    zones: dict[str, str] = {}
    for path in sorted(directory.glob("*.zone")):
        if not path.is_file():
            continue
        zones[zone_name_of(path)] = zone_text_from_file(path)
    return {ZONES: zones, **sections_from_zone_dir(directory)}


def zone_name_of(path: Path) -> str:
    """The zone a ``<zone>.zone`` file holds, as the document names it."""
    return path.name.removesuffix(".zone").rstrip(".") + "."


def zone_text_from_file(path: Path) -> str:
    """A zone file's text as the document holds it; a ZoneError names file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ZoneError(f"cannot read: {exc}", str(path)) from exc
    return _flattened(path, zone_name_of(path)) if "$INCLUDE" in text.upper() else text


def _flattened(path: Path, name: str) -> str:
    from gtm.dns.zonefile import read_master_file

    records = read_master_file(path, dns.name.from_text(name))
    return "".join(
        f"{r.name.to_text()} {r.ttl} IN {dns.rdatatype.to_text(r.rdata.rdtype)} "
        f"{r.rdata.to_text()}\n"
        for r in records
    )


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "a number"
    return names.get(type(value), type(value).__name__)
