"""Every metric of the project is declared here, under the one namespace ``gtm``.

Hot paths count with plain integers on their own objects (see ``gtm.dns.engine.Stats``)
and are read into Prometheus at scrape time; everything else uses these objects.
A test lints the names (namespace, unit suffixes, help text).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.metrics_core import Metric

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
config_commits = Counter(
    "config_commits_total",
    "Configuration writes at the control plane, by result (ok, conflict, invalid, unavailable).",
    ["result"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
config_announce_failures = Counter(
    "config_announce_failures_total",
    "New-version announcements that could not be sent, by channel (redis).",
    ["channel"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
config_auth_refusals = Counter(
    "config_auth_refusals_total",
    "API requests refused for authentication or role, by reason.",
    ["reason"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
config_follower_applies = Counter(
    "config_follower_applies_total",
    "Configuration versions a follower tried to serve, by result (ok, error) and origin.",
    ["result", "origin"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
events_published = Counter(
    "events_published_total",
    "Events handed to each sink of the event stream, by sink (store, redis) and result "
    "(ok, failed, dropped: the bounded queue was full).",
    ["sink", "result"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
config_follower_version = Gauge(
    "config_follower_version",
    "Configuration version this node serves.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)


# -- Health checking (gtm.health) -------------------------------------------------------
health_probes = Counter(
    "health_probes_total",
    "Health probes run by this node, by check type and result (ok, fail).",
    ["type", "result"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
health_transitions = Counter(
    "health_transitions_total",
    "Health state changes, by level (local: this observer's rise/fall; agreed: quorum) "
    "and new state (up, down).",
    ["level", "state"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
health_rebuilds = Counter(
    "health_rebuilds_total",
    "Serving snapshots rebuilt with new health facts (coalesced).",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
health_isolated = Gauge(
    "health_isolated",
    "1 while this node sees too few fresh observers for quorum and keeps the last agreed "
    "state.",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
lb_health_transitions = Counter(
    "lb_backend_health_transitions_total",
    "Balancer backend health changes, by pool, cause (check: active check; outlier: "
    "ejection or its end) and new state (up, down).",
    ["pool", "cause", "state"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
lb_outlier_ejections = Counter(
    "lb_outlier_ejections_total",
    "Passive outlier verdicts, by pool, kind (5xx, gateway, latency) and result (ejected; held: "
    "max_ejection_percent reached).",
    ["pool", "kind", "result"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
lb_pool_panic_entries = Counter(
    "lb_pool_panic_entries_total",
    "Times a balancer pool entered panic mode (too few healthy backends: balance over all).",
    ["pool"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
lb_pool_panic = Gauge(
    "lb_pool_panic",
    "1 while a balancer pool is in panic mode.",
    ["pool"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
acme_orders = Counter(
    "acme_orders_total",
    "ACME orders run by a balancer, by certificate pair and result (issued, failed).",
    ["certificate", "result"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
acme_next_attempt = Gauge(
    "acme_next_attempt_seconds",
    "When the ACME manager next looks at a certificate (Unix time): a renewal or a retry.",
    ["certificate"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)

# -- Auto-scaling (regional_lb.autoscale) -----------------------------------------------
scale_events = Counter(
    "lb_scale_events_total",
    "Scaling events of a region's pools, by region, pool and type (scale_out, drain, "
    "scale_in, failed, refused).",
    ["region", "pool", "type"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
scale_backends = Gauge(
    "lb_scale_backends",
    "Backends of an auto-scaled pool, by region, pool and kind (current, desired, min, max, "
    "forecast), as its scaler leader sees them.",
    ["region", "pool", "kind"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
scale_leader = Gauge(
    "lb_scale_leader",
    "1 while this balancer is its region's scaling leader.",
    ["region", "member"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)

# -- DNS answerer (gtm.dns) -------------------------------------------------------------
# The engine counts with plain integers (gtm.dns.engine.Stats, one increment per packet);
# this collector adds up the serving engines' counters at scrape time. A DnsService
# adds its engine's Stats to dns_collector.sources when it starts and removes them when
# it stops.

DNS_RESPONSES_HELP = ("DNS queries by outcome: answered (by the full path), cache_hit "
                      "(from a response cache), formerr, notimp, servfail, badcookie "
                      "(answered with that rcode), dropped (no reply).")
# outcome label -> the Stats attribute that counts it
DNS_OUTCOMES = {"answered": "answered", "cache_hit": "cache_hits", "formerr": "formerr",
                "notimp": "notimp", "servfail": "servfail", "dropped": "dropped",
                "badcookie": "badcookie"}
DNS_COOKIES_HELP = ("DNS queries with a COOKIE option (RFC 7873) by what they held: new (a "
                    "client cookie alone), valid (a server cookie of this deployment), "
                    "invalid (a wrong or stale server cookie).")
DNS_COOKIE_RESULTS = {"new": "cookie_new", "valid": "cookie_valid",
                      "invalid": "cookie_invalid"}
DNS_RRL_HELP = ("UDP responses over the rate limit (RRL), by action: limited (all of them; "
                "with log_only nothing else happens), slipped (sent truncated), dropped.")
DNS_RRL_CLASS_HELP = "UDP responses over the rate limit (RRL), by response class."
DNS_RRL_CLASSES = ("answer", "nodata", "nxdomain", "referral", "error")  # gtm.dns.rrl's order


DNS_METRICS = {
    "dns_queries_total": "DNS queries received, by transport (udp, tcp).",
    "dns_answers_total": "Answers the engine computed (cache misses), by query type (a fixed "
                         "set, else other) and rcode; cache hits repeat these and are counted "
                         "in gtm_dns_responses_total{outcome=\"cache_hit\"}.",
    "dns_truncated_total": "Computed answers sent truncated (TC set: the client retries "
                           "over TCP).",
    "dns_ecs_bucket_hits_total": "ECS queries answered from a client-location bucket (part "
                                 "of the cache hits).",
    "dns_answer_seconds": "Time to answer a query that missed the response cache (cache hits "
                          "take about a microsecond and are not timed).",
    "dns_steered_answers_total": "Steered answers handed out (cached or not), by name, the "
                                 "region of the first address, and decision (steered, "
                                 "fallback, fail_open): the traffic split.",
}


class TallyLike(Protocol):
    name: str
    region: str
    decision: str
    count: int


class DnsCounts(Protocol):
    """What the collector reads: gtm.dns.stats.Stats (this core may not import gtm.dns)."""

    answered: int
    cache_hits: int
    dropped: int
    formerr: int
    notimp: int
    servfail: int
    badcookie: int
    cookie_new: int
    cookie_valid: int
    cookie_invalid: int
    tcp_queries: int
    bucket_hits: int
    truncated: int
    answers: list[int]
    latency_buckets: list[int]
    latency_ns: int

    @property
    def tallies(self) -> Mapping[tuple[str, str, str], TallyLike]: ...

    # The label tables: qtype x rcode rows of ``answers``; the histogram's bounds.
    @property
    def qtype_labels(self) -> tuple[str, ...]: ...

    @property
    def rcode_labels(self) -> tuple[str, ...]: ...

    @property
    def latency_bounds_ns(self) -> tuple[int, ...]: ...


class RrlCounts(Protocol):
    """What the collector reads of a rate limiter: gtm.dns.rrl.RrlStats."""

    limited: int
    slipped: int
    dropped: int
    by_class: list[int]


class DnsCollector:
    def __init__(self) -> None:
        self.sources: list[DnsCounts] = []
        self.limiters: list[RrlCounts] = []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        responses = CounterMetricFamily(f"{NAMESPACE}_dns_responses", DNS_RESPONSES_HELP,
                                        labels=["outcome"])
        sources = list(self.sources)
        for outcome, attribute in DNS_OUTCOMES.items():
            responses.add_metric([outcome], sum(getattr(s, attribute) for s in sources))
        yield responses
        cookies = CounterMetricFamily(f"{NAMESPACE}_dns_cookies", DNS_COOKIES_HELP,
                                      labels=["result"])
        for result, attribute in DNS_COOKIE_RESULTS.items():
            cookies.add_metric([result], sum(getattr(s, attribute) for s in sources))
        yield cookies
        limiters = list(self.limiters)
        rrl = CounterMetricFamily(f"{NAMESPACE}_dns_rrl", DNS_RRL_HELP, labels=["action"])
        for action in ("limited", "slipped", "dropped"):
            rrl.add_metric([action], sum(getattr(s, action) for s in limiters))
        yield rrl
        by_class = CounterMetricFamily(f"{NAMESPACE}_dns_rrl_limited", DNS_RRL_CLASS_HELP,
                                       labels=["response_class"])
        for index, name in enumerate(DNS_RRL_CLASSES):
            by_class.add_metric([name], sum(s.by_class[index] for s in limiters))
        yield by_class
        yield from _dns_detail(sources)


def _dns_detail(sources: list[DnsCounts]) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

    def family(kind: Any, key: str, names: list[str] | None = None) -> Any:
        return kind(f"{NAMESPACE}_{key.removesuffix('_total')}", DNS_METRICS[key], labels=names)

    queries = family(CounterMetricFamily, "dns_queries_total", ["transport"])
    tcp = sum(s.tcp_queries for s in sources)
    total = sum(s.answered + s.cache_hits + s.dropped + s.formerr + s.notimp + s.servfail
                + s.badcookie for s in sources)
    queries.add_metric(["udp"], total - tcp)
    queries.add_metric(["tcp"], tcp)
    truncated = family(CounterMetricFamily, "dns_truncated_total")
    truncated.add_metric([], sum(s.truncated for s in sources))
    buckets = family(CounterMetricFamily, "dns_ecs_bucket_hits_total")
    buckets.add_metric([], sum(s.bucket_hits for s in sources))
    answers = family(CounterMetricFamily, "dns_answers_total", ["qtype", "rcode"])
    latency = family(HistogramMetricFamily, "dns_answer_seconds")
    steered = family(CounterMetricFamily, "dns_steered_answers_total",
                     ["name", "region", "decision"])
    if sources:  # the tables are the same in every source
        labels = sources[0]
        rcodes = len(labels.rcode_labels)
        for index in range(len(labels.qtype_labels) * rcodes):
            count = sum(s.answers[index] for s in sources)
            if count or index == 0:  # A/NOERROR always: the family is never empty
                answers.add_metric([labels.qtype_labels[index // rcodes],
                                    labels.rcode_labels[index % rcodes]], count)
        running, rows = 0, []
        bounds = [*(f"{b / 1e9:g}" for b in labels.latency_bounds_ns), "+Inf"]
        for position, bound in enumerate(bounds):
            running += sum(s.latency_buckets[position] for s in sources)
            rows.append((bound, running))
        latency.add_metric([], rows, sum(s.latency_ns for s in sources) / 1e9)
    split: dict[tuple[str, str, str], int] = {}
    for source in sources:
        for key, tally in list(source.tallies.items()):
            split[key] = split.get(key, 0) + tally.count
    for (name, region, decision), count in sorted(split.items()):
        steered.add_metric([name, region, decision], count)
    yield from (queries, answers, truncated, buckets, latency, steered)


dns_collector = DnsCollector()
REGISTRY.register(dns_collector)

# -- Regional load balancer -------------------------------------------------------------
# The balancer counts with plain integers on its backend objects (hot path); this
# collector reads them at scrape time. Each live balancer registers a source returning
# LbSample rows; names and help texts are declared here with the rest.

LB_METRICS = {
    "lb_backend_requests_total": "Requests (L7) or connections (L4) sent to a backend.",
    "lb_backend_responses_total": "Responses from a backend, by status class.",
    "lb_backend_failures_total": "Backend connect errors, resets, timeouts and bad responses.",
    "lb_backend_in_flight": "Requests (L7) or connections (L4) in flight to a backend.",
    "lb_backend_connections": "Open connections to a backend, busy and pooled.",
    "lb_backend_response_seconds": "Time from request to response head, per backend.",
    "lb_rejected_total": "Requests the balancer answered itself with an error.",
    "lb_reloads_total": "Configuration reloads applied by a balancer worker.",
    "lb_tls_handshakes_total": "TLS handshakes completed on a listener, by kind (full, resumed).",
    "lb_tls_certificate_not_after_seconds": "Expiry of each served certificate (Unix time).",
    "lb_tls_certificate_refusals_total": "Certificate pairs refused (unreadable, key mismatch, "
                                         "expired); the previous one keeps serving.",
    "lb_http2_connections_total": "HTTP/2 client connections accepted, per listener.",
    "lb_http2_connections": "HTTP/2 client connections open, per listener.",
    "lb_http2_streams_total": "HTTP/2 streams (requests) opened by clients, per listener.",
    "lb_http2_goaways_total": "GOAWAY frames sent, by reason (drain, idle, rapid_reset, "
                              "control_flood, continuation_flood, frame_size, header_list, "
                              "too_many_streams, flow_control, protocol_error).",
    "lb_http2_stream_errors_total": "RST_STREAM frames sent, by reason (malformed, stalled, "
                                    "refused, backend_broken, cancelled).",
    "lb_limited_total": "Requests (429) and connections (closed at accept) refused by "
                        "per-client limits, by listener and reason (rate, requests, "
                        "connections).",
    "lb_limit_table_overflows_total": "Per-client table entries that did not fit: rate "
                                      "buckets evicted while in use (evicted), clients not "
                                      "counted (uncounted).",
    "lb_queue_depth": "Requests waiting for a backend slot, by pool and priority class.",
    "lb_queued_total": "Requests that waited for a backend slot, by pool, class and result "
                       "(dispatched, timeout, abandoned, full: refused at once).",
    "lb_queue_wait_seconds": "Time queued requests waited before a backend slot, by pool "
                             "and class.",
}

# (listener, connections, open, streams, GOAWAYs by reason, stream errors by reason)
Http2Row = tuple[str, int, int, int, dict[str, int], dict[str, int]]


class LbBackendSample:
    __slots__ = ("backend", "buckets", "connections", "failures", "in_flight", "pool",
                 "requests", "responses", "seconds_sum")

    def __init__(self, pool: str, backend: str, requests: int, failures: int, in_flight: int,
                 connections: int, responses: list[int],
                 buckets: list[tuple[float, int]], seconds_sum: float):
        self.pool, self.backend, self.requests, self.failures = pool, backend, requests, failures
        self.in_flight, self.connections, self.responses = in_flight, connections, responses
        self.buckets, self.seconds_sum = buckets, seconds_sum


class LbQueueSample:
    """One pool's queue, one priority class of it."""

    __slots__ = ("buckets", "depth", "klass", "pool", "results", "seconds_sum")

    def __init__(self, pool: str, klass: str, depth: int, results: dict[str, int],
                 buckets: list[tuple[float, int]], seconds_sum: float):
        self.pool, self.klass, self.depth, self.results = pool, klass, depth, results
        self.buckets, self.seconds_sum = buckets, seconds_sum


