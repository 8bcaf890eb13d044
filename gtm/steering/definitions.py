"""Loading steering definitions (``<zone>.steering.toml``) into the frozen model.

Every error names the file, the path inside it and the reason, e.g.
``zones/gslb.example.test.steering.toml: pools.web.endpoints[2].weight: must be ...``.
The same function validates the ``steering`` section of a control-plane document.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dns.exception
import dns.name

from gtm.errors import ConfigError
from gtm.steering.model import (
    CapacityFilter,
    Endpoint,
    FailoverFilter,
    Fallback,
    Filter,
    GeoFilter,
    HealthCheck,
    IPNetwork,
    LatencyFilter,
    Pool,
    ProximityFilter,
    Region,
    SteeredName,
    Steering,
)
from gtm.toml_input import read_toml

STEERING_SUFFIX = ".steering.toml"
SELECTIONS = ("weighted", "sticky", "multivalue")
CONTINENTS = ("AF", "AN", "AS", "EU", "NA", "OC", "SA")


class _Ctx:
    """Where we are in the document, for error messages."""

    def __init__(self, source: str, base: Path | None):
        self.source = source
        self.base = base

    def fail(self, where: str, reason: str) -> ConfigError:
        return ConfigError(reason, self.source, where)


def load_steering_file(path: Path, origin: dns.name.Name) -> Steering:
    return parse_steering(read_toml(path), origin, str(path), path.parent)


def parse_steering(
    raw: Mapping[str, Any], origin: dns.name.Name, source: str, base: Path | None = None
) -> Steering:
    ctx = _Ctx(source, base)
    _only_keys(ctx, "", raw, {"regions", "pools", "names"})
    regions = {
        name: _region(ctx, f"regions.{name}", name, value)
        for name, value in _table(ctx, "regions", raw.get("regions", {})).items()
    }
    pools = {
        name: _pool(ctx, f"pools.{name}", name, value, regions)
        for name, value in _table(ctx, "pools", raw.get("pools", {})).items()
    }
    _unique_endpoint_names(ctx, pools)
    names = {}
    for text, value in _table(ctx, "names", raw.get("names", {})).items():
        steered = _steered_name(ctx, f"names.{text}", text, value, origin, regions, pools)
        key = tuple(label.lower() for label in steered.name.labels)
        if key in names:
            raise ctx.fail(f"names.{text}", f"{steered.name} is defined twice")
        names[key] = steered
    return Steering(regions, pools, names, source)


# ---- sections ----


def _region(ctx: _Ctx, where: str, name: str, raw: Any) -> Region:
    table = _table(ctx, where, raw)
    _only_keys(ctx, where, table, {"latitude", "longitude", "country", "continent"})
    latitude = _number(ctx, f"{where}.latitude", _required(ctx, where, table, "latitude"))
    longitude = _number(ctx, f"{where}.longitude", _required(ctx, where, table, "longitude"))
    if not -90 <= latitude <= 90:
        raise ctx.fail(f"{where}.latitude", "must be from -90 to 90")
    if not -180 <= longitude <= 180:
        raise ctx.fail(f"{where}.longitude", "must be from -180 to 180")
    country = _optional_str(ctx, f"{where}.country", table.get("country"))
    continent = _optional_str(ctx, f"{where}.continent", table.get("continent"))
    if country is not None and (len(country) != 2 or not country.isalpha()):
        raise ctx.fail(f"{where}.country", "must be a two-letter ISO 3166 code")
    if continent is not None and continent.upper() not in CONTINENTS:
        raise ctx.fail(f"{where}.continent", f"must be one of {', '.join(CONTINENTS)}")
    return Region(
        name, latitude, longitude,
        country.upper() if country else None,
        continent.upper() if continent else None,
    )


def _pool(
    ctx: _Ctx, where: str, name: str, raw: Any, regions: Mapping[str, Region]
) -> Pool:
    table = _table(ctx, where, raw)
    _only_keys(ctx, where, table, {"endpoints", "check"})
    items = _list(ctx, f"{where}.endpoints", _required(ctx, where, table, "endpoints"))
    if not items:
        raise ctx.fail(f"{where}.endpoints", "a pool needs at least one endpoint")
    endpoints = tuple(
        _endpoint(ctx, f"{where}.endpoints[{i}]", item, regions) for i, item in enumerate(items)
    )
    kinds = {e.cname is not None for e in endpoints}
    if len(kinds) > 1:
        raise ctx.fail(f"{where}.endpoints", "mixes CNAME endpoints with address endpoints")
    check = None
    if "check" in table:
        check = _check(ctx, f"{where}.check", table["check"])
        if check.type != "exec" and any(
                e.cname is not None and e.check_address is None for e in endpoints):
            raise ctx.fail(f"{where}.check", "CNAME endpoints need a check_address to probe")
    return Pool(name, endpoints, check)


CHECK_TYPES = ("tcp", "http", "https", "dns", "exec")
CHECK_KEYS = {
    "tcp": set(),
    "http": {"method", "path", "host", "expect", "body"},
    "https": {"method", "path", "host", "expect", "body", "sni", "verify", "cert_warn_days"},
    "dns": {"query", "qtype", "rcode", "answer"},
    "exec": {"command"},
}
COMMON_CHECK_KEYS = {"type", "port", "interval", "timeout", "rise", "fall", "fastinter", "jitter"}


def parse_health_check(raw: Any, where: str, source: str) -> HealthCheck:
    """One health-check table, validated as the GTM validates a pool's ``check``; the
    regional balancer reads its pools' checks through this too, so both accept the same."""
    return _check(_Ctx(source, None), where, raw)


