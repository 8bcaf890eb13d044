"""gtm_region, gtm_pool, gtm_steered_name, gtm_region_state: entries of a zone's
``steering`` (and ``state``) in the document, checked at plan by the product's own
steering parser."""

from __future__ import annotations

import re
from typing import Any, ClassVar

import dns.exception
import dns.name
from tf import types
from tf.iface import (
    Config,
    CreateContext,
    ImportContext,
    PlanContext,
    ReadContext,
    UpdateContext,
)
from tf.schema import Attribute
from tf.types import Unknown
from tf.utils import Diagnostics

from gtm.errors import ConfigError
from gtm.terraform import private
from gtm.terraform.api import Document, ProviderError
from gtm.terraform.base import (
    STATE,
    STEERING,
    EntryResource,
    State,
    guarded,
    prune,
    split_id,
    table,
    without_nulls,
)
from gtm.terraform.schema import Nested, Num, ZoneName, has_unknown
from gtm.terraform.simulation import Basis, document_at, health_now
from gtm.terraform.values import cidr, ip, keyed, number, with_defaults, zone_name
from gtm.terraform.zone import zone_key

STUB_REGION = {"latitude": 0, "longitude": 0}
STUB_ADDRESS = "192.0.2.1"


def steering_key(document: Document, section: str, zone: str) -> str:
    """The key of ``zone`` in ``section``: as the section spells it, else as the zones
    spell it, else the absolute name."""
    wanted = zone_name(zone)
    existing = next((k for k in document.get(section, {}) if zone_name(k) == wanted), None)
    return existing or zone_key(document, zone) or wanted


def zone_table(document: Document, section: str, zone: str, part: str,
               create: bool = False) -> dict[str, Any] | None:
    return table(document, section, steering_key(document, section, zone), part,
                 create=create)


def prune_zone(document: Document, section: str, zone: str, part: str) -> None:
    prune(document, section, steering_key(document, section, zone), part)


def attribute_of(where: str, entry: str) -> tuple[str, int | None]:
    """``pools.web.endpoints[0].weight`` -> (``endpoints``, None); filters keep their index."""
    rest = where.removeprefix(entry).lstrip(".")
    match = re.match(r"([a-z_0-9]+)(?:\[(\d+)\])?", rest)
    if not match:
        return "", None
    return match.group(1), int(match.group(2)) if match.group(2) else None


def check_steering(diags: Diagnostics, zone: str, steering: dict[str, Any], entry: str,
                   attributes: set[str]) -> None:
    """Parse ``steering`` as the control plane will; an error names the attribute."""
    from gtm.steering.definitions import parse_steering

    try:
        origin = dns.name.from_text(zone_name(zone))
        parse_steering(steering, origin, "plan")
    except dns.exception.DNSException as exc:
        diags.add_error(f"zone: not a domain name: {exc}", path=["zone"])
    except ConfigError as exc:
        where = str(exc.where or "")
        attribute, index = attribute_of(where, entry)
        if attribute not in attributes:
            attribute = "name"
        path: list[Any] = [attribute] if index is None else [attribute, (index,)]
        diags.add_error(f"invalid {attribute}: {exc.reason}", f"at {where}: {exc.reason}",
                        path=path)


# ---- gtm_region ----


