"""gtm_lb_pool and gtm_lb_listener: entries, by name, of a region's ``[lb]`` table (the
control plane's section ``lb.<region>``, which the region's balancers follow with
`gtm lb serve --control ... --region NAME`).

Checked at plan by the balancer's own compiler, which gtm.config.sections finds through
the ``gtm.sections`` entry point (so gtm imports nothing of regional_lb), in a small
table of the resource's own: a pool alone, or a listener with stand-ins for the pools it
names. What only the whole table can tell (a listener naming a pool no resource made)
is refused by the API at commit, with the JSON path, and said here naming the attribute.

A region's table can be stored pools first (regional_lb.sections): a listener names its
pool, so Terraform makes the pool, then the listener. Destroying the last entry of a
table that holds nothing else removes ``lb.<region>``, so the document is as before.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from functools import cache
from typing import Any, ClassVar

from tf import types
from tf.iface import Config, CreateContext, UpdateContext
from tf.schema import Attribute
from tf.utils import Diagnostics

from gtm.config.sections import SectionValidator, discovered_validators
from gtm.errors import ConfigError
from gtm.terraform.api import Document, ProviderError
from gtm.terraform.base import EntryResource, State, guarded, split_id
from gtm.terraform.schema import Nested, Num, has_unknown
from gtm.terraform.steering import CHECK_FIELDS
from gtm.terraform.values import cidr, keyed, number

SECTION = "lb"
# As regional_lb.sections.REGION_NAME: a step of JSON paths and of report channel keys.
REGION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
T = dict[str, Any]


@cache
def lb_validator() -> SectionValidator | None:
    """The balancer's compiler of the ``lb`` section (None without regional_lb)."""
    return discovered_validators().get(SECTION)


def region_path(region: str) -> str:
    return f"{SECTION}.{region}" if REGION_NAME.fullmatch(region) else f'{SECTION}["{region}"]'


def host_port(text: Any) -> Any:
    """``HOST:PORT`` in one spelling: ``[2001:DB8::1]:080`` -> ``[2001:db8::1]:80``."""
    if not isinstance(text, str):
        return text
    host, colon, port = text.rpartition(":")
    if not colon or not port.isdigit():
        return text
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        return f"{host.lower()}:{int(port)}"
    return f"[{address}]:{int(port)}" if address.version == 6 else f"{address}:{int(port)}"


# ---- nested values: state (every field, nulls included) <-> document (no nulls) ----


def object_state(fields: list[Attribute], entry: Any) -> T | None:
    if not isinstance(entry, dict):
        return None
    out: T = {}
    for field in fields:
        value = entry.get(field.name)
        if isinstance(field, Nested):
            out[field.name] = nested_state(field, value)
        elif isinstance(value, list):
            out[field.name] = [number(v) for v in value]
        elif isinstance(value, dict):
            out[field.name] = {k: number(v) for k, v in value.items()}
        else:
            out[field.name] = number(value)
    return out


def nested_state(field: Nested, value: Any) -> Any:
    if field.nesting == "single":
        return object_state(field.fields, value)
    if not isinstance(value, list):
        return None
    return [object_state(field.fields, item) for item in value]


def object_body(fields: list[Attribute], values: Any) -> T:
    out: T = {}
    if not isinstance(values, dict):
        return out
    for field in fields:
        value = values.get(field.name)
        if value is None:
            continue
        if isinstance(field, Nested):
            value = (object_body(field.fields, value) if field.nesting == "single"
                     else [object_body(field.fields, item) for item in value])
        elif isinstance(value, list):
            value = [number(v) for v in value]
            if isinstance(field.type, types.Set):  # a set: one stable order
                value = sorted(value, key=str)
        elif isinstance(value, dict):
            value = {k: number(v) for k, v in value.items()}
        out[field.name] = number(value)
    return out


def networks(values: Any) -> Any:
    return None if values is None else tuple(sorted({str(cidr(v)) for v in values}))


# ---- the table ----


def region_table(document: Document, region: str, create: bool = False) -> T | None:
    section = document.get(SECTION)
    if not isinstance(section, dict):
        if not create:
            return None
        section = document[SECTION] = {}
    table = section.get(region)
    if not isinstance(table, dict):
        if not create:
            return None
        table = section[region] = {}
    return table


