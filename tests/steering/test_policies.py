"""Each steering policy on its own: what a client gets for a given state and location.

The chain is run through `decide` (what `gtm explain` shows) and, where the final
selection matters, through the DNS answer function (what a resolver receives).
"""

from __future__ import annotations

import json
import random
from collections import Counter

import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import pytest

from gtm.dns.answer import answer
from gtm.dns.steered import SteerInput
from gtm.steering.definitions import parse_steering
from gtm.steering.select import choose
from tests.steering.helpers import (
    ADDRESS_OF,
    BACKUP_ADDRESS,
    ORIGIN,
    REGIONS,
    WEB,
    all_served,
    chosen,
    decision,
    default_pools,
    ecs,
    endpoint_names,
    one_name,
    resolver,
    rotation,
    state,
    steered,
    steering,
    web_endpoints,
    zoneset,
)

EVERYONE = set(WEB)


def down(*names: str) -> dict[str, dict[str, str]]:
    return {name: {"health": "down"} for name in names}


# ---- failover ----


REGION_FAILOVER = one_name(
    filters=[{"type": "failover", "groups": [["eu"], ["us"], ["ap"]], "min_healthy": 2}]
)


def test_failover_answers_from_the_first_group_with_enough_healthy_endpoints():
    assert chosen(decision(REGION_FAILOVER)) == ["eu-1", "eu-2"]


def test_failover_keeps_the_first_group_whatever_happens_to_lower_groups():
    st_state = state(down("us-1", "us-2", "ap-1"))
    assert chosen(decision(REGION_FAILOVER, st_state=st_state)) == ["eu-1", "eu-2"]


def test_failover_moves_down_when_the_first_group_has_fewer_than_min_healthy():
    d = decision(REGION_FAILOVER, st_state=state(down("eu-2")))
    assert chosen(d) == ["us-1", "us-2"]
    assert d.fallback is None


def test_failover_group_counts_only_endpoints_that_may_be_handed_out():
    # A drained endpoint is healthy by its checks but may not be handed out.
    d = decision(REGION_FAILOVER, st_state=state({"eu-1": {"admin": "drain"}}))
    assert chosen(d) == ["us-1", "us-2"]


def test_failover_by_endpoint_names_with_min_healthy_one():
    st = one_name(filters=[{"type": "failover", "groups": [["ap-1"], ["us-2", "sa-1"]]}])
    assert chosen(decision(st)) == ["ap-1"]
    assert chosen(decision(st, st_state=state(down("ap-1")))) == ["us-2", "sa-1"]
    # Within the chosen group, an unhealthy member is still never handed out.
    assert chosen(decision(st, st_state=state(down("ap-1", "us-2")))) == ["sa-1"]


def test_failover_groups_may_mix_region_and_endpoint_names():
    st = one_name(filters=[{"type": "failover", "groups": [["ap", "sa-1"], ["eu"]],
                            "min_healthy": 2}])
    assert chosen(decision(st)) == ["ap-1", "sa-1"]
    assert chosen(decision(st, st_state=state(down("sa-1")))) == ["eu-1", "eu-2"]


def test_failover_with_no_group_qualifying_answers_from_the_fallback_pool():
    st = one_name(fallback={"pool": "backup"},
                  filters=[{"type": "failover", "groups": [["eu"], ["us"]], "min_healthy": 2}])
    d = decision(st, st_state=state(down("eu-1", "us-1")))
    assert chosen(d) == ["backup-1"]
    assert d.fallback == "pool backup"


# ---- weighted ----


def test_weighted_rotation_serves_each_endpoint_in_proportion_to_its_weight():
    variants = rotation(zoneset(one_name()))
    counts = Counter(name for v in variants for name in endpoint_names(v))
    assert all(len(v) == 1 for v in variants)
    # Weights 1,1,2,1,1,1: one full cycle of seven answers.
    assert len(variants) == 7
    assert counts == {"eu-1": 1, "eu-2": 1, "us-1": 2, "us-2": 1, "ap-1": 1, "sa-1": 1}