class RegionResource(EntryResource):
    kind = "region"
    description = "A region of a zone's steering: where its endpoints are."
    import_format = "`ZONE/REGION`, e.g. `gslb.example.test./eu-west`"
    attributes: ClassVar[list[Attribute]] = [
        Attribute("id", types.String(), computed=True),
        Attribute("zone", ZoneName(), required=True, requires_replace=True),
        Attribute("name", types.String(), required=True, requires_replace=True),
        Attribute("latitude", Num(), required=True),
        Attribute("longitude", Num(), required=True),
        Attribute("country", types.String(), optional=True,
                  description="Two-letter ISO 3166 code"),
        Attribute("continent", types.String(), optional=True,
                  description="AF, AN, AS, EU, NA, OC or SA"),
    ]
    part = "regions"

    def entry_id(self, state: State) -> str:
        return f"{zone_name(state['zone'])}/{state['name']}"

    def find(self, document: Document, state: State) -> Any:
        entries = zone_table(document, STEERING, state["zone"], self.part)
        return None if entries is None else entries.get(state["name"])

    def from_import_id(self, text: str) -> State:
        zone, name = split_id(text, 2, self.import_format)
        return {"zone": zone, "name": name}

    def state_of(self, document: Document, state: State) -> State | None:
        entry = self.find(document, state)
        if not isinstance(entry, dict):
            return None
        return {"id": self.entry_id(state), "zone": state["zone"], "name": state["name"],
                **{k: number(entry.get(k))
                   for k in ("latitude", "longitude", "country", "continent")}}

    def body(self, state: State) -> dict[str, Any]:
        return without_nulls({k: number(state.get(k))
                              for k in ("latitude", "longitude", "country", "continent")})

    def put(self, document: Document, state: State) -> None:
        entries = zone_table(document, STEERING, state["zone"], self.part, create=True)
        assert entries is not None
        entries[state["name"]] = self.body(state)

    def remove(self, document: Document, state: State) -> None:
        entries = zone_table(document, STEERING, state["zone"], self.part)
        if entries is not None:
            entries.pop(state["name"], None)
            prune_zone(document, STEERING, state["zone"], self.part)

    def same(self, attribute: str, old: Any, new: Any, state: State) -> bool:
        if attribute == "zone":
            return bool(zone_name(old) == zone_name(new))
        if attribute in ("country", "continent") and isinstance(old, str) \
                and isinstance(new, str):
            return old.upper() == new.upper()
        return bool(number(old) == number(new))

    def validate(self, diags: Diagnostics, type_name: str, config: Config) -> None:
        super().validate(diags, type_name, config)
        config = self.decoded(config)
        if has_unknown(config) or not config.get("name") or not config.get("zone"):
            return
        check_steering(diags, config["zone"], {"regions": {config["name"]: self.body(config)}},
                       f"regions.{config['name']}", {a.name for a in self.attributes})


# ---- gtm_pool ----

ENDPOINT_FIELDS = [
    Attribute("name", types.String(), required=True),
    Attribute("region", types.String(), required=True),
    Attribute("ipv4", types.String(), optional=True),
    Attribute("ipv6", types.String(), optional=True),
    Attribute("cname", types.String(), optional=True),
    Attribute("weight", Num(), optional=True, description="default 1; 0 = standby"),
    Attribute("capacity", Num(), optional=True),
    Attribute("enabled", types.Bool(), optional=True, description="default true"),
    Attribute("check_address", types.String(), optional=True),
]
ENDPOINT_DEFAULTS = {"weight": 1, "enabled": True}
ENDPOINT_ADDRESSES = ("ipv4", "ipv6", "check_address")

CHECK_FIELDS = [
    Attribute("type", types.String(), required=True,
              description="tcp | http | https | dns | exec"),
    Attribute("port", Num(), optional=True),
    Attribute("interval", Num(), optional=True),
    Attribute("timeout", Num(), optional=True),
    Attribute("rise", Num(), optional=True),
    Attribute("fall", Num(), optional=True),
    Attribute("fastinter", Num(), optional=True),
    Attribute("jitter", Num(), optional=True),
    Attribute("method", types.String(), optional=True),
    Attribute("path", types.String(), optional=True),
    Attribute("host", types.String(), optional=True),
    Attribute("expect", types.List(Num()), optional=True),
    Attribute("body", types.String(), optional=True),
    Attribute("sni", types.String(), optional=True),
    Attribute("verify", types.Bool(), optional=True),
    Attribute("cert_warn_days", Num(), optional=True),
    Attribute("query", types.String(), optional=True),
    Attribute("qtype", types.String(), optional=True),
    Attribute("rcode", types.String(), optional=True),
    Attribute("answer", types.String(), optional=True),
    Attribute("command", types.List(types.String()), optional=True),
]


def endpoint_body(endpoint: dict[str, Any]) -> dict[str, Any]:
    return without_nulls({f.name: number(endpoint.get(f.name)) for f in ENDPOINT_FIELDS})


