"""A small, exact GeoIP fixture for the steering tests, built with gtm's own builder.

The networks are ordinary (not special-purpose) IPv4 and IPv6 blocks, so the
Locator answers for them with its default settings, as `gtm serve` uses it. Each
first octet stands for one country; a few nested networks give the database
networks of different lengths, which the ECS scope must follow.
"""

from __future__ import annotations

from pathlib import Path

from gtm.geo.build import build_mmdb

# network -> (country, continent, subdivision, latitude, longitude)
NETWORKS: dict[str, tuple[str, str, str, float, float]] = {
    "20.0.0.0/8": ("JP", "AS", "", 35.68, 139.69),  # Tokyo
    "21.0.0.0/8": ("BR", "SA", "", -23.55, -46.63),  # Sao Paulo
    "22.0.0.0/8": ("GB", "EU", "", 51.51, -0.13),  # London
    "22.1.2.0/24": ("FR", "EU", "", 48.86, 2.35),  # Paris, inside the GB block
    "23.0.0.0/8": ("US", "NA", "US-VA", 38.95, -77.45),  # Ashburn
    "23.128.0.0/9": ("US", "NA", "US-CA", 37.37, -121.92),  # San Jose
    "24.0.0.0/8": ("DE", "EU", "", 50.11, 8.68),  # Frankfurt
    "25.0.0.0/8": ("AU", "OC", "", -33.87, 151.21),  # Sydney
    "26.0.0.0/8": ("ZA", "AF", "", -26.20, 28.05),  # Johannesburg
    "27.0.0.0/8": ("IN", "AS", "", 19.08, 72.88),  # Mumbai
    "28.0.0.0/8": ("AR", "SA", "", -34.60, -58.38),  # Buenos Aires
    "29.0.0.0/8": ("IE", "EU", "", 53.35, -6.26),  # Dublin
    "30.0.0.0/8": ("MX", "NA", "", 19.43, -99.13),  # Mexico City
    "31.0.0.0/8": ("CA", "NA", "", 43.65, -79.38),  # Toronto
    "32.0.0.0/8": ("SG", "AS", "", 1.35, 103.82),  # Singapore
    "33.0.0.0/8": ("KE", "AF", "", -1.29, 36.82),  # Nairobi
    "2400::/12": ("JP", "AS", "", 35.68, 139.69),
    "2800::/12": ("BR", "SA", "", -23.55, -46.63),
    "2a00::/12": ("GB", "EU", "", 51.51, -0.13),
    "2600::/12": ("US", "NA", "US-VA", 38.95, -77.45),
}

# Rows a careless or registry-derived database holds for special-purpose blocks (RFC
# 6890): all say Japan. The server must locate none of them, whatever the file says.
SPECIAL_PURPOSE_TRAPS: dict[str, tuple[str, str, str, float, float]] = {
    network: ("JP", "AS", "", 35.68, 139.69)
    for network in ("10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16",
                    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
                    "2001:db8::/32", "fc00::/7", "fe80::/10", "64:ff9b::/96")
}

# An address known to no row of the database (and not special-purpose either).
UNKNOWN_V4 = "40.1.2.3"

# Region name -> the addresses a client network of that country gets from `www` of
# the example zones (zones/gslb.example.test.steering.toml).
EXAMPLE_REGION_ADDRESSES = {
    "eu-west": {"127.0.1.1", "127.0.1.2"},
    "us-east": {"127.0.2.1", "127.0.2.2"},
    "ap-northeast": {"127.0.3.1"},
    "sa-east": {"127.0.4.1"},
}


def write_csv(path: Path, traps: bool = False) -> Path:
    lines = ["network,country,continent,subdivision,latitude,longitude"]
    rows = {**NETWORKS, **SPECIAL_PURPOSE_TRAPS} if traps else NETWORKS
    for network, (country, continent, subdivision, lat, lon) in rows.items():
        lines.append(f"{network},{country},{continent},{subdivision},{lat},{lon}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def build_fixture_mmdb(directory: Path, traps: bool = False) -> Path:
    """Write the fixture CSV and the mmdb built from it into directory; the mmdb path.
    With traps, the database also places special-purpose blocks in Japan."""
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / "steering-fixture.mmdb"
    build_mmdb(write_csv(directory / "steering-fixture.csv", traps), out)
    return out