def prune_region(document: Document, region: str) -> None:
    """Empty lists go; a table left with nothing but its name goes, then an empty
    section: destroying what Terraform made leaves the document as it was."""
    table = region_table(document, region)
    if table is None:
        return
    for part in ("listeners", "pools"):
        if table.get(part) == []:
            del table[part]
    if set(table) <= {"region"}:
        del document[SECTION][region]
    if not document[SECTION]:
        del document[SECTION]


class LbEntryResource(EntryResource):
    """One entry (by name) of ``lb.<region>.pools`` or ``.listeners``."""

    part: ClassVar[str]
    fields: ClassVar[list[Attribute]]  # the entry's keys (name included)
    defaults: ClassVar[T] = {}

    def __init__(self, provider: Any):
        super().__init__(provider)
        self.slot: int | None = None  # where the last write put the entry in its list

    # -- naming --

    def entry_id(self, state: State) -> str:
        return f"{state['region']}/{state['name']}"

    def from_import_id(self, text: str) -> State:
        region, _slash, name = text.partition("/")
        if not region or not name:
            split_id(text, 2, self.import_format)  # raises with the format
        return {"region": region, "name": name}

    def entry_name(self, entry: T) -> Any:
        return entry.get("name")

    def entries(self, document: Document, state: State) -> list[Any]:
        table = region_table(document, state["region"])
        listed = table.get(self.part) if table is not None else None
        return listed if isinstance(listed, list) else []

    def index_in(self, document: Document, state: State) -> int | None:
        return next((i for i, entry in enumerate(self.entries(document, state))
                     if isinstance(entry, dict) and self.entry_name(entry) == state["name"]),
                    None)

    def find(self, document: Document, state: State) -> Any:
        index = self.index_in(document, state)
        return None if index is None else self.entries(document, state)[index]

    # -- state and document --

    def state_of(self, document: Document, state: State) -> State | None:
        entry = self.find(document, state)
        if not isinstance(entry, dict):
            return None
        fresh = object_state(self.fields, self.entry_values(entry))
        assert fresh is not None
        return {"id": self.entry_id(state), "region": state["region"], **fresh,
                "name": state["name"]}

    def entry_values(self, entry: T) -> T:
        """The document's entry in the shape of the schema (a hook for special keys)."""
        return entry

    def body(self, state: State) -> T:
        return object_body(self.fields, state)

    def put(self, document: Document, state: State) -> None:
        table = region_table(document, state["region"], create=True)
        assert table is not None
        entries = table.setdefault(self.part, [])
        index = self.index_in(document, state)
        if index is None:
            entries.append(self.body(state))
            index = len(entries) - 1
        else:  # in place: the order of a table's entries is the user's
            entries[index] = self.body(state)
        self.slot = index

    def remove(self, document: Document, state: State) -> None:
        index = self.index_in(document, state)
        if index is not None:
            del self.entries(document, state)[index]
            prune_region(document, state["region"])

    def replace(self, document: Document, current: State, planned: State) -> None:
        self.put(document, planned)  # by name, in place (a new name is a new resource)

    # -- meaning: what makes two spellings the same --

    def meaning(self, attribute: str, value: Any) -> Any:
        if value is None:
            value = self.defaults.get(attribute)
        return keyed(value) if isinstance(value, dict | list) else number(value)

    def same(self, attribute: str, old: Any, new: Any, state: State) -> bool:
        return bool(self.meaning(attribute, old) == self.meaning(attribute, new))

    # -- plan-time check with the balancer's compiler --

    def check_table(self, config: State) -> tuple[T, int]:
        """A table to compile this entry in, and the entry's index in its list."""
        raise NotImplementedError

    def validate(self, diags: Diagnostics, type_name: str, config: Config) -> None:
        EntryResource.validate(self, diags, type_name, config)
        config = self.decoded(config)
        if has_unknown(config) or not config.get("region") or not config.get("name"):
            return
        region = config["region"]
        if not REGION_NAME.fullmatch(region):
            diags.add_error("invalid region: letters, digits, '-' and '_' (at most 63, "
                            "starting with a letter or digit)", path=["region"])
            return
        validator = lb_validator()
        if validator is None:  # regional_lb not installed: the API accepts any table too
            return
        table, index = self.check_table(config)
        try:
            validator({region: table}, "plan", SECTION)
        except ConfigError as exc:
            where = str(exc.where or "")
            path = self.attribute_path(where, region, index) or ["name"]
            diags.add_error(f"invalid {path[0]}: {exc.reason}", f"at {where}: {exc.reason}",
                            path=path)

    def attribute_path(self, where: str, region: str, index: int | None) -> list[Any] | None:
        """``lb.eu.pools[0].backends[1].address`` -> ``["backends"]`` (a list keeps its
        element: ``["routes", (1,)]``); None when the path is not this entry's."""
        prefix = f"{region_path(region)}.{self.part}[{index}]"
        if not where.startswith(prefix) or index is None:
            return None
        match = re.match(r"\.?([A-Za-z_0-9]+)(?:\[(\d+)\])?", where[len(prefix):])
        if match is None:
            return None
        names = {f.name: f for f in self.fields}
        field = names.get(match.group(1))
        if field is None:
            return None
        listed = isinstance(field, Nested) and field.nesting == "list"
        if listed and match.group(2) is not None:
            return [field.name, (int(match.group(2)),)]
        return [field.name]

    # -- writes: a refusal at commit names the attribute --

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        return guarded(ctx.diagnostics, self.located(lambda: self._create(planned), planned))

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        return guarded(ctx.diagnostics,
                       self.located(lambda: self._update(current, planned), planned))

    def located(self, work: Callable[[], State | None],
                state: State) -> Callable[[], State | None]:
        def run() -> State | None:
            try:
                return work()
            except ProviderError as exc:
                if exc.field and exc.attribute is None:
                    path = self.attribute_path(exc.field, state["region"], self.slot)
                    if path is not None:
                        exc.attribute = path[0]
                        exc.detail = f"{exc.summary}, at {exc.field}."
                        exc.summary = f"invalid {path[0]}: {exc.reason}"
                    else:
                        exc.detail += (f" (in {region_path(state['region'])}, outside this "
                                       "resource's entry: another entry of the region's "
                                       "table, or the table itself)")
                raise
        return run


