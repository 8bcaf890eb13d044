"""The document compiler: what it accepts, and the place it names for what it refuses."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gtm.config import document
from gtm.config.document import compile_document, register_section
from gtm.errors import ConfigError
from tests.control.conftest import EXAMPLE_ZONE, example_document

LB_TABLE = {"listeners": [{"bind": "127.0.0.1:8080"}],
            "pools": [{"name": "web", "backends": ["127.0.0.1:9001"]}]}


def test_compiles_zones_and_keeps_sections() -> None:
    doc = {**example_document(), "lb": {"eu": LB_TABLE}}
    compiled = compile_document(doc, "api")
    [zone] = compiled.zones.zones.values()
    assert zone.origin.to_text() == "example.test."
    assert compiled.document["lb"] == {"eu": LB_TABLE}
    assert compiled.digest == compile_document(dict(reversed(doc.items())), "x").digest


def test_empty_document_is_valid() -> None:
    assert compile_document({}, "api").zones.zones == {}


BROKEN_ZONE = EXAMPLE_ZONE + "www  CNAME other.example.\n"

INVALID: list[tuple[Any, str, str]] = [
    ([], "$", "must be an object"),
    ({"zonez": {}}, "zonez", "unknown section"),
    ({"zones": []}, "zones", "zone name to master-file text"),
    ({"zones": {"example.test": EXAMPLE_ZONE}}, 'zones["example.test"]', "absolute"),
    ({"zones": {"example.test.": 42}}, 'zones["example.test."]', "master-file text"),
    ({"zones": {"example.test.": BROKEN_ZONE}}, 'zones["example.test."]:6', "CNAME"),
    ({"zones": {"example.test.": "$TTL 60\n@ NS ns1\n"}}, 'zones["example.test."]', "no SOA"),
    ({"zones": {"example.test.": EXAMPLE_ZONE + "x IN BOGUS 1\n"}},
     'zones["example.test."]:6', "unknown record type"),
    ({"zones": {"example.test.": EXAMPLE_ZONE + "$INCLUDE /etc/passwd\n"}},
     'zones["example.test."]:6', "INCLUDE"),
    ({"zones": {"example.test.": EXAMPLE_ZONE + "mail A 999.1.1.1\n"}},
     'zones["example.test."]:6', ""),
    ({"zones": {"example.test.": EXAMPLE_ZONE + "out.example.org. A 192.0.2.5\n"}},
     'zones["example.test."]:6', ""),
    ({"zones": {"example.test.": EXAMPLE_ZONE, "EXAMPLE.test.": EXAMPLE_ZONE}},
     'zones["EXAMPLE.test."]', "same zone"),
    ({"zones": {"example.test.": EXAMPLE_ZONE + "".join(
        f"big TXT {'x' * 200} {i}\n" for i in range(400))}},
     'zones["example.test."]:6', "the TXT RRset at big.example.test. takes"),
    ({"steering": []}, "steering", "must be an object"),
    ({"lb": "yes"}, "lb", "must be an object"),
]


@pytest.mark.parametrize(("doc", "where", "reason"), INVALID)
def test_invalid_documents_name_the_place(doc: Any, where: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_document(doc, "api")
    # The zone compiler may add a line number to a zone-wide error; never drop the path.
    assert caught.value.where == where or str(caught.value.where).startswith(f"{where}:")
    assert reason in caught.value.reason
    assert caught.value.source == "api"


def test_the_lb_section_is_compiled_by_the_balancers_own_compiler() -> None:
    # Found through the gtm.sections entry point: gtm imports nothing of regional_lb.
    compiled = compile_document({"lb": {"eu-west": LB_TABLE}}, "api")
    config = compiled.sections["lb"]["eu-west"]
    assert config.region == "eu-west"  # the section's key names the region
    assert [str(b.address) for b in config.pools[0].backends] == ["127.0.0.1:9001"]


@pytest.mark.parametrize(("lb", "where", "reason"), [
    ({"eu-west": {**LB_TABLE, "pools": [{"name": "web", "backends": [
        "127.0.0.1:9001", "no-port"]}]}},
     "lb.eu-west.pools[0].backends[1].address", "needs a port"),
    ({"eu-west": {**LB_TABLE, "pools": []}}, "lb.eu-west.pools", "at least one"),
    ({"eu-west": {**LB_TABLE, "workers": "two"}}, "lb.eu-west.workers", "whole number"),
    ({"eu-west": {**LB_TABLE, "colour": 1}}, "lb.eu-west.colour", "unknown key 'colour'"),
    ({"eu-west": {**LB_TABLE, "region": "us-east"}}, "lb.eu-west.region", "\"eu-west\""),
    ({"eu west": LB_TABLE}, 'lb["eu west"]', "region name"),
    ({"eu": []}, "lb.eu", "must be an object"),
    ({"eu": {**LB_TABLE, "listeners": [{"bind": "127.0.0.1:80", "pool": "api"}]}},
     "lb.eu.listeners[0].pool", "names no pool"),
    # Every viewer token reads the document: the admin token stays on the balancer's host.
    ({"eu": {**LB_TABLE, "admin": "127.0.0.1:9900", "admin_token": "s3cret"}},
     "lb.eu.admin_token", "a secret is not kept in the configuration document"),
])
def test_a_bad_lb_table_is_refused_with_its_path(lb: Any, where: str, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        compile_document({**example_document(), "lb": lb}, "api")
    assert caught.value.where == where
    assert reason in caught.value.reason
    assert caught.value.source == "api"


def test_registered_validator_compiles_its_section() -> None:
    def steering(value: Any, source: str, path: str) -> tuple[str, ...]:
        for index, pool in enumerate(value.get("pools", [])):
            if pool.get("weight", 1) < 0:
                raise ConfigError("must be 0 or more", source, f"{path}.pools[{index}].weight")
        return tuple(p["name"] for p in value.get("pools", []))

    saved = dict(document._SECTIONS)
    try:
        register_section("lb", steering)
        good = compile_document({"lb": {"pools": [{"name": "eu"}]}}, "api")
        assert good.sections["lb"] == ("eu",)
        with pytest.raises(ConfigError) as caught:
            compile_document({"lb": {"pools": [{"name": "a", "weight": -1}]}}, "api")
        assert caught.value.where == "lb.pools[0].weight"
        with pytest.raises(ValueError):
            register_section("zones", steering)
    finally:
        document._SECTIONS.clear()
        document._SECTIONS.update(saved)


def test_the_example_zone_directory_seeds_a_valid_document() -> None:
    from pathlib import Path

    from gtm.config.document import document_from_zone_dir

    zones = Path(__file__).resolve().parents[2] / "zones"
    doc = document_from_zone_dir(zones)
    compiled = compile_document(doc, str(zones))
    assert "example.test." in doc["zones"]
    assert "$INCLUDE" not in doc["zones"]["example.test."]  # flattened: no directory to read
    assert len(compiled.zones.zones) == len(list(zones.glob("*.zone")))


def test_files_an_lb_table_names_are_the_balancers_and_checked_there(tmp_path: Path) -> None:
    """The API (and every DNS node) cannot see the balancer host's files: a certificate
    directory missing here is accepted into the document, and the balancer, compiling
    the version it follows, refuses it with the path, keeping what it serves."""
    from regional_lb.follow import compile_table

    missing = tmp_path / "not-here"
    table = {**LB_TABLE, "listeners": [{"bind": "127.0.0.1:8443", "tls": {
        "certificates": str(missing), "default": "www"}}]}
    compiled = compile_document({**example_document(), "lb": {"eu": table}}, "api")
    assert "eu" in compiled.sections["lb"]
    with pytest.raises(ConfigError) as caught:
        compile_table("eu", table, 7)
    assert caught.value.where == "lb.eu.listeners[0].tls.certificates"
    assert "is not a directory" in caught.value.reason
    missing.mkdir()
    (missing / "www.pem").write_text("x")
    compile_table("eu", table, 8)  # there now: the balancer serves it


def test_a_followed_balancer_adds_its_own_admin_token() -> None:
    from regional_lb.follow import compile_table

    table = {**LB_TABLE, "admin": "127.0.0.1:9900"}
    assert compile_table("eu", table, 3).admin_token is None  # the admin API refuses all
    assert compile_table("eu", table, 3, "host-token").admin_token == "host-token"


def test_a_table_with_pools_and_no_listener_yet_is_stored_and_its_balancer_waits() -> None:
    """Pool first, then the listener that names it (one entry per write, as Terraform
    makes them): the API takes the table and checks its pools; the region's balancer
    refuses it until a listener arrives, keeping what it serves."""
    from regional_lb.follow import compile_table

    pools_only = {"pools": LB_TABLE["pools"]}
    compiled = compile_document({**example_document(), "lb": {"eu": pools_only}}, "api")
    assert "eu" in compiled.sections["lb"]
    assert compiled.document["lb"] == {"eu": pools_only}  # the stand-in is not stored
    with pytest.raises(ConfigError) as caught:
        compile_table("eu", pools_only, 4)
    assert (caught.value.where, caught.value.reason) == (
        "lb.eu.listeners", "needs at least one [[lb.listeners]]")
    # Its pools are still checked whole, with their paths.
    bad = {"pools": [{"name": "web", "backends": ["127.0.0.1:9001"], "retries": 99}]}
    with pytest.raises(ConfigError) as refused:
        compile_document({**example_document(), "lb": {"eu": bad}}, "api")
    assert refused.value.where == "lb.eu.pools[0].retries"
    for empty in ({}, {"pools": []}, {"listeners": []}):
        with pytest.raises(ConfigError) as nothing:
            compile_document({**example_document(), "lb": {"eu": empty}}, "api")
        assert nothing.value.where == "lb.eu.pools"
