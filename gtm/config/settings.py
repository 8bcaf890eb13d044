"""Settings of a GTM node, from a TOML file and command-line overrides.

Every value is validated here; an error names the file, the key and the reason.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from gtm.errors import ConfigError
from gtm.toml_input import read_toml

DEFAULT_DNS_PORT = 6053  # unprivileged, and clear of mDNS on 5353


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


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
    watch_interval: float = 1.0
    cache_entries: int = 100_000
    # recvmmsg/sendmmsg batches on Linux; false: the plain asyncio datagram protocol.
    udp_batch: bool = True
    # An mmdb file (GeoLite2, DB-IP, or the NRO country file); None: the one shipped.
    geoip_database: Path | None = None


def parse_listen(text: str, default_port: int = DEFAULT_DNS_PORT) -> Listen:
    """Parse ``HOST:PORT``, ``[V6]:PORT``, ``HOST`` or ``:PORT``."""
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    host = host or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise ConfigError(f"{host!r} is not an IP address", where=text) from exc
    # ipaddress takes any text after "%" (newlines, NUL); a scope is an interface name.
    if "%" in host and not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", host.partition("%")[2]):
        raise ConfigError(f"{host!r}: the scope after % must be an interface name", where=text)
    # ASCII digits only: int() would also take other scripts' digits, "+1" and "1_0".
    if port_text and not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        raise ConfigError(f"port {port_text[:16]!r} is not a number from 0 to 65535",
                          where=text)
    port = int(port_text) if port_text else default_port
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} is out of range", where=text)
    return Listen(host, port)


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1


_DNS_KEYS = {f.name for f in fields(DnsSettings)}


def load_dns_settings(path: Path | None, defaults: DnsSettings | None = None) -> DnsSettings:
    """Settings from the ``[dns]`` table of a TOML file over the given defaults."""
    defaults = defaults or DnsSettings()
    if path is None:
        return defaults
    table = read_toml(path).get("dns", {})
    if not isinstance(table, dict):
        raise ConfigError("[dns] must be a table", str(path), "dns")
    unknown = set(table) - _DNS_KEYS
    if unknown:
        raise ConfigError(f"unknown key {sorted(unknown)[0]!r}", str(path), "dns")
    values: dict[str, Any] = {}
    for key, raw in table.items():
        values[key] = _convert(key, raw, str(path), path.parent)
    return validate(replace(defaults, **values), str(path))


def _convert(key: str, raw: Any, source: str, base: Path) -> Any:
    where = f"dns.{key}"
    if key == "listen":
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise ConfigError("must be a list of \"HOST:PORT\" strings", source, where)
        try:
            return tuple(parse_listen(x) for x in raw)
        except ConfigError as exc:
            raise ConfigError(exc.reason, source, f"{where} ({exc.where})") from exc
    if key in ("zones_dir", "geoip_database"):
        if not isinstance(raw, str):
            raise ConfigError("must be a path", source, where)
        return (base / raw) if not Path(raw).is_absolute() else Path(raw)
    expected = {f.name: f.type for f in fields(DnsSettings)}[key]
    if "int" in str(expected) and not (isinstance(raw, int) and not isinstance(raw, bool)):
        raise ConfigError("must be a whole number", source, where)
    if "float" in str(expected) and not isinstance(raw, int | float):
        raise ConfigError("must be a number", source, where)
    if expected in (bool, "bool") and not isinstance(raw, bool):
        raise ConfigError("must be true or false", source, where)
    if "str" in str(expected) and not isinstance(raw, str):
        raise ConfigError("must be a string", source, where)
    return raw


def validate(settings: DnsSettings, source: str | None = None) -> DnsSettings:
    checks = [
        (settings.workers >= 1, "workers", "must be at least 1"),
        (512 <= settings.edns_udp_size <= 65535, "edns_udp_size", "must be 512 to 65535"),
        (settings.tcp_idle_timeout > 0, "tcp_idle_timeout", "must be above 0"),
        (settings.watch_interval >= 0, "watch_interval", "must be 0 (off) or more"),
        (settings.cache_entries >= 0, "cache_entries", "must be 0 or more"),
        (bool(settings.listen), "listen", "needs at least one address"),
        (settings.nsid is None or len(settings.nsid) <= 255, "nsid", "at most 255 characters"),
    ]
    for ok, key, reason in checks:
        if not ok:
            raise ConfigError(reason, source or "settings", f"dns.{key}")
    return settings
