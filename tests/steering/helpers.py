"""Building steering definitions, state and clients for the steering tests.

Definitions go through the same parser as a ``.steering.toml`` file, state through
the same parser as a ``.state.json`` file, and answers through the DNS answer
function, so the tests exercise what a user configures and sees.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Mapping
from typing import Any

import dns.name
import dns.rdataclass
import dns.rdatatype

from gtm.dns.answer import ZoneSet, answer
from gtm.dns.steered import SteerInput
from gtm.dns.zone import attach_steering
from gtm.steering.chain import Client, Decision, LocatorLike, decide
from gtm.steering.definitions import parse_steering
from gtm.steering.model import Endpoint, SteeredName, Steering
from gtm.steering.state import SteeringState, parse_state
from tests.dnsutil import zone_from_text

ORIGIN_TEXT = "gslb.test."
ORIGIN = dns.name.from_text(ORIGIN_TEXT)
SOURCE = "tests/gslb.test.steering.toml"

REGIONS: dict[str, dict[str, Any]] = {
    "eu": {"latitude": 53.35, "longitude": -6.26, "country": "IE", "continent": "EU"},
    "us": {"latitude": 38.95, "longitude": -77.45, "country": "US", "continent": "NA"},
    "ap": {"latitude": 35.68, "longitude": 139.69, "country": "JP", "continent": "AS"},
    "sa": {"latitude": -23.55, "longitude": -46.63, "country": "BR", "continent": "SA"},
}

# name -> (region, IPv4, IPv6 or None, weight)
WEB: dict[str, tuple[str, str, str | None, int]] = {
    "eu-1": ("eu", "192.0.2.11", "2001:db8::11", 1),
    "eu-2": ("eu", "192.0.2.12", "2001:db8::12", 1),
    "us-1": ("us", "192.0.2.21", "2001:db8::21", 2),
    "us-2": ("us", "192.0.2.22", "2001:db8::22", 1),
    "ap-1": ("ap", "192.0.2.31", None, 1),
    "sa-1": ("sa", "192.0.2.41", None, 1),
}
ADDRESS_OF = {name: v4 for name, (_, v4, _, _) in WEB.items()}
NAME_OF = {v4: name for name, v4 in ADDRESS_OF.items()}
BACKUP_ADDRESS = "192.0.2.99"

ZONE_TEXT = f"""$TTL 300
@    SOA ns1.{ORIGIN_TEXT} hostmaster.{ORIGIN_TEXT} 1 7200 1800 1209600 30
@    NS  ns1.{ORIGIN_TEXT}
ns1  A   192.0.2.53
"""


def web_endpoints(changes: Mapping[str, Mapping[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The web pool's endpoints; changes maps an endpoint name to keys to override."""
    changes = changes or {}
    out = []
    for name, (region, v4, v6, weight) in WEB.items():
        item: dict[str, Any] = {"name": name, "region": region, "ipv4": v4, "weight": weight}
        if v6 is not None:
            item["ipv6"] = v6
        item.update(changes.get(name, {}))
        out.append(item)
    return out


def default_pools() -> dict[str, Any]:
    return {
        "web": {"endpoints": web_endpoints()},
        "backup": {"endpoints": [{"name": "backup-1", "region": "us", "ipv4": BACKUP_ADDRESS}]},
    }


def steering(
    names: Mapping[str, Any],
    pools: Mapping[str, Any] | None = None,
    regions: Mapping[str, Any] | None = None,
) -> Steering:
    raw = {
        "regions": copy.deepcopy(dict(regions or REGIONS)),
        "pools": copy.deepcopy(dict(pools or default_pools())),
        "names": copy.deepcopy(dict(names)),
    }
    return parse_steering(raw, ORIGIN, SOURCE)


def one_name(**spec: Any) -> Steering:
    """Definitions with a single steered name `www` of the given spec (pool web by default)."""
    spec.setdefault("pool", "web")
    return steering({"www": spec})


def state(
    endpoints: Mapping[str, Mapping[str, Any]] | None = None,
    regions: Mapping[str, Mapping[str, Any]] | None = None,
) -> SteeringState:
    raw = {"endpoints": dict(endpoints or {}), "regions": dict(regions or {})}
    return parse_state(raw, "tests/gslb.test.state.json")


def ecs(cidr: str) -> Client:
    network = ipaddress.ip_network(cidr, strict=False)
    return Client(network.network_address, network.prefixlen, from_ecs=True)


def resolver(address: str) -> Client:
    ip = ipaddress.ip_address(address)
    return Client(ip, ip.max_prefixlen)


def serves(rdtype: str = "A"):
    if rdtype == "AAAA":
        return lambda e: e.ipv6 is not None
    if rdtype == "CNAME":
        return lambda e: e.cname is not None
    return lambda e: e.ipv4 is not None


def decision(
    st: Steering,
    name: str = "www",
    *,
    st_state: SteeringState | None = None,
    client: Client | None = None,
    locator: LocatorLike | None = None,
    rdtype: str = "A",
) -> Decision:
    return decide(steered(st, name), st, st_state or SteeringState(), serves(rdtype), client,
                  locator)


def steered(st: Steering, name: str = "www") -> SteeredName:
    key = tuple(label.lower() for label in dns.name.from_text(name, ORIGIN).labels)
    return st.names[key]


def chosen(d: Decision) -> list[str]:
    """The candidates' endpoint names, in the order the chain left them."""
    return [c.endpoint.name for c in d.candidates]


def zoneset(st: Steering, st_state: SteeringState | None = None) -> ZoneSet:
    zone = zone_from_text(ORIGIN_TEXT, ZONE_TEXT)
    return ZoneSet.of([attach_steering(zone, st, st_state or SteeringState())])


def rotation(
    zones: ZoneSet,
    name: str = "www",
    rdtype: str = "A",
    client: Client | None = None,
    locator: LocatorLike | None = None,
    want: str | None = None,
) -> list[frozenset[str]]:
    """Every answer the DNS cache rotates through for this question, as sets of the rdata
    text of the records of type `want` (by default the query type)."""
    qname = dns.name.from_text(name, ORIGIN)
    qtype = dns.rdatatype.from_text(rdtype)
    wanted = dns.rdatatype.from_text(want or rdtype)
    result = answer(qname, qtype, dns.rdataclass.IN, zones, SteerInput(client, locator))
    sections = result.variants or (result.answer,)
    return [
        frozenset(rd.to_text() for rrset in section if rrset.rdtype == wanted for rd in rrset)
        for section in sections
    ]


def answer_scope(
    zones: ZoneSet,
    name: str = "www",
    rdtype: str = "A",
    client: Client | None = None,
    locator: LocatorLike | None = None,
) -> int:
    qname = dns.name.from_text(name, ORIGIN)
    result = answer(qname, dns.rdatatype.from_text(rdtype), dns.rdataclass.IN, zones,
                    SteerInput(client, locator))
    return result.scope_prefix


def endpoint_names(addresses: frozenset[str] | set[str]) -> set[str]:
    return {NAME_OF.get(a, a) for a in addresses}


def all_served(zones: ZoneSet, **kwargs: Any) -> set[str]:
    """The union of the endpoint names over the whole rotation."""
    return set().union(*(endpoint_names(v) for v in rotation(zones, **kwargs)))


def enabled_names(st: Steering, pool: str = "web") -> set[str]:
    return {e.name for e in st.pools[pool].endpoints if e.enabled}


def endpoint(st: Steering, name: str) -> Endpoint:
    found = st.endpoint(name)
    assert found is not None
    return found
