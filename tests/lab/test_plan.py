"""The lab's plan from a regions file: pure, no root needed."""

from __future__ import annotations

import pytest

from gtm.errors import ConfigError
from gtm.lab.plan import DEFAULT_REGIONS, load_plan, plan_from_table
from gtm.toml_input import read_toml


def _locate(address: str) -> tuple[str, float, float]:
    return {"81.2.69.160": ("GB", 55.4, -3.4), "133.1.1.1": ("JP", 36.2, 138.3)}.get(
        address, ("US", 37.1, -95.7))


def test_the_default_lab_mirrors_the_example_steering() -> None:
    plan = load_plan(None, "gtmlab-", locate=_locate)
    assert [r.name for r in plan.regions] == ["eu-west", "us-east", "ap-northeast", "sa-east"]
    assert [n.name for n in plan.nodes] == ["dns1", "dns2"]
    assert plan.vantages[0].country == "GB"
    endpoints = plan.steering["pools"]["web"]["endpoints"]
    assert {e["ipv4"] for e in endpoints} == {"198.18.1.1", "198.18.1.2", "198.18.2.1",
                                              "198.18.2.2", "198.18.3.1", "198.18.4.1"}
    assert "www" in plan.steering["names"]
    assert "endpoints" not in plan.steering["regions"]["eu-west"]  # lab keys stay out
    tokyo = plan.region("ap-northeast")
    # London to Tokyo is about 9,600 km: 2 ms base + 1 ms per 100 km.
    assert 90 < plan.latencies(tokyo)["81.2.69.160"] < 100
    assert plan.latencies(tokyo)["133.1.1.1"] < 10


def test_loopback_lab_has_no_namespaces_and_no_vantage_points() -> None:
    plan = load_plan(DEFAULT_REGIONS, "gtmlab-", loopback=True, locate=_locate)
    assert plan.namespaces == ()
    assert plan.vantages == ()
    assert plan.regions[0].addresses == ("127.0.21.1", "127.0.21.2")
    assert plan.nodes[0].port == 5300


@pytest.mark.parametrize(("change", "message"), [
    (lambda raw: raw["regions"]["eu-west"].update(endpoints=[0]), r"endpoints\[0\]"),
    (lambda raw: raw["regions"]["eu-west"].update(colour="red"), "unknown key 'colour'"),
    (lambda raw: raw["vantage"]["gb"].update(address="10.1.2.3"), "public IPv4"),
    (lambda raw: raw["lab"].update(dns_nodes=0), "dns_nodes"),
])
def test_bad_regions_files_are_refused_naming_the_key(change, message) -> None:
    raw = read_toml(DEFAULT_REGIONS)
    change(raw)
    with pytest.raises(ConfigError, match=message):
        plan_from_table(raw, "regions.toml", "gtmlab-", False, _locate)


def test_a_prefix_too_long_for_interface_names_is_refused() -> None:
    with pytest.raises(ConfigError, match="prefix"):
        load_plan(None, "gtmlab-much-too-long-", locate=_locate)
