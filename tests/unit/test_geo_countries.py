"""The country tables and the great-circle distance."""

from __future__ import annotations

import pytest

from gtm.geo import great_circle_km
from gtm.geo.countries import (
    CENTROID_BY_COUNTRY,
    CONTINENT_BY_COUNTRY,
    CONTINENTS,
    centroid_of,
    continent_of,
)

# ISO 3166-1 alpha-2, all 249 officially assigned codes: an independent copy to check
# that the tables leave none out.
_ISO_TEXT = """AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN
    BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE
    DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN
    GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE
    KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK
    ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA
    PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK
    SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG
    UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW"""
ISO_3166_1 = set(_ISO_TEXT.split())


def test_iso_list_is_complete() -> None:
    assert len(ISO_3166_1) == 249


def test_every_country_has_a_continent_and_a_centroid() -> None:
    expected = ISO_3166_1 | {"XK", "AN"}
    assert set(CONTINENT_BY_COUNTRY) == expected
    assert set(CENTROID_BY_COUNTRY) == expected


def test_continent_values_are_valid() -> None:
    assert set(CONTINENT_BY_COUNTRY.values()) == CONTINENTS
    assert {"AF", "AN", "AS", "EU", "NA", "OC", "SA"} == CONTINENTS


@pytest.mark.parametrize("country", sorted(CENTROID_BY_COUNTRY))
def test_centroids_are_on_the_globe(country: str) -> None:
    lat, lon = CENTROID_BY_COUNTRY[country]
    assert -90 <= lat <= 90 and -180 <= lon <= 180


@pytest.mark.parametrize(
    ("country", "continent"),
    [("US", "NA"), ("BR", "SA"), ("DE", "EU"), ("RU", "EU"), ("JP", "AS"), ("ZA", "AF"),
     ("AU", "OC"), ("AQ", "AN"), ("MX", "NA"), ("EG", "AF"), ("NZ", "OC"), ("IN", "AS")],
)
def test_well_known_continents(country: str, continent: str) -> None:
    assert continent_of(country) == continent
    assert continent_of(country.lower()) == continent


def test_centroids_fall_in_their_hemispheres() -> None:
    # A sign slip is the likely mistake in a hand-written table: check some quadrants.
    for north_west in ("US", "CA", "MX", "GB", "IS"):
        lat, lon = CENTROID_BY_COUNTRY[north_west]
        assert lat > 0 and lon < 0, north_west
    for south_east in ("AU", "NZ", "ZA", "MG"):
        lat, lon = CENTROID_BY_COUNTRY[south_east]
        assert lat < 0 and lon > 0, south_east
    for south_west in ("BR", "AR", "CL", "PE"):
        lat, lon = CENTROID_BY_COUNTRY[south_west]
        assert lat < 0 and lon < 0, south_west
    for north_east in ("JP", "CN", "IN", "DE", "RU", "EG"):
        lat, lon = CENTROID_BY_COUNTRY[north_east]
        assert lat > 0 and lon > 0, north_east


def test_centroids_lie_near_their_capitals() -> None:
    # Compact countries: centre and capital within a few hundred kilometres.
    capitals = {"FR": (48.86, 2.35), "DE": (52.52, 13.40), "JP": (35.68, 139.69),
                "GB": (51.51, -0.13), "ES": (40.42, -3.70), "KR": (37.57, 126.98)}
    for country, (lat, lon) in capitals.items():
        assert great_circle_km(*CENTROID_BY_COUNTRY[country], lat, lon) < 550, country


def test_unknown_and_missing_codes() -> None:
    assert continent_of(None) is None and centroid_of(None) is None
    assert continent_of("ZZ") is None and centroid_of("ZZ") is None
    assert centroid_of("fr") == CENTROID_BY_COUNTRY["FR"]


def test_london_to_paris() -> None:
    assert great_circle_km(51.5074, -0.1278, 48.8566, 2.3522) == pytest.approx(344, rel=0.02)


def test_distance_properties() -> None:
    assert great_circle_km(10.0, 20.0, 10.0, 20.0) == 0.0
    assert great_circle_km(0, 0, 0, 180) == pytest.approx(20_015, rel=0.001)  # half the globe
    assert great_circle_km(90, 0, -90, 0) == pytest.approx(20_015, rel=0.001)
    assert great_circle_km(1, 2, 3, 4) == pytest.approx(great_circle_km(3, 4, 1, 2))
    # Across the antimeridian the short way round: Fiji to Samoa is ~1,150 km, not ~39,000.
    assert great_circle_km(-17.7, 178.1, -13.8, -172.1) < 1_200
