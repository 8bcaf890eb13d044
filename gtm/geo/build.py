"""Build an mmdb file from a CSV of networks (`gtm geo build CSV OUT`).

The CSV has a header row naming its columns, any of
`network,country,continent,subdivision,latitude,longitude`, of which only `network`
is required; `start,end` (first and last address of a range) may replace `network`.
Records are written in the GeoLite2 City layout (country.iso_code, continent.code,
subdivisions[0].iso_code, location.latitude/longitude), so one reader path serves
our own files, GeoLite2 and DB-IP alike.

Where networks nest, the narrower one wins for its addresses, whatever the row order:
that is what an operator listing "10.0.0.0/8 is EU, but 10.9.0.0/16 is US" means.
"""

from __future__ import annotations

import csv
import ipaddress
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from gtm import log
from gtm.errors import ConfigError
from gtm.geo.countries import CONTINENT_BY_COUNTRY, CONTINENTS
from gtm.geo.mmdb_writer import MmdbValue, MmdbWriter
from gtm.wording import counted

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

FIELD_COLUMNS = ("country", "continent", "subdivision", "latitude", "longitude")
KNOWN_COLUMNS = frozenset({"network", "start", "end", *FIELD_COLUMNS})
DATABASE_TYPE = "GTM-City"
_SUBDIVISION = re.compile(r"[A-Z0-9]{1,3}")


@dataclass(frozen=True)
class _Row:
    line: int
    networks: tuple[IPNetwork, ...]
    record: dict[str, MmdbValue]


def build_mmdb(csv_path: str | Path, out_path: str | Path) -> int:
    """Turn a CSV of networks into an mmdb file; return how many networks it holds.

    Nothing is written unless the whole CSV is valid; the first bad line raises
    ConfigError naming the file, the line and the reason.
    """
    source = Path(csv_path)
    rows = list(read_rows(source))
    placed = _place_networks(rows, str(source))
    writer = MmdbWriter(
        ip_version=6,
        database_type=DATABASE_TYPE,
        languages=["en"],
        description={"en": f"built by gtm from {source.name}"},
    )
    # Wide networks first, so that each narrower one overrides its part of them.
    for network, row in sorted(placed, key=lambda item: _tree_prefix_len(item[0])):
        writer.insert(network, row.record)
    try:
        writer.write(out_path)
    except OSError as exc:
        raise ConfigError(f"cannot write: {exc.strerror}", str(out_path)) from None
    log.geo.info("built %s: %s from %s", out_path, counted(len(placed), "network"), source)
    return len(placed)


def read_rows(path: Path) -> Iterator[_Row]:
    """Parse and check every row of the CSV, naming the line of the first problem."""
    source = str(path)
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", source) from None
    with handle:
        reader = csv.reader(handle)
        try:
            columns = _header(next(reader, None), source)
            for cells in reader:
                if not any(cell.strip() for cell in cells) or cells[0].startswith("#"):
                    continue
                yield _parse_row(columns, cells, source, reader.line_num)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"not a readable CSV: {exc}", source, reader.line_num + 1) from None


def _header(cells: list[str] | None, source: str) -> list[str]:
    if cells is None:
        raise ConfigError("empty file: expected a header row such as network,country", source)
    columns = [cell.strip().lower() for cell in cells]
    unknown = [name for name in columns if name not in KNOWN_COLUMNS]
    if unknown:
        expected = "network (or start,end), " + ",".join(FIELD_COLUMNS)
        raise ConfigError(f"unknown column {unknown[0]!r}; columns are {expected}", source, 1)
    if len(set(columns)) != len(columns):
        raise ConfigError("a column is named twice in the header", source, 1)
    if "network" not in columns and not {"start", "end"} <= set(columns):
        raise ConfigError("the header needs a network column (or start and end)", source, 1)
    return columns


def _parse_row(columns: list[str], cells: list[str], source: str, line: int) -> _Row:
    if len(cells) > len(columns):
        raise ConfigError(f"{counted(len(cells), 'field')} but the header names {len(columns)}",
                          source, line)
    values = {name: cell.strip() for name, cell in zip(columns, cells, strict=False)}
    try:
        return _Row(line, _networks(values), _record(values))
    except ValueError as exc:
        raise ConfigError(str(exc), source, line) from None


