"""The lint gtm/metrics.py promises: every metric in gtm.metrics.REGISTRY, the scrape-time
collectors' families included, is named and described by the Prometheus conventions.

- under the namespace: ``gtm_``, snake_case;
- a counter is exposed as ``..._total``; nothing else ends in ``_total``;
- a time or size is in base units, as the last word: ``_seconds``, ``_bytes`` (never
  ``_ms``, ``_minutes``, ``_kb`` ...);
- help text that says something;
- labels in snake_case, none named like a client address (one series per client is
  unbounded cardinality, and personal data in a monitoring system).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric

from gtm import metrics

SNAKE = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
BASE_UNITS = ("seconds", "bytes")
OTHER_UNITS = {"ms", "msec", "millis", "milliseconds", "us", "microseconds", "ns",
               "nanoseconds", "minutes", "hours", "days", "kb", "mb", "gb", "kilobytes",
               "megabytes", "gigabytes", "bits"}
CLIENT_ADDRESS_LABELS = {"client", "client_ip", "client_address", "client_addr", "ip",
                         "ip_address", "address", "addr", "peer", "peer_ip", "remote",
                         "remote_addr", "remote_address", "source_ip", "src", "src_ip"}
# Sample suffixes prometheus_client adds to a family's name, by family type.
SAMPLE_SUFFIXES = {"counter": ("_total", "_created"),
                   "histogram": ("_bucket", "_count", "_sum", "_created"),
                   "summary": ("_count", "_sum", "_created"),
                   "gauge": ("",), "info": ("_info",), "stateset": ("",),
                   "gaugehistogram": ("_bucket", "_gcount", "_gsum"), "unknown": ("",)}


def families(registry: CollectorRegistry) -> list[Metric]:
    return list(registry.collect())


def label_names(family: Metric, declared: dict[str, tuple[str, ...]]) -> set[str]:
    """Labels seen in samples, plus those declared by metrics that have no sample yet."""
    names = {key for sample in family.samples for key in sample.labels}
    names.update(getattr(family, "_labelnames", ()))
    names.update(declared.get(family.name, ()))
    return names - {"le", "quantile"}


def declared_labels(wrappers: Iterable[object]) -> dict[str, tuple[str, ...]]:
    """Family name -> label names of prometheus_client metric objects (labelled metrics
    without children yet have no samples to show their labels)."""
    out: dict[str, tuple[str, ...]] = {}
    for wrapper in wrappers:
        if isinstance(wrapper, MetricWrapperBase):
            out[wrapper._name] = tuple(wrapper._labelnames)
    return out


def problems(registry: CollectorRegistry,
             declared: dict[str, tuple[str, ...]] | None = None) -> list[str]:
    """Every broken convention, one line each naming the metric."""
    found: list[str] = []
    for family in families(registry):
        found.extend(_family_problems(family, declared or {}))
    return found


def _family_problems(family: Metric, declared: dict[str, tuple[str, ...]]) -> list[str]:
    name, found = family.name, []
    exposed = name + "_total" if family.type == "counter" else name
    if not name.startswith(f"{metrics.NAMESPACE}_"):
        found.append(f"{exposed}: not under the namespace {metrics.NAMESPACE}_")
    if not SNAKE.fullmatch(name):
        found.append(f"{exposed}: not snake_case")
    if family.type != "counter" and name.endswith("_total"):
        found.append(f"{exposed}: only counters end in _total")
    for sample in family.samples:
        if not sample.name.startswith(name) or \
                sample.name[len(name):] not in SAMPLE_SUFFIXES.get(family.type, ("",)):
            found.append(f"{sample.name}: not a {family.type} sample of {exposed}")
    words = name.split("_")
    for word in words:
        if word in OTHER_UNITS:
            found.append(f"{exposed}: {word!r} is not a base unit (seconds, bytes)")
    for unit in BASE_UNITS:
        if unit in words and words[-1] != unit:
            found.append(f"{exposed}: the unit {unit} must be the last word of the name")
    help_text = family.documentation.strip()
    if len(help_text) < 10 or help_text.replace(" ", "_").lower() == name:
        found.append(f"{exposed}: help text missing or saying nothing")
    for label in sorted(label_names(family, declared)):
        if not SNAKE.fullmatch(label):
            found.append(f"{exposed}: label {label!r} is not snake_case")
        if label.lower() in CLIENT_ADDRESS_LABELS:
            found.append(f"{exposed}: label {label!r} names a client address")
    return found


def test_every_metric_of_the_registry_follows_the_conventions() -> None:
    found = families(metrics.REGISTRY)
    names = {family.name for family in found}
    # The collectors' families are linted too, not only the declared objects.
    assert {"gtm_dns_responses", "gtm_lb_backend_requests", "gtm_lb_queue_wait_seconds",
            "gtm_zone_reloads", "gtm_dns_steered_answers", "gtm_dns_answer_seconds",
            "gtm_health_endpoint_up", "gtm_api_requests"} <= names
    assert problems(metrics.REGISTRY, declared_labels(vars(metrics).values())) == []


def test_the_lint_finds_each_kind_of_bad_metric() -> None:
    registry = CollectorRegistry()
    Counter("dns_queries", "Queries answered.", registry=registry)   # no namespace
    Gauge("gtm_requests_total", "Requests in flight.", registry=registry)  # gauge: _total
    Histogram("gtm_latency_ms", "Latency of requests.", registry=registry)  # not base units
    Gauge("gtm_bytes_sent_now", "Bytes sent so far.", registry=registry)   # unit not last
    Gauge("gtm_queue", "", registry=registry)                          # no help
    Gauge("gtm_fooBar", "Something or other.", registry=registry)      # not snake_case
    per_client = Counter("gtm_hits", "Hits per client.", ["client_ip"], registry=registry)
    per_client.labels("192.0.2.1").inc()
    assert problems(registry) == [
        "dns_queries_total: not under the namespace gtm_",
        "gtm_requests_total: only counters end in _total",
        "gtm_latency_ms: 'ms' is not a base unit (seconds, bytes)",
        "gtm_bytes_sent_now: the unit bytes must be the last word of the name",
        "gtm_queue: help text missing or saying nothing",
        "gtm_fooBar: not snake_case",
        "gtm_hits_total: label 'client_ip' names a client address",
    ]


def test_a_well_named_metric_passes() -> None:
    registry = CollectorRegistry()
    Counter("gtm_widget_requests_total", "Widget requests, by result.", ["result"],
            registry=registry).labels("ok").inc()
    Histogram("gtm_widget_wait_seconds", "Time a widget request waits.", registry=registry)
    assert problems(registry) == []