def _check(ctx: _Ctx, where: str, raw: Any) -> HealthCheck:
    """A pool's health check; only the keys its type uses are allowed."""
    table = _table(ctx, where, raw)
    kind = _str(ctx, f"{where}.type", _required(ctx, where, table, "type"))
    if kind not in CHECK_TYPES:
        raise ctx.fail(f"{where}.type", f"must be one of {', '.join(CHECK_TYPES)}")
    _only_keys(ctx, where, table, COMMON_CHECK_KEYS | CHECK_KEYS[kind])
    values: dict[str, Any] = {"type": kind}
    if "port" in table:
        values["port"] = _int(ctx, f"{where}.port", table["port"], minimum=1, maximum=65535)
    for key in ("interval", "timeout", "fastinter"):
        if key in table:
            values[key] = _number(ctx, f"{where}.{key}", table[key])
            if not 0.01 <= values[key] <= 3600:
                raise ctx.fail(f"{where}.{key}", "must be from 0.01 to 3600 seconds")
    for key in ("rise", "fall"):
        if key in table:
            values[key] = _int(ctx, f"{where}.{key}", table[key], minimum=1, maximum=100)
    if "jitter" in table:
        values["jitter"] = _number(ctx, f"{where}.jitter", table["jitter"])
        if not 0 <= values["jitter"] <= 0.5:
            raise ctx.fail(f"{where}.jitter", "must be from 0 to 0.5 (a fraction of the delay)")
    for key in ("method", "path", "host", "body", "sni", "query", "qtype", "rcode", "answer"):
        if key in table:
            values[key] = _str(ctx, f"{where}.{key}", table[key])
    if "verify" in table:
        values["verify"] = _bool(ctx, f"{where}.verify", table["verify"])
    if "cert_warn_days" in table:
        values["cert_warn_days"] = _int(ctx, f"{where}.cert_warn_days", table["cert_warn_days"])
    if "expect" in table:
        codes = _list(ctx, f"{where}.expect", table["expect"])
        if not codes:
            raise ctx.fail(f"{where}.expect", "needs at least one status code")
        values["expect"] = tuple(_int(ctx, f"{where}.expect[{i}]", c, minimum=100, maximum=599)
                                 for i, c in enumerate(codes))
    if "command" in table:
        argv = _list(ctx, f"{where}.command", table["command"])
        values["command"] = tuple(_str(ctx, f"{where}.command[{i}]", a)
                                  for i, a in enumerate(argv))
    _check_consistency(ctx, where, kind, values)
    return HealthCheck(**values)