class LbSample:
    def __init__(self, backends: list[LbBackendSample], rejected: int, reloads: int,
                 tls_handshakes: list[tuple[str, int, int]] | None = None,
                 certificates: dict[str, float] | None = None, cert_refusals: int = 0,
                 http2: list[Http2Row] | None = None):
        self.backends, self.rejected, self.reloads = backends, rejected, reloads
        self.tls_handshakes = tls_handshakes or []   # (listener, full, resumed)
        self.certificates = certificates or {}       # pair name -> not-after (Unix time)
        self.cert_refusals = cert_refusals
        self.http2 = http2 or []
        # Per-client limits and queues (regional_lb.client_limits, .pool_queue).
        self.limited: list[tuple[str, str, int]] = []  # (listener, reason, count)
        self.table_overflows: dict[str, int] = {}      # evicted | uncounted -> count
        self.queues: list[LbQueueSample] = []


class LbCollector:
    def __init__(self) -> None:
        self.sources: list[Callable[[], LbSample]] = []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        def name(key: str) -> str:
            return f"{NAMESPACE}_{key.removesuffix('_total')}"

        samples = [source() for source in list(self.sources)]
        labels = ["pool", "backend"]
        requests = CounterMetricFamily(name("lb_backend_requests_total"),
                                       LB_METRICS["lb_backend_requests_total"], labels=labels)
        responses = CounterMetricFamily(name("lb_backend_responses_total"),
                                        LB_METRICS["lb_backend_responses_total"],
                                        labels=[*labels, "class"])
        failures = CounterMetricFamily(name("lb_backend_failures_total"),
                                       LB_METRICS["lb_backend_failures_total"], labels=labels)
        in_flight = GaugeMetricFamily(name("lb_backend_in_flight"),
                                      LB_METRICS["lb_backend_in_flight"], labels=labels)
        connections = GaugeMetricFamily(name("lb_backend_connections"),
                                        LB_METRICS["lb_backend_connections"], labels=labels)
        latency = HistogramMetricFamily(name("lb_backend_response_seconds"),
                                        LB_METRICS["lb_backend_response_seconds"], labels=labels)
        rejected = CounterMetricFamily(name("lb_rejected_total"), LB_METRICS["lb_rejected_total"])
        reloads = CounterMetricFamily(name("lb_reloads_total"), LB_METRICS["lb_reloads_total"])
        for sample in samples:
            for b in sample.backends:
                key = [b.pool, b.backend]
                requests.add_metric(key, b.requests)
                failures.add_metric(key, b.failures)
                in_flight.add_metric(key, b.in_flight)
                connections.add_metric(key, b.connections)
                for index, count in enumerate(b.responses):
                    if index:
                        responses.add_metric([*key, f"{index}xx"], count)
                running, buckets = 0, []
                for bound, count in b.buckets:
                    running += count
                    buckets.append(("+Inf" if bound == float("inf") else str(bound), running))
                latency.add_metric(key, buckets, b.seconds_sum)
        rejected.add_metric([], sum(s.rejected for s in samples))
        reloads.add_metric([], sum(s.reloads for s in samples))
        yield from (requests, responses, failures, in_flight, connections, latency, rejected,
                    reloads)
        yield from _tls_metrics(samples, name)
        yield from _http2_metrics(samples, name)
        yield from _limit_metrics(samples, name)