def test_weighted_skips_unhealthy_endpoints_and_renormalises():
    zones = zoneset(one_name(), state(down("eu-1", "eu-2", "ap-1", "sa-1")))
    counts = Counter(name for v in rotation(zones) for name in endpoint_names(v))
    assert counts == {"us-1": 2, "us-2": 1}


def test_weight_zero_endpoint_is_standby_used_only_when_no_weighted_one_is_healthy():
    pools = default_pools()
    pools["web"]["endpoints"] = web_endpoints({"sa-1": {"weight": 0}})
    st = steering({"www": {"pool": "web"}}, pools)
    assert "sa-1" not in all_served(zoneset(st))
    others = [n for n in WEB if n != "sa-1"]
    assert all_served(zoneset(st, state(down(*others)))) == {"sa-1"}


def test_weighted_with_several_answers_gives_distinct_endpoints():
    zones = zoneset(one_name(answers=3))
    variants = rotation(zones)
    assert variants and all(len(v) == 3 for v in variants)


# ---- sticky ----


STICKY = one_name(select="sticky")
SUBNETS = [f"{first}.{second}.{third}.0/24"
           for first in (20, 21, 22, 23) for second in range(0, 250, 25) for third in range(25)]


def sticky_pick(zones, client) -> str:
    variants = rotation(zones, client=client)
    assert len(variants) == 1, "a sticky client gets one answer, not a rotation"
    (name,) = endpoint_names(variants[0])
    return name


def test_sticky_client_subnet_keeps_its_endpoint_for_every_address_inside_it():
    zones = zoneset(STICKY)
    for subnet in SUBNETS[:40]:
        base = subnet.rsplit(".", 1)[0]
        picks = {
            sticky_pick(zones, ecs(subnet)),
            sticky_pick(zones, ecs(f"{base}.128/25")),
            sticky_pick(zones, resolver(f"{base}.7")),
            sticky_pick(zones, resolver(f"{base}.250")),
        }
        assert len(picks) == 1, subnet


def test_sticky_spreads_subnets_by_weight():
    zones = zoneset(STICKY)
    counts = Counter(sticky_pick(zones, ecs(s)) for s in SUBNETS)
    total = sum(counts.values())
    assert set(counts) == EVERYONE
    for name, (_, _, _, weight) in WEB.items():
        # 1000 subnets; weights 1,1,2,1,1,1 of 7: 6 percentage points is over 4 sigma.
        assert abs(counts[name] / total - weight / 7) < 0.06, (name, counts)


@pytest.mark.parametrize("leaving", ["us-1", "ap-1"])
def test_sticky_when_an_endpoint_leaves_only_its_own_clients_move(leaving):
    zones_before = zoneset(STICKY)
    before = {s: sticky_pick(zones_before, ecs(s)) for s in SUBNETS}
    zones_after = zoneset(STICKY, state(down(leaving)))
    after = {s: sticky_pick(zones_after, ecs(s)) for s in SUBNETS}
    own = [s for s in SUBNETS if before[s] == leaving]
    others = [s for s in SUBNETS if before[s] != leaving]
    assert own and others
    assert all(after[s] == before[s] for s in others)
    assert all(after[s] != leaving for s in own)
    # Its clients spread over the remaining endpoints rather than piling onto one.
    assert len({after[s] for s in own}) >= 3
    # When it comes back, its clients return to it.
    zones_back = zoneset(STICKY, state({leaving: {"health": "up"}}))
    assert {s: sticky_pick(zones_back, ecs(s)) for s in SUBNETS} == before


