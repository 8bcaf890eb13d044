"""What a lab is made of, computed from a regions file: pure, no system calls.

A plan names every host (a network namespace, or the host itself in loopback mode),
its addresses and the processes it runs, the steering document the control plane
serves, and the round-trip latency of every path into a region (from the great-circle
distance between where a host stands and the region). Building it is `gtm.lab.build`'s
job; this module only decides.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gtm.config_reader import Reader
from gtm.errors import ConfigError
from gtm.geo.distance import great_circle_km
from gtm.toml_input import read_toml

DEFAULT_REGIONS = Path(__file__).resolve().parent.parent.parent / "examples" / "lab" / \
    "regions.toml"
DEFAULT_PREFIX = "gtmlab-"
MAX_IFNAME = 15  # IFNAMSIZ - 1: the kernel refuses longer interface names

# Netns mode: a bridge in the core namespace joins the control plane, the DNS nodes and
# the vantage points; each region hangs off the core on its own veth, routed through
# its delay line (a TUN device). Region addresses come from 198.18.0.0/15, the range
# RFC 2544 sets aside for benchmarking, so they cannot be anyone's real service.
GATEWAY = "10.200.0.1"
BRIDGE_PREFIX_LEN = 24
CONTROL_ADDRESS = "10.200.0.2"
API_PORT = 8080
REDIS_PORT = 6379
HEALTH_PORT = 8080   # balancer listeners (the check in the regions file probes them)
ADMIN_PORT = 9900
BACKEND_PORT = 9001
# Loopback mode: 127.0.20.x for the control plane and nodes, 127.0.(20+N).x for region N
# (`gtm up` uses 127.0.N.x, so both can run side by side).
LOOPBACK_BASE = 20
LOOPBACK_DNS_PORT = 5300  # below 1024 needs root


@dataclass(frozen=True)
class Region:
    name: str
    index: int                  # 1-based: the third octet of its addresses
    latitude: float
    longitude: float
    namespace: str | None
    endpoints: tuple[tuple[str, str, int], ...]  # (endpoint name, address, weight)
    backends: tuple[str, ...]   # HOST:PORT of its demo backends (inside its namespace)
    link: str | None            # the core's end of its veth (what cut_link sets down)
    tun: str | None             # its delay line's TUN device in the core namespace

    @property
    def admin(self) -> str:
        return f"{self.endpoints[0][1]}:{ADMIN_PORT}"

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(address for _, address, _ in self.endpoints)


@dataclass(frozen=True)
class Node:
    """A GTM DNS node; it stands where the region of the same position stands."""

    name: str
    namespace: str | None
    address: str
    port: int
    link: str | None
    latitude: float
    longitude: float


@dataclass(frozen=True)
class Vantage:
    """A client namespace standing for a resolver in a country."""

    name: str
    namespace: str | None
    address: str
    country: str | None
    latitude: float
    longitude: float
    link: str | None


@dataclass(frozen=True)
class LabPlan:
    prefix: str
    loopback: bool
    zone: str
    source: str                 # the regions file
    core: str | None            # the core namespace (bridge, routes, delay lines)
    control_namespace: str | None
    control_address: str
    control_link: str | None
    bridge: str | None
    regions: tuple[Region, ...]
    nodes: tuple[Node, ...]
    vantages: tuple[Vantage, ...]
    steering: dict[str, Any]    # the zone's steering definitions, as the document holds them
    base_latency_ms: float
    ms_per_100km: float

    @property
    def namespaces(self) -> tuple[str, ...]:
        names = [self.core, self.control_namespace]
        names += [r.namespace for r in self.regions]
        names += [n.namespace for n in self.nodes]
        names += [v.namespace for v in self.vantages]
        return tuple(name for name in names if name is not None)

    @property
    def api_inside(self) -> str:
        return f"http://{self.control_address}:{API_PORT}"

    @property
    def redis_url(self) -> str:
        return f"redis://{self.control_address}:{REDIS_PORT}"

    def region(self, name: str) -> Region:
        for region in self.regions:
            if region.name == name:
                return region
        raise ConfigError(f"no region {name!r} in the lab (regions: "
                          f"{', '.join(r.name for r in self.regions)})")

    def latencies(self, region: Region) -> dict[str, float]:
        """Round-trip milliseconds from each host's address to ``region``."""
        places = [(n.address, n.latitude, n.longitude) for n in self.nodes]
        places += [(v.address, v.latitude, v.longitude) for v in self.vantages]
        first = self.regions[0]  # the control plane stands in the first region
        places.append((self.control_address, first.latitude, first.longitude))
        return {address: path_latency_ms(self, lat, lon, region) for address, lat, lon
                in places}


