"""Where a client is: its country, continent, subdivision and a point, from an mmdb file.

Three record layouts are understood, so operators can drop in the database they have:

* the NRO/ip-location-db country layout shipped in geodata/: {"country_code": "US"}
  (also ipinfo-style flat records with continent_code, latitude, longitude);
* GeoLite2 / GeoIP2 City and Country: country.iso_code, continent.code,
  subdivisions[0].iso_code, location.latitude/longitude (registered_country when a
  record has no country);
* DB-IP lite, which uses the GeoLite2 layout (its subdivisions carry names only).

What a record leaves out is derived from the country: the continent from a table,
the coordinates from the country's approximate centre.

`Location.prefix_len` is the length of the database network that decided the answer,
in the family of the address asked about; the DNS server returns it as the EDNS Client
Subnet scope, so a resolver may reuse the answer for that whole network.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import maxminddb

from gtm import log
from gtm.errors import ConfigError
from gtm.geo.countries import (
    CENTROID_BY_COUNTRY,
    CONTINENT_BY_COUNTRY,
    CONTINENTS,
    centroid_of,
    continent_of,
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_DATABASE = Path(__file__).resolve().parents[2] / "geodata" / "geo-whois-asn-country.mmdb"

# Special-purpose blocks (RFC 6890 and its successors: 6598, 7723, 8215, 9602, 9637)
# that can never say where a client is. Registry data holds records for some anyway
# (the NRO file maps 192.168.0.0/16 to AU and 2001:db8::/32 to JP), and an operator's
# own database may too, so they are always answered as unknown, whatever the database
# says, with the block's own length as prefix_len: every address in it gets the same
# (empty) answer. Operators steer such clients with `networks` rules.
_SPECIAL_PURPOSE = (
    "0.0.0.0/8 10.0.0.0/8 100.64.0.0/10 127.0.0.0/8 169.254.0.0/16 172.16.0.0/12 "
    "192.0.0.0/24 192.0.2.0/24 192.88.99.0/24 192.168.0.0/16 198.18.0.0/15 "
    "198.51.100.0/24 203.0.113.0/24 224.0.0.0/4 240.0.0.0/4 "
    "::/128 ::1/128 64:ff9b::/96 64:ff9b:1::/48 100::/64 2001::/23 2001:db8::/32 "
    "3fff::/20 5f00::/16 fc00::/7 fe80::/10 ff00::/8"
)


@dataclass(frozen=True, slots=True)
class Location:
    """A client's place; every field is None when the database does not know it."""

    country: str | None = None  # ISO 3166-1 alpha-2, e.g. "US"
    continent: str | None = None  # AF AN AS EU NA OC SA
    subdivision: str | None = None  # ISO 3166-2 with its country, e.g. "US-CA"
    latitude: float | None = None
    longitude: float | None = None
    prefix_len: int = 0  # the matched network's length (IPv4 length for IPv4 addresses)

    @property
    def known(self) -> bool:
        return self.country is not None or self.latitude is not None


class _SpecialBlocks:
    """Membership test for the special-purpose blocks, cheap enough for every lookup.

    Blocks are bucketed by the address's first byte, so most addresses are checked
    against no block at all and none against more than a handful.
    """

    def __init__(self, networks: str) -> None:
        self._buckets: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        for text in networks.split():
            network = ipaddress.ip_network(text)
            width = network.max_prefixlen
            base = int(network.network_address)
            first = base >> (width - 8)
            # A block shorter than /8 spans several first bytes; file it under each.
            for byte in range(first, first + (1 << max(0, 8 - network.prefixlen))):
                bucket = self._buckets.setdefault((network.version, byte), [])
                bucket.append((base, int(network.netmask), network.prefixlen))

    def prefix_len(self, address: IPAddress) -> int | None:
        """The length of the special block holding `address`, or None for a normal one."""
        value = int(address)
        key = (address.version, value >> (address.max_prefixlen - 8))
        for base, mask, prefix_len in self._buckets.get(key, ()):
            if value & mask == base:
                return prefix_len
        return None


_SPECIAL = _SpecialBlocks(_SPECIAL_PURPOSE)

# continent, latitude, longitude per country, joined once so a lookup does one get().
_COUNTRY_FACTS = {
    country: (continent, *CENTROID_BY_COUNTRY[country])
    for country, continent in CONTINENT_BY_COUNTRY.items()
    if country in CENTROID_BY_COUNTRY
}