def test_sticky_draining_an_endpoint_moves_only_its_clients():
    zones_before = zoneset(STICKY)
    before = {s: sticky_pick(zones_before, ecs(s)) for s in SUBNETS[:300]}
    zones_after = zoneset(STICKY, state({"eu-2": {"admin": "drain"}}))
    for subnet, name in before.items():
        now = sticky_pick(zones_after, ecs(subnet))
        assert now == name if name != "eu-2" else now != "eu-2"


# ---- geo ----


GEO = one_name(filters=[{
    "type": "geo",
    "default": ["us"],
    "countries": {"JP": ["ap"], "FR": ["sa"], "US": ["eu"]},
    "continents": {"EU": ["eu"], "SA": ["sa"], "AF": ["eu"]},
    "subdivisions": {"US-CA": ["ap"]},
    "networks": {"22.1.0.0/16": ["us"], "22.1.2.128/25": ["ap"], "2a00:1::/32": ["sa"]},
}])

REGION_ENDPOINTS = {
    "eu": ["eu-1", "eu-2"], "us": ["us-1", "us-2"], "ap": ["ap-1"], "sa": ["sa-1"],
}


@pytest.mark.parametrize(("client", "region", "why"), [
    ("20.7.0.0/24", "ap", "country JP"),
    ("21.7.0.0/24", "sa", "continent SA"),  # BR: by continent
    ("28.7.0.0/24", "sa", "continent SA"),  # AR
    ("24.7.0.0/24", "eu", "continent EU"),  # DE
    ("22.7.0.0/24", "eu", "continent EU"),  # GB
    ("26.7.0.0/24", "eu", "continent AF"),  # ZA
    ("25.7.0.0/24", "us", "country AU: default"),  # OC is not listed
    ("40.1.2.0/24", "us", "country unknown: default"),  # in no database network
    ("2400:1::/48", "ap", "country JP"),
])
def test_geo_by_country_then_continent_then_default(locator, client, region, why):
    d = decision(GEO, client=ecs(client), locator=locator)
    assert chosen(d) == REGION_ENDPOINTS[region]
    geo_step = next(s for s in d.steps if s.name == "geo")
    assert why in geo_step.detail


def test_geo_country_beats_continent_and_subdivision_beats_country(locator):
    # FR is in Europe, but its country rule says sa.
    assert chosen(decision(GEO, client=ecs("22.1.2.0/25"), locator=locator)) == ["us-1", "us-2"]
    fr_outside_rules = one_name(filters=[{
        "type": "geo", "default": ["us"], "countries": {"FR": ["sa"]},
        "continents": {"EU": ["eu"]}}])
    assert chosen(decision(fr_outside_rules, client=ecs("22.1.2.0/24"),
                           locator=locator)) == ["sa-1"]
    # US-VA falls to the US country rule; US-CA has its own subdivision rule.
    assert chosen(decision(GEO, client=ecs("23.1.0.0/24"), locator=locator)) == ["eu-1", "eu-2"]
    assert chosen(decision(GEO, client=ecs("23.200.0.0/24"), locator=locator)) == ["ap-1"]


def test_geo_explicit_networks_win_over_the_database_and_the_most_specific_wins(locator):
    # 22.1.0.0/16 is GB in the database (continent EU), but a CIDR rule sends it to us;
    # inside it, the more specific 22.1.2.128/25 goes to ap.
    assert chosen(decision(GEO, client=ecs("22.1.9.0/24"), locator=locator)) == ["us-1", "us-2"]
    assert chosen(decision(GEO, client=resolver("22.1.2.127"), locator=locator)) == [
        "us-1", "us-2"]
    assert chosen(decision(GEO, client=resolver("22.1.2.128"), locator=locator)) == ["ap-1"]
    assert chosen(decision(GEO, client=ecs("2a00:1:5::/48"), locator=locator)) == ["sa-1"]
    assert chosen(decision(GEO, client=ecs("2a00:2::/48"), locator=locator)) == ["eu-1", "eu-2"]


