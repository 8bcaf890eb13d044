"""Property tests of the steering chain and the final selection.

Tolerances, stated once:

* random weighted choice (`choose`, a seeded rng): over 20,000 draws each endpoint's
  share is within 3 percentage points of its weight share (the standard deviation of
  a share is at most 0.35 points there, so 3 points is over 8 sigma);
* the rotation the DNS cache cycles through (`variants`, smooth weighted round robin
  over at most 32 answers): exactly in proportion when the weights reduce to a cycle
  of 32 or fewer; otherwise (the cycle is cut at 32 answers) each endpoint appears
  within 1.5 answers of its exact share, i.e. under 5 percentage points. A cut
  sequence can be off by slightly more than one answer (weights 55, 2, 2.05, 15, 51:
  1.05 answers), so "within one answer" would not hold.
"""

from __future__ import annotations

import ipaddress
import math
import random
from collections import Counter
from typing import Any

import dns.message
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gtm.dns.engine import Engine
from gtm.dns.render import ServerIdentity
from gtm.steering.chain import Client
from gtm.steering.select import MAX_VARIANTS, choose, variants
from tests.dnsutil import query
from tests.steering.geofixture import NETWORKS
from tests.steering.helpers import (
    BACKUP_ADDRESS,
    REGIONS,
    WEB,
    answer_scope,
    chosen,
    decision,
    default_pools,
    one_name,
    rotation,
    state,
    steered,
    steering,
    web_endpoints,
    zoneset,
)

ROTATION_TOLERANCE = 1.5  # answers out of a rotation of 32

