"""The provider's pure pieces: what makes two spellings the same, the answer line, the
state upgrade, private state. (The rest is tested with the real terraform CLI.)"""

from __future__ import annotations

import pytest

from gtm.terraform import private
from gtm.terraform.answers import Answer
from gtm.terraform.lb import LbListenerResource, LbPoolResource, host_port, outlier_body
from gtm.terraform.provider import GtmProvider
from gtm.terraform.simulation import Basis
from gtm.terraform.steering import SteeredNameResource


@pytest.mark.parametrize(("text", "normal"), [
    ("127.0.0.1:80", "127.0.0.1:80"),
    ("[2001:DB8:0::1]:080", "[2001:db8::1]:80"),
    ("Backend.Example:9001", "backend.example:9001"),
    ("no-port", "no-port"),
])
def test_addresses_have_one_spelling(text: str, normal: str) -> None:
    assert host_port(text) == normal


def test_a_pools_backends_are_a_set_of_meanings_and_defaults_are_the_same_as_none() -> None:
    pool = LbPoolResource(GtmProvider())
    written = [{"address": "[FD00::1]:9001", "weight": 2, "state": None},
               {"address": "127.0.0.1:9001", "weight": None, "state": None}]
    stored = [{"address": "127.0.0.1:9001", "weight": 1, "state": "enabled"},
              {"address": "[fd00::1]:9001", "weight": 2, "state": None}]
    assert pool.same("backends", written, stored, {})
    assert not pool.same("backends", written, stored[:1], {})
    assert pool.same("algorithm", None, "round_robin", {})
    assert not pool.same("algorithm", None, "random", {})
    # outlier: absent and { enabled = true } are the default; false turns it off
    assert pool.same("outlier", None, {"enabled": True}, {})
    assert not pool.same("outlier", None, {"enabled": False}, {})
    assert outlier_body({"enabled": False, "base_ejection": 5}) is False
    assert outlier_body({"enabled": None, "base_ejection": 5}) == {"base_ejection": 5}


def test_a_pool_is_written_as_the_files_write_it() -> None:
    pool = LbPoolResource(GtmProvider())
    body = pool.body({"name": "web", "backends": [
        {"address": "10.0.0.2:80", "weight": None, "state": "drain"},
        {"address": "10.0.0.1:80", "weight": None, "state": None}],
        "outlier": {"enabled": False}})
    assert body == {"name": "web", "backends": [
        "10.0.0.1:80", {"address": "10.0.0.2:80", "state": "drain"}], "outlier": False}


def test_a_listener_without_a_name_is_found_by_the_compilers_default_name() -> None:
    listener = LbListenerResource(GtmProvider())
    document = {"lb": {"eu": {"listeners": [{"bind": "127.0.0.1:8443", "mode": "tcp"}]}}}
    assert listener.find(document, {"region": "eu", "name": "tcp-8443"}) is not None
    assert listener.same("trusted_networks", ["10.0.0.0/8", "10.1.0.0/16"],
                         ["10.1.0.0/16", "10.0.0.0/8"], {})
    assert listener.same("upgrades", None, ["WebSocket"], {})


@pytest.mark.parametrize(("answer", "line"), [
    (Answer(("127.0.1.1",), ("eu-west",), 24, None), "eu-west 127.0.1.1"),
    (Answer(("127.0.1.1", "127.0.2.1"), ("eu-west", "us-east"), 24, None),
     "eu-west,us-east 127.0.1.1,127.0.2.1"),
    (Answer(("192.0.2.1",), (), 0, "addresses"), "fallback:addresses 192.0.2.1"),
    (Answer((), (), 0, None), "- (no answer)"),
])
def test_the_answer_line(answer: Answer, line: str) -> None:
    assert answer.line() == line


def test_a_state_written_before_an_attribute_existed_is_upgraded_with_it_null() -> None:
    name = SteeredNameResource(GtmProvider())
    old = {"id": "z./www", "zone": "z.", "name": "www", "pool": "web", "gone": 1}
    upgraded = name.upgrade(None, 0, old)  # type: ignore[arg-type]
    assert upgraded is not None
    assert upgraded["simulated_answers"] is None and "gone" not in upgraded
    assert set(upgraded) == {a.name for a in name.attributes}


def test_private_state_goes_in_and_out_and_foreign_bytes_are_none() -> None:
    with private.exchange(b"") as current:
        assert private.incoming() == {}
        private.keep(Basis(7, {"endpoints": {}, "regions": {}}).private())
    assert current.outgoing is not None
    with private.exchange(current.outgoing):
        assert Basis.of(private.incoming()) == Basis(7, {"endpoints": {}, "regions": {}})
    with private.exchange(b"\x00not json"):
        assert private.incoming() == {} and Basis.of(private.incoming()) is None
    assert private.incoming() == {}  # outside a call: nothing


def test_the_section_names_the_provider_spells_are_the_documents() -> None:
    from gtm.config.document import ZONES
    from gtm.config.steering import STATE, STEERING
    from gtm.terraform import base

    assert (base.ZONES, base.STEERING, base.STATE) == (ZONES, STEERING, STATE)