def test_geo_without_client_or_database_uses_the_default(locator):
    assert chosen(decision(GEO)) == ["us-1", "us-2"]
    assert chosen(decision(GEO, client=ecs("20.7.0.0/24"))) == ["us-1", "us-2"]


def test_geo_skips_a_listed_region_without_healthy_endpoints_and_keep_orders(locator):
    st = one_name(filters=[{"type": "geo", "default": ["us"],
                            "countries": {"JP": ["ap", "us", "eu"]}, "keep": 2}])
    jp = ecs("20.7.0.0/24")
    assert chosen(decision(st, client=jp, locator=locator)) == ["ap-1", "us-1", "us-2"]
    d = decision(st, client=jp, locator=locator, st_state=state(regions={"ap": {"health": "down"}}))
    assert chosen(d) == ["us-1", "us-2", "eu-1", "eu-2"]


def test_geo_aaaa_skips_regions_whose_endpoints_have_no_ipv6(locator):
    st = one_name(filters=[{"type": "geo", "default": ["eu"], "countries": {"JP": ["ap", "us"]}}])
    zones = zoneset(st)
    jp = ecs("20.7.0.0/24")
    assert all_served(zones, client=jp, locator=locator) == {"ap-1"}
    served = set().union(*rotation(zones, rdtype="AAAA", client=jp, locator=locator))
    assert served == {"2001:db8::21", "2001:db8::22"}


# ---- proximity ----


@pytest.mark.parametrize(("client", "region"), [
    ("20.7.0.0/24", "ap"),  # Tokyo
    ("22.7.0.0/24", "eu"),  # London
    ("21.7.0.0/24", "sa"),  # Sao Paulo
    ("23.200.0.0/24", "us"),  # San Jose
    ("30.7.0.0/24", "us"),  # Mexico City
    ("26.7.0.0/24", "sa"),  # Johannesburg: Sao Paulo is nearer than Dublin
    ("27.7.0.0/24", "ap"),  # Mumbai: Tokyo is nearer than Dublin
    ("25.7.0.0/24", "ap"),  # Sydney
])
def test_proximity_picks_the_nearest_region_by_great_circle(locator, client, region):
    st = one_name(filters=[{"type": "proximity"}])
    assert chosen(decision(st, client=ecs(client), locator=locator)) == REGION_ENDPOINTS[region]


def test_proximity_bias_changes_the_order(locator):
    london, mexico = ecs("22.7.0.0/24"), ecs("30.7.0.0/24")
    # London: eu 463 km, us 5921 km. A 6000 km handicap on eu makes us nearer.
    st = one_name(filters=[{"type": "proximity", "bias_km": {"eu": 6000}}])
    assert chosen(decision(st, client=london, locator=locator)) == ["us-1", "us-2"]
    # Mexico City: us 3007 km, sa 7432 km; 4000 km is not enough, 4500 km is.
    st = one_name(filters=[{"type": "proximity", "bias_km": {"us": 4000}}])
    assert chosen(decision(st, client=mexico, locator=locator)) == ["us-1", "us-2"]
    st = one_name(filters=[{"type": "proximity", "bias_km": {"us": 4500}}])
    assert chosen(decision(st, client=mexico, locator=locator)) == ["sa-1"]
    # A negative bias pulls everyone in.
    st = one_name(filters=[{"type": "proximity", "bias_km": {"ap": -20000}}])
    assert chosen(decision(st, client=london, locator=locator)) == ["ap-1"]


def test_proximity_keep_n_orders_nearest_first(locator):
    st = one_name(filters=[{"type": "proximity", "keep": 3}])
    d = decision(st, client=ecs("22.7.0.0/24"), locator=locator)  # London
    assert chosen(d) == ["eu-1", "eu-2", "us-1", "us-2", "sa-1"]  # 463, 5921, 9497 km