# ---- gtm_lb_pool ----

BACKEND_FIELDS = [
    Attribute("address", types.String(), required=True, description="HOST:PORT"),
    Attribute("weight", Num(), optional=True, description="default 1"),
    Attribute("state", types.String(), optional=True,
              description="enabled (default) | drain | maintenance"),
]
OUTLIER_FIELDS = [
    Attribute("enabled", types.Bool(), optional=True,
              description="false: no passive ejection at all (default true)"),
    *(Attribute(key, Num(), optional=True) for key in (
        "consecutive_5xx", "consecutive_gateway", "max_ejection_percent",
        "latency_min_requests", "base_ejection", "max_ejection", "latency_window",
        "latency_floor", "latency_factor")),
]
POOL_DEFAULTS: T = {
    "algorithm": "round_robin", "hash_key": "client_ip", "slow_start": 0,
    "max_connections": 10000, "max_idle": 256, "retries": 2, "retry_budget": 0.2,
    "proxy_protocol": "off", "tls": False, "tls_verify": True, "panic_below": 0.5,
    "queue_size": 0, "queue_timeout": 5,
}


def outlier_body(value: Any) -> Any:
    """``{ enabled = false }`` is the document's ``false``; settings are its table; the
    default (absent, or only ``enabled = true``) is left out."""
    if not isinstance(value, dict):
        return None
    if value.get("enabled") is False:
        return False
    settings = {k: number(v) for k, v in value.items() if k != "enabled" and v is not None}
    return settings or (True if value.get("enabled") else None)


def outlier_meaning(value: Any) -> Any:
    body = outlier_body(value) if isinstance(value, dict) else value
    return "default" if body in (None, True) else keyed(body)


