"""Every metric of the project is declared here, under the one namespace ``gtm``.

Hot paths count with plain integers on their own objects (see ``gtm.dns.engine.Stats``)
and are read into Prometheus at scrape time; everything else uses these objects.
A test lints the names (namespace, unit suffixes, help text).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

NAMESPACE = "gtm"
REGISTRY = CollectorRegistry(auto_describe=True)

zone_reloads = Counter(
    "zone_reloads_total",
    "Zone directory reloads, by result (ok, error).",
    ["result"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
zone_serial = Gauge(
    "zone_serial",
    "SOA serial of each zone being served.",
    ["zone"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