def test_proximity_skips_regions_without_a_healthy_endpoint(locator):
    st = one_name(filters=[{"type": "proximity"}])
    st_state = state(down("eu-1", "eu-2"))
    assert chosen(decision(st, client=ecs("22.7.0.0/24"), locator=locator,
                           st_state=st_state)) == ["us-1", "us-2"]


def test_proximity_with_unknown_location_leaves_the_order_unchanged(locator):
    st = one_name(filters=[{"type": "proximity"}])
    assert chosen(decision(st, client=ecs("40.1.2.0/24"), locator=locator)) == list(WEB)
    assert chosen(decision(st)) == list(WEB)


def test_proximity_cname_pool_answers_with_the_nearest_target(locator):
    pools = {"cdn": {"endpoints": [
        {"name": "cdn-eu", "region": "eu", "cname": "eu.cdn.example.net."},
        {"name": "cdn-ap", "region": "ap", "cname": "ap.cdn.example.net."},
    ]}}
    st = steering({"cdn": {"pool": "cdn", "filters": [{"type": "proximity"}]}}, pools)
    variants = rotation(zoneset(st), "cdn", "CNAME", client=ecs("20.7.0.0/24"), locator=locator)
    assert variants == [frozenset({"ap.cdn.example.net."})]
    # An A query gets the CNAME (its target is outside the zone, so nothing follows it).
    variants = rotation(zoneset(st), "cdn", "A", client=ecs("22.7.0.0/24"), locator=locator,
                        want="CNAME")
    assert variants == [frozenset({"eu.cdn.example.net."})]


# ---- latency ----


LATENCY_TABLE = {
    "20.0.0.0/8": {"ap": 30, "us": 150, "eu": 250},
    "20.1.0.0/16": {"us": 10, "ap": 200},
    "2400::/12": {"eu": 5, "ap": 50},
}


def test_latency_uses_the_most_specific_table_row(locator):
    st = one_name(filters=[{"type": "latency", "networks": LATENCY_TABLE}])
    assert chosen(decision(st, client=ecs("20.7.0.0/24"))) == ["ap-1"]
    assert chosen(decision(st, client=ecs("20.1.7.0/24"))) == ["us-1", "us-2"]
    assert chosen(decision(st, client=resolver("2400:1::1"))) == ["eu-1", "eu-2"]


def test_latency_unknown_client_leaves_the_candidates_unchanged():
    st = one_name(filters=[{"type": "latency", "networks": LATENCY_TABLE}])
    assert chosen(decision(st, client=ecs("21.7.0.0/24"))) == list(WEB)
    assert chosen(decision(st)) == list(WEB)


def test_latency_keep_two_and_skipping_unhealthy_regions():
    st = one_name(filters=[{"type": "latency", "networks": LATENCY_TABLE, "keep": 2}])
    assert chosen(decision(st, client=ecs("20.7.0.0/24"))) == ["ap-1", "us-1", "us-2"]
    d = decision(st, client=ecs("20.7.0.0/24"), st_state=state(down("ap-1")))
    assert chosen(d) == ["us-1", "us-2", "eu-1", "eu-2"]


def test_latency_table_from_a_file_beside_the_definitions(tmp_path):
    (tmp_path / "rtt.json").write_text(json.dumps(LATENCY_TABLE))
    raw = {"regions": REGIONS, "pools": default_pools(),
           "names": {"www": {"pool": "web",
                             "filters": [{"type": "latency", "table_file": "rtt.json"}]}}}
    st = parse_steering(raw, ORIGIN, str(tmp_path / "x.steering.toml"), tmp_path)
    assert chosen(decision(st, client=ecs("20.1.7.0/24"))) == ["us-1", "us-2"]


# ---- capacity ----


def capacity_name(order: list[str], spill_below: float = 0.5):
    return one_name(filters=[
        {"type": "geo", "default": order, "keep": len(order)},
        {"type": "capacity", "spill_below": spill_below},
    ])