def _check_consistency(ctx: _Ctx, where: str, kind: str, values: dict[str, Any]) -> None:
    if kind == "dns" and "query" not in values:
        raise ctx.fail(f"{where}.query", "is required for a dns check")
    if kind == "exec" and not values.get("command"):
        raise ctx.fail(f"{where}.command", "is required for an exec check (a list of strings)")
    if kind == "tcp" and "port" not in values:
        raise ctx.fail(f"{where}.port", "is required for a tcp check")
    if values.get("timeout", 1.0) > values.get("interval", 2.0):
        raise ctx.fail(f"{where}.timeout", "must not be longer than the interval")
    if "path" in values and not values["path"].startswith("/"):
        raise ctx.fail(f"{where}.path", "must start with /")
    if kind == "dns":
        import dns.rcode
        import dns.rdatatype

        try:
            dns.rdatatype.from_text(values.get("qtype", "A"))
            dns.rcode.from_text(values.get("rcode", "NOERROR"))
        except (dns.exception.DNSException, ValueError) as exc:
            raise ctx.fail(f"{where}", f"bad qtype or rcode: {exc}") from exc


def _endpoint(ctx: _Ctx, where: str, raw: Any, regions: Mapping[str, Region]) -> Endpoint:
    table = _table(ctx, where, raw)
    _only_keys(ctx, where, table, {
        "name", "region", "ipv4", "ipv6", "cname", "weight", "capacity", "enabled",
        "check_address",
    })
    name = _str(ctx, f"{where}.name", _required(ctx, where, table, "name"))
    region = _str(ctx, f"{where}.region", _required(ctx, where, table, "region"))
    if region not in regions:
        raise ctx.fail(f"{where}.region", f"unknown region {region!r}")
    ipv4 = _address(ctx, f"{where}.ipv4", table.get("ipv4"), 4)
    ipv6 = _address(ctx, f"{where}.ipv6", table.get("ipv6"), 6)
    cname = _cname(ctx, f"{where}.cname", table.get("cname"))
    if cname is not None and (ipv4 or ipv6):
        raise ctx.fail(where, "an endpoint has a CNAME target or addresses, not both")
    if cname is None and not (ipv4 or ipv6):
        raise ctx.fail(where, "needs ipv4, ipv6 or cname")
    weight = _int(ctx, f"{where}.weight", table.get("weight", 1), minimum=0, maximum=1_000_000)
    capacity = table.get("capacity")
    if capacity is not None:
        capacity = _int(ctx, f"{where}.capacity", capacity, minimum=0)
    enabled = _bool(ctx, f"{where}.enabled", table.get("enabled", True))
    check = table.get("check_address")
    if check is not None:
        check = _str(ctx, f"{where}.check_address", check)
        _ip(ctx, f"{where}.check_address", check)
    return Endpoint(name, region, ipv4, ipv6, cname, weight, capacity, enabled, check)


