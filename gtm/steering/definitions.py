"""Loading steering definitions (``<zone>.steering.toml``) into the frozen model.

Every error names the file, the path inside it and the reason, e.g.
``zones/gslb.example.test.steering.toml: pools.web.endpoints[2].weight: must be ...``.
The same function validates the ``steering`` section of a control-plane document.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import dns.exception
import dns.name

from gtm.config_reader import REQUIRED, Place, Reader
from gtm.steering.model import (
    CapacityFilter,
    Endpoint,
    FailoverFilter,
    Fallback,
    Filter,
    GeoFilter,
    HealthCheck,
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


def load_steering_file(path: Path, origin: dns.name.Name) -> Steering:
    return parse_steering(read_toml(path), origin, str(path), path.parent)


def parse_steering(
    raw: Mapping[str, Any], origin: dns.name.Name, source: str, base: Path | None = None,
    where: str = "",
) -> Steering:
    """Definitions from a table; errors name ``where`` inside ``source`` (the zone's path
    in a document) before the path inside the definitions. ``base``: the directory a
    latency ``table_file`` is relative to."""
    top = Reader(raw, source, where, {"regions", "pools", "names"})
    region_tables = top.child("regions")
    regions = {name: _region(region_tables.child(name, REGION_KEYS), name)
               for name in region_tables.table}
    pool_tables = top.child("pools")
    pools = {name: _pool(pool_tables.child(name, {"endpoints", "check"}), name, regions)
             for name in pool_tables.table}
    _unique_endpoint_names(pool_tables, pools)
    names = {}
    name_tables = top.child("names")
    for text in name_tables.table:
        steered = _steered_name(name_tables.child(text, NAME_KEYS), text, origin, regions,
                                pools, base)
        key = tuple(label.lower() for label in steered.name.labels)
        if key in names:
            raise name_tables.fail(text, f"{steered.name} is defined twice")
        names[key] = steered
    return Steering(regions, pools, names, source)


# ---- sections ----

REGION_KEYS = {"latitude", "longitude", "country", "continent"}
ENDPOINT_KEYS = {"name", "region", "ipv4", "ipv6", "cname", "weight", "capacity", "enabled",
                 "check_address"}
NAME_KEYS = {"pool", "ttl", "answers", "filters", "select", "sticky_prefix_v4",
             "sticky_prefix_v6", "fallback"}


def _region(table: Reader, name: str) -> Region:
    latitude = table.number("latitude", low=-90, high=90)
    longitude = table.number("longitude", low=-180, high=180)
    country = table.text("country", None, empty=False)
    continent = table.text("continent", None, empty=False)
    if country is not None and (len(country) != 2 or not country.isalpha()):
        raise table.fail("country", "must be a two-letter ISO 3166 code")
    if continent is not None and continent.upper() not in CONTINENTS:
        raise table.fail("continent", f"must be one of {', '.join(CONTINENTS)}")
    return Region(
        name, latitude, longitude,
        country.upper() if country else None,
        continent.upper() if continent else None,
    )


def _pool(table: Reader, name: str, regions: Mapping[str, Region]) -> Pool:
    items = table.list("endpoints", REQUIRED)
    if not items:
        raise table.fail("endpoints", "a pool needs at least one endpoint")
    endpoints = tuple(_endpoint(endpoint, regions)
                      for endpoint in table.tables("endpoints", ENDPOINT_KEYS))
    kinds = {e.cname is not None for e in endpoints}
    if len(kinds) > 1:
        raise table.fail("endpoints", "mixes CNAME endpoints with address endpoints")
    check = None
    if "check" in table:
        check = parse_health_check(table.child("check"))
        if check.type != "exec" and any(
                e.cname is not None and e.check_address is None for e in endpoints):
            raise table.fail("check", "CNAME endpoints need a check_address to probe")
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


def parse_health_check(table: Reader) -> HealthCheck:
    """One health-check table, validated as the GTM validates a pool's ``check``; the
    regional balancer reads its pools' checks through this too, so both accept the same.
    Only the keys its type uses are allowed."""
    kind = table.text("type", empty=False)
    if kind not in CHECK_TYPES:
        raise table.fail("type", f"must be one of {', '.join(CHECK_TYPES)}")
    table.only(COMMON_CHECK_KEYS | CHECK_KEYS[kind])
    values: dict[str, Any] = {"type": kind}
    if "port" in table:
        values["port"] = table.integer("port", low=1, high=65535)
    for key in ("interval", "timeout", "fastinter"):
        if key in table:
            values[key] = table.number(key)
            if not 0.01 <= values[key] <= 3600:
                raise table.fail(key, "must be from 0.01 to 3600 seconds")
    for key in ("rise", "fall"):
        if key in table:
            values[key] = table.integer(key, low=1, high=100)
    if "jitter" in table:
        values["jitter"] = table.number("jitter")
        if not 0 <= values["jitter"] <= 0.5:
            raise table.fail("jitter", "must be from 0 to 0.5 (a fraction of the delay)")
    for key in ("method", "path", "host", "body", "sni", "query", "qtype", "rcode", "answer"):
        if key in table:
            values[key] = table.text(key, empty=False)
    if "verify" in table:
        values["verify"] = table.flag("verify", True)
    if "cert_warn_days" in table:
        values["cert_warn_days"] = table.integer("cert_warn_days", low=0)
    if "expect" in table:
        codes = [place.integer(code, 100, 599) for place, code in table.items("expect")]
        if not codes:
            raise table.fail("expect", "needs at least one status code")
        values["expect"] = tuple(codes)
    if "command" in table:
        values["command"] = tuple(place.text(arg, empty=False)
                                  for place, arg in table.items("command"))
    _check_consistency(table, kind, values)
    return HealthCheck(**values)


def _check_consistency(table: Reader, kind: str, values: dict[str, Any]) -> None:
    if kind == "dns" and "query" not in values:
        raise table.fail("query", "is required for a dns check")
    if kind == "exec" and not values.get("command"):
        raise table.fail("command", "is required for an exec check (a list of strings)")
    if kind == "tcp" and "port" not in values:
        raise table.fail("port", "is required for a tcp check")
    if values.get("timeout", 1.0) > values.get("interval", 2.0):
        raise table.fail("timeout", "must not be longer than the interval")
    if "path" in values and not values["path"].startswith("/"):
        raise table.fail("path", "must start with /")
    if kind == "dns":
        import dns.rcode
        import dns.rdatatype

        try:
            dns.rdatatype.from_text(values.get("qtype", "A"))
            dns.rcode.from_text(values.get("rcode", "NOERROR"))
        except (dns.exception.DNSException, ValueError) as exc:
            raise table.fail("", f"bad qtype or rcode: {exc}") from exc


def _endpoint(table: Reader, regions: Mapping[str, Region]) -> Endpoint:
    name = table.text("name", empty=False)
    region = table.text("region", empty=False)
    if region not in regions:
        raise table.fail("region", f"unknown region {region!r}")
    ipv4 = _address(table, "ipv4", 4)
    ipv6 = _address(table, "ipv6", 6)
    cname = _cname(table, "cname")
    if cname is not None and (ipv4 or ipv6):
        raise table.fail("", "an endpoint has a CNAME target or addresses, not both")
    if cname is None and not (ipv4 or ipv6):
        raise table.fail("", "needs ipv4, ipv6 or cname")
    check = table.text("check_address", None, empty=False)  # kept as written
    if check is not None:
        table.at("check_address").ip(check)
    return Endpoint(
        name, region, ipv4, ipv6, cname,
        weight=table.integer("weight", 1, low=0, high=1_000_000),
        capacity=table.integer("capacity", None, low=0),
        enabled=table.flag("enabled", True),
        check_address=check,
    )


def _steered_name(
    table: Reader,
    text: str,
    origin: dns.name.Name,
    regions: Mapping[str, Region],
    pools: Mapping[str, Pool],
    base: Path | None,
) -> SteeredName:
    try:
        name = dns.name.from_text(text, origin)
    except dns.exception.DNSException as exc:
        raise table.fail("", f"not a domain name: {exc}") from exc
    if not name.is_subdomain(origin):
        raise table.fail("", f"{name} is outside the zone {origin}")
    pool = table.text("pool", empty=False)
    if pool not in pools:
        raise table.fail("pool", f"unknown pool {pool!r}")
    select = table.text("select", "weighted", empty=False)
    if select not in SELECTIONS:
        raise table.fail("select", f"must be one of {', '.join(SELECTIONS)}")
    answers = table.integer("answers", 1, low=1, high=16)
    if pools[pool].is_cname and answers != 1:
        raise table.fail("answers", "a CNAME pool answers with exactly one target")
    filters = tuple(_filter(item, regions, pools[pool], base)
                    for item in table.tables("filters"))
    fallback = _fallback(table, pools)
    # A fallback of the other kind would answer nothing at all when it applies.
    if fallback.mode == "addresses" and pools[pool].is_cname:
        raise table.fail("fallback", "a CNAME pool cannot fall back to fixed addresses; use "
                         "a fallback pool of CNAME endpoints")
    if fallback.pool is not None and pools[fallback.pool].is_cname != pools[pool].is_cname:
        raise table.fail("fallback.pool", f"pool {fallback.pool!r} and pool {pool!r} must "
                         "both be CNAME pools or both address pools")
    return SteeredName(
        name=name,
        pool=pool,
        ttl=table.integer("ttl", 30, low=0, high=86400),
        answers=answers,
        filters=filters,
        select=select,  # type: ignore[arg-type]
        sticky_prefix_v4=table.integer("sticky_prefix_v4", 24, low=0, high=32),
        sticky_prefix_v6=table.integer("sticky_prefix_v6", 56, low=0, high=128),
        fallback=fallback,
    )


def _fallback(name: Reader, pools: Mapping[str, Pool]) -> Fallback:
    if name.value("fallback", "open") == "open":
        return Fallback()
    table = name.child("fallback", {"pool", "addresses"})
    if "pool" in table:
        pool = table.text("pool", empty=False)
        if pool not in pools:
            raise table.fail("pool", f"unknown pool {pool!r}")
        return Fallback("pool", pool=pool)
    if "addresses" in table:
        addresses = tuple(place.text(item, empty=False)
                          for place, item in table.items("addresses"))
        if not addresses:
            raise table.fail("addresses", "needs at least one address")
        for place, item in table.items("addresses"):
            place.ip(item)
        return Fallback("addresses", addresses=addresses)
    raise table.fail("", 'must be "open", {pool = "..."} or {addresses = [...]}')


# ---- filters ----


def _filter(table: Reader, regions: Mapping[str, Region], pool: Pool, base: Path | None
            ) -> Filter:
    kind = table.text("type", empty=False)
    builders: dict[str, Callable[[], Filter]] = {
        "failover": lambda: _failover(table, regions, pool),
        "geo": lambda: _geo(table, regions),
        "proximity": lambda: _proximity(table, regions),
        "latency": lambda: _latency(table, regions, base),
        "capacity": lambda: _capacity(table),
    }
    if kind not in builders:
        raise table.fail("type", f"must be one of {', '.join(builders)}")
    return builders[kind]()


def _failover(table: Reader, regions: Mapping[str, Region], pool: Pool) -> FailoverFilter:
    table.only({"type", "groups", "min_healthy"})
    known = set(regions) | {e.name for e in pool.endpoints}
    groups = []
    table.list("groups", REQUIRED)
    for group_place, group in table.items("groups"):
        members = tuple(group_place.text(member, empty=False)
                        for _, member in group_place.items(group))
        for member in members:
            if member not in known:
                raise group_place.fail(f"{member!r} is neither a region nor an endpoint of "
                                       "the pool")
        groups.append(members)
    if not groups:
        raise table.fail("groups", "needs at least one group")
    return FailoverFilter(tuple(groups), table.integer("min_healthy", 1, low=1))


def _region_list(place: Place, raw: Any, regions: Mapping[str, Region]) -> tuple[str, ...]:
    items = tuple(place.text(item, empty=False) for _, item in place.items(raw))
    for item in items:
        if item not in regions:
            raise place.fail(f"unknown region {item!r}")
    if not items:
        raise place.fail("needs at least one region")
    return items


def _geo(table: Reader, regions: Mapping[str, Region]) -> GeoFilter:
    table.only({"type", "default", "networks", "subdivisions", "countries", "continents",
                "keep"})

    def mapping(key: str) -> dict[str, tuple[str, ...]]:
        by_code = table.child(key)
        return {code.upper(): _region_list(by_code.at(code), value, regions)
                for code, value in by_code.table.items()}

    by_network = table.child("networks")
    networks = tuple(
        (by_network.at(text).network(text), _region_list(by_network.at(text), value, regions))
        for text, value in by_network.table.items()
    )
    return GeoFilter(
        default=_region_list(table.at("default"), table.value("default"), regions),
        networks=tuple(sorted(networks, key=lambda item: -item[0].prefixlen)),
        subdivisions=mapping("subdivisions"),
        countries=mapping("countries"),
        continents=mapping("continents"),
        keep=table.integer("keep", 1, low=1),
    )


def _proximity(table: Reader, regions: Mapping[str, Region]) -> ProximityFilter:
    table.only({"type", "bias_km", "keep"})
    bias_km = table.child("bias_km")
    bias = {}
    for region in bias_km.table:
        if region not in regions:
            raise bias_km.fail(region, f"unknown region {region!r}")
        bias[region] = bias_km.number(region)
    return ProximityFilter(bias, table.integer("keep", 1, low=1))


def _latency(table: Reader, regions: Mapping[str, Region], base: Path | None
             ) -> LatencyFilter:
    table.only({"type", "networks", "table_file", "keep"})
    if "table_file" in table:
        # A separate file can be replaced at run time; the zone watcher reloads it.
        rows_at = table.at("table_file")
        by_network = rows_at.table(_read_latency_file(table, base))
    else:
        by_network = table.child("networks")
    rows = []
    for text in by_network.table:
        network = by_network.at(text).network(text)
        rtts = by_network.child(text)
        for region in rtts.table:
            if region not in regions:
                raise rtts.fail(region, f"unknown region {region!r}")
        rows.append((network, {region: rtts.number(region) for region in rtts.table}))
    rows.sort(key=lambda item: -item[0].prefixlen)
    return LatencyFilter(tuple(rows), table.integer("keep", 1, low=1))


def _read_latency_file(table: Reader, base: Path | None) -> Any:
    name = table.text("table_file", empty=False)
    path = Path(name) if base is None else base / name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise table.fail("table_file", f"cannot read latency table {path}: {exc}") from exc


def _capacity(table: Reader) -> CapacityFilter:
    table.only({"type", "spill_below"})
    spill = table.number("spill_below", 0.2)
    if not 0 < spill <= 1:
        raise table.fail("spill_below", "must be above 0 and at most 1")
    return CapacityFilter(spill)


def _unique_endpoint_names(pool_tables: Reader, pools: Mapping[str, Pool]) -> None:
    seen: dict[str, str] = {}
    for pool in pools.values():
        for endpoint in pool.endpoints:
            if endpoint.name in seen and seen[endpoint.name] != pool.name:
                raise pool_tables.fail(pool.name,
                                       f"endpoint name {endpoint.name!r} is also used in pool "
                                       f"{seen[endpoint.name]!r}; names are unique per zone")
            if endpoint.name in seen:
                raise pool_tables.fail(pool.name, f"endpoint {endpoint.name!r} appears twice")
            seen[endpoint.name] = pool.name


# ---- typed values of their own ----


def _address(table: Reader, key: str, version: int) -> str | None:
    if key not in table:
        return None
    address = table.at(key).ip(table.value(key))
    if address.version != version:
        raise table.fail(key, f"{table.value(key)!r} is not an IPv{version} address")
    return str(address)


def _cname(table: Reader, key: str) -> dns.name.Name | None:
    text = table.text(key, None, empty=False)
    if text is None:
        return None
    if not text.endswith("."):
        raise table.fail(key, "a CNAME target must be absolute (end with a dot)")
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException as exc:
        raise table.fail(key, f"not a domain name: {exc}") from exc
