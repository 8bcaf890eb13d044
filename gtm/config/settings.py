"""Settings of a GTM node, from a TOML file and command-line overrides.

Every value is validated here; an error names the file, the key and the reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from gtm import config_reader
from gtm.config_reader import IpNetwork, Listen, Reader
from gtm.errors import ConfigError
from gtm.toml_input import read_toml

# Listen is re-exported: most users of an address read settings too.
__all__ = ["DEFAULT_DNS_PORT", "DnsSettings", "Listen", "RrlSettings", "load_dns_settings",
           "parse_listen", "validate"]

DEFAULT_DNS_PORT = 6053  # unprivileged, and clear of mDNS on 5353


@dataclass(frozen=True)
class RrlSettings:
    """Response rate limiting (``[dns.rrl]``): see gtm.dns.rrl and the README."""

    enabled: bool = False
    # Responses per second per (client prefix, response class, name), for the whole node:
    # each of N workers limits at rate / N (they share nothing; SO_REUSEPORT spreads a
    # flood over them). The bucket holds one second of responses (the burst).
    responses_per_second: float = 20.0
    # Every Nth limited response goes out truncated (TC=1, so a real client retries over
    # TCP); 0: drop every limited response, 1: truncate every one.
    slip: int = 2
    ipv4_prefix: int = 24
    ipv6_prefix: int = 56
    # Networks never limited (monitoring, your own resolvers).
    whitelist: tuple[IpNetwork, ...] = ()
    # Count and log what would be limited; limit nothing.
    log_only: bool = False
    # Buckets kept (per worker); the oldest goes first when full.
    table_size: int = 100_000


RRL_KEYS = tuple(f.name for f in fields(RrlSettings))


@dataclass(frozen=True)
class DnsSettings:
    listen: tuple[Listen, ...] = (
        Listen("127.0.0.1", DEFAULT_DNS_PORT),
        Listen("::1", DEFAULT_DNS_PORT),
    )
    zones_dir: Path = Path("zones")
    workers: int = 1
    edns_udp_size: int = 1232
    nsid: str | None = None
    tcp_idle_timeout: float = 10.0
    # A TCP message must arrive whole within this many seconds of its first byte.
    tcp_message_timeout: float = 3.0
    # TCP connections one client address may hold open per worker; 0: no cap.
    tcp_connections_per_client: int = 16
    watch_interval: float = 1.0
    cache_entries: int = 100_000
    # Estimated memory per cache (each of a worker's six response caches).
    cache_megabytes: float = 16.0
    # recvmmsg/sendmmsg batches on Linux; false: the plain asyncio datagram protocol.
    udp_batch: bool = True
    # An mmdb file (GeoLite2, DB-IP, or the NRO country file); None: the one shipped.
    geoip_database: Path | None = None
    # DNS cookies (RFC 7873, server cookies as RFC 9018).
    cookies: bool = True
    rrl: RrlSettings = RrlSettings()


def parse_listen(text: str, default_port: int = DEFAULT_DNS_PORT) -> Listen:
    """``HOST:PORT``, ``[V6]:PORT``, ``HOST`` (the DNS port) or ``:PORT``."""
    return config_reader.parse_listen(text, default_port)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


def load_dns_settings(path: Path | None, defaults: DnsSettings | None = None) -> DnsSettings:
    """Settings from the ``[dns]`` table of a TOML file over the given defaults."""
    defaults = defaults or DnsSettings()
    if path is None:
        return defaults
    table = Reader(read_toml(path), str(path)).child("dns", [f.name for f in fields(DnsSettings)])
    return validate(replace(defaults, **_values(table, path.parent)), str(path))


def _values(table: Reader, base: Path) -> dict[str, Any]:
    """The settings the table gives, typed (ranges are checked by validate)."""
    values: dict[str, Any] = {}
    for field in fields(DnsSettings):
        key = field.name
        if key not in table:
            continue
        if key == "listen":
            values[key] = table.addresses(key, DEFAULT_DNS_PORT)
        elif key in ("zones_dir", "geoip_database"):
            text = table.value(key)
            if not isinstance(text, str) or not text:
                raise table.fail(key, "must be a path")
            values[key] = base / text  # an absolute path stays one
        elif key in ("tcp_idle_timeout", "tcp_message_timeout", "watch_interval",
                     "cache_megabytes"):
            values[key] = table.number(key)
        elif key in ("udp_batch", "cookies"):
            values[key] = table.flag(key, True)
        elif key == "rrl":
            values[key] = _rrl(table.child(key, RRL_KEYS))
        elif key == "nsid":
            values[key] = table.text(key)
        else:
            values[key] = table.integer(key)
    return values


def _rrl(table: Reader) -> RrlSettings:
    defaults = RrlSettings()
    return RrlSettings(
        enabled=table.flag("enabled", defaults.enabled),
        responses_per_second=table.number("responses_per_second",
                                          defaults.responses_per_second, low=0.1),
        slip=table.integer("slip", defaults.slip, low=0, high=100),
        ipv4_prefix=table.integer("ipv4_prefix", defaults.ipv4_prefix, low=8, high=32),
        ipv6_prefix=table.integer("ipv6_prefix", defaults.ipv6_prefix, low=16, high=128),
        whitelist=table.networks("whitelist") if "whitelist" in table else (),
        log_only=table.flag("log_only", defaults.log_only),
        table_size=table.integer("table_size", defaults.table_size, low=1000,
                                 high=10_000_000),
    )


def validate(settings: DnsSettings, source: str | None = None) -> DnsSettings:
    checks = [
        (settings.workers >= 1, "workers", "must be at least 1"),
        (512 <= settings.edns_udp_size <= 65535, "edns_udp_size", "must be 512 to 65535"),
        (settings.tcp_idle_timeout > 0, "tcp_idle_timeout", "must be above 0"),
        (settings.tcp_message_timeout > 0, "tcp_message_timeout", "must be above 0"),
        (settings.tcp_connections_per_client >= 0, "tcp_connections_per_client",
         "must be 0 (no cap) or more"),
        (settings.watch_interval >= 0, "watch_interval", "must be 0 (off) or more"),
        (settings.cache_entries >= 0, "cache_entries", "must be 0 or more"),
        (settings.cache_megabytes >= 0, "cache_megabytes", "must be 0 or more"),
        (bool(settings.listen), "listen", "needs at least one address"),
        (settings.nsid is None or len(settings.nsid) <= 255, "nsid", "at most 255 characters"),
    ]
    for ok, key, reason in checks:
        if not ok:
            raise ConfigError(reason, source or "settings", f"dns.{key}")
    return settings
