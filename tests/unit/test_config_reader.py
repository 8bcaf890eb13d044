"""The one typed config reader (gtm.config_reader): what each getter accepts, and the
error a user sees for what it refuses, with the full path of the value."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from gtm.config.settings import load_dns_settings
from gtm.config_reader import Listen, Reader
from gtm.errors import ConfigError

LB = {"workers": 4, "via": "", "pools": [{"name": "app", "backends": [
    {"address": "127.0.0.1:9001", "weight": 2}, {"address": "127.0.0.1:9002", "weight": -3}]}]}


def _refusal(call: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        call()
    return str(caught.value)


def test_values_are_typed_and_absent_keys_give_their_default() -> None:
    top = Reader(LB, "lb.toml", "lb", ("workers", "via", "pools", "region"))
    assert top.integer("workers", 1, low=1, high=256) == 4
    assert top.text("via", "gtm") == ""           # present but empty: allowed by default
    assert top.text("region", "local") == "local"
    assert top.text("redis_url", None) is None
    assert top.number("workers") == 4.0 and isinstance(top.number("workers"), float)
    assert top.flag("tls", False) is False
    pool = next(top.tables("pools"))
    backend = next(pool.tables("backends"))
    assert backend.address("address") == Listen("127.0.0.1", 9001)


@pytest.mark.parametrize(("call", "message"), [
    (lambda r: r.integer("workers", low=5, high=8), "lb.toml:lb.workers: must be from 5 to 8"),
    (lambda r: r.integer("via"), "lb.toml:lb.via: must be a whole number"),
    (lambda r: r.number("via"), "lb.toml:lb.via: must be a number"),
    (lambda r: r.flag("workers", True), "lb.toml:lb.workers: must be true or false"),
    (lambda r: r.text("workers"), "lb.toml:lb.workers: must be a string"),
    (lambda r: r.text("via", empty=False), "lb.toml:lb.via: must be a non-empty string"),
    (lambda r: r.text("region"), "lb.toml:lb.region: is required"),
    (lambda r: r.choice("via", ("a", "b"), "a"), "lb.toml:lb.via: must be one of a, b"),
    (lambda r: r.list("workers"), "lb.toml:lb.workers: must be a list"),
    (lambda r: r.child("workers"), "lb.toml:lb.workers: must be a table"),
    (lambda r: r.number("workers", high=0.5, what="a fraction"),
     "lb.toml:lb.workers: must be a fraction at most 0.5"),
    (lambda r: r.integer("workers", low=10**6), "lb.toml:lb.workers: must be at least 1000000"),
])
def test_each_refusal_names_the_file_the_path_and_the_reason(call: Any, message: str) -> None:
    assert _refusal(lambda: call(Reader(LB, "lb.toml", "lb"))) == message


def test_nested_errors_carry_the_full_indexed_path() -> None:
    top = Reader(LB, "lb.toml", "lb")
    backends = [b for pool in top.tables("pools") for b in pool.tables("backends")]
    assert backends[0].integer("weight", low=0) == 2
    assert _refusal(lambda: backends[1].integer("weight", low=0, high=10000)) == \
        "lb.toml:lb.pools[0].backends[1].weight: must be from 0 to 10000"


def test_unknown_keys_are_refused_by_name_with_the_known_ones() -> None:
    assert _refusal(lambda: Reader({"name": "x", "wieght": 1}, "lb.toml", "lb.pools[0]",
                                   ("name", "weight"))) == \
        "lb.toml:lb.pools[0].wieght: unknown key 'wieght' (expected one of name, weight)"


def test_addresses_and_networks() -> None:
    table = Reader({"bind": ["127.0.0.1:53", "[::1]", "10.0.0.1"],
                    "nets": ["10.0.0.0/8", "10.0.0.1/8"]}, "x.toml", "dns")
    assert table.addresses("bind", 6053) == (Listen("127.0.0.1", 53), Listen("::1", 6053),
                                             Listen("10.0.0.1", 6053))
    assert _refusal(lambda: table.addresses("bind")) == \
        'x.toml:dns.bind[2]: needs a port ("HOST:PORT")'
    assert table.networks("nets", strict=False)[1] == ipaddress.ip_network("10.0.0.0/8")
    assert _refusal(lambda: table.networks("nets")).startswith(
        "x.toml:dns.nets[1]: '10.0.0.1/8' is not a network in CIDR form")


def test_dns_settings_errors_name_the_indexed_key(tmp_path: Path) -> None:
    path = tmp_path / "gtm.toml"
    path.write_text('[dns]\nlisten = ["127.0.0.1:53", "::1:xx"]\n')
    assert _refusal(lambda: load_dns_settings(path)) == \
        f"{path}:dns.listen[1]: '::1:xx' is not an IP address"
    path.write_text("[dns]\nworkers = 2\nlisen = []\n")
    assert _refusal(lambda: load_dns_settings(path)).startswith(
        f"{path}:dns.lisen: unknown key 'lisen' (expected one of cache_entries,")
    path.write_text("[dns]\nworkers = 0\n")
    assert _refusal(lambda: load_dns_settings(path)) == f"{path}:dns.workers: must be at least 1"
    path.write_text('[dns]\nworkers = 3\nzones_dir = "z"\nudp_batch = false\n')
    settings = load_dns_settings(path)
    assert (settings.workers, settings.zones_dir, settings.udp_batch) == (3, tmp_path / "z",
                                                                          False)


def test_tcp_limits_and_cache_memory_are_read_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "gtm.toml"
    path.write_text("[dns]\ntcp_message_timeout = 2.5\ntcp_connections_per_client = 4\n"
                    "cache_megabytes = 8\n")
    settings = load_dns_settings(path)
    assert (settings.tcp_message_timeout, settings.tcp_connections_per_client,
            settings.cache_megabytes) == (2.5, 4, 8)
    defaults = load_dns_settings(None)
    assert (defaults.tcp_message_timeout, defaults.tcp_connections_per_client,
            defaults.cache_megabytes) == (3.0, 16, 16.0)
    for line, reason in (("tcp_message_timeout = 0", "dns.tcp_message_timeout: must be above 0"),
                         ("tcp_connections_per_client = -1",
                          "dns.tcp_connections_per_client: must be 0 (no cap) or more"),
                         ("cache_megabytes = -1", "dns.cache_megabytes: must be 0 or more")):
        path.write_text(f"[dns]\n{line}\n")
        assert _refusal(lambda: load_dns_settings(path)) == f"{path}:{reason}"
