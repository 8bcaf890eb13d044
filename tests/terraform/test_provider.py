"""The provider with the real terraform CLI against a real control plane."""

from __future__ import annotations

import hashlib
import json
import re
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

# A region's balancers: a table made here, pool first (the listener names it).
resource "gtm_lb_pool" "web" {
  region    = "eu-west"
  name      = "web"
  backends  = [{ address = "[FD00::1:65]:9001", weight = 2 }, { address = "127.0.1.101:9001" }]
  algorithm = "least_request"
  check     = { type = "http", path = "/healthz", interval = 1 }
}

resource "gtm_lb_listener" "web" {
  region = "eu-west"
  name   = "web-8081"
  bind   = "127.0.1.1:8081"
  pool   = gtm_lb_pool.web.name
  routes = [
    { pool = gtm_lb_pool.web.name, path_prefix = "/api/", limits = { rate = 5, burst = 10 } },
    { pool = gtm_lb_pool.web.name, header = "X-Canary: 1" },
  ]
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
    assert "Apply complete! Resources: 8 added" in applied.out, applied.text
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
    # Backends in the document in one order whatever the set's, spelled as written;
    # routes in the configuration's order.
    table = document["lb"]["eu-west"]
    assert table["pools"][0]["backends"] == ["127.0.1.101:9001",
                                             {"address": "[FD00::1:65]:9001", "weight": 2}]
    assert [r.get("path_prefix") for r in table["listeners"][0]["routes"]] == ["/api/", None]

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
        doc["lb"]["eu-west"]["pools"][0]["backends"].append("127.0.1.102:9001")

    plane.edit(move)
    drift = tf("plan", "-detailed-exitcode", "-no-color")
    assert drift.code == 2, drift.text
    assert "300 -> 30" in drift.out and '"down" -> "up"' in drift.out, drift.out
    assert '- address = "127.0.1.102:9001" -> null' in drift.out, drift.out
    assert "3 to change" in drift.out

    # Import every resource type into an empty state: the plan shows no changes. Import
    # blocks: one plan imports them all (`terraform import`, one at a time, is the same
    # ImportResourceState and ReadResource; the token test below uses it).
    tf("apply", "-auto-approve", "-no-color")
    imported = make_terraform(cli_config, tmp_path / "imported", terraform_token)
    imports = "".join(f'import {{\n  to = {address}\n  id = "{entry}"\n}}\n' for address, entry in [
        # IDs spelled as the configuration spells the zone (no final dot here)
        ("gtm_zone.gslb", "gslb.example.test"),
        ("gtm_region.eu", "gslb.example.test/eu-west"),
        ("gtm_region.us", "gslb.example.test/us-east"),
        ("gtm_pool.web", "gslb.example.test/web"),
        ("gtm_steered_name.www", "gslb.example.test/www"),
        ("gtm_region_state.us", "gslb.example.test/region/us-east"),
        ("gtm_lb_pool.web", "eu-west/web"),
        ("gtm_lb_listener.web", "eu-west/web-8081"),
    ])
    imported.write(config(plane.url, us_weight=7) + imports)
    imported("init", "-no-color")
    after_import = imported("plan", "-no-color")
    assert "Plan: 8 to import, 0 to add, 0 to change, 0 to destroy." in after_import.out, \
        after_import.text

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
resource "gtm_lb_pool" "bad" {
  region   = "eu-west"
  name     = "bad"
  backends = [{ address = "127.0.1.101" }]
}
resource "gtm_lb_listener" "bad" {
  region = "eu-west"
  name   = "bad"
  bind   = "127.0.1.1:8443"
  mode   = "tcp"
  h2c    = true
}
''')
    tf("init", "-no-color")
    version = plane.document()[0]
    bad = tf("plan", "-no-color", check=False)
    assert bad.code == 1
    assert "invalid endpoints" in bad.err and "300.1.1.1" in bad.err, bad.err
    assert "invalid latitude: must be from -90 to 90" in bad.err, bad.err
    assert 'resource "gtm_pool" "bad"' in bad.err and "Traceback" not in bad.text
    # lb entries: checked by the balancer's own compiler, the error on the attribute
    assert 'invalid backends: needs a port ("HOST:PORT")' in bad.err, bad.err
    assert "at lb.eu-west.pools[0].backends[0].address" in bad.err
    assert "invalid h2c: is for plain http listeners" in bad.err
    assert re.search(r'with gtm_lb_listener\.bad,\n.*\n.*h2c    = true', bad.err), bad.err
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


def certificate_pair(directory: Path, name: str) -> tuple[str, str]:
    """A real self-signed certificate for www.example.test and its key, written as
    NAME.pem and NAME.key (PEM); returns (chain, key)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "www.example.test")])
    now = dt.datetime.now(dt.UTC)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=30))
                   .add_extension(x509.SubjectAlternativeName(
                       [x509.DNSName("www.example.test")]), critical=False)
                   .sign(key, hashes.SHA256()))
    chain = certificate.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    (directory / f"{name}.pem").write_text(chain)
    (directory / f"{name}.key").write_text(key_pem)
    return chain, key_pem


TOKEN_AND_CERTIFICATE = '''
resource "gtm_token" "ci" {
  name = "pipeline"
  role = "viewer"
}
resource "gtm_certificate" "www" {
  name  = "www"
  chain = file("${path.module}/%(pair)s.pem")
  key   = file("${path.module}/%(pair)s.key")
}
resource "gtm_lb_pool" "p" {
  region   = "claims"
  name     = "p"
  backends = [{ address = "127.0.0.1:9001" }]
}
data "gtm_config" "live" {
  depends_on = [gtm_token.ci]
}
output "author" { value = data.gtm_config.live.author }
'''


def test_existing_entry_is_refused_with_import_hint_and_tokens_and_config_data(
        plane: Plane, terraform_token: str, cli_config: tuple[str, Path],
        tmp_path: Path) -> None:
    tf = make_terraform(cli_config, tmp_path / "claims", terraform_token)
    _chain, key = certificate_pair(tf.workdir, "one")
    text = "".join(f"    {line}\n" for line in ZONE_TEXT.splitlines())
    tf.write(provider_block(plane.url) + f'''
resource "gtm_zone" "taken" {{
  name = "example.test."
  text = <<-EOT
{text}  EOT
}}
# Fine at plan (a pool by that name may be made meanwhile); refused at commit, with its
# JSON path, which the error turns into the attribute.
resource "gtm_lb_listener" "l" {{
  region = "claims"
  name   = "l"
  bind   = "127.0.0.1:8081"
  pool   = gtm_lb_pool.p.name
  routes = [{{ pool = "nope", path_prefix = "/x/" }}]
}}
''' + TOKEN_AND_CERTIFICATE % {"pair": "one"})
    tf("init", "-no-color")
    claimed = tf("apply", "-auto-approve", "-no-color", check=False)
    assert claimed.code == 1
    assert "gtm_zone example.test. already exists" in claimed.err, claimed.err
    assert "terraform import gtm_zone.<name> example.test." in claimed.err
    assert "invalid routes: names no pool (p)" in claimed.err, claimed.err
    assert "at\nlb.claims.listeners[0].routes[0].pool" in claimed.err or \
        "at lb.claims.listeners[0].routes[0].pool" in claimed.err, claimed.err
    # the token was made; its secret works once read from state
    state = json.loads(tf("show", "-json").out)
    resources = {r["type"]: r["values"] for r in state["values"]["root_module"]["resources"]}
    token = resources["gtm_token"]
    assert plane.call("GET", "/v1/config", token=token["secret"])["version"] >= 1
    # The certificate: the key went to the control plane (sealed) and only its
    # fingerprint is in state; the leaf's fingerprint is the control plane's.
    certificate = resources["gtm_certificate"]
    assert certificate.get("key") is None
    assert certificate["key_fingerprint"] == hashlib.sha256(key.encode()).hexdigest()
    stored = plane.call("GET", "/v1/certificates/www")
    assert certificate["fingerprint"] == stored["fingerprint_sha256"]
    assert certificate["names"] == ["www.example.test"]
    assert "PRIVATE KEY" not in (tf.workdir / "terraform.tfstate").read_text()
    assert "PRIVATE KEY" not in claimed.text

    tf.write(provider_block(plane.url) + TOKEN_AND_CERTIFICATE % {"pair": "one"})
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

    # A new pair: the plan shows the key's fingerprint change, never the key.
    _chain, new_key = certificate_pair(tf.workdir, "two")
    tf.write(provider_block(plane.url) + TOKEN_AND_CERTIFICATE % {"pair": "two"})
    rotated = tf("apply", "-auto-approve", "-no-color")
    assert "1 changed" in rotated.out, rotated.text
    assert f'key_fingerprint = "{certificate["key_fingerprint"]}" -> ' \
        f'"{hashlib.sha256(new_key.encode()).hexdigest()}"' in rotated.out, rotated.out
    assert "PRIVATE KEY" not in rotated.text
    assert plane.call("GET", "/v1/certificates/www")["fingerprint_sha256"] != \
        certificate["fingerprint"]

    tf("destroy", "-auto-approve", "-no-color")
    live = plane.call("GET", "/v1/tokens")["items"]
    assert not any(t["id"] == token["id"] and not t.get("revoked_at") for t in live)
    assert plane.call("GET", "/v1/certificates")["items"] == []
    assert "lb" not in plane.document()[1]