def _steered_name(
    ctx: _Ctx,
    where: str,
    text: str,
    raw: Any,
    origin: dns.name.Name,
    regions: Mapping[str, Region],
    pools: Mapping[str, Pool],
) -> SteeredName:
    table = _table(ctx, where, raw)
    _only_keys(ctx, where, table, {
        "pool", "ttl", "answers", "filters", "select", "sticky_prefix_v4", "sticky_prefix_v6",
        "fallback",
    })
    try:
        name = dns.name.from_text(text, origin)
    except dns.exception.DNSException as exc:
        raise ctx.fail(where, f"not a domain name: {exc}") from exc
    if not name.is_subdomain(origin):
        raise ctx.fail(where, f"{name} is outside the zone {origin}")
    pool = _str(ctx, f"{where}.pool", _required(ctx, where, table, "pool"))
    if pool not in pools:
        raise ctx.fail(f"{where}.pool", f"unknown pool {pool!r}")
    select = _str(ctx, f"{where}.select", table.get("select", "weighted"))
    if select not in SELECTIONS:
        raise ctx.fail(f"{where}.select", f"must be one of {', '.join(SELECTIONS)}")
    answers = _int(ctx, f"{where}.answers", table.get("answers", 1), minimum=1, maximum=16)
    if pools[pool].is_cname and answers != 1:
        raise ctx.fail(f"{where}.answers", "a CNAME pool answers with exactly one target")
    filters = tuple(
        _filter(ctx, f"{where}.filters[{i}]", item, regions, pools[pool])
        for i, item in enumerate(_list(ctx, f"{where}.filters", table.get("filters", [])))
    )
    fallback = _fallback(ctx, f"{where}.fallback", table.get("fallback", "open"), pools)
    # A fallback of the other kind would answer nothing at all when it applies.
    if fallback.mode == "addresses" and pools[pool].is_cname:
        raise ctx.fail(f"{where}.fallback", "a CNAME pool cannot fall back to fixed "
                       "addresses; use a fallback pool of CNAME endpoints")
    if fallback.pool is not None and pools[fallback.pool].is_cname != pools[pool].is_cname:
        raise ctx.fail(f"{where}.fallback.pool", f"pool {fallback.pool!r} and pool {pool!r} "
                       "must both be CNAME pools or both address pools")
    return SteeredName(
        name=name,
        pool=pool,
        ttl=_int(ctx, f"{where}.ttl", table.get("ttl", 30), minimum=0, maximum=86400),
        answers=answers,
        filters=filters,
        select=select,  # type: ignore[arg-type]
        sticky_prefix_v4=_int(ctx, f"{where}.sticky_prefix_v4",
                              table.get("sticky_prefix_v4", 24), minimum=0, maximum=32),
        sticky_prefix_v6=_int(ctx, f"{where}.sticky_prefix_v6",
                              table.get("sticky_prefix_v6", 56), minimum=0, maximum=128),
        fallback=fallback,
    )


def _fallback(ctx: _Ctx, where: str, raw: Any, pools: Mapping[str, Pool]) -> Fallback:
    if raw == "open":
        return Fallback()
    table = _table(ctx, where, raw)
    _only_keys(ctx, where, table, {"pool", "addresses"})
    if "pool" in table:
        pool = _str(ctx, f"{where}.pool", table["pool"])
        if pool not in pools:
            raise ctx.fail(f"{where}.pool", f"unknown pool {pool!r}")
        return Fallback("pool", pool=pool)
    if "addresses" in table:
        items = _list(ctx, f"{where}.addresses", table["addresses"])
        if not items:
            raise ctx.fail(f"{where}.addresses", "needs at least one address")
        for i, item in enumerate(items):
            _ip(ctx, f"{where}.addresses[{i}]", _str(ctx, f"{where}.addresses[{i}]", item))
        return Fallback("addresses", addresses=tuple(items))
    raise ctx.fail(where, 'must be "open", {pool = "..."} or {addresses = [...]}')


# ---- filters ----


def _filter(
    ctx: _Ctx, where: str, raw: Any, regions: Mapping[str, Region], pool: Pool
) -> Filter:
    table = _table(ctx, where, raw)
    kind = _str(ctx, f"{where}.type", _required(ctx, where, table, "type"))
    builders: dict[str, Callable[[], Filter]] = {
        "failover": lambda: _failover(ctx, where, table, regions, pool),
        "geo": lambda: _geo(ctx, where, table, regions),
        "proximity": lambda: _proximity(ctx, where, table, regions),
        "latency": lambda: _latency(ctx, where, table, regions),
        "capacity": lambda: _capacity(ctx, where, table),
    }
    if kind not in builders:
        raise ctx.fail(f"{where}.type", f"must be one of {', '.join(builders)}")
    return builders[kind]()


