"""The steered suite: gtm's steered names against gdnsd DYNA and PowerDNS LUA records.

Every server serves the zone steer.test (bench/zones/steer.test.zone) with three
steered names holding the same data in each server's own form:

    dyn   weighted 10/20/30 over 127.0.10.1/2/3   gtm select weighted, gdnsd
          `DYNA weighted!wpool` (BENCHMARKS.md's wpool), PowerDNS `pickwrandom`
    geo   region by continent (India by country)  gtm geo filter, gdnsd geoip `map`,
                                                  PowerDNS LUA continentCode()
    near  nearest of four regions                 gtm proximity filter, gdnsd geoip
                                                  `auto_dc_coords`, PowerDNS `pickclosest`

plus `static`, an ordinary A record: gtm's baseline from the same process and zone.
`dyn` is measured twice: without EDNS (one client, as BENCHMARKS.md measured gdnsd)
and with ECS from many subnets (resolvers that send ECS send it for every name of an
ECS-aware zone, and gtm keys its steered-answer cache on the whole packet).

Clients are located with one fixture, bench/zones/steer-geo.csv (64 blocks of /12 at
16 places on six continents), built into an mmdb file by `gtm geo build` and given to
gtm (--geoip) and gdnsd (geoip2_db); PowerDNS gets the same records plus the
location.accuracy_radius its geoip backend insists on (without it PowerDNS places every
address at 0,0), written with gtm's own mmdb writer.

EDNS Client Subnet per query: dnsperf 2.10's `-E code:value` adds one fixed option to
every query (all queries would be one client), and a text query file cannot carry
options. dnsperf's `-B` reads wire-format queries instead (each preceded by its
length, as on TCP), and sends each as it is but for the ID. So the ECS query files
(dyn, geo, near) are built here: one query per distinct /24 drawn from the fixture's
networks, each with its own ECS option (source /24). By default 200,000 distinct /24s,
twice gtm's default response cache (`cache_entries` = 100,000, cleared when full),
so gtm answers every such query through its whole steering path; a second geo run
with 1,000 /24s shows the other end, clients that come back (answers from the cache).
gdnsd and PowerDNS (its packet cache off, below) keep no per-client answers, so the
number of subnets does not change their work.

PowerDNS runs with `cache-ttl=0`: its packet cache off, so every query runs the LUA
record (BENCHMARKS.md's 2.5k q/s for pickwrandom is with the LUA evaluated per query);
its query cache (backend records) stays on.

Per round, each server in turn (gtm, gdnsd, PowerDNS) is started pinned to the server
CPU, checked, then loaded once per workload with `dnsperf -c 4 -l SECONDS -Q 200000`
pinned to the client CPU, its CPU time taken from /proc over each dnsperf window; then
stopped by its PID. Before any figure, each server must answer `static` right; 600
`dyn` answers, without ECS and with the first 600 queries of its ECS file, must each
be one of the three addresses in proportion 1:2:3 (gtm's smooth weighted rotation to
one client exactly, random draws within 0.08); and one ECS query per fixture block,
the very bytes of the query files, must get that block's region for geo and near.
The ECS scopes returned are recorded in the results.
"""

from __future__ import annotations

import argparse
import bisect
import csv
import ipaddress
import itertools
import math
import random
import re
import shutil
import socket
import struct
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
from common import (
    BENCH_DIR,
    LOOPBACK,
    BenchError,
    Deadline,
    Server,
    Servers,
    Suite,
    cpu_busy_seconds,
    free_port,
    machine_info,
    median,
    per_core,
    pinned,
    print_table,
    run_measured,
    run_quiet,
    say,
    write_results,
)
from dns_bench import (
    BUSY_WARNING_PCT,
    CLIENTS,
    DNSPERF_SLACK,
    SATURATION_QPS,
    STARTUP_TIMEOUT,
    DnsPeer,
    DnsperfResult,
    GdnsdPeer,
    ask,
    gtm_executable,
    parse_dnsperf,
)

ZONE_ORIGIN = "steer.test."
ZONES_DIR = BENCH_DIR / "zones"
ZONE_FILE = ZONES_DIR / "steer.test.zone"
STEERING_FILE = ZONES_DIR / "steer.test.steering.toml"
GEO_CSV = ZONES_DIR / "steer-geo.csv"

STATIC_NAME = "static.steer.test."
STATIC_ADDRESS = "127.0.10.1"
STATIC_TTL = 300
STEERED_TTL = 60

# dyn: BENCHMARKS.md's gdnsd wpool, the same in steer.test.steering.toml.
WEIGHTS = {"127.0.10.1": 10, "127.0.10.2": 20, "127.0.10.3": 30}
WEIGHT_CHECK_QUERIES = 600
# gtm hands out a smooth weighted rotation (exact 1:2:3 to one client); gdnsd and
# PowerDNS draw at random: 600 draws put each share within 0.08 of its expected value
# (more than 4 standard deviations).
WEIGHT_TOLERANCE = {"gtm": 0.03}
WEIGHT_TOLERANCE_RANDOM = 0.08


@dataclass(frozen=True)
class Region:
    name: str
    latitude: float
    longitude: float
    address: str


# The regions of steer.test.steering.toml, one endpoint each (pool "regional").
REGIONS = (
    Region("eu-west", 53.35, -6.26, "127.0.1.1"),
    Region("us-east", 38.95, -77.45, "127.0.2.1"),
    Region("ap-northeast", 35.68, 139.69, "127.0.3.1"),
    Region("sa-east", -23.55, -46.63, "127.0.4.1"),
)
REGION_BY_NAME = {region.name: region for region in REGIONS}

