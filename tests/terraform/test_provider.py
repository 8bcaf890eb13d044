"""The provider with the real terraform CLI against a real control plane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.terraform.conftest import (
    ZONE,
    ZONE_TEXT,
    Plane,
    Terraform,
    make_terraform,
    provider_block,
)

pytestmark = pytest.mark.integration

MAIN = '''
resource "gtm_zone" "gslb" {
  name = "gslb.example.test"
  text = <<-EOT
%(zone)s  EOT
}

resource "gtm_region" "eu" {
  zone      = gtm_zone.gslb.name
  name      = "eu-west"
  latitude  = 53.35
  longitude = -6.26
  country   = "ie"
  continent = "EU"
}

resource "gtm_region" "us" {
  zone      = gtm_zone.gslb.name
  name      = "us-east"
  latitude  = 38.9
  longitude = -77.0
  country   = "US"
}

resource "gtm_pool" "web" {
  zone = gtm_zone.gslb.name
  name = "web"
  endpoints = [
    { name = "eu-1", region = gtm_region.eu.name, ipv4 = "127.0.1.1",
      ipv6 = "FD00:0::1:1", weight = 10 },
    { name = "us-1", region = gtm_region.us.name, ipv4 = "127.0.2.1", weight = %(us_weight)s },
  ]
  check = { type = "http", port = 8080, path = "/healthz", expect = [200], interval = 2 }
}

resource "gtm_steered_name" "www" {
  zone    = gtm_zone.gslb.name
  name    = "www"
  pool    = gtm_pool.web.name
  ttl     = 30
  filters = [
    { type = "geo", default = ["us-east"], countries = { GB = ["eu-west"] },
      networks = { "2001:DB8::/32" = ["eu-west"] } },
  ]
  fallback = { addresses = ["192.0.2.1"] }
}

resource "gtm_region_state" "us" {
  zone   = gtm_zone.gslb.name
  kind   = "region"
  name   = gtm_region.us.name
  health = "up"
  reason = "managed by terraform"
}

data "gtm_answer" "gb" {
  name          = "www.gslb.example.test."
  client_subnet = "81.2.69.0/24"
  depends_on    = [gtm_steered_name.www, gtm_region_state.us]
}

output "gb" { value = data.gtm_answer.gb.regions }
output "gb_addresses" { value = data.gtm_answer.gb.addresses }
output "gb_scope" { value = data.gtm_answer.gb.ecs_scope }
'''


def config(url: str, us_weight: int = 5) -> str:
    indented = "".join(f"    {line}\n" for line in ZONE_TEXT.splitlines())
    return provider_block(url) + MAIN % {"zone": indented, "us_weight": us_weight}


def outputs(tf: Terraform) -> dict[str, object]:
    values = json.loads(tf("output", "-json").out)
    return {k: v["value"] for k, v in values.items()}


def test_apply_plan_change_drift_import_destroy(
        plane: Plane, terraform_token: str, cli_config: tuple[str, Path],
        tmp_path: Path) -> None:
    before_version, before = plane.document()
    tf = make_terraform(cli_config, tmp_path / "main", terraform_token)
    tf.write(config(plane.url))
    tf("init", "-no-color")

    applied = tf("apply", "-auto-approve", "-no-color")
    assert "Apply complete! Resources: 6 added" in applied.out, applied.text
    answers = outputs(tf)
    assert answers["gb"] == ["eu-west"] and answers["gb_addresses"] == ["127.0.1.1"]
    assert answers["gb_scope"] > 0

    version, document = plane.document()
    steering = document["steering"][ZONE]
    assert steering["pools"]["web"]["endpoints"][0]["ipv6"] == "FD00:0::1:1"
    history = plane.call("GET", f"/v1/versions?limit={version - before_version}")["items"]
    assert {item["author"].split("#")[0] for item in history} == {"terraform"}
    assert any(item["message"] == "terraform: gtm_pool gslb.example.test./web created"
               for item in history)

    quiet = tf("plan", "-detailed-exitcode", "-no-color")
    assert quiet.code == 0, quiet.text

    # A change: the plan shows exactly it, the apply makes one version.
    tf.write(config(plane.url, us_weight=7))
    changed = tf("plan", "-detailed-exitcode", "-no-color")
    assert changed.code == 2 and "1 to change" in changed.out, changed.text
    assert "weight" in changed.out
    tf("apply", "-auto-approve", "-no-color")
    _, document = plane.document()
    weights = {e["name"]: e.get("weight")
               for e in document["steering"][ZONE]["pools"]["web"]["endpoints"]}
    assert weights == {"eu-1": 10, "us-1": 7}
    assert tf("plan", "-detailed-exitcode", "-no-color").code == 0

    # Drift: someone changes a value with the API; the plan shows it and puts it back.
    def move(doc: dict) -> None:
        doc["steering"][ZONE]["names"]["www"]["ttl"] = 300
        doc["state"][ZONE]["regions"]["us-east"] = {"health": "down", "headroom": None,
                                                    "reason": "gtm steer"}

    plane.edit(move)
    drift = tf("plan", "-detailed-exitcode", "-no-color")
    assert drift.code == 2, drift.text
    assert "300 -> 30" in drift.out and '"down" -> "up"' in drift.out, drift.out
    assert "2 to change" in drift.out

    # Import every resource type into an empty state: the plan shows no changes.
    tf("apply", "-auto-approve", "-no-color")
    imported = make_terraform(cli_config, tmp_path / "imported", terraform_token)
    imported.write(config(plane.url, us_weight=7))
    imported("init", "-no-color")
    for address, entry in [
        # IDs spelled as the configuration spells the zone (no final dot here)
        ("gtm_zone.gslb", "gslb.example.test"),
        ("gtm_region.eu", "gslb.example.test/eu-west"),
        ("gtm_region.us", "gslb.example.test/us-east"),
        ("gtm_pool.web", "gslb.example.test/web"),
        ("gtm_steered_name.www", "gslb.example.test/www"),
        ("gtm_region_state.us", "gslb.example.test/region/us-east"),
    ]:
        imported("import", "-no-color", address, entry)
    after_import = imported("plan", "-detailed-exitcode", "-no-color")
    assert after_import.code == 0, after_import.text

    # Destroy: the configuration is as before, apart from the version number.
    tf("destroy", "-auto-approve", "-no-color")
    _, document = plane.document()
    assert document == before


def test_parallel_apply_of_40_resources_loses_nothing(
        plane: Plane, terraform_token: str, cli_config: tuple[str, Path],
        tmp_path: Path) -> None:
    _, before = plane.document()
    tf = make_terraform(cli_config, tmp_path / "parallel", terraform_token)
    regions = "".join(
        f'resource "gtm_region" "r{i}" {{\n  zone = gtm_zone.p.name\n  name = "r{i}"\n'
        f"  latitude = {i}\n  longitude = {i}\n}}\n" for i in range(39))
    text = "".join(f"    {line}\n" for line in ZONE_TEXT.splitlines())
    tf.write(provider_block(plane.url) + f'resource "gtm_zone" "p" {{\n  name = "p.test."\n'
             f"  text = <<-EOT\n{text}  EOT\n}}\n" + regions)
    tf("init", "-no-color")
    applied = tf("apply", "-auto-approve", "-no-color", "-parallelism=10")
    assert "Resources: 40 added" in applied.out, applied.text
    _, document = plane.document()
    assert sorted(document["steering"]["p.test."]["regions"]) == sorted(
        f"r{i}" for i in range(39))
    assert tf("plan", "-detailed-exitcode", "-no-color").code == 0
    tf("destroy", "-auto-approve", "-no-color", "-parallelism=10")
    assert plane.document()[1] == before


def test_invalid_values_unreachable_api_and_wrong_token_are_clear_errors(
        plane: Plane, terraform_token: str, cli_config: tuple[str, Path],
        tmp_path: Path) -> None:
    tf = make_terraform(cli_config, tmp_path / "errors", terraform_token)
    tf.write(provider_block(plane.url) + '''
resource "gtm_pool" "bad" {
  zone      = "example.test"
  name      = "bad"
  endpoints = [{ name = "a", region = "r", ipv4 = "300.1.1.1" }]
}
resource "gtm_region" "bad" {
  zone = "example.test"
  name = "far"
  latitude = 91
  longitude = 0
}
''')
    tf("init", "-no-color")
    version = plane.document()[0]
    bad = tf("plan", "-no-color", check=False)
    assert bad.code == 1
    assert "invalid endpoints" in bad.err and "300.1.1.1" in bad.err, bad.err
    assert "invalid latitude: must be from -90 to 90" in bad.err, bad.err
    assert 'resource "gtm_pool" "bad"' in bad.err and "Traceback" not in bad.text
    assert plane.document()[0] == version  # nothing was written

    tf.write(provider_block("http://127.0.0.1:9") + 'data "gtm_config" "c" {}\n')
    down = tf("plan", "-no-color", check=False)
    assert down.code == 1 and "cannot reach the gtm control API at http://127.0.0.1:9" \
        in down.err, down.err
    assert "Traceback" not in down.text

    tf.write(provider_block(plane.url) + 'data "gtm_config" "c" {}\n')
    refused = tf("plan", "-no-color", check=False, env={"GTM_TOKEN": "not-a-token"})
    assert refused.code == 1 and "refused the token (HTTP 401)" in refused.err, refused.err
    assert "Traceback" not in refused.text


def test_existing_entry_is_refused_with_import_hint_and_tokens_and_config_data(
        plane: Plane, terraform_token: str, cli_config: tuple[str, Path],
        tmp_path: Path) -> None:
    tf = make_terraform(cli_config, tmp_path / "claims", terraform_token)
    text = "".join(f"    {line}\n" for line in ZONE_TEXT.splitlines())
    tf.write(provider_block(plane.url) + f'''
resource "gtm_zone" "taken" {{
  name = "example.test."
  text = <<-EOT
{text}  EOT
}}
resource "gtm_token" "ci" {{
  name = "pipeline"
  role = "viewer"
}}
data "gtm_config" "live" {{
  depends_on = [gtm_token.ci]
}}
output "author" {{ value = data.gtm_config.live.author }}
''')
    tf("init", "-no-color")
    claimed = tf("apply", "-auto-approve", "-no-color", check=False)
    assert claimed.code == 1
    assert "gtm_zone example.test. already exists" in claimed.err, claimed.err
    assert "terraform import gtm_zone.<name> example.test." in claimed.err
    # the token was made; its secret works once read from state
    state = json.loads(tf("show", "-json").out)
    token = next(r for r in state["values"]["root_module"]["resources"]
                 if r["type"] == "gtm_token")["values"]
    assert plane.call("GET", "/v1/config", token=token["secret"])["version"] >= 1
    tf.write(provider_block(plane.url) + '''
resource "gtm_token" "ci" {
  name = "pipeline"
  role = "viewer"
}
data "gtm_config" "live" {
  depends_on = [gtm_token.ci]
}
output "author" { value = data.gtm_config.live.author }
''')
    quiet = tf("plan", "-detailed-exitcode", "-no-color")
    assert quiet.code == 0, quiet.text
    imported = make_terraform(cli_config, tmp_path / "token-import", terraform_token)
    imported.write(provider_block(plane.url) + '''
resource "gtm_token" "ci" {
  name = "pipeline"
  role = "viewer"
}
''')
    imported("init", "-no-color")
    imported("import", "-no-color", "gtm_token.ci", token["id"])
    assert imported("plan", "-detailed-exitcode", "-no-color").code == 0
    tf("destroy", "-auto-approve", "-no-color")
    live = plane.call("GET", "/v1/tokens")["items"]
    assert not any(t["id"] == token["id"] and not t.get("revoked_at") for t in live)