def endpoint_state(entry: dict[str, Any]) -> dict[str, Any]:
    return {f.name: number(entry.get(f.name)) for f in ENDPOINT_FIELDS}


def endpoint_meaning(endpoint: dict[str, Any]) -> Any:
    values = with_defaults(endpoint_state(endpoint), ENDPOINT_DEFAULTS)
    for key in ENDPOINT_ADDRESSES:
        values[key] = ip(values[key]) if values[key] is not None else None
    if isinstance(values["cname"], str):
        values["cname"] = values["cname"].lower()
    return keyed(values)


def check_body(check: dict[str, Any] | None) -> dict[str, Any] | None:
    if check is None:
        return None
    return without_nulls({f.name: number(check.get(f.name)) for f in CHECK_FIELDS})


def check_state(entry: Any) -> dict[str, Any] | None:
    if not isinstance(entry, dict):
        return None
    return {f.name: (list(entry[f.name]) if isinstance(entry.get(f.name), list)
                     else number(entry.get(f.name))) for f in CHECK_FIELDS}


class PoolResource(RegionResource):
    kind = "pool"
    description = "A pool of a zone's steering: its endpoints (a set) and its health check."
    import_format = "`ZONE/POOL`, e.g. `gslb.example.test./web`"
    attributes: ClassVar[list[Attribute]] = [
        Attribute("id", types.String(), computed=True),
        Attribute("zone", ZoneName(), required=True, requires_replace=True),
        Attribute("name", types.String(), required=True, requires_replace=True),
        Nested("endpoints", "set", ENDPOINT_FIELDS, required=True),
        Nested("check", "single", CHECK_FIELDS, optional=True,
               description="The health check; every key README's Health checks documents"),
    ]
    part = "pools"

    def state_of(self, document: Document, state: State) -> State | None:
        entry = self.find(document, state)
        if not isinstance(entry, dict):
            return None
        endpoints = entry.get("endpoints")
        return {"id": self.entry_id(state), "zone": state["zone"], "name": state["name"],
                "endpoints": [endpoint_state(e) for e in endpoints if isinstance(e, dict)]
                if isinstance(endpoints, list) else [],
                "check": check_state(entry.get("check"))}

    def body(self, state: State) -> dict[str, Any]:
        # A set has no order; the document's list is sorted by name so that it is stable.
        endpoints = sorted((endpoint_body(e) for e in state.get("endpoints") or []),
                           key=lambda e: str(e.get("name")))
        return without_nulls({"endpoints": endpoints, "check": check_body(state.get("check"))})

    def same(self, attribute: str, old: Any, new: Any, state: State) -> bool:
        if attribute == "endpoints" and isinstance(old, list) and isinstance(new, list):
            return sorted(map(endpoint_meaning, old)) == sorted(map(endpoint_meaning, new))
        if attribute == "check":
            return bool(keyed(check_body(old) or {}) == keyed(check_body(new) or {})) and \
                (old is None) == (new is None)
        return super().same(attribute, old, new, state)

    def validate(self, diags: Diagnostics, type_name: str, config: Config) -> None:
        EntryResource.validate(self, diags, type_name, config)
        config = self.decoded(config)
        if has_unknown(config) or not config.get("name") or not config.get("zone"):
            return
        body = self.body(config)
        regions = {str(e.get("region")): STUB_REGION for e in body["endpoints"]}
        check_steering(diags, config["zone"],
                       {"regions": regions, "pools": {config["name"]: body}},
                       f"pools.{config['name']}", {a.name for a in self.attributes})


# ---- gtm_steered_name ----