# geo: the policy of names.geo in steer.test.steering.toml (most specific first).
GEO_DEFAULT = ("us-east", "eu-west")
GEO_COUNTRIES = {"IN": ("eu-west", "ap-northeast")}
GEO_CONTINENTS = {
    "EU": ("eu-west", "us-east"),
    "AF": ("eu-west", "us-east"),
    "NA": ("us-east", "eu-west"),
    "SA": ("sa-east", "us-east"),
    "AS": ("ap-northeast", "us-east"),
    "OC": ("ap-northeast", "us-east"),
}

ECS_OPTION = 8
EDNS_UDP_SIZE = 1232
DEFAULT_ECS_SUBNETS = 200_000
DEFAULT_WARM_SUBNETS = 1_000
ECS_SEED = 20261126
QUERY_TIMEOUT = 1.0


# -- workloads --------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    key: str
    qname: str
    query_file: str  # name of the query file in the run's directory
    binary: bool  # wire-format queries with ECS (dnsperf -B), else a text query file
    label: str


def workloads(ecs_subnets: int, warm_subnets: int) -> dict[str, Workload]:
    return {w.key: w for w in (
        Workload("static", STATIC_NAME, "static.txt", False, "static A (zone data)"),
        Workload("weighted", "dyn.steer.test.", "weighted.txt", False,
                 "weighted 10/20/30, no ECS"),
        Workload("weighted-ecs", "dyn.steer.test.", "weighted-ecs.bin", True,
                 f"weighted 10/20/30, ECS from {ecs_subnets:,} /24s"),
        Workload("geo-warm", "geo.steer.test.", "geo-warm.bin", True,
                 f"geo, ECS from {warm_subnets:,} /24s (repeat clients)"),
        Workload("geo", "geo.steer.test.", "geo.bin", True,
                 f"geo, ECS from {ecs_subnets:,} /24s"),
        Workload("near", "near.steer.test.", "near.bin", True,
                 f"nearest, ECS from {ecs_subnets:,} /24s"),
    )}  # fmt: skip


# -- the fixture: places, expected answers, ECS queries ---------------------------------


@dataclass(frozen=True)
class Place:
    network: ipaddress.IPv4Network
    country: str
    continent: str
    latitude: float
    longitude: float


def read_geo_csv(path: Path = GEO_CSV) -> list[Place]:
    """Every row of the fixture CSV (network,country,continent,subdivision,lat,lon)."""
    places: list[Place] = []
    with path.open(newline="") as handle:
        for row in csv.reader(handle):
            if not row or row[0].startswith("#") or row[0] == "network":
                continue
            network, country, continent, _subdivision, latitude, longitude = row
            places.append(
                Place(
                    ipaddress.IPv4Network(network),
                    country,
                    continent,
                    float(latitude),
                    float(longitude),
                )
            )
    return places