def _limit_metrics(samples: list[LbSample], name: Callable[[str], str]) -> Iterator[Metric]:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    limited = CounterMetricFamily(name("lb_limited_total"), LB_METRICS["lb_limited_total"],
                                  labels=["listener", "reason"])
    totals: dict[tuple[str, str], int] = {}
    overflows: dict[str, int] = {"evicted": 0, "uncounted": 0}
    for sample in samples:  # several workers in one process add up
        for listener, reason, count in sample.limited:
            totals[listener, reason] = totals.get((listener, reason), 0) + count
        for kind, count in sample.table_overflows.items():
            overflows[kind] = overflows.get(kind, 0) + count
    for (listener, reason), count in sorted(totals.items()):
        limited.add_metric([listener, reason], count)
    overflow = CounterMetricFamily(name("lb_limit_table_overflows_total"),
                                   LB_METRICS["lb_limit_table_overflows_total"], labels=["kind"])
    for kind, count in overflows.items():
        overflow.add_metric([kind], count)
    labels = ["pool", "class"]
    depth = GaugeMetricFamily(name("lb_queue_depth"), LB_METRICS["lb_queue_depth"],
                              labels=labels)
    queued = CounterMetricFamily(name("lb_queued_total"), LB_METRICS["lb_queued_total"],
                                 labels=[*labels, "result"])
    wait = HistogramMetricFamily(name("lb_queue_wait_seconds"),
                                 LB_METRICS["lb_queue_wait_seconds"], labels=labels)
    for sample in samples:
        for q in sample.queues:
            key = [q.pool, q.klass]
            depth.add_metric(key, q.depth)
            for result, count in q.results.items():
                queued.add_metric([*key, result], count)
            running, buckets = 0, []
            for bound, count in q.buckets:
                running += count
                buckets.append(("+Inf" if bound == float("inf") else str(bound), running))
            wait.add_metric(key, buckets, q.seconds_sum)
    yield from (limited, overflow, depth, queued, wait)