FILTER_FIELDS = [
    Attribute("type", types.String(), required=True,
              description="failover | geo | proximity | latency | capacity"),
    Attribute("groups", types.List(types.List(types.String())), optional=True),
    Attribute("min_healthy", Num(), optional=True),
    Attribute("default", types.List(types.String()), optional=True),
    Attribute("networks", types.Map(types.List(types.String())), optional=True,
              description="geo: CIDR -> regions"),
    Attribute("subdivisions", types.Map(types.List(types.String())), optional=True),
    Attribute("countries", types.Map(types.List(types.String())), optional=True),
    Attribute("continents", types.Map(types.List(types.String())), optional=True),
    Attribute("keep", Num(), optional=True),
    Attribute("bias_km", types.Map(Num()), optional=True),
    Attribute("latency_networks", types.Map(types.Map(Num())), optional=True,
              description="latency: CIDR -> region -> ms (the document's `networks`)"),
    Attribute("spill_below", Num(), optional=True),
]
FALLBACK_FIELDS = [
    Attribute("pool", types.String(), optional=True),
    Attribute("addresses", types.List(types.String()), optional=True),
]
NAME_DEFAULTS = {"ttl": 30, "answers": 1, "select": "weighted", "sticky_prefix_v4": 24,
                 "sticky_prefix_v6": 56}
LATENCY = "latency"


def filter_body(spec: dict[str, Any]) -> dict[str, Any]:
    body = without_nulls({f.name: spec.get(f.name) for f in FILTER_FIELDS})
    if "latency_networks" in body:
        body["networks"] = body.pop("latency_networks")
    return {k: number(v) for k, v in body.items()}


def filter_state(entry: dict[str, Any]) -> dict[str, Any]:
    values = dict(entry)
    if values.get("type") == LATENCY and "networks" in values:
        values["latency_networks"] = values.pop("networks")
    return {f.name: values.get(f.name) for f in FILTER_FIELDS}


def filter_meaning(spec: dict[str, Any]) -> Any:
    body = filter_body(spec)
    if isinstance(body.get("networks"), dict):
        body["networks"] = {cidr(k): v for k, v in body["networks"].items()}
    for key in ("countries", "continents", "subdivisions"):
        if isinstance(body.get(key), dict):
            body[key] = {k.upper(): v for k, v in body[key].items()}
    return keyed(body)


def fallback_body(fallback: dict[str, Any] | None) -> Any:
    if fallback is None:
        return None
    return without_nulls({"pool": fallback.get("pool"), "addresses": fallback.get("addresses")})


def fallback_state(entry: Any) -> dict[str, Any] | None:
    if not isinstance(entry, dict):
        return None  # "open", the default
    return {"pool": entry.get("pool"), "addresses": entry.get("addresses")}


def referenced_names(body: dict[str, Any]) -> set[str]:
    """Every region-or-endpoint name the filters mention (for the plan-time stubs)."""
    names: set[str] = set()
    for spec in body.get("filters", []):
        for group in spec.get("groups") or []:
            names.update(map(str, group))
        names.update(map(str, spec.get("default") or []))
        for key in ("networks", "subdivisions", "countries", "continents"):
            for value in (spec.get(key) or {}).values():
                names.update(map(str, value))  # regions: a list, or latency keys
        names.update(map(str, spec.get("bias_km") or {}))
    return names