def _failover(
    ctx: _Ctx, where: str, table: Mapping[str, Any], regions: Mapping[str, Region], pool: Pool
) -> FailoverFilter:
    _only_keys(ctx, where, table, {"type", "groups", "min_healthy"})
    known = set(regions) | {e.name for e in pool.endpoints}
    groups = []
    raw_groups = _list(ctx, f"{where}.groups", _required(ctx, where, table, "groups"))
    for i, group in enumerate(raw_groups):
        members = tuple(_str(ctx, f"{where}.groups[{i}]", m) for m in _list(
            ctx, f"{where}.groups[{i}]", group))
        for member in members:
            if member not in known:
                raise ctx.fail(f"{where}.groups[{i}]",
                               f"{member!r} is neither a region nor an endpoint of the pool")
        groups.append(members)
    if not groups:
        raise ctx.fail(f"{where}.groups", "needs at least one group")
    min_healthy = _int(ctx, f"{where}.min_healthy", table.get("min_healthy", 1), minimum=1)
    return FailoverFilter(tuple(groups), min_healthy)


def _geo(
    ctx: _Ctx, where: str, table: Mapping[str, Any], regions: Mapping[str, Region]
) -> GeoFilter:
    _only_keys(ctx, where, table, {
        "type", "default", "networks", "subdivisions", "countries", "continents", "keep"})

    def region_list(path: str, raw: Any) -> tuple[str, ...]:
        items = tuple(_str(ctx, path, r) for r in _list(ctx, path, raw))
        for item in items:
            if item not in regions:
                raise ctx.fail(path, f"unknown region {item!r}")
        if not items:
            raise ctx.fail(path, "needs at least one region")
        return items

    def mapping(key: str, normalise: Callable[[str], str]) -> dict[str, tuple[str, ...]]:
        return {normalise(k): region_list(f"{where}.{key}.{k}", v)
                for k, v in _table(ctx, f"{where}.{key}", table.get(key, {})).items()}

    networks = tuple(
        (_network(ctx, f"{where}.networks.{k}", k), region_list(f"{where}.networks.{k}", v))
        for k, v in _table(ctx, f"{where}.networks", table.get("networks", {})).items()
    )
    return GeoFilter(
        default=region_list(f"{where}.default", _required(ctx, where, table, "default")),
        networks=tuple(sorted(networks, key=lambda item: -item[0].prefixlen)),
        subdivisions=mapping("subdivisions", str.upper),
        countries=mapping("countries", str.upper),
        continents=mapping("continents", str.upper),
        keep=_int(ctx, f"{where}.keep", table.get("keep", 1), minimum=1),
    )


def _proximity(
    ctx: _Ctx, where: str, table: Mapping[str, Any], regions: Mapping[str, Region]
) -> ProximityFilter:
    _only_keys(ctx, where, table, {"type", "bias_km", "keep"})
    bias = {}
    for region, value in _table(ctx, f"{where}.bias_km", table.get("bias_km", {})).items():
        if region not in regions:
            raise ctx.fail(f"{where}.bias_km.{region}", f"unknown region {region!r}")
        bias[region] = _number(ctx, f"{where}.bias_km.{region}", value)
    return ProximityFilter(bias, _int(ctx, f"{where}.keep", table.get("keep", 1), minimum=1))


def _latency(
    ctx: _Ctx, where: str, table: Mapping[str, Any], regions: Mapping[str, Region]
) -> LatencyFilter:
    _only_keys(ctx, where, table, {"type", "networks", "table_file", "keep"})
    raw_networks = table.get("networks")
    source_where = f"{where}.networks"
    if "table_file" in table:
        # A separate file can be replaced at run time; the zone watcher reloads it.
        raw_networks = _read_latency_file(ctx, f"{where}.table_file", table["table_file"])
        source_where = f"{where}.table_file"
    rows = []
    for key, value in _table(ctx, source_where, raw_networks or {}).items():
        network = _network(ctx, f"{source_where}.{key}", key)
        rtts = {}
        for region, rtt in _table(ctx, f"{source_where}.{key}", value).items():
            if region not in regions:
                raise ctx.fail(f"{source_where}.{key}.{region}", f"unknown region {region!r}")
            rtts[region] = _number(ctx, f"{source_where}.{key}.{region}", rtt)
        rows.append((network, rtts))
    rows.sort(key=lambda item: -item[0].prefixlen)
    return LatencyFilter(tuple(rows), _int(ctx, f"{where}.keep", table.get("keep", 1), minimum=1))