def shares(d) -> dict[str, float]:
    by_region: dict[str, float] = {}
    for c in d.candidates:
        by_region[c.endpoint.region] = by_region.get(c.endpoint.region, 0.0) + c.weight
    return by_region


def test_capacity_region_with_enough_headroom_takes_all_traffic():
    d = decision(capacity_name(["eu", "us"]), st_state=state(regions={"eu": {"headroom": 0.6}}))
    assert chosen(d) == ["eu-1", "eu-2"]
    assert shares(d) == pytest.approx({"eu": 1.0})


def test_capacity_spills_in_proportion_to_missing_headroom():
    st_state = state(regions={"eu": {"headroom": 0.25}, "us": {"headroom": 0.1}})
    d = decision(capacity_name(["eu", "us", "ap"]), st_state=st_state)
    # eu keeps 0.25/0.5 = 50%; us keeps 0.1/0.5 of the rest = 10%; ap is last: 40%.
    assert shares(d) == pytest.approx({"eu": 0.5, "us": 0.1, "ap": 0.4})
    weights = {c.endpoint.name: c.weight for c in d.candidates}
    # Inside a region, by endpoint weight (us-1 has twice the weight of us-2).
    assert weights["us-1"] == pytest.approx(2 * weights["us-2"])


def test_capacity_rotation_follows_the_shares():
    st_state = state(regions={"eu": {"headroom": 0.25}})
    variants = rotation(zoneset(capacity_name(["eu", "us"]), st_state))
    counts = Counter(name for v in variants for name in endpoint_names(v))
    expected = {"eu-1": 0.25, "eu-2": 0.25, "us-1": 1 / 3, "us-2": 1 / 6}
    for name, share in expected.items():
        # Non-integer weights: a 32-answer rotation, within 1.5 answers of the share
        # (the tolerance stated in test_properties).
        assert len(variants) == 32
        assert abs(counts[name] - 32 * share) <= 1.5, counts


def test_capacity_saturated_region_gets_nothing_unless_it_is_the_last():
    saturated = state(regions={"eu": {"headroom": 0.0}})
    d = decision(capacity_name(["eu", "us"]), st_state=saturated)
    assert chosen(d) == ["us-1", "us-2"]
    assert "eu-1" not in all_served(zoneset(capacity_name(["eu", "us"]), saturated))
    # Alone, or last in order, a saturated region still answers: never an empty answer.
    assert chosen(decision(capacity_name(["eu"]), st_state=saturated)) == ["eu-1", "eu-2"]
    both = state(regions={"eu": {"headroom": 0.0}, "us": {"headroom": 0.0}})
    assert chosen(decision(capacity_name(["eu", "us"]), st_state=both)) == ["us-1", "us-2"]


def test_capacity_ignores_unhealthy_regions_when_sharing():
    st_state = state(down("eu-1", "eu-2"), regions={"us": {"headroom": 0.0}})
    d = decision(capacity_name(["eu", "us", "ap"]), st_state=st_state)
    assert chosen(d) == ["ap-1"]


# ---- multivalue ----


def test_multivalue_gives_up_to_n_distinct_healthy_endpoints():
    st = one_name(select="multivalue", answers=3)
    variants = rotation(zoneset(st))
    assert all(len(v) == 3 for v in variants)
    assert set().union(*(endpoint_names(v) for v in variants)) == EVERYONE
    rng = random.Random(7)
    candidates = decision(st).candidates
    for _ in range(200):
        picks = [c.endpoint.name for c in choose(steered(st), candidates, None, rng)]
        assert len(picks) == len(set(picks)) == 3


def test_multivalue_with_fewer_healthy_than_n_gives_all_of_them():
    st = one_name(select="multivalue", answers=3)
    zones = zoneset(st, state(down("eu-1", "eu-2", "us-1", "ap-1")))
    assert {frozenset(endpoint_names(v)) for v in rotation(zones)} == {
        frozenset({"us-2", "sa-1"})}