class SteeredNameResource(RegionResource):
    kind = "steered_name"
    description = ("A steered name: its pool, the ordered filter chain, the selection and "
                   "the fallback.")
    import_format = "`ZONE/NAME`, e.g. `gslb.example.test./www`"
    attributes: ClassVar[list[Attribute]] = [
        Attribute("id", types.String(), computed=True),
        Attribute("zone", ZoneName(), required=True, requires_replace=True),
        Attribute("name", types.String(), required=True, requires_replace=True,
                  description="Relative to the zone, or absolute with a final dot"),
        Attribute("pool", types.String(), required=True),
        Attribute("ttl", Num(), optional=True, description="default 30"),
        Attribute("answers", Num(), optional=True, description="1 to 16, default 1"),
        Attribute("select", types.String(), optional=True,
                  description="weighted (default) | sticky | multivalue"),
        Attribute("sticky_prefix_v4", Num(), optional=True),
        Attribute("sticky_prefix_v6", Num(), optional=True),
        Nested("fallback", "single", FALLBACK_FIELDS, optional=True,
               description='null: "open"; `{ pool = "backup" }` or `{ addresses = [...] }`'),
        Nested("filters", "list", FILTER_FIELDS, optional=True,
               description="The ordered filter chain"),
        Attribute("simulated_answers", types.Map(types.String()), computed=True,
                  description="vantage point label -> \"REGIONS ADDRESSES\" a client there "
                  "gets, computed at plan from the planned configuration and current "
                  "health (gtm.terraform.simulation)"),
    ]
    part = "names"
    computed_only = ("id", "simulated_answers")

    def origin(self, state: State) -> dns.name.Name:
        return dns.name.from_text(zone_name(state["zone"]))

    def absolute(self, state: State, text: str) -> dns.name.Name:
        try:
            return dns.name.from_text(text, self.origin(state))
        except dns.exception.DNSException as exc:
            raise ProviderError(f"name {text!r} is not a domain name: {exc}",
                                attribute="name") from None

    def key_in(self, document: Document, state: State) -> str | None:
        entries = zone_table(document, STEERING, state["zone"], self.part) or {}
        wanted = self.absolute(state, state["name"])
        return next((k for k in entries if self.absolute(state, k) == wanted), None)

    def find(self, document: Document, state: State) -> Any:
        key = self.key_in(document, state)
        entries = zone_table(document, STEERING, state["zone"], self.part) or {}
        return None if key is None else entries.get(key)

    def entry_id(self, state: State) -> str:
        return f"{zone_name(state['zone'])}/{state['name']}"

    def state_of(self, document: Document, state: State) -> State | None:
        entry = self.find(document, state)
        if not isinstance(entry, dict):
            return None
        filters = entry.get("filters")
        return {
            "id": self.entry_id(state), "zone": state["zone"], "name": state["name"],
            **{k: number(entry.get(k)) for k in ("pool", "ttl", "answers", "select",
                                                 "sticky_prefix_v4", "sticky_prefix_v6")},
            "fallback": fallback_state(entry.get("fallback")),
            "filters": [filter_state(f) for f in filters if isinstance(f, dict)]
            if isinstance(filters, list) else None,
        }

    def body(self, state: State) -> dict[str, Any]:
        filters = state.get("filters")
        return without_nulls({
            **{k: number(state.get(k)) for k in ("pool", "ttl", "answers", "select",
                                                 "sticky_prefix_v4", "sticky_prefix_v6")},
            "fallback": fallback_body(state.get("fallback")),
            "filters": None if filters is None else [filter_body(f) for f in filters],
        })

    def put(self, document: Document, state: State) -> None:
        entries = zone_table(document, STEERING, state["zone"], self.part, create=True)
        assert entries is not None
        entries[self.key_in(document, state) or state["name"]] = self.body(state)

    def remove(self, document: Document, state: State) -> None:
        key = self.key_in(document, state)
        entries = zone_table(document, STEERING, state["zone"], self.part)
        if entries is not None and key is not None:
            del entries[key]
            prune_zone(document, STEERING, state["zone"], self.part)

    def same(self, attribute: str, old: Any, new: Any, state: State) -> bool:
        if attribute == "filters":
            return [filter_meaning(f) for f in old or []] == \
                [filter_meaning(f) for f in new or []]
        if attribute == "fallback":
            return bool(keyed(fallback_body(old) or {}) == keyed(fallback_body(new) or {}))
        if attribute in NAME_DEFAULTS:
            default = NAME_DEFAULTS[attribute]
            return bool(number(default if old is None else old)
                        == number(default if new is None else new))
        if attribute == "name" and isinstance(old, str) and isinstance(new, str):
            return self.absolute(state, old) == self.absolute(state, new)
        return super().same(attribute, old, new, state)

    def validate(self, diags: Diagnostics, type_name: str, config: Config) -> None:
        EntryResource.validate(self, diags, type_name, config)
        config = self.decoded(config)
        if has_unknown(config) or not config.get("name") or not config.get("zone"):
            return
        body = self.body(config)
        names = referenced_names(body) | {"stub-region"}
        stub_pool = {"endpoints": [{"name": "stub-endpoint", "region": "stub-region",
                                    "ipv4": STUB_ADDRESS}]}
        pools = {str(config.get("pool")): stub_pool}
        fallback = body.get("fallback")
        if isinstance(fallback, dict) and isinstance(fallback.get("pool"), str):
            pools[fallback["pool"]] = stub_pool
        check_steering(diags, config["zone"],
                       {"regions": {n: STUB_REGION for n in names}, "pools": pools,
                        "names": {config["name"]: body}},
                       f"names.{config['name']}", {a.name for a in self.attributes})

    # ---- simulated answers (gtm.terraform.simulation says when and from what) ----

    def answers_from(self, document: Document, source: str, state: State,
                     health: dict[str, Any] | None) -> dict[str, str]:
        from gtm.terraform.answers import compiled, simulate

        vantage_points = self.provider.vantage_points
        if not vantage_points:
            return {}
        zones = compiled(document, source, health)
        return simulate(zones, self.absolute(state, state["name"]).to_text(), vantage_points)

    def with_answers_now(self, state: State,
                         live: tuple[int, Document] | None = None) -> State:
        """``state`` with the answers of the live document (``live``, else read now) and
        health (refresh, import, create); what they were computed from becomes the basis."""
        version, document = live or self.api.document()
        health = health_now(self.api) if self.provider.vantage_points else None
        try:
            state["simulated_answers"] = self.answers_from(document, f"version {version}",
                                                           state, health)
        except ConfigError:
            state["simulated_answers"] = {}  # the name is not in the live document
        private.keep(Basis(version, health).private())
        return state

    def planned_answers(self, current: State | None, planned: State) -> Any:
        if not self.provider.vantage_points:
            return {}
        if current is None or current.get("simulated_answers") is None:
            return Unknown
        if all(self.same(a.name, current.get(a.name), planned.get(a.name), planned)
               for a in self.attributes if a.name not in self.computed_only):
            return current["simulated_answers"]
        basis = Basis.of(private.incoming())
        config = {k: v for k, v in planned.items() if k not in self.computed_only}
        if basis is None or has_unknown(config):
            return Unknown
        try:
            document = document_at(self.api, basis.version)
            if document is None:
                return Unknown
            self.replace(document, current, planned)
            return self.answers_from(document, f"version {basis.version} with this plan",
                                     planned, basis.health)
        except (ConfigError, ProviderError):
            return Unknown  # the apply says why, if it fails at all

    def plan(self, ctx: PlanContext, current: State | None, planned: State) -> State:
        planned["simulated_answers"] = self.planned_answers(current, planned)
        return planned

    def read(self, ctx: ReadContext, current: State) -> State | None:
        def work() -> State | None:
            live = self.api.document()
            fresh = self.state_of(live[1], current)
            if fresh is None:
                return None
            return self.keep_spelling(current, self.with_answers_now(fresh, live))

        return guarded(ctx.diagnostics, work)

    def import_(self, ctx: ImportContext, id: str) -> State | None:
        state = super().import_(ctx, id)
        return None if state is None else guarded(ctx.diagnostics,
                                                   lambda: self.with_answers_now(state))

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        state = super().create(ctx, planned)
        return None if state is None else guarded(ctx.diagnostics,
                                                  lambda: self.with_answers_now(state))

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        state = super().update(ctx, current, planned)
        if state is None:
            return None
        if planned.get("simulated_answers") is Unknown:
            return guarded(ctx.diagnostics, lambda: self.with_answers_now(state))
        # As planned: Terraform refuses a result that differs from a known plan. The
        # next refresh computes them again from the live document.
        state["simulated_answers"] = planned.get("simulated_answers")
        return state