def _read_latency_file(ctx: _Ctx, where: str, raw: Any) -> Any:
    name = _str(ctx, where, raw)
    path = Path(name) if ctx.base is None else ctx.base / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ctx.fail(where, f"cannot read latency table {path}: {exc}") from exc


def _capacity(ctx: _Ctx, where: str, table: Mapping[str, Any]) -> CapacityFilter:
    _only_keys(ctx, where, table, {"type", "spill_below"})
    spill = _number(ctx, f"{where}.spill_below", table.get("spill_below", 0.2))
    if not 0 < spill <= 1:
        raise ctx.fail(f"{where}.spill_below", "must be above 0 and at most 1")
    return CapacityFilter(spill)


def _unique_endpoint_names(ctx: _Ctx, pools: Mapping[str, Pool]) -> None:
    seen: dict[str, str] = {}
    for pool in pools.values():
        for endpoint in pool.endpoints:
            if endpoint.name in seen and seen[endpoint.name] != pool.name:
                raise ctx.fail(f"pools.{pool.name}",
                               f"endpoint name {endpoint.name!r} is also used in pool "
                               f"{seen[endpoint.name]!r}; names are unique per zone")
            if endpoint.name in seen:
                raise ctx.fail(f"pools.{pool.name}", f"endpoint {endpoint.name!r} appears twice")
            seen[endpoint.name] = pool.name


# ---- typed accessors ----


def _required(ctx: _Ctx, where: str, table: Mapping[str, Any], key: str) -> Any:
    if key not in table:
        raise ctx.fail(f"{where}.{key}" if where else key, "is required")
    return table[key]


def _only_keys(ctx: _Ctx, where: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    for key in table:
        if key not in allowed:
            path = f"{where}.{key}" if where else key
            raise ctx.fail(path, f"unknown key (expected one of {', '.join(sorted(allowed))})")


def _table(ctx: _Ctx, where: str, raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ctx.fail(where, "must be a table")
    return raw


def _list(ctx: _Ctx, where: str, raw: Any) -> list[Any]:
    if not isinstance(raw, list):
        raise ctx.fail(where, "must be a list")
    return raw


def _str(ctx: _Ctx, where: str, raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise ctx.fail(where, "must be a non-empty string")
    return raw


def _optional_str(ctx: _Ctx, where: str, raw: Any) -> str | None:
    return None if raw is None else _str(ctx, where, raw)


def _bool(ctx: _Ctx, where: str, raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise ctx.fail(where, "must be true or false")
    return raw


def _int(ctx: _Ctx, where: str, raw: Any, minimum: int = 0, maximum: int | None = None) -> int:
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise ctx.fail(where, "must be a whole number")
    if raw < minimum or (maximum is not None and raw > maximum):
        bound = f"from {minimum} to {maximum}" if maximum is not None else f"at least {minimum}"
        raise ctx.fail(where, f"must be {bound}")
    return raw


def _number(ctx: _Ctx, where: str, raw: Any) -> float:
    if not isinstance(raw, int | float) or isinstance(raw, bool):
        raise ctx.fail(where, "must be a number")
    return float(raw)


def _ip(ctx: _Ctx, where: str, text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError as exc:
        raise ctx.fail(where, f"{text!r} is not an IP address") from exc


def _address(ctx: _Ctx, where: str, raw: Any, version: int) -> str | None:
    if raw is None:
        return None
    address = _ip(ctx, where, _str(ctx, where, raw))
    if address.version != version:
        raise ctx.fail(where, f"{raw!r} is not an IPv{version} address")
    return str(address)


def _cname(ctx: _Ctx, where: str, raw: Any) -> dns.name.Name | None:
    if raw is None:
        return None
    text = _str(ctx, where, raw)
    if not text.endswith("."):
        raise ctx.fail(where, "a CNAME target must be absolute (end with a dot)")
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException as exc:
        raise ctx.fail(where, f"not a domain name: {exc}") from exc


def _network(ctx: _Ctx, where: str, text: str) -> IPNetwork:
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ctx.fail(where, f"{text!r} is not a network in CIDR form: {exc}") from exc