def path_latency_ms(plan: LabPlan, latitude: float, longitude: float, region: Region
                    ) -> float:
    km = great_circle_km(latitude, longitude, region.latitude, region.longitude)
    return round(plan.base_latency_ms + km / 100.0 * plan.ms_per_100km, 1)


Locate = Any  # a callable: address -> (country, latitude, longitude) | None


def load_plan(path: Path | None, prefix: str = DEFAULT_PREFIX, loopback: bool = False,
              locate: Locate = None) -> LabPlan:
    """The plan of the lab a regions file describes (``locate``: where the geo database
    places an address, for the vantage points; the caller opens the database)."""
    source = path or DEFAULT_REGIONS
    return plan_from_table(read_toml(source), str(source), prefix, loopback, locate)


def plan_from_table(raw: dict[str, Any], source: str, prefix: str, loopback: bool,
                    locate: Locate = None) -> LabPlan:
    check_prefix(prefix)
    top = Reader(raw, source, keys=("lab", "regions", "vantage", "check", "names"))
    lab = top.child("lab", keys=("zone", "dns_nodes", "base_latency_ms", "ms_per_100km"))
    zone = lab.text("zone", "gslb.example.test", empty=False).rstrip(".")
    node_count = lab.integer("dns_nodes", 2, low=1, high=8)
    regions_table = top.child("regions")
    if not regions_table.table:
        raise regions_table.fail("", "needs at least one region")
    if len(regions_table.table) > 50:
        raise regions_table.fail("", "at most 50 regions")
    regions = tuple(_region(regions_table, name, i, prefix, loopback)
                    for i, name in enumerate(regions_table.table, start=1))
    nodes = tuple(_node(i, prefix, loopback, regions) for i in range(1, node_count + 1))
    vantages = () if loopback else tuple(
        _vantage(top.child("vantage"), name, i, prefix, locate)
        for i, name in enumerate(top.child("vantage").table, start=1))
    netns = not loopback
    return LabPlan(
        prefix=prefix, loopback=loopback, zone=zone, source=source,
        core=f"{prefix}core" if netns else None,
        control_namespace=f"{prefix}ctl" if netns else None,
        control_address=CONTROL_ADDRESS if netns else f"127.0.{LOOPBACK_BASE}.1",
        control_link=_ifname(prefix, "ctl") if netns else None,
        bridge=_ifname(prefix, "br") if netns else None,
        regions=regions, nodes=nodes, vantages=vantages,
        steering=_steering(top, regions),
        base_latency_ms=lab.number("base_latency_ms", 2.0, low=0, high=1000),
        ms_per_100km=lab.number("ms_per_100km", 1.0, low=0, high=100),
    )


def check_prefix(prefix: str) -> None:
    """A prefix names namespaces and interfaces: short, and only what `ip` accepts."""
    if not prefix or len(prefix) > 12 or not all(c.isalnum() or c in "-_" for c in prefix):
        raise ConfigError(f"the lab prefix {prefix!r} must be 1-12 letters, digits, - or _")


def _ifname(prefix: str, suffix: str) -> str:
    name = prefix + suffix
    if len(name) > MAX_IFNAME:
        raise ConfigError(f"interface name {name!r} is longer than {MAX_IFNAME} characters; "
                          "use a shorter lab prefix")
    return name