def _tls_metrics(samples: list[LbSample], name: Callable[[str], str]) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    handshakes = CounterMetricFamily(name("lb_tls_handshakes_total"),
                                     LB_METRICS["lb_tls_handshakes_total"],
                                     labels=["listener", "kind"])
    totals: dict[str, list[int]] = {}
    for sample in samples:  # several workers in one process add up per listener
        for listener, full, resumed in sample.tls_handshakes:
            counts = totals.setdefault(listener, [0, 0])
            counts[0] += full
            counts[1] += resumed
    for listener, (full, resumed) in totals.items():
        handshakes.add_metric([listener, "full"], full)
        handshakes.add_metric([listener, "resumed"], resumed)
    expiry = GaugeMetricFamily(name("lb_tls_certificate_not_after_seconds"),
                               LB_METRICS["lb_tls_certificate_not_after_seconds"],
                               labels=["certificate"])
    merged: dict[str, float] = {}
    for sample in samples:
        merged.update(sample.certificates)
    for certificate, not_after in sorted(merged.items()):
        expiry.add_metric([certificate], not_after)
    refusals = CounterMetricFamily(name("lb_tls_certificate_refusals_total"),
                                   LB_METRICS["lb_tls_certificate_refusals_total"])
    refusals.add_metric([], sum(s.cert_refusals for s in samples))
    yield from (handshakes, expiry, refusals)