class LbPoolResource(LbEntryResource):
    kind = "lb_pool"
    description = ("A pool of a region's balancers: an entry of lb.<region>.pools, which "
                   "the region's `gtm lb serve --control` follows. Backends are a set.")
    import_format = "`REGION/POOL`, e.g. `eu-west/web`"
    part = "pools"
    fields: ClassVar[list[Attribute]] = [
        Attribute("name", types.String(), required=True, requires_replace=True),
        Nested("backends", "set", BACKEND_FIELDS, required=True,
               description="a set: order means nothing"),
        Attribute("algorithm", types.String(), optional=True,
                  description="round_robin (default) | weighted_round_robin | "
                  "least_connections | least_request | peak_ewma | consistent_hash | random"),
        Attribute("hash_key", types.String(), optional=True,
                  description="consistent_hash: client_ip | cookie:NAME | header:NAME"),
        Attribute("slow_start", Num(), optional=True),
        Attribute("max_connections", Num(), optional=True),
        Attribute("max_idle", Num(), optional=True),
        Attribute("retries", Num(), optional=True),
        Attribute("retry_budget", Num(), optional=True),
        Attribute("proxy_protocol", types.String(), optional=True, description="off | v1 | v2"),
        Attribute("tls", types.Bool(), optional=True),
        Attribute("tls_ca", types.String(), optional=True),
        Attribute("tls_server_name", types.String(), optional=True),
        Attribute("tls_verify", types.Bool(), optional=True),
        Nested("check", "single", CHECK_FIELDS, optional=True,
               description="active checks: tcp | http | https"),
        Nested("outlier", "single", OUTLIER_FIELDS, optional=True,
               description="passive ejection; absent: on for gateway errors"),
        Attribute("panic_below", Num(), optional=True),
        Attribute("queue_size", Num(), optional=True),
        Attribute("queue_timeout", Num(), optional=True),
    ]
    attributes: ClassVar[list[Attribute]] = [
        Attribute("id", types.String(), computed=True),
        Attribute("region", types.String(), required=True, requires_replace=True),
        *fields,
    ]
    defaults = POOL_DEFAULTS

    def entry_values(self, entry: T) -> T:
        values = dict(entry)
        backends = values.get("backends")
        if isinstance(backends, list):
            values["backends"] = [{"address": b} if isinstance(b, str) else b
                                  for b in backends]
        outlier = values.get("outlier")
        if isinstance(outlier, bool):
            values["outlier"] = {"enabled": outlier}
        return values

    def body(self, state: State) -> T:
        body = object_body([f for f in self.fields if f.name not in ("backends", "outlier")],
                           state)
        backends = sorted((object_body(BACKEND_FIELDS, b) for b in state.get("backends") or []),
                          key=lambda b: str(host_port(b.get("address"))))
        # A backend with only its address is written as the files write it: "HOST:PORT".
        entries = [b["address"] if set(b) == {"address"} else b for b in backends]
        body["backends"] = entries
        outlier = outlier_body(state.get("outlier"))
        if outlier is not None:
            body["outlier"] = outlier
        return {"name": body.pop("name"), **body}

    def meaning(self, attribute: str, value: Any) -> Any:
        if attribute == "backends":
            return tuple(sorted(
                (str(host_port(b.get("address"))),
                 1 if b.get("weight") is None else number(b.get("weight")),
                 b.get("state") or "enabled")
                for b in value or [] if isinstance(b, dict)))
        if attribute == "outlier":
            return outlier_meaning(value)
        if attribute == "check":
            return None if value is None else keyed(object_body(CHECK_FIELDS, value))
        return super().meaning(attribute, value)

    def check_table(self, config: State) -> tuple[T, int]:
        return {"pools": [self.body(config)]}, 0


# ---- gtm_lb_listener ----

RATE_FIELDS = [
    Attribute("rate", Num(), optional=True, description="requests a second per key"),
    Attribute("burst", Num(), optional=True),
    Attribute("key", types.String(), optional=True,
              description="client_ip | header:NAME | cookie:NAME"),
]
LIMIT_FIELDS = [
    *RATE_FIELDS,
    Attribute("ipv4_prefix", Num(), optional=True),
    Attribute("ipv6_prefix", Num(), optional=True),
    Attribute("max_connections", Num(), optional=True),
    Attribute("max_requests", Num(), optional=True),
    Attribute("allow", types.Set(types.String()), optional=True,
              description="client networks never limited (a set)"),
]
TLS_FIELDS = [
    Attribute("certificates", types.String(), optional=True,
              description="a directory of NAME.crt + NAME.key or NAME.pem, on the host"),
    Attribute("control", types.Bool(), optional=True,
              description="also the control plane's certificates (gtm_certificate)"),
    Attribute("default", types.String(), optional=True),
    Attribute("unknown_sni", types.String(), optional=True, description="default | refuse"),
    Attribute("min_version", types.String(), optional=True, description="1.2 | 1.3"),
    Attribute("alpn", types.List(types.String()), optional=True),
    Attribute("client_auth", types.String(), optional=True,
              description="none | optional | required"),
    Attribute("client_ca", types.String(), optional=True),
    Attribute("session_tickets", types.Bool(), optional=True),
    Attribute("tickets", Num(), optional=True),
]
ROUTE_FIELDS = [
    Attribute("pool", types.String(), required=True),
    Attribute("host", types.String(), optional=True),
    Attribute("path_prefix", types.String(), optional=True),
    Attribute("header", types.String(), optional=True,
              description='"X-Canary: 1", or "X-Canary" for any value'),
    Nested("limits", "single", RATE_FIELDS, optional=True),
    Attribute("priority", types.String(), optional=True),
]
LISTENER_DEFAULTS: T = {
    "mode": "http", "proxy_protocol": False, "health_path": "/.gtm/health",
    "upgrades": ["websocket"], "h2c": False, "backlog": 0, "trusted_networks": [],
    "priority_values": {},
}


