"""gtm_zone: one zone of the document, as RFC 1035 text or as a set of records."""

from __future__ import annotations

from typing import Any, ClassVar

import dns.name
import dns.rdatatype
from tf import types
from tf.iface import Config
from tf.schema import Attribute
from tf.types import Unknown
from tf.utils import Diagnostics

from gtm.errors import ConfigError
from gtm.terraform.api import Document, ProviderError
from gtm.terraform.base import ZONES, EntryResource, State, prune, table
from gtm.terraform.schema import Nested, Num, ZoneName, has_unknown
from gtm.terraform.values import same_zone_text, zone_name, zone_records

RECORDS_PREFIX = "records:"
RECORD_FIELDS = [
    Attribute("name", types.String(), required=True,
              description="Owner name, relative to the zone (`@` for the apex) or absolute"),
    Attribute("type", types.String(), required=True, description="Record type (A, MX, ...)"),
    Attribute("ttl", Num(), optional=True, description="TTL; default 300"),
    Attribute("data", types.String(), required=True, description="RDATA as in a zone file"),
]
DEFAULT_TTL = 300


def zone_key(document: Document, name: str) -> str | None:
    """The document's spelling of zone ``name``, or None when it has no such zone."""
    wanted = zone_name(name)
    return next((k for k in document.get(ZONES, {}) if zone_name(k) == wanted), None)


def records_text(name: str, records: list[dict[str, Any]]) -> str:
    lines = [f"$ORIGIN {zone_name(name)}"]
    for record in sorted(records, key=lambda r: (str(r["name"]), str(r["type"]))):
        ttl = record.get("ttl")
        lines.append(f"{record['name']} {DEFAULT_TTL if ttl is None else int(ttl)} IN "
                     f"{record['type']} {record['data']}")
    return "\n".join(lines) + "\n"


def records_of(name: str, text: str) -> list[dict[str, Any]]:
    """The records of a zone's text, named relative to the zone as a user writes them."""
    origin = dns.name.from_text(zone_name(name))
    out = []
    for owner, ttl, rdtype, data in sorted(zone_records(name, text)):
        relative = dns.name.from_text(owner).relativize(origin).to_text()
        if rdtype == "SOA":  # the serial left out for comparison; the text's own is kept
            data = _soa_of(name, text) or data
        out.append({"name": relative, "type": rdtype, "ttl": ttl, "data": data})
    return out


def _soa_of(name: str, text: str) -> str | None:
    from gtm.dns.zonefile import read_master_text

    origin = dns.name.from_text(zone_name(name))
    for record in read_master_text(text, origin, "text"):
        if record.rdata.rdtype == dns.rdatatype.SOA:
            return str(record.rdata.to_text(origin=None)).lower()
    return None


class ZoneResource(EntryResource):
    kind = "zone"
    description = ("A zone of the configuration: RFC 1035 master text (`text`) or a set of "
                   "records (`records`). SOA serial differences are not changes.")
    import_format = "`example.test.` (text), or `records:example.test.` (records)"
    attributes: ClassVar[list[Attribute]] = [
        Attribute("id", types.String(), computed=True),
        Attribute("name", ZoneName(), required=True, requires_replace=True,
                  description="The zone's name (the final dot is optional)"),
        Attribute("text", types.String(), optional=True,
                  description="The zone as RFC 1035 master-file text"),
        Nested("records", "set", RECORD_FIELDS, optional=True,
               description="The zone as records (instead of `text`)"),
    ]

    def entry_id(self, state: State) -> str:
        return str(zone_name(state["name"]))

    def find(self, document: Document, state: State) -> Any:
        key = zone_key(document, state["name"])
        return None if key is None else document[ZONES][key]

    def text_of(self, state: State) -> str:
        if state.get("records") is not None:
            return records_text(state["name"], state["records"])
        return str(state.get("text") or "")

    def state_of(self, document: Document, state: State) -> State | None:
        text = self.find(document, state)
        if text is None:
            return None
        as_records = state.get("records") is not None
        return {"id": self.entry_id(state), "name": state["name"],
                "text": None if as_records else text,
                "records": records_of(state["name"], text) if as_records else None}

    def same(self, attribute: str, old: Any, new: Any, state: State) -> bool:
        if attribute == "name":
            return bool(zone_name(old) == zone_name(new))
        if attribute == "text":
            return same_zone_text(state["name"], old, new)
        if attribute == "records" and old is not None and new is not None:
            return same_zone_text(state["name"], records_text(state["name"], old),
                                  records_text(state["name"], new))
        return bool(old == new)

    def unchanged(self, document: Document, state: State) -> bool:
        text = self.find(document, state)
        return text is not None and same_zone_text(state["name"], text, self.text_of(state))

    def put(self, document: Document, state: State) -> None:
        zones = table(document, ZONES, create=True)
        assert zones is not None
        key = zone_key(document, state["name"]) or zone_name(state["name"])
        zones[key] = self.text_of(state)

    def remove(self, document: Document, state: State) -> None:
        key = zone_key(document, state["name"])
        if key is not None:
            del document[ZONES][key]
            prune(document, ZONES)

    def from_import_id(self, text: str) -> State:
        as_records = text.startswith(RECORDS_PREFIX)
        name = text.removeprefix(RECORDS_PREFIX)
        if not name:
            raise ProviderError(f"not an import ID of gtm_zone: {text!r}",
                                f"Use {self.import_format}")
        return {"name": name, "text": None, "records": [] if as_records else None}

    def validate(self, diags: Diagnostics, type_name: str, config: Config) -> None:
        super().validate(diags, type_name, config)
        config = self.decoded(config)
        if has_unknown([config.get("name"), config.get("text"), config.get("records")]):
            return
        if (config.get("text") is None) == (config.get("records") is None):
            diags.add_error("gtm_zone needs exactly one of `text` and `records`",
                            "Give the zone as master-file text or as a set of records.",
                            path=["text"])
            return
        attribute = "text" if config.get("text") is not None else "records"
        try:
            from gtm.config.document import compile_zone_text

            compile_zone_text(zone_name(config["name"]), self.text_of(config), "plan")
        except ConfigError as exc:
            diags.add_error(f"invalid {attribute} of zone {config['name']}: {exc.reason}",
                            str(exc), path=[attribute])


__all__ = ["Unknown", "ZoneResource"]