# ---- gtm_region_state ----

KINDS = {"region": "regions", "endpoint": "endpoints"}
HEALTH = ("up", "down")
ADMIN = ("none", "force_up", "force_down", "drain")
STATE_DEFAULTS: dict[str, Any] = {"health": "up", "admin": "none", "reason": ""}


class RegionStateResource(RegionResource):
    kind = "region_state"
    description = ("The admin state of a region or an endpoint, with a reason: what `gtm "
                   "steer` sets (the document's `state` section). Destroying it returns the "
                   "region or endpoint to the defaults (health up, admin none).")
    import_format = "`ZONE/KIND/NAME`, e.g. `gslb.example.test./region/eu-west`"
    attributes: ClassVar[list[Attribute]] = [
        Attribute("id", types.String(), computed=True),
        Attribute("zone", ZoneName(), required=True, requires_replace=True),
        Attribute("kind", types.String(), required=True, requires_replace=True,
                  description="region | endpoint"),
        Attribute("name", types.String(), required=True, requires_replace=True),
        Attribute("health", types.String(), optional=True, description="up (default) | down"),
        Attribute("admin", types.String(), optional=True,
                  description="endpoints: none (default) | force_up | force_down | drain"),
        Attribute("headroom", Num(), optional=True,
                  description="regions: 0 (saturated) to 1 (idle)"),
        Attribute("reason", types.String(), optional=True),
    ]

    def entry_id(self, state: State) -> str:
        return f"{zone_name(state['zone'])}/{state['kind']}/{state['name']}"

    def from_import_id(self, text: str) -> State:
        zone, kind, name = split_id(text, 3, self.import_format)
        if kind not in KINDS:
            raise ProviderError(f"not an import ID of gtm_region_state: {text!r}",
                                f"KIND is region or endpoint. Use {self.import_format}")
        return {"zone": zone, "kind": kind, "name": name}

    def entries(self, document: Document, state: State,
                create: bool = False) -> dict[str, Any] | None:
        return zone_table(document, STATE, state["zone"], KINDS.get(state["kind"], "-"),
                          create=create)

    def find(self, document: Document, state: State) -> Any:
        entries = self.entries(document, state)
        return None if entries is None else entries.get(state["name"])

    def state_of(self, document: Document, state: State) -> State | None:
        entry = self.find(document, state)
        if not isinstance(entry, dict):
            return None
        return {"id": self.entry_id(state), "zone": state["zone"], "kind": state["kind"],
                "name": state["name"],
                **{k: number(entry.get(k)) for k in ("health", "admin", "headroom", "reason")}}

    def body(self, state: State) -> dict[str, Any]:
        # As `gtm steer` writes it: every field of the kind, defaults spelled out.
        fields = ("health", "admin", "reason") if state["kind"] == "endpoint" \
            else ("health", "headroom", "reason")
        return {k: number(state.get(k)) if state.get(k) is not None else STATE_DEFAULTS.get(k)
                for k in fields}

    def put(self, document: Document, state: State) -> None:
        entries = self.entries(document, state, create=True)
        assert entries is not None
        entries[state["name"]] = self.body(state)

    def remove(self, document: Document, state: State) -> None:
        entries = self.entries(document, state)
        if entries is not None:
            entries.pop(state["name"], None)
            prune_zone(document, STATE, state["zone"], KINDS[state["kind"]])

    def same(self, attribute: str, old: Any, new: Any, state: State) -> bool:
        if attribute in STATE_DEFAULTS:
            default = STATE_DEFAULTS[attribute]
            return (default if old is None else old) == (default if new is None else new)
        return super().same(attribute, old, new, state)

    def validate(self, diags: Diagnostics, type_name: str, config: Config) -> None:
        EntryResource.validate(self, diags, type_name, config)
        config = self.decoded(config)
        if has_unknown(config):
            return
        kind = config.get("kind")
        if kind not in KINDS:
            diags.add_error("invalid kind: must be region or endpoint", path=["kind"])
            return
        if config.get("health") is not None and config["health"] not in HEALTH:
            diags.add_error(f"invalid health: must be one of {', '.join(HEALTH)}",
                            path=["health"])
        if config.get("admin") is not None and (kind != "endpoint" or config["admin"]
                                                not in ADMIN):
            diags.add_error(f"invalid admin: endpoints only, one of {', '.join(ADMIN)}",
                            path=["admin"])
        headroom = config.get("headroom")
        if headroom is not None and (kind != "region" or not 0 <= headroom <= 1):
            diags.add_error("invalid headroom: regions only, a number from 0 to 1",
                            path=["headroom"])