def client_places(places: Sequence[Place]) -> list[Place]:
    """The client blocks: every row but those placing the endpoints (for pickclosest)."""
    endpoints = [ipaddress.IPv4Address(region.address) for region in REGIONS]
    clients = [p for p in places if not any(a in p.network for a in endpoints)]
    if not clients or any(p.network.prefixlen > 24 for p in clients):
        raise BenchError(f"{GEO_CSV}: client networks must be /24 or wider")
    return clients


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    h = (
        math.sin((phi2 - phi1) / 2) ** 2
        + math.cos(phi1) * math.cos(phi2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * 6371.0088 * math.asin(min(1.0, math.sqrt(h)))


def expected_geo(place: Place) -> str:
    order = GEO_COUNTRIES.get(place.country) or GEO_CONTINENTS.get(place.continent)
    return REGION_BY_NAME[(order or GEO_DEFAULT)[0]].address


def expected_near(place: Place) -> str:
    """The nearest region; the fixture must not hold near-ties (servers round differently)."""
    ranked = sorted(
        REGIONS,
        key=lambda r: great_circle_km(place.latitude, place.longitude, r.latitude, r.longitude),
    )
    first, second = (
        great_circle_km(place.latitude, place.longitude, r.latitude, r.longitude)
        for r in ranked[:2]
    )
    if second - first < 100:
        raise BenchError(
            f"{GEO_CSV}: {place.network} is about as near to {ranked[0].name} "
            f"as to {ranked[1].name}; move it"
        )
    return ranked[0].address


def ecs_query_prefix(qname: str) -> bytes:
    """A query for qname A with EDNS (UDP 1232) and an ECS option for a /24, without the
    three address bytes that end it. The ID (first two bytes) is dnsperf's to set."""
    header = struct.pack("!HHHHHH", 0, 0x0100, 1, 0, 0, 1)  # RD, 1 question, 1 additional
    name = dns.name.from_text(qname).to_wire()
    assert name is not None  # to_wire() without a file returns the bytes
    question = name + struct.pack("!HH", 1, 1)
    ecs = struct.pack("!HBB", 1, 24, 0)  # family IPv4, source /24, scope 0
    option = struct.pack("!HH", ECS_OPTION, len(ecs) + 3) + ecs
    rdlength = len(option) + 3  # the address bytes come last, per query
    opt_rr = b"\x00" + struct.pack("!HHIH", dns.rdatatype.OPT, EDNS_UDP_SIZE, 0, rdlength)
    return header + question + opt_rr + option


def sample_subnets(
    places: Sequence[Place], count: int, seed: int = ECS_SEED
) -> list[tuple[int, int]]:
    """`count` distinct /24s from the places' networks, in random order (fixed seed):
    (first address of the /24 as an integer, index of its place)."""
    sizes = [p.network.num_addresses >> 8 for p in places]
    starts = list(itertools.accumulate(sizes, initial=0))
    if count > starts[-1]:
        raise BenchError(f"--ecs-subnets {count:,}: the fixture holds only {starts[-1]:,} /24s")
    picks = random.Random(seed).sample(range(starts[-1]), count)
    out = []
    for index in picks:
        place = bisect.bisect_right(starts, index) - 1
        base = int(places[place].network.network_address) + ((index - starts[place]) << 8)
        out.append((base, place))
    return out


def ecs_wire(prefix: bytes, subnet: int) -> bytes:
    return prefix + subnet.to_bytes(4, "big")[:3]


def write_binary_queries(path: Path, prefix: bytes, subnets: Sequence[tuple[int, int]]) -> None:
    """dnsperf -B input: each message preceded by its length (two bytes, as on TCP)."""
    length = struct.pack("!H", len(prefix) + 3)
    path.write_bytes(b"".join(length + ecs_wire(prefix, base) for base, _ in subnets))


@dataclass(frozen=True)
class EcsCheck:
    """One query of a query file and the address it must get."""

    subnet: str
    place: str
    wire: bytes
    expected: str


def ecs_checks(
    prefix: bytes, subnets: Sequence[tuple[int, int]], places: Sequence[Place], name: str
) -> list[EcsCheck]:
    """The first query of the file from each place: every block is asked once."""
    checks: list[EcsCheck] = []
    seen: set[int] = set()
    for base, index in subnets:
        if index in seen:
            continue
        seen.add(index)
        place = places[index]
        expected = expected_geo(place) if name == "geo" else expected_near(place)
        checks.append(
            EcsCheck(
                f"{ipaddress.IPv4Address(base)}/24",
                f"{place.country} {place.continent} ({place.network})",
                ecs_wire(prefix, base),
                expected,
            )
        )
    return checks


@dataclass(frozen=True)
class Fixtures:
    workdir: Path
    mmdb: Path  # `gtm geo build` output: gtm and gdnsd
    pdns_mmdb: Path  # the same records plus location.accuracy_radius: PowerDNS
    checks: dict[str, list[EcsCheck]]  # "geo" and "near"
    weighted_ecs: list[bytes]  # the first queries of weighted-ecs.bin
    subnets: int


def build_fixtures(
    gtm: str, workdir: Path, ecs_subnets: int, warm_subnets: int, deadline: Deadline
) -> Fixtures:
    places = read_geo_csv()
    clients = client_places(places)
    mmdb = workdir / "steer-geo.mmdb"
    done = run_quiet([gtm, "geo", "build", str(GEO_CSV), str(mmdb)], deadline.cap(120))
    if done.returncode != 0:
        raise BenchError(f"gtm geo build failed:\n{done.stderr[-2000:]}")
    pdns_mmdb = workdir / "steer-geo-pdns.mmdb"
    write_pdns_mmdb(places, pdns_mmdb)

    (workdir / "static.txt").write_text(f"{STATIC_NAME} A\n")
    (workdir / "weighted.txt").write_text("dyn.steer.test. A\n")
    if not 0 < warm_subnets <= ecs_subnets:
        raise BenchError("--warm-subnets must be between 1 and --ecs-subnets")
    subnets = sample_subnets(clients, ecs_subnets)
    checks: dict[str, list[EcsCheck]] = {}
    for name in ("geo", "near"):
        prefix = ecs_query_prefix(f"{name}.steer.test.")
        write_binary_queries(workdir / f"{name}.bin", prefix, subnets)
        checks[name] = ecs_checks(prefix, subnets, clients, name)
        if len(checks[name]) != len(clients):
            raise BenchError(f"--ecs-subnets {ecs_subnets:,} leaves some fixture blocks unasked")
        if name == "geo":
            write_binary_queries(workdir / "geo-warm.bin", prefix, subnets[:warm_subnets])
    prefix = ecs_query_prefix("dyn.steer.test.")
    write_binary_queries(workdir / "weighted-ecs.bin", prefix, subnets)
    weighted_ecs = [ecs_wire(prefix, base) for base, _ in subnets[:WEIGHT_CHECK_QUERIES]]
    return Fixtures(workdir, mmdb, pdns_mmdb, checks, weighted_ecs, ecs_subnets)


def write_pdns_mmdb(places: Sequence[Place], path: Path) -> None:
    """The fixture as PowerDNS reads it: its mmdb code refuses a location without
    accuracy_radius (latlon() gives 0 0), which `gtm geo build` does not write."""
    try:
        from gtm.geo.mmdb_writer import MmdbWriter, Uint16
    except ImportError as exc:
        raise BenchError(f"the bench's Python cannot import gtm ({exc}); use the venv's") from exc
    writer = MmdbWriter(ip_version=6, database_type="GTM-City", languages=["en"])
    for place in sorted(places, key=lambda p: p.network.prefixlen):
        writer.insert(place.network, {
            "continent": {"code": place.continent},
            "country": {"iso_code": place.country},
            "location": {"latitude": place.latitude, "longitude": place.longitude,
                         "accuracy_radius": Uint16(100)},
        })  # fmt: skip
    writer.write(path)


# -- the servers ------------------------------------------------------------------------

# The workloads each server is measured on (in the order of `workloads`), and how it
# answers each.
GTM_HOW = {
    "static": "zone data",
    "weighted": "select weighted",
    "weighted-ecs": "select weighted",
    "geo-warm": "geo filter",
    "geo": "geo filter",
    "near": "proximity filter",
}
GDNSD_HOW = {
    "static": "zone data",
    "weighted": "DYNA weighted!wpool",
    "weighted-ecs": "DYNA weighted!wpool",
    "geo": "DYNA geoip!geo (map)",
    "near": "DYNA geoip!near (auto_dc_coords)",
}
PDNS_HOW = {
    "weighted": "LUA pickwrandom",
    "weighted-ecs": "LUA pickwrandom",
    "geo": "LUA continentCode()",
    "near": "LUA pickclosest",
}


class SteeredPeer(DnsPeer):
    """A server and the workloads it is measured on (key -> how it answers them)."""

    how: dict[str, str]


class GtmSteeredPeer(SteeredPeer):
    def __init__(self, gtm: str, mmdb: Path):
        self.name = "gtm"
        self.gtm = gtm
        self.mmdb = mmdb
        self.how = GTM_HOW

    def command(self, workdir: Path, port: int) -> list[str]:
        zones = workdir / "zones"
        zones.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ZONE_FILE, zones / ZONE_FILE.name)
        shutil.copyfile(STEERING_FILE, zones / STEERING_FILE.name)
        return [
            self.gtm,
            "serve",
            "--zones",
            str(zones),
            "--listen",
            f"{LOOPBACK}:{port}",
            "--workers",
            "1",
            "--geoip",
            str(self.mmdb),
        ]


GDNSD_RECORDS = """\
dyn      60    DYNA  weighted!wpool
geo      60    DYNA  geoip!geo
near     60    DYNA  geoip!near
"""


def gdnsd_plugins(mmdb: Path, places: Sequence[Place]) -> str:
    """BENCHMARKS.md's weighted pool, and a geoip map each for geo and near."""
    wpool = "\n".join(
        f"      a{i} = [ {address}, {weight} ]"
        for i, (address, weight) in enumerate(WEIGHTS.items(), start=1)
    )
    names = " ".join(region.name for region in REGIONS)

    def dclist(order: Sequence[str]) -> str:
        return f"[ {' '.join(order)} ]"

    continent_of = {p.country: p.continent for p in places}
    geo_map = [f"          default => {dclist(GEO_DEFAULT)}"]
    for continent, order in GEO_CONTINENTS.items():
        overrides = {c: o for c, o in GEO_COUNTRIES.items() if continent_of.get(c) == continent}
        if overrides:
            inner = " ".join(f"{c} => {dclist(o)}" for c, o in overrides.items())
            geo_map.append(f"          {continent} => {{ default => {dclist(order)} {inner} }}")
        else:
            geo_map.append(f"          {continent} => {dclist(order)}")
    coords = "\n".join(f"          {r.name} => [ {r.latitude}, {r.longitude} ]" for r in REGIONS)
    dcmap = " ".join(f"{r.name} => {r.address}" for r in REGIONS)
    geo_map_text = "\n".join(geo_map)
    return f"""\
plugins => {{
  weighted => {{
    service_types = up
    wpool => {{
{wpool}
    }}
  }}
  geoip => {{
    maps => {{
      geomap => {{
        geoip2_db => "{mmdb}"
        datacenters => [ {names} ]
        map => {{
{geo_map_text}
        }}
      }}
      nearmap => {{
        geoip2_db => "{mmdb}"
        datacenters => [ {names} ]
        auto_dc_coords => {{
{coords}
        }}
      }}
    }}
    resources => {{
      geo => {{ map => geomap, service_types => up, dcmap => {{ {dcmap} }} }}
      near => {{ map => nearmap, service_types => up, dcmap => {{ {dcmap} }} }}
    }}
  }}
}}
"""


class GdnsdSteeredPeer(SteeredPeer):
    """gdnsd 3, one UDP and one TCP thread: DYNA weighted and geoip (dns_bench.GdnsdPeer)."""

    def __init__(self, gdnsd: str, mmdb: Path, places: Sequence[Place]):
        self.name = "gdnsd"
        self.inner = GdnsdPeer(
            gdnsd, ZONE_FILE, ZONE_ORIGIN, GDNSD_RECORDS, gdnsd_plugins(mmdb, places)
        )
        self.how = GDNSD_HOW

    def command(self, workdir: Path, port: int) -> list[str]:
        return self.inner.command(workdir, port)


def pdns_records() -> str:
    wrandom = ",".join(f"{{{weight},'{address}'}}" for address, weight in WEIGHTS.items())
    closest = ",".join(f"'{r.address}'" for r in REGIONS)
    # continentCode()/countryCode() return lower case; one lookup each, then a table.
    table = ",".join(
        f"{c.lower()}='{REGION_BY_NAME[o[0]].address}'" for c, o in GEO_CONTINENTS.items()
    )
    countries = " ".join(
        f"if countryCode()=='{c.lower()}' then return '{REGION_BY_NAME[o[0]].address}' end"
        for c, o in GEO_COUNTRIES.items()
    )
    default = REGION_BY_NAME[GEO_DEFAULT[0]].address
    geo = f";local m={{{table}}} {countries} return m[continentCode()] or '{default}'"
    return (
        f'dyn      60    IN LUA A "pickwrandom({{ {wrandom} }})"\n'
        f'geo      60    IN LUA A "{geo}"\n'
        f'near     60    IN LUA A "pickclosest({{ {closest} }})"\n'
    )


class PdnsPeer(SteeredPeer):
    """PowerDNS Authoritative, bind backend + geoip backend (for the LUA geo functions),
    LUA records on, packet cache off, one receiver and one distributor thread."""

    def __init__(self, pdns_server: str, mmdb: Path):
        self.name = "pdns"
        self.pdns_server = pdns_server
        self.mmdb = mmdb
        self.how = PDNS_HOW

    def command(self, workdir: Path, port: int) -> list[str]:
        zone = workdir / "steer.test.zone"
        text = ZONE_FILE.read_text()
        zone.write_text(text + ("" if text.endswith("\n") else "\n") + pdns_records())
        (workdir / "named.conf").write_text(
            f'zone "{ZONE_ORIGIN.rstrip(".")}" {{ type master; file "{zone}"; }};\n'
        )
        (workdir / "geo-zones.yaml").write_text("domains: []\n")
        (workdir / "pdns.conf").write_text("\n".join([
            "launch=bind,geoip",
            f"bind-config={workdir / 'named.conf'}",
            f"geoip-database-files=mmdb:{self.mmdb}",
            f"geoip-zones-file={workdir / 'geo-zones.yaml'}",
            "enable-lua-records=yes",
            "edns-subnet-processing=yes",
            "security-poll-suffix=",  # no query off the machine
            f"local-address={LOOPBACK}",
            f"local-port={port}",
            f"socket-dir={workdir}",
            "guardian=no",
            "daemon=no",
            "write-pid=no",
            "disable-syslog=yes",
            "webserver=no",
            "api=no",
            "cache-ttl=0",  # packet cache off: the LUA runs for every query
            "receiver-threads=1",
            "distributor-threads=1",
            "loglevel=4",
            "",
        ]))  # fmt: skip
        return [self.pdns_server, f"--config-dir={workdir}"]


# -- checks -----------------------------------------------------------------------------


def _a_records(response: dns.message.Message, qname: str, ttl: int) -> list[str]:
    """The A addresses of an authoritative NOERROR answer for qname, TTL checked."""
    rcode = dns.rcode.to_text(response.rcode())
    if rcode != "NOERROR":
        raise ValueError(f"rcode {rcode}")
    if not response.flags & dns.flags.AA:
        raise ValueError("AA bit not set")
    addresses = []
    for rrset in response.answer:
        if rrset.name != dns.name.from_text(qname) or rrset.rdtype != dns.rdatatype.A:
            raise ValueError(f"unexpected record {rrset.to_text()}")
        if rrset.ttl != ttl:
            raise ValueError(f"TTL {rrset.ttl}, want {ttl}")
        addresses += [rd.to_text() for rd in rrset]
    return addresses


def wait_ready(server: Server, port: int, deadline: Deadline) -> None:
    """Until the server answers `static` right (PowerDNS loads zones after it listens)."""
    end = time.monotonic() + deadline.cap(STARTUP_TIMEOUT)
    last = "no answer"
    while time.monotonic() < end:
        if not server.alive():
            raise BenchError(
                f"{server.name} exited with status {server.process.returncode} "
                f"before answering; its log ends:\n{server.log_tail()}"
            )
        try:
            if _a_records(ask(port, (STATIC_NAME, "A"), 0.3), STATIC_NAME, STATIC_TTL) == [
                STATIC_ADDRESS
            ]:
                return
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            last = str(exc) or type(exc).__name__
        time.sleep(0.1)
    raise BenchError(
        f"{server.name} did not answer {STATIC_NAME} right within "
        f"{STARTUP_TIMEOUT:.0f} s ({last}); its log ends:\n{server.log_tail()}"
    )


def ecs_scope(response: dns.message.Message) -> int | None:
    """The scope prefix of the response's ECS option, None when it carries none."""
    for option in response.options:
        if isinstance(option, dns.edns.ECSOption):
            return int(option.scopelen)
    return None


def check_weighted(
    name: str, port: int, wires: Sequence[bytes] | None, tolerance: float
) -> dict[str, Any]:
    """dyn answered WEIGHT_CHECK_QUERIES times: each answer one address of WEIGHTS, the
    shares 1:2:3 within `tolerance`. With `wires`, those prepared ECS queries are sent
    (one per client /24), else the same plain query each time."""
    counts: Counter[str] = Counter()
    scopes: Counter[str] = Counter()
    qname = "dyn.steer.test."
    for index in range(WEIGHT_CHECK_QUERIES):
        try:
            if wires is None:
                response = ask(port, (qname, "A"), QUERY_TIMEOUT)
            else:
                response = ask_wire(port, wires[index % len(wires)])
                scopes[str(ecs_scope(response))] += 1
            addresses = _a_records(response, qname, STEERED_TTL)
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            raise BenchError(f"{name}: {qname} A: {exc or type(exc).__name__}") from exc
        if len(addresses) != 1 or addresses[0] not in WEIGHTS:
            raise BenchError(f"{name}: {qname} A answered {addresses}, want one of {list(WEIGHTS)}")
        counts[addresses[0]] += 1
    total = sum(WEIGHTS.values())
    wrong = [
        f"{address}: {counts[address] / WEIGHT_CHECK_QUERIES:.3f} (want {weight / total:.3f})"
        for address, weight in WEIGHTS.items()
        if abs(counts[address] / WEIGHT_CHECK_QUERIES - weight / total) > tolerance
    ]
    if wrong:
        via = "ECS queries" if wires is not None else "queries"
        raise BenchError(
            f"{name}: {qname} shares are off by more than {tolerance} over "
            f"{WEIGHT_CHECK_QUERIES} {via}: " + ", ".join(wrong)
        )
    seen: dict[str, Any] = {"counts": {address: counts[address] for address in WEIGHTS}}
    if wires is not None:
        seen["ecs_scopes"] = dict(scopes)
    return seen


def ask_wire(port: int, wire: bytes, timeout: float = QUERY_TIMEOUT) -> dns.message.Message:
    """Send one prepared query (a random ID put in) and parse the answer to it."""
    query_id = random.randrange(1 << 16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(struct.pack("!H", query_id) + wire[2:], (LOOPBACK, port))
        end = time.monotonic() + timeout
        while True:
            sock.settimeout(max(0.01, end - time.monotonic()))
            data = sock.recv(65535)
            response = dns.message.from_wire(data)
            if response.id == query_id:
                return response


def check_ecs(name: str, port: int, qname: str, checks: Sequence[EcsCheck]) -> dict[str, Any]:
    """Each check's query (bytes of the query file) must get its block's region."""
    problems = []
    scopes: Counter[str] = Counter()
    for check in checks:
        try:
            response = ask_wire(port, check.wire)
            addresses = _a_records(response, qname, STEERED_TTL)
        except (dns.exception.DNSException, OSError, ValueError) as exc:
            problems.append(f"ECS {check.subnet} ({check.place}): {exc or type(exc).__name__}")
            continue
        scopes[str(ecs_scope(response))] += 1
        if addresses != [check.expected]:
            problems.append(
                f"ECS {check.subnet} ({check.place}): got {addresses}, want [{check.expected}]"
            )
    if problems:
        shown = problems[:10] + (
            [f"... and {len(problems) - 10} more"] if len(problems) > 10 else []
        )
        raise BenchError(
            f"{name} answers {qname} wrongly for {len(problems)} of "
            f"{len(checks)} client blocks:\n  " + "\n  ".join(shown)
        )
    return {"blocks_checked": len(checks), "ecs_scopes": dict(scopes)}


def check_peer(peer: SteeredPeer, port: int, fixtures: Fixtures) -> dict[str, Any]:
    """Everything the peer is measured on, answered right; what was seen (answer counts,
    the ECS scopes the server returned)."""
    seen: dict[str, Any] = {}
    if "weighted" in peer.how:
        tolerance = WEIGHT_TOLERANCE.get(peer.name, WEIGHT_TOLERANCE_RANDOM)
        seen["weighted"] = check_weighted(peer.name, port, None, tolerance)
    if "weighted-ecs" in peer.how:
        # One query per client: gtm's rotation starts at random for each new client.
        seen["weighted-ecs"] = check_weighted(
            peer.name, port, fixtures.weighted_ecs, WEIGHT_TOLERANCE_RANDOM
        )
    for name in ("geo", "near"):
        if name in peer.how:
            seen[name] = check_ecs(peer.name, port, f"{name}.steer.test.", fixtures.checks[name])
    return seen


# -- measuring --------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """One dnsperf saturation run against one server on one workload."""

    server: str
    workload: str
    round: int
    dnsperf: DnsperfResult
    server_cpu_seconds: float
    server_cpu_pct: float
    qps_per_core: float
    client_cpu_pct: float
    server_core_other_pct: float  # other processes and interrupts on the server's CPU


@dataclass(frozen=True)
class Options:
    seconds: float
    server_cpu: int
    client_cpu: int
    dnsperf: str


def dnsperf_argv(opts: Options, port: int, query_file: Path, binary: bool) -> list[str]:
    argv = [
        opts.dnsperf, "-s", LOOPBACK, "-p", str(port), "-d", str(query_file),
        "-c", str(CLIENTS), "-l", f"{opts.seconds:g}", "-Q", str(SATURATION_QPS),
    ]  # fmt: skip
    if binary:
        argv.append("-B")  # wire-format queries, each with its own ECS option
    return pinned(opts.client_cpu, argv)


def measure_window(
    server: Server,
    workload: Workload,
    round_no: int,
    port: int,
    opts: Options,
    fixtures: Fixtures,
    deadline: Deadline,
) -> Window:
    argv = dnsperf_argv(opts, port, fixtures.workdir / workload.query_file, workload.binary)
    before, busy_before = server.cpu_seconds(), cpu_busy_seconds(opts.server_cpu)
    run = run_measured(argv, deadline.cap(opts.seconds + DNSPERF_SLACK))
    cpu = server.cpu_seconds() - before
    busy = cpu_busy_seconds(opts.server_cpu) - busy_before
    if not server.alive():
        raise BenchError(
            f"{server.name} died under load ({workload.key}); its log ends:\n{server.log_tail()}"
        )
    if run.returncode != 0:
        raise BenchError(f"dnsperf exited with {run.returncode}:\n{run.stderr[-2000:]}")
    result = parse_dnsperf(run)
    if result.completed == 0:
        raise BenchError(f"dnsperf got no answers from {server.name} ({workload.key})")
    bad = {code: n for code, n in result.rcodes.items() if code != "NOERROR"}
    if bad:
        raise BenchError(f"{server.name} ({workload.key}): unexpected response codes {bad}")
    wall = run.wall_seconds
    return Window(
        server=server.name, workload=workload.key, round=round_no, dnsperf=result,
        server_cpu_seconds=cpu, server_cpu_pct=100.0 * cpu / wall,
        qps_per_core=per_core(result.qps, cpu, wall),
        client_cpu_pct=100.0 * result.client_cpu_seconds / wall,
        server_core_other_pct=100.0 * max(0.0, busy - cpu) / wall,
    )  # fmt: skip


def describe(window: Window) -> str:
    d = window.dnsperf
    return (
        f"round {window.round} {window.server} {window.workload}: {d.qps:,.0f} q/s, "
        f"lost {d.lost_pct:.2f}%, server CPU {window.server_cpu_pct:.0f}%, "
        f"{window.qps_per_core:,.0f} q/s per core, client CPU {window.client_cpu_pct:.0f}%,"
        f" others on the server's CPU {window.server_core_other_pct:.0f}%"
    )


def measure_peer(
    peer: SteeredPeer,
    round_no: int,
    opts: Options,
    fixtures: Fixtures,
    plan: dict[str, Workload],
    servers: Servers,
    deadline: Deadline,
) -> tuple[list[Window], dict[str, Any]]:
    """Start the peer pinned, check it, run each of its workloads, stop it."""
    port = free_port()
    workdir = fixtures.workdir / f"{peer.name}-round{round_no}"
    workdir.mkdir(parents=True)
    argv = pinned(opts.server_cpu, peer.command(workdir, port))
    server = servers.start(peer.name, argv, workdir / "server.log", cwd=workdir)
    windows: list[Window] = []
    try:
        wait_ready(server, port, deadline)
        seen = check_peer(peer, port, fixtures)
        for key in plan:
            if key in peer.how:
                window = measure_window(server, plan[key], round_no, port, opts, fixtures, deadline)
                windows.append(window)
                say(describe(window))
                if window.server_core_other_pct > BUSY_WARNING_PCT:
                    say(
                        f"warning: {window.server_core_other_pct:.0f}% of the server's CPU went "
                        "to other work during this run; its figures are noisy"
                    )
    finally:
        servers.stop(server)
    return windows, seen


# -- summary ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    server: str
    workload: str
    how: str
    runs: int
    qps: float
    lost_pct: float
    server_cpu_pct: float
    qps_per_core: float
    client_cpu_pct: float
    server_core_other_pct: float


def summarize(server: str, workload: str, how: str, windows: Sequence[Window]) -> Summary:
    """Medians over the rounds, each figure on its own."""
    return Summary(
        server=server, workload=workload, how=how, runs=len(windows),
        qps=median([w.dnsperf.qps for w in windows]),
        lost_pct=median([w.dnsperf.lost_pct for w in windows]),
        server_cpu_pct=median([w.server_cpu_pct for w in windows]),
        qps_per_core=median([w.qps_per_core for w in windows]),
        client_cpu_pct=median([w.client_cpu_pct for w in windows]),
        server_core_other_pct=median([w.server_core_other_pct for w in windows]),
    )  # fmt: skip


@dataclass(frozen=True)
class Ratio:
    label: str
    value: float
    target: float | None

    @property
    def verdict(self) -> str:
        if self.target is None:
            return ""
        return "met" if self.value >= self.target else "NOT met"


# (label, numerator (server, workload), denominator, target), on q/s per server core
RATIOS: tuple[tuple[str, tuple[str, str], tuple[str, str], float | None], ...] = (
    ("gtm weighted / gtm static", ("gtm", "weighted"), ("gtm", "static"), 0.8),
    ("gtm weighted, ECS / gtm static", ("gtm", "weighted-ecs"), ("gtm", "static"), 0.8),
    ("gtm geo (repeat clients) / gtm static", ("gtm", "geo-warm"), ("gtm", "static"), 0.8),
    ("gtm geo / gtm static", ("gtm", "geo"), ("gtm", "static"), 0.8),
    ("gtm near / gtm static", ("gtm", "near"), ("gtm", "static"), 0.8),
    ("gtm weighted / gdnsd DYNA weighted", ("gtm", "weighted"), ("gdnsd", "weighted"), 0.6),
    (
        "gtm weighted, ECS / gdnsd DYNA weighted, ECS",
        ("gtm", "weighted-ecs"),
        ("gdnsd", "weighted-ecs"),
        0.6,
    ),
    ("gtm geo / gdnsd geoip map", ("gtm", "geo"), ("gdnsd", "geo"), 0.6),
    ("gtm near / gdnsd geoip auto_dc_coords", ("gtm", "near"), ("gdnsd", "near"), 0.6),
    ("gtm weighted / PowerDNS LUA pickwrandom", ("gtm", "weighted"), ("pdns", "weighted"), None),
    (
        "gtm weighted, ECS / PowerDNS LUA pickwrandom, ECS",
        ("gtm", "weighted-ecs"),
        ("pdns", "weighted-ecs"),
        None,
    ),
    ("gtm geo / PowerDNS LUA continentCode", ("gtm", "geo"), ("pdns", "geo"), None),
    ("gtm near / PowerDNS LUA pickclosest", ("gtm", "near"), ("pdns", "near"), None),
    ("(context) gdnsd weighted / gdnsd static", ("gdnsd", "weighted"), ("gdnsd", "static"), None),
)


def ratios(summaries: Sequence[Summary]) -> list[Ratio]:
    by_key = {(s.server, s.workload): s for s in summaries}
    out = []
    for label, top, bottom, target in RATIOS:
        if top in by_key and bottom in by_key:
            out.append(Ratio(label, by_key[top].qps_per_core / by_key[bottom].qps_per_core, target))
    return out


def print_summary(
    summaries: Sequence[Summary], found: Sequence[Ratio], labels: dict[str, str]
) -> None:
    headers = [
        "server",
        "workload",
        "how",
        "runs",
        "q/s (median)",
        "lost %",
        "server CPU %",
        "q/s per server core",
        "client CPU %",
    ]
    rows = [
        [s.server, s.workload, s.how, str(s.runs), f"{s.qps:,.0f}", f"{s.lost_pct:.2f}",
         f"{s.server_cpu_pct:.0f}", f"{s.qps_per_core:,.0f}", f"{s.client_cpu_pct:.0f}"]
        for s in summaries
    ]  # fmt: skip
    print()
    print_table(headers, rows, left=3)
    print("\nworkloads: " + "; ".join(f"{key}: {label}" for key, label in labels.items()))
    print()
    print_table(
        ["ratio (q/s per server core)", "value", "target", ""],
        [
            [r.label, f"{r.value:.3f}", "" if r.target is None else f">= {r.target:.1f}", r.verdict]
            for r in found
        ],
    )


# -- the suite --------------------------------------------------------------------------


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--ecs-subnets",
        type=int,
        default=DEFAULT_ECS_SUBNETS,
        help="distinct client /24s (one ECS option each) in the dyn, geo and near "
        f"query files ({DEFAULT_ECS_SUBNETS:,}: twice gtm's default cache)",
    )
    group.add_argument(
        "--warm-subnets",
        type=int,
        default=DEFAULT_WARM_SUBNETS,
        help=f"distinct /24s of the repeat-client geo run ({DEFAULT_WARM_SUBNETS:,})",
    )


def peer_plan(args: argparse.Namespace) -> dict[str, Workload]:
    return workloads(args.ecs_subnets, args.warm_subnets)


SERVERS = (GTM_HOW, GDNSD_HOW, PDNS_HOW)
WINDOWS_PER_ROUND = sum(len(how) for how in SERVERS)


def budget_seconds(args: argparse.Namespace) -> float:
    seconds: float = args.seconds
    rounds: int = args.rounds
    per_start = STARTUP_TIMEOUT + 40  # answer checks and stopping
    per_round = WINDOWS_PER_ROUND * (seconds + DNSPERF_SLACK) + len(SERVERS) * per_start
    return rounds * per_round + 120  # + building the fixtures


def versions(gtm: str, tools: dict[str, str]) -> dict[str, str]:
    def first_match(argv: list[str], pattern: str) -> str:
        done = run_quiet(argv, 10)
        match = re.search(pattern, done.stdout + done.stderr)
        return match.group(1) if match else "unknown"

    return {
        "gtm": first_match([gtm, "--version"], r"gtm (\S+)"),
        "gdnsd": first_match([tools["gdnsd"]], r"gdnsd version (\S+)"),
        "pdns": first_match(
            [tools["pdns_server"], "--version"], r"PowerDNS Authoritative Server (\S+)"
        ),
        "dnsperf": first_match([tools["dnsperf"], "-h"], r"Version (\S+)"),
    }


ECS_METHOD = (
    "dnsperf -B (wire-format query file): one query per distinct client /24, each with "
    "its own ECS option (source /24), drawn from the fixture's networks (steer-geo.csv); "
    "dnsperf only replaces the ID. -E would put one fixed ECS option on every query."
)


def run(args: argparse.Namespace, deadline: Deadline, tools: dict[str, str]) -> int:
    gtm = gtm_executable(args)
    plan = peer_plan(args)
    workdir = Path(tempfile.mkdtemp(prefix="gtm-bench-steered-"))
    info = machine_info()
    try:
        say(f"steered: building the geo fixture and {args.ecs_subnets:,} ECS queries per name")
        fixtures = build_fixtures(gtm, workdir, args.ecs_subnets, args.warm_subnets, deadline)
        places = read_geo_csv()
        peers: list[SteeredPeer] = [
            GtmSteeredPeer(gtm, fixtures.mmdb),
            GdnsdSteeredPeer(tools["gdnsd"], fixtures.mmdb, places),
            PdnsPeer(tools["pdns_server"], fixtures.pdns_mmdb),
        ]
        opts = Options(
            seconds=args.seconds,
            server_cpu=args.server_cpu,
            client_cpu=args.client_cpu,
            dnsperf=tools["dnsperf"],
        )
        say(
            f"steered: {args.rounds} round(s) of {args.seconds:g} s per server and workload; "
            f"servers on CPU {args.server_cpu}, dnsperf on CPU {args.client_cpu}; "
            f"load average {info['loadavg_at_start'][0]:.2f}"
        )
        say(f"steered: ECS per query by {ECS_METHOD}")
        windows: list[Window] = []
        checks: dict[str, dict[str, Any]] = {}
        with Servers() as servers:
            for round_no in range(1, args.rounds + 1):
                for peer in peers:
                    found, seen = measure_peer(
                        peer, round_no, opts, fixtures, plan, servers, deadline
                    )
                    windows += found
                    checks.setdefault(peer.name, seen)
                    if round_no == 1:
                        say(f"{peer.name} answers checked: {seen}")
    finally:
        if args.keep_workdir:
            say(f"servers' configs, logs and query files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    summaries = [
        summarize(peer.name, key, peer.how[key],
                  [w for w in windows if w.server == peer.name and w.workload == key])
        for peer in peers for key in plan if key in peer.how
    ]  # fmt: skip
    found_ratios = ratios(summaries)
    print_summary(summaries, found_ratios, {key: w.label for key, w in plan.items()})
    data: dict[str, Any] = {
        "suite": "steered",
        "method": "BENCHMARKS.md: server and dnsperf pinned apart; server CPU from /proc",
        "ecs_method": ECS_METHOD,
        "pdns_packet_cache": "off (cache-ttl=0): the LUA record runs for every query",
        "options": {
            "seconds": args.seconds, "rounds": args.rounds, "server_cpu": args.server_cpu,
            "client_cpu": args.client_cpu, "clients": CLIENTS,
            "saturation_qps_limit": SATURATION_QPS, "ecs_subnets": args.ecs_subnets,
            "warm_subnets": args.warm_subnets,
            "zone_file": str(ZONE_FILE.relative_to(BENCH_DIR.parent)),
            "steering_file": str(STEERING_FILE.relative_to(BENCH_DIR.parent)),
            "geo_csv": str(GEO_CSV.relative_to(BENCH_DIR.parent)),
        },
        "workloads": {key: w.label for key, w in plan.items()},
        "machine": info,
        "versions": versions(gtm, tools),
        "checks": checks,
        "summary": [asdict(s) for s in summaries],
        "ratios": [{"label": r.label, "value": r.value, "target": r.target} for r in found_ratios],
        "runs": [asdict(w) for w in windows],
    }  # fmt: skip
    path = write_results("steered", data)
    print(f"\nresults: {path}")
    return 0


SUITE = Suite(
    name="steered",
    help="gtm steered names vs gdnsd DYNA/geoip and PowerDNS LUA records (dnsperf)",
    tools={
        "dnsperf": "dnsperf",
        "gdnsd": "gdnsd",
        "pdns_server": "pdns-server",
        "/usr/lib/*/pdns/libbindbackend.so": "pdns-backend-bind",
        "/usr/lib/*/pdns/libgeoipbackend.so": "pdns-backend-geoip",
        "taskset": "util-linux",
    },
    add_arguments=add_arguments,
    budget_seconds=budget_seconds,
    run=run,
)
