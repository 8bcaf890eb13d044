"""A pool's auto-scaling policy, ``[lb.pools.autoscale]``, read into frozen objects.

A leaf module (config parsing only) so regional_lb.config can use it. Every error is a
ConfigError with the full key path (``lb.pools[0].autoscale.max``)::

    [lb.pools.autoscale]
    min = 2                     # backends the scaler never goes below ...
    max = 20                    # ... or above (at most MAX_BACKENDS)
    metric = "in_flight_per_backend"   # in_flight_per_backend | requests_per_backend |
                                # p95_latency_ms | error_rate | prometheus | backend_reported
    target = 20.0               # target tracking: keep the metric near this (> 0)
    tolerance = 0.1             # no change while |metric / target - 1| <= tolerance
    # or step scaling instead of target (thresholds on the metric):
    steps = [{ above = 50, adjust = 2 }, { above = 30, adjust = 1 }, { below = 5, adjust = -1 }]
    adjustment = "change"       # change (+/- backends) | exact (adjust is the count) |
                                # percent (of the current count)
    min_step = 1                # percent: at least this many backends per action
    prometheus = { url = "http://10.0.0.5:9090", query = "sum(rate(app_busy[1m]))",
                   per_backend = true }  # metric = "prometheus": the query's value
                                # (divided by the backends when per_backend), GET URL/api/v1/query
    reported = { path = "/load", field = "load" }  # metric = "backend_reported": each
                                # backend's own figure (a JSON body field, or header = "X-Load"),
                                # averaged, like HAProxy's agent-check
    warmup = 30.0               # seconds a new backend serves before its numbers count
    cooldown = 0.0              # seconds after an action before the next one
    disable_scale_in = false
    deregistration_delay = 300.0  # a drained backend is removed when idle, or after this
    protected = ["10.0.0.7:80"]   # scale-in protection: never removed by the scaler
    scale_out = { window = 0, backends = 4, percent = 100, period = 15 }   # stabilisation
    scale_in = { window = 300, backends = 1, percent = 10, period = 60 }   # and rate policies
    # (at most the larger of `backends` and `percent` % of the current count per period)
    predictive = { mode = "forecast_only", buffer = 600, horizon = 3600 }
                                # forecast_only | forecast_and_scale; per-backend metrics only
    actuator = { type = "process", command = ["gtm", "lb", "demo-backend", "--listen",
                 "{address}"], host = "127.0.0.1", ports = "9100-9199" }
             # { type = "exec", argv = ["/usr/local/bin/scale"], timeout = 60, retries = 3 }
             # { type = "webhook", url = "https://ops.example/scale", secret_file = "hook.key",
             #   timeout = 10, retries = 3, ca = "ca.pem" }
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from gtm.config_reader import Reader, existing_path
from gtm.scalestore import STORE_SCHEMES

METRICS = ("in_flight_per_backend", "requests_per_backend", "p95_latency_ms", "error_rate",
           "prometheus", "backend_reported")
# Metrics that are a pool's load divided by its backends: the ones a forecast of the
# load turns into a backend count.
PER_BACKEND = ("in_flight_per_backend", "requests_per_backend", "prometheus",
               "backend_reported")
ADJUSTMENTS = ("change", "exact", "percent")
MODES = ("forecast_only", "forecast_and_scale")
ACTUATORS = ("process", "exec", "webhook")
MAX_BACKENDS = 1000

POLICY_KEYS = ("min", "max", "metric", "target", "tolerance", "steps", "adjustment",
               "min_step", "prometheus", "reported", "warmup", "cooldown", "disable_scale_in",
               "deregistration_delay", "protected", "scale_out", "scale_in", "predictive",
               "actuator")
RATE_KEYS = ("window", "backends", "percent", "period")


@dataclass(frozen=True)
class Step:
    """One threshold: ``above`` (metric > it) or ``below`` (metric < it), and the adjust."""

    bound: float
    above: bool
    adjust: int


@dataclass(frozen=True)
class RatePolicy:
    window: float       # stabilisation window, seconds
    backends: int       # at most this many backends per period ...
    percent: float      # ... or this share of the current count, whichever is more
    period: float       # seconds


@dataclass(frozen=True)
class Prometheus:
    url: str
    query: str
    per_backend: bool = True


@dataclass(frozen=True)
class Reported:
    path: str
    field: str | None = None
    header: str | None = None


@dataclass(frozen=True)
class Predictive:
    mode: str = "forecast_only"
    buffer: float = 600.0     # capacity is scheduled this long ahead of the forecast load
    horizon: float = 3600.0   # how far ahead the forecast is shown


@dataclass(frozen=True)
class ActuatorSpec:
    type: str
    command: tuple[str, ...] = ()   # process: the template; exec: the argv
    host: str = "127.0.0.1"         # process: where backends listen
    ports: tuple[int, int] = (0, 0)  # process: first and last port
    url: str = ""                   # webhook
    secret_file: Path | None = None  # webhook: the HMAC key
    ca: Path | None = None          # webhook: CA bundle for HTTPS (default: the system's)
    timeout: float = 30.0
    retries: int = 3


@dataclass(frozen=True)
class ScalePolicy:
    min: int
    max: int
    metric: str
    target: float | None = None
    tolerance: float = 0.1
    steps: tuple[Step, ...] = ()
    adjustment: str = "change"
    min_step: int = 1
    prometheus: Prometheus | None = None
    reported: Reported | None = None
    warmup: float = 30.0
    cooldown: float = 0.0
    disable_scale_in: bool = False
    deregistration_delay: float = 300.0
    protected: frozenset[str] = frozenset()
    scale_out: RatePolicy = RatePolicy(0.0, 4, 100.0, 15.0)
    scale_in: RatePolicy = RatePolicy(300.0, 1, 10.0, 60.0)
    predictive: Predictive | None = None
    actuator: ActuatorSpec | None = None


def parse_policy(reader: Reader, outbound: tuple[Any, ...]) -> ScalePolicy:
    """``[lb.pools.autoscale]``; ``outbound``: the networks outbound calls may reach."""
    low = reader.integer("min", low=0, high=MAX_BACKENDS)
    high = reader.integer("max", low=1, high=MAX_BACKENDS)
    if low > high:
        raise reader.fail("min", f"must not be above max ({high})")
    metric = reader.choice("metric", METRICS)
    target = reader.number("target", None, low=0, high=1e12)
    if target is not None and target <= 0:
        raise reader.fail("target", "must be above 0")
    steps = _steps(reader)
    if (target is None) == (not steps):
        raise reader.fail("target", "give a target (target tracking) or steps (step "
                          "scaling), one of the two")
    predictive = _predictive(reader, metric, target)
    return ScalePolicy(
        min=low, max=high, metric=metric, target=target,
        tolerance=reader.number("tolerance", 0.1, low=0, high=0.9),
        steps=steps,
        adjustment=reader.choice("adjustment", ADJUSTMENTS, "change"),
        min_step=reader.integer("min_step", 1, low=1, high=MAX_BACKENDS),
        prometheus=_prometheus(reader, metric, outbound),
        reported=_reported(reader, metric),
        warmup=reader.number("warmup", 30.0, low=0, high=86400),
        cooldown=reader.number("cooldown", 0.0, low=0, high=86400),
        disable_scale_in=reader.flag("disable_scale_in", False),
        deregistration_delay=reader.number("deregistration_delay", 300.0, low=0, high=86400),
        protected=frozenset(str(a) for a in reader.addresses("protected")),
        scale_out=_rate(reader, "scale_out", RatePolicy(0.0, 4, 100.0, 15.0)),
        scale_in=_rate(reader, "scale_in", RatePolicy(300.0, 1, 10.0, 60.0)),
        predictive=predictive,
        actuator=_actuator(reader, outbound) if "actuator" in reader else None,
    )


def _steps(reader: Reader) -> tuple[Step, ...]:
    steps = []
    for table in reader.tables("steps", ("above", "below", "adjust")):
        if ("above" in table) == ("below" in table):
            raise table.fail("", "needs one of above or below")
        side = "above" if "above" in table else "below"
        adjust = table.integer("adjust", low=-MAX_BACKENDS, high=MAX_BACKENDS)
        if adjust == 0:
            raise table.fail("adjust", "must not be 0")
        steps.append(Step(table.number(side, low=-1e12, high=1e12), side == "above", adjust))
    return tuple(steps)


def _rate(reader: Reader, key: str, default: RatePolicy) -> RatePolicy:
    table = reader.child(key, RATE_KEYS)
    return RatePolicy(
        window=table.number("window", default.window, low=0, high=86400),
        backends=table.integer("backends", default.backends, low=0, high=MAX_BACKENDS),
        percent=table.number("percent", default.percent, low=0, high=1000),
        period=table.number("period", default.period, low=0.001, high=86400),
    )


def _prometheus(reader: Reader, metric: str, outbound: tuple[Any, ...]) -> Prometheus | None:
    if metric != "prometheus":
        if "prometheus" in reader:
            raise reader.fail("prometheus", 'is for metric = "prometheus"')
        return None
    table = reader.child("prometheus", ("url", "query", "per_backend"))
    url = outbound_url(table, "url", ("http", "https"), outbound)
    return Prometheus(url, table.text("query", empty=False), table.flag("per_backend", True))


def _reported(reader: Reader, metric: str) -> Reported | None:
    if metric != "backend_reported":
        if "reported" in reader:
            raise reader.fail("reported", 'is for metric = "backend_reported"')
        return None
    table = reader.child("reported", ("path", "field", "header"))
    path = table.text("path", empty=False)
    if not path.startswith("/") or any(c in path for c in " \r\n"):
        raise table.fail("path", "must be a path starting with / (no spaces)")
    field, header = table.text("field", None), table.text("header", None)
    if (field is None) == (header is None):
        raise table.fail("field", "give field (a JSON body's) or header, one of the two")
    return Reported(path, field, header)


def _predictive(reader: Reader, metric: str, target: float | None) -> Predictive | None:
    if "predictive" not in reader:
        return None
    table = reader.child("predictive", ("mode", "buffer", "horizon"))
    if metric not in PER_BACKEND or target is None:
        raise table.fail("", "needs target tracking on a per-backend metric ("
                         + ", ".join(PER_BACKEND) + ")")
    return Predictive(
        mode=table.choice("mode", MODES),
        buffer=table.number("buffer", 600.0, low=0, high=86400),
        horizon=table.number("horizon", 3600.0, low=60, high=7 * 86400),
    )


def _actuator(reader: Reader, outbound: tuple[Any, ...]) -> ActuatorSpec:
    table = reader.child("actuator", ("type", "command", "argv", "host", "ports", "url",
                                      "secret_file", "ca", "timeout", "retries"))
    kind = table.choice("type", ACTUATORS)
    timeout = table.number("timeout", 30.0, low=0.1, high=3600)
    retries = table.integer("retries", 3, low=0, high=10)
    if kind == "process":
        table.only(("type", "command", "host", "ports", "timeout", "retries"))
        command = _argv(table, "command")
        if not any("{port}" in part or "{address}" in part for part in command):
            raise table.fail("command", "must name {port} or {address} (where the new "
                             "backend listens)")
        host = str(table.at("host").ip(table.value("host", "127.0.0.1")))
        return ActuatorSpec("process", command, host=host, ports=_ports(table),
                            timeout=timeout, retries=retries)
    if kind == "exec":
        table.only(("type", "argv", "timeout", "retries"))
        return ActuatorSpec("exec", _argv(table, "argv"), timeout=timeout, retries=retries)
    table.only(("type", "url", "secret_file", "ca", "timeout", "retries"))
    url = outbound_url(table, "url", ("https",), outbound)
    secret = existing_path(table, "secret_file")
    if secret is None:
        raise table.fail("secret_file", "is required (the HMAC-SHA256 key of the signature)")
    return ActuatorSpec("webhook", url=url, secret_file=secret, ca=existing_path(table, "ca"),
                        timeout=timeout, retries=retries)


def _argv(table: Reader, key: str) -> tuple[str, ...]:
    argv = tuple(place.text(item, empty=False) for place, item in table.items(key))
    if not argv:
        raise table.fail(key, "must be a non-empty list of strings (an argv, no shell)")
    return argv


def _ports(table: Reader) -> tuple[int, int]:
    text = table.text("ports")
    first, _, last = text.partition("-")
    if not (first.isdigit() and last.isdigit() and 0 < int(first) <= int(last) <= 65535):
        raise table.fail("ports", 'must be a range "FIRST-LAST" of ports (1-65535)')
    return int(first), int(last)


def outbound_url(table: Reader, key: str, schemes: tuple[str, ...],
                 outbound: tuple[Any, ...]) -> str:
    """A URL an outbound call goes to: its scheme allowed, no credentials in it, and a
    host that is an IP address inside ``outbound`` (a name is checked as it resolves,
    at each call: regional_lb.autoscale.outbound)."""
    from gtm.config.networks import check_backend_address
    from gtm.errors import ConfigError

    text = table.text(key, empty=False)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise table.fail(key, f"is not a URL: {exc}") from exc
    if parts.scheme not in schemes:
        raise table.fail(key, f"must be a {' or '.join(schemes)} URL")
    if parts.username or parts.password:
        raise table.fail(key, "must not hold credentials (they would be logged)")
    if not parts.hostname:
        raise table.fail(key, "needs a host")
    try:
        check_backend_address(parts.hostname, outbound)
    except ConfigError as exc:
        if "is not an IP address" not in exc.reason:  # a name: checked as it resolves
            raise table.fail(key, exc.reason.replace("allowed_backend_networks",
                                                     "outbound_networks")) from exc
    return text


SETTINGS_KEYS = ("store", "namespace", "member", "interval", "lease", "notify",
                 "outbound_networks", "history_days", "state_dir")


@dataclass(frozen=True)
class Notify:
    url: str
    secret_file: Path
    ca: Path | None = None


@dataclass(frozen=True)
class ScaleSettings:
    """``[lb.autoscale]``: the region's scaler, shared by its pools' policies."""

    store: str | None = None   # redis://... | postgresql://... | sqlite:///path (None: see
                               # regional_lb.autoscale.start.scale_store_url)
    namespace: str = "gtm"
    member: str | None = None  # this balancer among the region's (None: host and pid)
    interval: float = 1.0      # seconds between decisions
    lease: float = 5.0         # a leader not renewing for this long is replaced
    notify: Notify | None = None
    outbound_networks: tuple[Any, ...] = ()
    history_days: float = 8.0  # one-minute load points kept (at least 7 days for forecasts)
    # The SQLite store of a balancer without another and the process actuator's pid
    # files (default: the config file's directory; a followed table: the region file's).
    state_dir: Path | None = None


def parse_settings(reader: Reader | None, outbound_default: tuple[Any, ...]) -> ScaleSettings:
    """``[lb.autoscale]`` (absent: the defaults)."""
    from gtm.config_reader import relative_path

    if reader is None:
        return ScaleSettings(outbound_networks=outbound_default)
    outbound = reader.networks("outbound_networks") if "outbound_networks" in reader \
        else outbound_default
    store = reader.text("store", None, empty=False)
    if store is not None and not store.startswith(STORE_SCHEMES):
        raise reader.fail("store", "must be a redis://, rediss://, postgresql:// or sqlite:/// "
                          "URL")
    notify = None
    if "notify" in reader:
        table = reader.child("notify", ("url", "secret_file", "ca"))
        secret = existing_path(table, "secret_file")
        if secret is None:
            raise table.fail("secret_file", "is required (the HMAC-SHA256 key)")
        notify = Notify(outbound_url(table, "url", ("https",), outbound), secret,
                        existing_path(table, "ca"))
    interval = reader.number("interval", 1.0, low=0.05, high=300)
    lease = reader.number("lease", max(5.0, 3 * interval), low=0.2, high=3600)
    if lease <= interval:
        raise reader.fail("lease", f"must be longer than interval ({interval:g} s)")
    return ScaleSettings(
        store=store,
        namespace=reader.text("namespace", "gtm", empty=False),
        member=reader.text("member", None, empty=False),
        interval=interval, lease=lease, notify=notify, outbound_networks=outbound,
        history_days=reader.number("history_days", 8.0, low=7, high=400),
        state_dir=relative_path(reader, "state_dir", "autoscale") if "state_dir" in reader
        else None,
    )
