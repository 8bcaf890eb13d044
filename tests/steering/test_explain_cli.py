"""`gtm explain` as an operator runs it: a subprocess on a copy of the example zones,
with the exact fixture GeoIP database."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.servers import copy_example_zones, gtm_command, subprocess_env

pytestmark = pytest.mark.integration

WWW = "www.gslb.example.test"


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_example_zones(tmp_path_factory.mktemp("explain") / "zones")


def gtm(*args: str, cwd: Path) -> str:
    done = subprocess.run(gtm_command(*args), cwd=cwd, env=subprocess_env(),
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def explain(zones: Path, mmdb: Path, *args: str) -> str:
    return gtm("explain", *args, "--zones", str(zones), "--geoip", str(mmdb), cwd=zones.parent)


def step(output: str, name: str) -> str:
    """The block of one chain step: its header line and the indented lines under it."""
    match = re.search(rf"^  \d+\. {re.escape(name)}: .*(?:\n {{7}}.*)*", output, re.M)
    assert match, f"no step {name!r} in:\n{output}"
    return match.group(0)


def test_explain_geo_decision_names_country_region_steps_ttl_and_scope(example, geo_mmdb):
    out = explain(example, geo_mmdb, WWW, "--subnet", "20.1.2.0/24")
    assert "client:   20.1.2.0/24 (EDNS client subnet)" in out
    assert re.search(r"^location: country JP, continent AS, .*\(database network /8\)$",
                     out, re.M), out
    geo = step(out, "geo")
    assert geo.splitlines()[0].endswith("geo: country JP; regions ['ap-northeast']")
    assert "kept: ap-northeast-1" in geo
    for dropped in ("eu-west-1", "eu-west-2", "us-east-1", "us-east-2", "sa-east-1"):
        assert re.search(rf"dropped {dropped}: region \S+ not chosen", geo), geo
    assert "kept: ap-northeast-1" in step(out, "health")
    assert "100.0%  127.0.3.1" in out
    assert re.search(r"^ttl: 30$", out, re.M)
    assert re.search(r"^ecs scope: /8$", out, re.M)


def test_explain_shows_a_region_marked_down_and_where_the_client_goes(example, geo_mmdb):
    zones = copy_example_zones(example.parent / "down")
    gtm("steer", "region", "gslb.example.test", "ap-northeast", "--health", "down",
        "--reason", "maintenance", "--zones", str(zones), cwd=zones.parent)
    out = explain(zones, geo_mmdb, WWW, "--subnet", "20.1.2.0/24")
    assert "ap-northeast-1=up/region down" in out
    geo = step(out, "geo")
    assert geo.splitlines()[0].endswith("geo: country JP; regions ['us-east']")
    assert "kept: us-east-1, us-east-2" in geo
    assert "dropped ap-northeast-1: region ap-northeast not chosen" in geo
    assert re.search(r"^ecs scope: /8$", out, re.M)


def test_explain_for_a_resolver_address_does_not_claim_the_answer_is_client_independent(
    example, geo_mmdb
):
    out = explain(example, geo_mmdb, WWW, "--client", "10.1.2.3")
    assert "client:   10.1.2.3/32 (resolver address)" in out
    assert "geo: client in 10.0.0.0/8; regions ['eu-west']" in out
    # No ECS option was sent, so there is no scope to return; but the answer did depend
    # on the client's address.
    assert re.search(r"^ecs scope: /0  \(no client subnet in the question\)$", out, re.M), out
    spread = explain(example, geo_mmdb, "api.gslb.example.test", "--client", "10.1.2.3")
    assert re.search(r"^ecs scope: /0  \(answer does not depend on the client\)$", spread,
                     re.M), spread