REGION_LAB_KEYS = ("endpoints", "backends")


def _region(table: Reader, name: str, index: int, prefix: str, loopback: bool) -> Region:
    region = table.child(name, keys=("latitude", "longitude", "country", "continent",
                                     "subdivision", *REGION_LAB_KEYS))
    weights = [region.at("endpoints").index(i).integer(w, low=1, high=1000)
               for i, w in enumerate(region.list("endpoints", [10]))]
    if not 1 <= len(weights) <= 8:
        raise region.fail("endpoints", "must list 1 to 8 weights")
    backends = region.integer("backends", 2, low=1, high=8)
    net = f"127.0.{LOOPBACK_BASE + index}" if loopback else f"198.18.{index}"
    endpoints = tuple((f"{name}-{i}", f"{net}.{i}", weight)
                      for i, weight in enumerate(weights, start=1))
    backend_net = f"127.0.{LOOPBACK_BASE + index}"
    return Region(
        name=name, index=index,
        latitude=region.number("latitude", low=-90, high=90),
        longitude=region.number("longitude", low=-180, high=180),
        namespace=None if loopback else f"{prefix}r-{name}",
        endpoints=endpoints,
        backends=tuple(f"{backend_net}.{100 + k}:{BACKEND_PORT}" for k in range(1, backends + 1)),
        link=None if loopback else _ifname(prefix, f"r{index}"),
        tun=None if loopback else _ifname(prefix, f"t{index}"),
    )


def _node(index: int, prefix: str, loopback: bool, regions: tuple[Region, ...]) -> Node:
    where = regions[(index - 1) % len(regions)]
    return Node(
        name=f"dns{index}",
        namespace=None if loopback else f"{prefix}dns{index}",
        address=f"127.0.{LOOPBACK_BASE}.{10 + index}" if loopback else f"10.200.0.{10 + index}",
        port=LOOPBACK_DNS_PORT if loopback else 53,
        link=None if loopback else _ifname(prefix, f"d{index}"),
        latitude=where.latitude, longitude=where.longitude,
    )


def _vantage(table: Reader, name: str, index: int, prefix: str, locate: Locate) -> Vantage:
    vantage = table.child(name, keys=("address", "latitude", "longitude"))
    address = vantage.at("address").ip(vantage.value("address"))
    if address.version != 4 or address.is_private or address.is_loopback:
        raise vantage.fail("address", "must be a public IPv4 address (one the geo "
                           "database places in a country)")
    found = locate(str(address)) if locate is not None else None
    country, latitude, longitude = found if found is not None else (None, None, None)
    latitude = vantage.number("latitude", latitude, low=-90, high=90)
    longitude = vantage.number("longitude", longitude, low=-180, high=180)
    if latitude is None or longitude is None:
        raise vantage.fail("address", f"the geo database has no location for {address}; "
                           "give latitude and longitude")
    return Vantage(name=name, namespace=f"{prefix}c-{name}", address=str(address),
                   country=country, latitude=latitude, longitude=longitude,
                   link=_ifname(prefix, f"c{index}"))


def _steering(top: Reader, regions: tuple[Region, ...]) -> dict[str, Any]:
    """The zone's steering definitions: the regions as a steering file spells them, the
    pool "web" of every region's endpoints, and the file's names verbatim."""
    region_tables = {}
    for name, table in top.child("regions").table.items():
        region_tables[name] = {k: v for k, v in table.items() if k not in REGION_LAB_KEYS}
    web: dict[str, Any] = {"endpoints": [
        {"name": endpoint, "region": region.name, "ipv4": address, "weight": weight}
        for region in regions for endpoint, address, weight in region.endpoints]}
    if "check" in top:
        web["check"] = copy.deepcopy(top.child("check").table)
    names = copy.deepcopy(top.child("names").table)
    return {"regions": region_tables, "pools": {"web": web}, "names": names}