def _http2_metrics(samples: list[LbSample], name: Callable[[str], str]) -> Iterator[Metric]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    def family(kind: Any, key: str, labels: list[str]) -> Any:
        return kind(name(key), LB_METRICS[key], labels=labels)

    accepted = family(CounterMetricFamily, "lb_http2_connections_total", ["listener"])
    open_now = family(GaugeMetricFamily, "lb_http2_connections", ["listener"])
    streams = family(CounterMetricFamily, "lb_http2_streams_total", ["listener"])
    goaways = family(CounterMetricFamily, "lb_http2_goaways_total", ["listener", "reason"])
    errors = family(CounterMetricFamily, "lb_http2_stream_errors_total", ["listener", "reason"])
    totals: dict[str, list[int]] = {}
    reasons: dict[tuple[str, str], list[int]] = {}
    for sample in samples:  # several workers in one process add up per listener
        for listener, connections, current, opened, sent_goaways, sent_errors in sample.http2:
            counts = totals.setdefault(listener, [0, 0, 0])
            counts[0] += connections
            counts[1] += current
            counts[2] += opened
            for index, by_reason in enumerate((sent_goaways, sent_errors)):
                for reason, count in by_reason.items():
                    reasons.setdefault((listener, reason), [0, 0])[index] += count
    for listener, (connections, current, opened) in totals.items():
        accepted.add_metric([listener], connections)
        open_now.add_metric([listener], current)
        streams.add_metric([listener], opened)
    for (listener, reason), (goaway_count, error_count) in reasons.items():
        if goaway_count:
            goaways.add_metric([listener, reason], goaway_count)
        if error_count:
            errors.add_metric([listener, reason], error_count)
    yield from (accepted, open_now, streams, goaways, errors)