class LbListenerResource(LbEntryResource):
    kind = "lb_listener"
    description = ("A listener of a region's balancers: an entry of lb.<region>.listeners. "
                   "Routes are an ordered list (the first match wins).")
    import_format = "`REGION/LISTENER`, e.g. `eu-west/web-127.0.1.1`"
    part = "listeners"
    fields: ClassVar[list[Attribute]] = [
        Attribute("name", types.String(), required=True, requires_replace=True),
        Attribute("bind", types.String(), required=True, description="ADDRESS:PORT"),
        Attribute("mode", types.String(), optional=True, description="http (default) | tcp"),
        Attribute("pool", types.String(), optional=True,
                  description="required when the region has several pools"),
        Attribute("proxy_protocol", types.Bool(), optional=True),
        Attribute("trusted_networks", types.Set(types.String()), optional=True),
        Attribute("health_path", types.String(), optional=True),
        Attribute("upgrades", types.List(types.String()), optional=True),
        Attribute("h2c", types.Bool(), optional=True),
        Attribute("backlog", Num(), optional=True),
        Attribute("priority", types.String(), optional=True),
        Attribute("priority_header", types.String(), optional=True),
        Attribute("priority_values", types.Map(types.String()), optional=True),
        Nested("limits", "single", LIMIT_FIELDS, optional=True,
               description="per client: rate, connections, requests"),
        Nested("tls", "single", TLS_FIELDS, optional=True,
               description="terminate TLS (absent: plain TCP)"),
        Nested("routes", "list", ROUTE_FIELDS, optional=True,
               description="an ordered list: the first match wins"),
    ]
    attributes: ClassVar[list[Attribute]] = [
        Attribute("id", types.String(), computed=True),
        Attribute("region", types.String(), required=True, requires_replace=True),
        *fields,
    ]
    defaults = LISTENER_DEFAULTS

    def entry_name(self, entry: T) -> Any:
        # As the compiler names a listener without one: mode-port.
        if "name" in entry:
            return entry["name"]
        bind = str(entry.get("bind", ""))
        return f"{entry.get('mode', 'http')}-{bind.rpartition(':')[2]}"

    def meaning(self, attribute: str, value: Any) -> Any:
        if attribute == "bind":
            return host_port(value)
        if attribute == "trusted_networks":
            return networks(value or [])
        if attribute == "upgrades":
            return tuple(str(v).lower() for v in (["websocket"] if value is None else value))
        if attribute == "limits" and isinstance(value, dict):
            body = object_body(LIMIT_FIELDS, value)
            if "allow" in body:
                body["allow"] = list(networks(body["allow"]) or ())
            return keyed(body)
        if attribute in ("tls", "routes") and value is not None:
            fields = TLS_FIELDS if attribute == "tls" else ROUTE_FIELDS
            return keyed(object_body(fields, value) if attribute == "tls"
                         else [object_body(fields, route) for route in value])
        return super().meaning(attribute, value)

    def check_table(self, config: State) -> tuple[T, int]:
        named = [config.get("pool")] + [r.get("pool") for r in config.get("routes") or []
                                        if isinstance(r, dict)]
        pools = list(dict.fromkeys(n for n in named if isinstance(n, str))) or ["-"]
        stand_ins = [{"name": name, "backends": []} for name in pools]
        return {"pools": stand_ins, "listeners": [self.body(config)]}, 0
