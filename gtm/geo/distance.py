"""Distances on the Earth's surface, for proximity steering."""

from __future__ import annotations

import math

# The IUGG mean Earth radius. A sphere is off by at most ~0.5% against the ellipsoid,
# far less than the error of locating a client by its IP address.
EARTH_RADIUS_KM = 6371.0088


def great_circle_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The great-circle distance in kilometres between two points given in degrees.

    Haversine rather than the spherical law of cosines: it stays accurate for the short
    distances (same city, neighbouring regions) that decide close calls.
    """
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    half_dphi = (phi2 - phi1) / 2
    half_dlambda = math.radians(lon2 - lon1) / 2
    h = math.sin(half_dphi) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(half_dlambda) ** 2
    # min() guards asin against rounding just above 1 for antipodal points.
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))