def _networks(values: dict[str, str]) -> tuple[IPNetwork, ...]:
    if values.get("network"):
        try:
            return (ipaddress.ip_network(values["network"]),)
        except ValueError as exc:
            raise ValueError(f"bad network {values['network']!r}: {exc}") from None
    if not values.get("start") or not values.get("end"):
        raise ValueError("no network: give network, or both start and end")
    first, last = _address(values["start"]), _address(values["end"])
    if first.version != last.version or int(first) > int(last):
        raise ValueError(f"bad range {first} - {last}: start must not follow end")
    return tuple(ipaddress.summarize_address_range(first, last))


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"bad address {text!r}") from None


def _record(values: dict[str, str]) -> dict[str, MmdbValue]:
    """The GeoLite2 City-style record of a row; a row with no fields gets an empty map."""
    country = _country(values.get("country", ""))
    record: dict[str, MmdbValue] = {}
    if country:
        record["country"] = {"iso_code": country}
    continent = values.get("continent", "").upper()
    if continent:
        if continent not in CONTINENTS:
            raise ValueError(f"unknown continent {continent!r}; use one of {_sorted(CONTINENTS)}")
        record["continent"] = {"code": continent}
    subdivision = _subdivision(values.get("subdivision", ""), country)
    if subdivision:
        record["subdivisions"] = [{"iso_code": subdivision}]
    coordinates = _coordinates(values.get("latitude", ""), values.get("longitude", ""))
    if coordinates:
        record["location"] = {"latitude": coordinates[0], "longitude": coordinates[1]}
    return record


def _country(text: str) -> str:
    code = text.upper()
    if code and code not in CONTINENT_BY_COUNTRY:
        raise ValueError(f"unknown country code {text!r} (ISO 3166-1 alpha-2 expected)")
    return code


def _subdivision(text: str, country: str) -> str:
    """The ISO 3166-2 subdivision part, stored without its country as GeoLite2 does."""
    code = text.upper()
    if not code:
        return ""
    if not country:
        raise ValueError(f"subdivision {text!r} needs a country")
    if code.startswith(f"{country}-"):
        code = code[len(country) + 1 :]
    if not _SUBDIVISION.fullmatch(code):
        raise ValueError(f"bad subdivision {text!r}: expected e.g. CA or {country}-CA")
    return code


def _coordinates(latitude: str, longitude: str) -> tuple[float, float] | None:
    if not latitude and not longitude:
        return None
    if not latitude or not longitude:
        raise ValueError("latitude and longitude go together: give both or neither")
    lat, lon = _degrees(latitude, "latitude", 90), _degrees(longitude, "longitude", 180)
    return lat, lon


def _degrees(text: str, name: str, limit: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} {text!r} is not a number") from None
    if not math.isfinite(value) or not -limit <= value <= limit:
        raise ValueError(f"{name} {text!r} is outside -{limit}..{limit}")
    return value


def _place_networks(rows: list[_Row], source: str) -> list[tuple[IPNetwork, _Row]]:
    """Every (network, row) pair; the same network on two lines is an error."""
    # Keyed by place in the tree, so that 10.0.0.0/8 and ::a00:0/104 count as one.
    first_line: dict[tuple[int, int], int] = {}
    placed: list[tuple[IPNetwork, _Row]] = []
    for row in rows:
        for network in row.networks:
            place = (int(network.network_address), _tree_prefix_len(network))
            earlier = first_line.setdefault(place, row.line)
            if earlier != row.line:
                reason = f"network {network} is already on line {earlier}"
                raise ConfigError(reason, source, row.line)
            placed.append((network, row))
    return placed


def _tree_prefix_len(network: IPNetwork) -> int:
    """The prefix length in the IPv6 tree, where IPv4 sits under ::/96."""
    return network.prefixlen + (96 if network.version == 4 else 0)


def _sorted(items: frozenset[str]) -> str:
    return ", ".join(sorted(items))