# ---- health, admin overlays and fallback ----


def test_disabled_endpoint_is_never_returned():
    pools = default_pools()
    pools["web"]["endpoints"] = web_endpoints({"us-1": {"enabled": False}})
    st = steering({"www": {"pool": "web"}}, pools)
    assert all_served(zoneset(st)) == EVERYONE - {"us-1"}
    # Not even when everything else is down and the name fails open.
    d = decision(st, st_state=state(down(*EVERYONE)))
    assert d.fallback == "open"
    assert set(chosen(d)) == EVERYONE - {"us-1"}


@pytest.mark.parametrize("admin", ["drain", "force_down"])
def test_drained_and_forced_down_endpoints_are_not_returned(admin):
    zones = zoneset(one_name(), state({"us-1": {"admin": admin}, "ap-1": {"admin": admin}}))
    assert all_served(zones) == EVERYONE - {"us-1", "ap-1"}


@pytest.mark.parametrize("admin", ["drain", "force_down"])
def test_drained_and_forced_down_endpoints_come_back_only_when_failing_open(admin):
    others = EVERYONE - {"us-1"}
    d = decision(one_name(), st_state=state({"us-1": {"admin": admin}, **down(*others)}))
    assert d.fallback == "open"
    assert set(chosen(d)) == EVERYONE


def test_force_up_is_returned_even_when_health_or_region_is_down():
    st_state = state({"ap-1": {"health": "down", "admin": "force_up"},
                      "us-1": {"admin": "force_up"}},
                     regions={"us": {"health": "down"}})
    d = decision(one_name(), st_state=st_state)
    assert d.fallback is None
    assert set(chosen(d)) == {"eu-1", "eu-2", "us-1", "ap-1", "sa-1"}


def test_region_down_removes_its_endpoints():
    zones = zoneset(one_name(), state(regions={"eu": {"health": "down"}}))
    assert all_served(zones) == EVERYONE - {"eu-1", "eu-2"}


def test_fail_open_answers_every_enabled_endpoint():
    zones = zoneset(one_name(), state(down(*EVERYONE)))
    assert all_served(zones) == EVERYONE
    d = decision(one_name(), st_state=state(down(*EVERYONE)))
    assert d.fallback == "open"


def test_fallback_pool_uses_its_healthy_endpoints_then_fails_open_inside_it():
    st = one_name(fallback={"pool": "backup"})
    assert all_served(zoneset(st, state(down(*EVERYONE)))) == {BACKUP_ADDRESS}
    both_down = state(down(*EVERYONE, "backup-1"))
    d = decision(st, st_state=both_down)
    assert d.fallback == "pool backup"
    assert chosen(d) == ["backup-1"]


def test_fallback_fixed_addresses_by_family():
    st = one_name(fallback={"addresses": ["198.51.100.7", "2001:db8::7"]})
    zones = zoneset(st, state(down(*EVERYONE)))
    assert rotation(zones) == [frozenset({"198.51.100.7"})]
    assert rotation(zones, rdtype="AAAA") == [frozenset({"2001:db8::7"})]
    v4_only = zoneset(one_name(fallback={"addresses": ["198.51.100.7"]}), state(down(*EVERYONE)))
    result = answer(dns.name.from_text("www", ORIGIN), dns.rdatatype.AAAA, dns.rdataclass.IN,
                    v4_only, SteerInput())
    assert result.rcode == dns.rcode.NOERROR and result.answer == ()
    assert [r.rdtype for r in result.authority] == [dns.rdatatype.SOA]


def test_fallback_is_not_used_while_anything_is_healthy():
    st = one_name(fallback={"addresses": ["198.51.100.7"]})
    zones = zoneset(st, state(down(*(EVERYONE - {"sa-1"}))))
    assert rotation(zones) == [frozenset({ADDRESS_OF["sa-1"]})]