FIXTURE_SETTINGS = settings(
    deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def pool_of(weights: list[int]) -> dict[str, Any]:
    return {"p": {"endpoints": [
        {"name": f"e{i}", "region": "eu", "ipv4": f"192.0.2.{i + 1}", "weight": w}
        for i, w in enumerate(weights)
    ]}}


# ---- weighted shares ----


@settings(max_examples=12, deadline=None)
@given(weights=st.lists(st.integers(1, 30), min_size=2, max_size=6),
       seed=st.integers(0, 2**32 - 1))
def test_weighted_choice_converges_to_the_weights(weights, seed):
    st_ = steering({"www": {"pool": "p"}}, pool_of(weights))
    name = steered(st_)
    candidates = decision(st_).candidates
    rng = random.Random(seed)
    draws = 20_000
    counts = Counter(choose(name, candidates, None, rng)[0].endpoint.name for _ in range(draws))
    total = sum(weights)
    for i, weight in enumerate(weights):
        assert abs(counts[f"e{i}"] / draws - weight / total) <= 0.03, (weights, counts)


@settings(max_examples=150, deadline=None)
@given(weights=st.lists(st.integers(0, 50), min_size=2, max_size=8).filter(any))
@example(weights=[3, 3, 44, 50, 50, 50])  # one endpoint a full answer off its share
def test_rotation_follows_the_weights(weights):
    st_ = steering({"www": {"pool": "p"}}, pool_of(weights))
    name = steered(st_)
    sequence = variants(name, decision(st_).candidates, None, seed=0)
    counts = Counter(pick[0].endpoint.name for pick in sequence)
    length, total = len(sequence), sum(weights)
    assert all(len(pick) == 1 for pick in sequence)
    assert length <= MAX_VARIANTS
    positive = [w for w in weights if w > 0]
    cycle = total // math.gcd(*positive)
    exact = len(positive) == len(weights) and cycle <= MAX_VARIANTS
    for i, weight in enumerate(weights):
        expected = length * weight / total
        if exact:
            assert counts[f"e{i}"] == expected, (weights, counts)
        else:
            assert abs(counts[f"e{i}"] - expected) <= ROTATION_TOLERANCE, (weights, counts)
        if weight == 0:
            assert counts[f"e{i}"] == 0  # standby while any weighted endpoint is healthy


def test_dns_cache_cycles_through_the_rotation_exactly():
    """Repeated identical questions from one resolver get the weights exactly."""
    zones = zoneset(one_name())
    engine = Engine(zones, ServerIdentity())
    wire = query("www.gslb.test.", "A").to_wire()
    counts: Counter[str] = Counter()
    for _ in range(70):  # ten full cycles of weights 1,1,2,1,1,1
        wire_reply = engine.respond(wire, tcp=False, peer="198.51.100.1")
        assert wire_reply is not None
        reply = dns.message.from_wire(wire_reply)
        counts.update(rd.to_text() for rrset in reply.answer for rd in rrset)
    expected = {v4: 10 * weight for _, (_, v4, _, weight) in WEB.items()}
    assert counts == expected


# ---- failover ordering ----

HANDOUT = ("up", "down", "drain", "force_up", "force_down")


def may_hand_out(name: str, endpoints: dict[str, str], regions: dict[str, str]) -> bool:
    """The documented rule, restated: admin overlays win over health facts."""
    setting = endpoints[name]
    if setting == "force_up":
        return True
    if setting in ("drain", "force_down"):
        return False
    return setting == "up" and regions[WEB[name][0]] == "up"


def endpoint_state(setting: str) -> dict[str, str]:
    return {"health": setting} if setting in ("up", "down") else {"admin": setting}


endpoint_settings = st.fixed_dictionaries({name: st.sampled_from(HANDOUT) for name in WEB})
region_settings = st.fixed_dictionaries(
    {name: st.sampled_from(("up", "up", "down")) for name in REGIONS}
)


@st.composite
def failover_groups(draw: st.DrawFn) -> list[list[str]]:
    members = draw(st.permutations([*REGIONS, *WEB]))
    cuts = sorted(draw(st.sets(st.integers(1, len(members) - 1), max_size=4)))
    groups = [members[a:b] for a, b in zip([0, *cuts], [*cuts, len(members)], strict=True)]
    return draw(st.lists(st.sampled_from(groups), min_size=1, max_size=4, unique_by=tuple))


@settings(max_examples=300, deadline=None)
@given(groups=failover_groups(), min_healthy=st.integers(1, 3),
       endpoints=endpoint_settings, regions=region_settings)
def test_failover_never_answers_from_a_lower_group_while_a_higher_one_qualifies(
    groups, min_healthy, endpoints, regions
):
    st_ = one_name(filters=[{"type": "failover", "groups": groups, "min_healthy": min_healthy}])
    st_state = state({n: endpoint_state(s) for n, s in endpoints.items()},
                     {n: {"health": h} for n, h in regions.items()})
    d = decision(st_, st_state=st_state)

    def members(group: list[str]) -> set[str]:
        return {n for n, (region, *_) in WEB.items() if n in group or region in group}

    def healthy(group: list[str]) -> set[str]:
        return {n for n in members(group) if may_hand_out(n, endpoints, regions)}

    qualifying = [g for g in groups if len(healthy(g)) >= min_healthy]
    if qualifying:
        assert d.fallback is None
        assert set(chosen(d)) == healthy(qualifying[0])
    else:
        assert d.fallback == "open"
        assert set(chosen(d)) == set(WEB)


# ---- only enabled endpoints, health respected unless failing open ----

CHAINS: dict[str, dict[str, Any]] = {
    "weighted": {},
    "sticky": {"select": "sticky"},
    "multivalue": {"select": "multivalue", "answers": 3},
    "geo": {"filters": [{"type": "geo", "default": ["us", "eu"], "keep": 2,
                         "countries": {"JP": ["ap", "us"]}, "continents": {"EU": ["eu"]},
                         "networks": {"22.1.0.0/16": ["sa"]}}]},
    "proximity": {"filters": [{"type": "proximity", "keep": 2}]},
    "latency": {"filters": [{"type": "latency", "networks": {
        "20.0.0.0/8": {"ap": 10, "us": 90}, "20.1.0.0/16": {"eu": 5}}}]},
    "capacity": {"filters": [{"type": "proximity", "keep": 3},
                             {"type": "capacity", "spill_below": 0.5}]},
    "failover": {"filters": [{"type": "failover", "groups": [["eu"], ["us"]]}]},
    "fallback-pool": {"fallback": {"pool": "backup"}},
}


def fixture_address(draw: st.DrawFn) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address inside a fixture database network, or anywhere at all."""
    choice = draw(st.sampled_from([*NETWORKS, "0.0.0.0/0", "22.1.2.0/23", "20.0.0.0/15"]))
    network = ipaddress.ip_network(choice)
    offset = draw(st.integers(0, network.num_addresses - 1))
    return network.network_address + offset


clients = st.one_of(
    st.none(),
    st.builds(lambda a: Client(a, a.max_prefixlen, from_ecs=True),
              st.composite(fixture_address)()),
)


@settings(FIXTURE_SETTINGS, max_examples=300)
@given(chain=st.sampled_from(sorted(CHAINS)), endpoints=endpoint_settings,
       regions=region_settings, disabled=st.sets(st.sampled_from(sorted(WEB))),
       headroom=st.floats(0, 1), client=clients)
def test_only_enabled_endpoints_and_unhealthy_ones_only_when_failing_open(
    locator, chain, endpoints, regions, disabled, headroom, client
):
    pools = default_pools()
    pools["web"]["endpoints"] = web_endpoints({n: {"enabled": False} for n in disabled})
    st_ = steering({"www": {"pool": "web", **CHAINS[chain]}}, pools)
    st_state = state({n: endpoint_state(s) for n, s in endpoints.items()},
                     {n: {"health": h, "headroom": headroom} for n, h in regions.items()})
    d = decision(st_, st_state=st_state, client=client, locator=locator)
    names = set(chosen(d))
    enabled = (set(WEB) - disabled) | {"backup-1"}
    assert names <= enabled
    unhealthy = {n for n in names if n in WEB and not may_hand_out(n, endpoints, regions)}
    if unhealthy:
        assert d.fallback == "open"
        assert names == set(WEB) - disabled
    # And what the resolver receives is drawn from those candidates only.
    addresses = {WEB[n][1] for n in names if n in WEB}
    if "backup-1" in names:
        addresses.add(BACKUP_ADDRESS)
    served = set().union(*rotation(zoneset(st_, st_state), client=client, locator=locator))
    assert served <= addresses


# ---- the answer depends only on (name, type, location bucket, state) ----


@settings(FIXTURE_SETTINGS, max_examples=60)
@given(chain=st.sampled_from(sorted(CHAINS)), endpoints=endpoint_settings,
       regions=region_settings, client=clients, rdtype=st.sampled_from(["A", "AAAA"]))
def test_same_inputs_give_the_same_decision(locator, chain, endpoints, regions, client, rdtype):
    def fresh():
        st_ = steering({"www": {"pool": "web", **CHAINS[chain]}})
        st_state = state({n: endpoint_state(s) for n, s in endpoints.items()},
                         {n: {"health": h} for n, h in regions.items()})
        return st_, st_state

    first, second = fresh(), fresh()
    d1 = decision(first[0], st_state=first[1], client=client, locator=locator, rdtype=rdtype)
    d2 = decision(second[0], st_state=second[1], client=client, locator=locator, rdtype=rdtype)
    assert d1 == d2
    r1 = rotation(zoneset(*first), rdtype=rdtype, client=client, locator=locator)
    r2 = rotation(zoneset(*second), rdtype=rdtype, client=client, locator=locator)
    assert r1 == r2


SCOPE_CHAINS: dict[str, dict[str, Any]] = {
    **CHAINS,
    "geo-nested-rules": {"filters": [{
        "type": "geo", "default": ["us"], "countries": {"JP": ["ap"], "FR": ["sa"]},
        "continents": {"EU": ["eu"]}, "subdivisions": {"US-CA": ["sa"]},
        "networks": {"22.1.0.0/16": ["us"], "22.1.2.128/25": ["ap"], "20.1.2.3/32": ["sa"],
                     "20.128.0.0/9": ["eu"], "23.64.0.0/10": ["ap"], "2400:10::/28": ["eu"]},
    }]},
    "sticky-geo": {"select": "sticky", "filters": [
        {"type": "geo", "default": ["us", "eu"], "keep": 2, "continents": {"AS": ["ap", "eu"]}}]},
    "latency-nested": {"filters": [{"type": "latency", "keep": 2, "networks": {
        "20.0.0.0/8": {"ap": 10, "us": 90}, "20.1.0.0/16": {"eu": 5, "ap": 50},
        "20.1.2.0/24": {"sa": 1}, "22.0.0.0/7": {"eu": 3}}}]},
}


def inside(address, scope: int, rng: random.Random):
    """A random address sharing the first `scope` bits with address."""
    width = address.max_prefixlen
    host_bits = width - scope
    base = int(address) >> host_bits << host_bits if host_bits < width else 0
    return type(address)(base | rng.getrandbits(host_bits)) if host_bits else address


@settings(FIXTURE_SETTINGS, max_examples=400)
@given(chain=st.sampled_from(sorted(SCOPE_CHAINS)), address=st.composite(fixture_address)(),
       endpoints=endpoint_settings, seed=st.integers(0, 2**32 - 1))
def test_every_address_inside_the_ecs_scope_gets_the_same_answer(
    locator, chain, address, endpoints, seed
):
    """The scope claim, checked empirically: for an answer with scope s, other clients
    inside client/s get the same decision and the same rotation of answers."""
    st_ = steering({"www": {"pool": "web", **SCOPE_CHAINS[chain]}})
    st_state = state({n: endpoint_state(s) for n, s in endpoints.items()})
    zones = zoneset(st_, st_state)
    client = Client(address, address.max_prefixlen, from_ecs=True)
    scope = answer_scope(zones, client=client, locator=locator)
    d = decision(st_, st_state=st_state, client=client, locator=locator)
    assert d.scope <= scope <= address.max_prefixlen
    expected = rotation(zones, client=client, locator=locator)
    rng = random.Random(seed)
    for _ in range(8):
        other = Client(inside(address, scope, rng), address.max_prefixlen, from_ecs=True)
        other_decision = decision(st_, st_state=st_state, client=other, locator=locator)
        assert chosen(other_decision) == chosen(d), (str(address), scope, str(other.address))
        assert rotation(zones, client=other, locator=locator) == expected, (
            str(address), scope, str(other.address))


def rule_networks(spec: dict[str, Any]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """Every CIDR a chain's rules name (geo networks, latency rows)."""
    found = []
    for item in spec.get("filters", []):
        for key in ("networks",):
            found += [ipaddress.ip_network(text) for text in item.get(key, {})]
    return found


@settings(FIXTURE_SETTINGS, max_examples=300)
@given(chain=st.sampled_from(sorted(set(SCOPE_CHAINS) - {"sticky", "sticky-geo"})),
       address=st.composite(fixture_address)(), shared_bits=st.integers(0, 32),
       noise=st.integers(0, 2**128 - 1), endpoints=endpoint_settings)
def test_clients_in_the_same_location_bucket_get_the_same_decision(
    locator, chain, address, shared_bits, noise, endpoints
):
    """Same database network and the same side of every CIDR rule: the same decision,
    whatever else differs in the address (checked without the scope calculation)."""
    width = address.max_prefixlen
    keep = min(shared_bits * width // 32, width)
    mask = (1 << width) - (1 << (width - keep))
    other = type(address)((int(address) & mask) | (noise & ((1 << (width - keep)) - 1)))
    spec = SCOPE_CHAINS[chain]
    here, there = locator.locate(address), locator.locate(other)
    same_network = here.prefix_len == there.prefix_len and ipaddress.ip_network(
        (address, here.prefix_len), strict=False) == ipaddress.ip_network(
        (other, there.prefix_len), strict=False)
    same_side = all((address in n) == (other in n) for n in rule_networks(spec)
                    if n.version == address.version)
    if not (same_network and same_side):
        return
    st_ = steering({"www": {"pool": "web", **spec}})
    st_state = state({n: endpoint_state(s) for n, s in endpoints.items()})

    def candidates(ip):
        d = decision(st_, st_state=st_state, locator=locator,
                     client=Client(ip, ip.max_prefixlen, from_ecs=True))
        return d.candidates, d.fallback

    assert candidates(address) == candidates(other), (str(address), str(other))