lb_collector = LbCollector()
REGISTRY.register(lb_collector)

# -- DNS reloads, control plane, health (declared objects) ------------------------------
dns_reload_seconds = Histogram(
    "dns_reload_seconds",
    "Time to compile and swap in new zones, by source (zonedir: the zone directory; "
    "control: a configuration version).",
    ["source"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    namespace=NAMESPACE,
    registry=REGISTRY,
)
api_requests = Counter(
    "api_requests_total",
    "Control API requests, by method, route template (never the raw path) and status.",
    ["method", "route", "status"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
api_request_seconds = Histogram(
    "api_request_seconds",
    "Time the control API took to answer, by route template.",
    ["route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    namespace=NAMESPACE,
    registry=REGISTRY,
)
# Read when the control API is scraped (gtm.control.api_metrics refreshes them first).
config_head_version = Gauge(
    "config_head_version",
    "The newest configuration version in the store (as of the last scrape).",
    namespace=NAMESPACE,
    registry=REGISTRY,
)
node_config_version = Gauge(
    "node_config_version",
    "Configuration version each node (or node worker) reports serving.",
    ["node", "kind"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
node_config_lag_versions = Gauge(
    "node_config_lag_versions",
    "Versions a node is behind the store's newest (propagation lag).",
    ["node", "kind"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
node_report_age_seconds = Gauge(
    "node_report_age_seconds",
    "Seconds since each node last reported to the control plane.",
    ["node", "kind"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
dependency_up = Gauge(
    "dependency_up",
    "1 when a dependency of the control plane answered at the last scrape, else 0, by "
    "dependency (store: SQLite or PostgreSQL; redis: only when Redis is configured).",
    ["dependency"],
    namespace=NAMESPACE,
    registry=REGISTRY,
)
health_probe_seconds = Histogram(
    "health_probe_seconds",
    "Time from a probe's start to its verdict, by check type and result (ok, fail).",
    ["type", "result"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
    namespace=NAMESPACE,
    registry=REGISTRY,
)

# -- Health views (gtm.health.service), read at scrape time ------------------------------
HEALTH_METRICS = {
    "health_endpoint_up": "Agreed health of each checked endpoint (1 up, 0 down), as this "
                          "node serves it.",
    "health_endpoint_observers": "Fresh observers reporting on each endpoint (quorum needs "
                                 "gtm_health_quorum of them).",
    "health_observation_up": "Latest verdict of each observer on each endpoint (1 up, 0 "
                             "down).",
    "health_observation_latency_seconds": "Latency of each observer's latest probe of each "
                                          "endpoint.",
    "health_quorum": "Observers that must agree before an endpoint's state changes.",
    "health_region_up": "Health of each region as its balancer reports it (1 up, 0 down).",
    "health_region_headroom_ratio": "Headroom of each region (0 saturated .. 1 idle), from "
                                    "its balancer's reports.",
}


class HealthSample:
    """One health view: rows (zone, endpoint, region, up, observers) and observations."""

    def __init__(self, quorum: int) -> None:
        self.quorum = quorum
        self.endpoints: list[tuple[str, str, str, bool, int]] = []
        # (zone, endpoint, observer, ok, latency in seconds)
        self.observations: list[tuple[str, str, str, bool, float]] = []
        self.regions: list[tuple[str, bool, float | None]] = []  # (region, up, headroom)


class HealthCollector:
    def __init__(self) -> None:
        self.sources: list[Callable[[], HealthSample]] = []

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        def family(key: str, labels: list[str] | None = None) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{NAMESPACE}_{key}", HEALTH_METRICS[key], labels=labels)

        up = family("health_endpoint_up", ["zone", "endpoint", "region"])
        observers = family("health_endpoint_observers", ["zone", "endpoint"])
        seen = family("health_observation_up", ["zone", "endpoint", "observer"])
        latency = family("health_observation_latency_seconds", ["zone", "endpoint", "observer"])
        quorum = family("health_quorum")
        region_up = family("health_region_up", ["region"])
        headroom = family("health_region_headroom_ratio", ["region"])
        merged = merge_health_samples([source() for source in list(self.sources)])
        if merged is not None:
            quorum.add_metric([], merged.quorum)
            for zone, endpoint, region, healthy, count in merged.endpoints:
                up.add_metric([zone, endpoint, region], 1 if healthy else 0)
                observers.add_metric([zone, endpoint], count)
            for zone, endpoint, observer, ok, seconds in merged.observations:
                seen.add_metric([zone, endpoint, observer], 1 if ok else 0)
                latency.add_metric([zone, endpoint, observer], seconds)
            for region, healthy, room in merged.regions:
                region_up.add_metric([region], 1 if healthy else 0)
                if room is not None:
                    headroom.add_metric([region], room)
        yield from (up, observers, seen, latency, quorum, region_up, headroom)


def merge_health_samples(samples: list[HealthSample]) -> HealthSample | None:
    """Every health view of a process as one (services checking other zones, or other
    observers, each add their rows). A row two views share is merged by the rule the
    workers of a node follow (GAUGE_MERGE): down wins, the fewest observers, the slowest
    latency, the highest quorum; a series is never exported twice."""
    if not samples:
        return None
    merged = HealthSample(max(s.quorum for s in samples))
    endpoints: dict[tuple[str, str, str], tuple[bool, int]] = {}
    observations: dict[tuple[str, str, str], tuple[bool, float]] = {}
    regions: dict[str, tuple[bool, float | None]] = {}
    for sample in samples:
        for zone, endpoint, region, healthy, count in sample.endpoints:
            key = (zone, endpoint, region)
            was_up, was_count = endpoints.get(key, (True, count))
            endpoints[key] = (was_up and healthy, min(was_count, count))
        for zone, endpoint, observer, ok, seconds in sample.observations:
            key = (zone, endpoint, observer)
            was_ok, was_seconds = observations.get(key, (True, seconds))
            observations[key] = (was_ok and ok, max(was_seconds, seconds))
        for region, healthy, room in sample.regions:
            was_up, was_room = regions.get(region, (True, room))
            rooms = [r for r in (was_room, room) if r is not None]
            regions[region] = (was_up and healthy, min(rooms) if rooms else None)
    merged.endpoints = [(*key, up, count) for key, (up, count) in endpoints.items()]
    merged.observations = [(*key, ok, sec) for key, (ok, sec) in observations.items()]
    merged.regions = [(region, up, room) for region, (up, room) in regions.items()]
    return merged


health_collector = HealthCollector()
REGISTRY.register(health_collector)

# -- Serving /metrics (gtm.metrics_export) ------------------------------------------------
METRICS_WORKERS = f"{NAMESPACE}_metrics_workers"
METRICS_WORKERS_HELP = ("Workers of this node whose metrics this scrape adds up (answered) or "
                        "lacks (missing: restarting or stuck).")
# How a gauge adds up over a node's workers (counters and histograms are summed, and so is
# any gauge not named here): a node serves a version once every worker does (min); a
# flag is up when any worker raises it (max).
GAUGE_MERGE = {
    "gtm_config_follower_version": "min",
    "gtm_zone_serial": "min",
    "gtm_health_isolated": "max",
    "gtm_health_endpoint_up": "min",
    "gtm_health_endpoint_observers": "min",
    "gtm_health_observation_up": "min",
    "gtm_health_observation_latency_seconds": "max",
    "gtm_health_quorum": "max",
    "gtm_health_region_up": "min",
    "gtm_health_region_headroom_ratio": "min",
    "gtm_lb_pool_panic": "max",
    "gtm_lb_tls_certificate_not_after_seconds": "min",
    "gtm_acme_next_attempt_seconds": "min",
}
