"""The ECS scope a steered answer carries: the widest prefix the answer holds for.

Examples here; the empirical check over random clients is in test_properties.
"""

from __future__ import annotations

import ipaddress

import pytest

from tests.steering.helpers import (
    answer_scope,
    chosen,
    decision,
    ecs,
    one_name,
    resolver,
    rotation,
    zoneset,
)

GEO_RULES = one_name(filters=[{
    "type": "geo", "default": ["us"], "countries": {"JP": ["ap"]}, "continents": {"EU": ["eu"]},
    "networks": {"20.1.2.0/24": ["sa"], "20.1.2.64/26": ["eu"]},
}])


@pytest.mark.parametrize("spec", [
    {},
    {"answers": 2},
    {"select": "multivalue", "answers": 3},
    {"filters": [{"type": "failover", "groups": [["eu"], ["us"]]}]},
    {"filters": [{"type": "failover", "groups": [["eu"]]}, {"type": "capacity"}]},
], ids=["weighted", "weighted-2", "multivalue", "failover", "failover-capacity"])
def test_answer_that_does_not_look_at_the_client_has_scope_zero(locator, spec):
    zones = zoneset(one_name(**spec))
    assert answer_scope(zones, client=ecs("20.7.0.0/24"), locator=locator) == 0


@pytest.mark.parametrize(("subnet", "scope"), [
    ("20.7.0.0/24", 8),  # JP: the database network 20.0.0.0/8
    ("22.200.0.0/24", 9),  # GB: 22.0.0.0/8 is split around 22.1.2.0/24 in the database
    ("22.1.2.0/24", 24),  # FR: the database network 22.1.2.0/24
    ("23.200.0.0/24", 9),  # US-CA: 23.128.0.0/9
    ("40.1.2.0/24", 5),  # unknown: the empty database network 40.0.0.0/5
    ("2400:1::/48", 12),  # JP over IPv6: 2400::/12
])
def test_geo_and_proximity_scope_is_the_database_network(locator, subnet, scope):
    geo = one_name(filters=[{"type": "geo", "default": ["us"], "countries": {"JP": ["ap"]}}])
    proximity = one_name(filters=[{"type": "proximity"}])
    for st in (geo, proximity):
        assert answer_scope(zoneset(st), client=ecs(subnet), locator=locator) == scope


def test_scope_is_never_longer_than_the_source_prefix(locator):
    geo = zoneset(GEO_RULES)
    assert answer_scope(geo, client=ecs("22.1.2.0/20"), locator=locator) == 20
    assert answer_scope(geo, client=ecs("20.0.0.0/6"), locator=locator) == 6
    sticky = zoneset(one_name(select="sticky"))
    assert answer_scope(sticky, client=ecs("20.7.0.0/16"), locator=locator) == 16


def test_scope_is_zero_without_an_ecs_option(locator):
    # A resolver's own address decides the answer, but there is nothing to scope.
    assert answer_scope(zoneset(GEO_RULES), client=resolver("20.7.0.1"), locator=locator) == 0


def test_client_inside_a_cidr_rule_gets_the_rules_prefix(locator):
    zones = zoneset(GEO_RULES)
    # 20.1.2.0/24 holds a more specific rule, 20.1.2.64/26: a client in the /24 but not
    # in the /26 gets a scope that excludes the /26.
    assert answer_scope(zones, client=ecs("20.1.2.200/32"), locator=locator) == 25
    assert answer_scope(zones, client=ecs("20.1.2.0/32"), locator=locator) == 26
    assert answer_scope(zones, client=ecs("20.1.2.64/32"), locator=locator) == 26


def test_client_just_outside_a_more_specific_rule_gets_a_scope_that_excludes_it(locator):
    zones = zoneset(GEO_RULES)
    client = ecs("20.1.3.0/24")  # JP, in the database's 20.0.0.0/8, next to 20.1.2.0/24
    scope = answer_scope(zones, client=client, locator=locator)
    assert scope == 24
    covered = ipaddress.ip_network(f"20.1.3.0/{scope}", strict=False)
    assert not covered.overlaps(ipaddress.ip_network("20.1.2.0/24"))
    # A client further away needs fewer bits to stay clear of the rule.
    assert answer_scope(zones, client=ecs("20.200.0.0/24"), locator=locator) == 9
    assert chosen(decision(GEO_RULES, client=ecs("20.200.0.0/24"), locator=locator)) == ["ap-1"]


def test_latency_scope_follows_the_table_rows():
    st = one_name(filters=[{"type": "latency", "networks": {
        "20.0.0.0/8": {"ap": 10}, "20.1.0.0/16": {"us": 10}}}])
    zones = zoneset(st)
    assert answer_scope(zones, client=ecs("20.1.7.0/24")) == 16
    assert answer_scope(zones, client=ecs("20.200.0.0/24")) == 9  # clear of 20.1.0.0/16
    assert answer_scope(zones, client=ecs("21.0.0.0/24")) == 8  # unknown, clear of 20/8


def test_sticky_scope_is_the_sticky_prefix(locator):
    zones = zoneset(one_name(select="sticky", sticky_prefix_v4=20, sticky_prefix_v6=48))
    assert answer_scope(zones, client=ecs("20.7.0.0/24"), locator=locator) == 20
    assert answer_scope(zones, client=ecs("2400:1:2:3::/64"), locator=locator) == 48
    # Everyone in the /20 shares the answer; that is what the scope promises.
    first = rotation(zones, client=ecs("20.7.0.0/24"))
    assert all(rotation(zones, client=ecs(f"20.7.{third}.0/24")) == first
               for third in range(16))
