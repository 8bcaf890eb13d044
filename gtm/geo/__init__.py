"""Client location for steering: GeoIP lookups, country tables, distances, mmdb building.

`Locator(path).locate(ip) -> Location` is what the DNS answerer calls; the rest is the
data it rests on (gtm.geo.countries), the distance it ranks by (great_circle_km) and the
tools that make databases (build_mmdb, MmdbWriter).
"""

from gtm.geo.build import build_mmdb
from gtm.geo.distance import great_circle_km
from gtm.geo.locate import DEFAULT_DATABASE, Location, Locator
from gtm.geo.mmdb_writer import MmdbWriter

__all__ = [
    "DEFAULT_DATABASE",
    "Location",
    "Locator",
    "MmdbWriter",
    "build_mmdb",
    "great_circle_km",
]