class Locator:
    """Answers `locate(ip)` from one mmdb file, memory-mapped through the C reader.

    trust_private: use the database's records for special-purpose addresses too; only
    `gtm geo lookup --trust-private` does, to show what a file holds. Steering never
    does (gtm.node opens its locator without it).
    """

    def __init__(self, path: str | Path = DEFAULT_DATABASE, *, trust_private: bool = False):
        self.path = Path(path)
        self.trust_private = trust_private
        try:
            # MODE_AUTO takes the C extension (mmap) when it is installed, else pure Python.
            self._reader = maxminddb.open_database(str(self.path), maxminddb.MODE_AUTO)
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(f"cannot open GeoIP database: {reason}", str(self.path)) from None
        metadata = self._reader.metadata()
        self.database_type: str = metadata.database_type
        self.build_epoch: int = metadata.build_epoch
        self._ipv6 = metadata.ip_version == 6
        log.geo.debug(
            "GeoIP database %s: %s, built %d, %s reader",
            self.path,
            self.database_type,
            self.build_epoch,
            type(self._reader).__module__,
        )

    def locate(self, ip: str | IPAddress) -> Location:
        """The location of one address; unknown and special addresses give all-None fields."""
        address = ip if not isinstance(ip, str) else _parse(ip)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            # ::ffff:a.b.c.d is an IPv4 client; its scope is still counted in IPv6 bits.
            inner = self.locate(address.ipv4_mapped)
            return replace(inner, prefix_len=inner.prefix_len + 96)
        if not self.trust_private:
            special = _SPECIAL.prefix_len(address)
            if special is not None:
                return Location(prefix_len=special)
        if address.version == 6 and not self._ipv6:
            return Location(prefix_len=0)  # no IPv6 address is known: the answer is global
        record, prefix_len = self._reader.get_with_prefix_len(address)
        if address.version == 4 and prefix_len > 32:
            prefix_len -= 96  # a reader that counts IPv4 depth from the IPv6 root
        if not isinstance(record, dict):
            return Location(prefix_len=prefix_len)
        return location_from_record(record, prefix_len)

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> Locator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


def location_from_record(record: dict[str, Any], prefix_len: int) -> Location:
    """Read any of the three layouts, then fill gaps from the country tables."""
    if len(record) == 1 and "country_code" in record:
        return _country_only(record["country_code"], prefix_len)
    country = _country(record)
    coordinates = _coordinates(record) or centroid_of(country)
    return Location(
        country=country,
        continent=_continent(record) or continent_of(country),
        subdivision=_subdivision(record, country),
        latitude=coordinates[0] if coordinates else None,
        longitude=coordinates[1] if coordinates else None,
        prefix_len=prefix_len,
    )


def _parse(text: str) -> IPAddress:
    # inet_pton and the packed constructors are ~4x faster than ipaddress's text parser.
    try:
        if ":" in text:
            return ipaddress.IPv6Address(socket.inet_pton(socket.AF_INET6, text))
        return ipaddress.IPv4Address(socket.inet_pton(socket.AF_INET, text))
    except OSError:
        pass
    try:  # the slow parser also takes what inet_pton does not, e.g. a scope id
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise ConfigError(f"{text!r} is not an IP address", "geo lookup") from None


def _country_only(code: object, prefix_len: int) -> Location:
    """The shipped NRO file's records are a bare country code: the common, fast case."""
    country = _text(code)
    facts = _COUNTRY_FACTS.get(country) if country else None
    if facts is None:
        return Location(country=country, prefix_len=prefix_len)
    return Location(country, facts[0], None, facts[1], facts[2], prefix_len)


def _text(value: object) -> str | None:
    return value.upper() if isinstance(value, str) and value else None


def _nested(record: dict[str, Any], outer: str, inner: str) -> object:
    value = record.get(outer)
    return value.get(inner) if isinstance(value, dict) else None


def _country(record: dict[str, Any]) -> str | None:
    return (
        _text(record.get("country_code"))
        or _text(_nested(record, "country", "iso_code"))
        or _text(_nested(record, "registered_country", "iso_code"))
    )


def _continent(record: dict[str, Any]) -> str | None:
    code = _text(_nested(record, "continent", "code")) or _text(record.get("continent_code"))
    return code if code in CONTINENTS else None


def _subdivision(record: dict[str, Any], country: str | None) -> str | None:
    """GeoLite2 stores "CA" for California; we answer "US-CA", which is unambiguous."""
    subdivisions = record.get("subdivisions")
    if not country or not isinstance(subdivisions, list) or not subdivisions:
        return None
    first = subdivisions[0]
    code = _text(first.get("iso_code")) if isinstance(first, dict) else None
    return f"{country}-{code}" if code else None


def _coordinates(record: dict[str, Any]) -> tuple[float, float] | None:
    location = record.get("location")
    source = location if isinstance(location, dict) else record
    latitude, longitude = source.get("latitude"), source.get("longitude")
    if isinstance(latitude, int | float) and isinstance(longitude, int | float):
        return float(latitude), float(longitude)
    return None
