"""Failover drill plans and their schedule: the ``drills`` section of the document.

A plan (TOML or JSON, alike) names a target (a zone's region), the fault to inject
and for how long, what to observe (names, vantage points as ECS subnets, the DNS
servers), the TTL ramp-down, the safety rules checked before starting, the abort
conditions and the restore. It is read through the one typed reader
(gtm.config_reader), so an error names its full path (``fault.duration``,
``observe.vantage[2].subnet``). The section keeps named plans and recurring practice
runs::

    {"plans": {"eu-drain": {...plan...}},
     "schedule": {"weekly-eu": {"plan": "eu-drain", "weekly": [{"days": ["tue"],
                  "at": "10:00"}], "blocked_dates": ["2026-12-24"]}}}

Pure: parsing and the calendar arithmetic (blocked windows, due runs) only.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from gtm.config_reader import Listen, Place, Reader
from gtm.errors import ConfigError

DRILLS = "drills"
# Faults of a plain `gtm up` (loopback), done through the balancer's admin API or the
# control plane; the others need the network lab (`gtm lab up`).
LOCAL_FAULTS = ("drain", "force_down", "stop_backends")
LAB_FAULTS = ("cut_link", "partition", "latency", "loss", "stop_node")
FAULTS = LOCAL_FAULTS + LAB_FAULTS
# Faults set by an operator's action (answers move when the control plane says so);
# the others are noticed by health checks first.
OPERATOR_FAULTS = ("drain", "force_down")
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_DURATION = 3600.0  # a drill's fault: at most an hour
MAX_VANTAGE = 32
MAX_NAMES = 16

PLAN_KEYS = ("name", "description", "zone", "target", "fault", "observe", "ramp", "safety",
             "abort", "restore")


@dataclass(frozen=True)
class Vantage:
    """A client population: resolves with this ECS subnet (a resolver in that country)."""

    name: str
    subnet: str


@dataclass(frozen=True)
class Observe:
    names: tuple[str, ...]
    vantage: tuple[Vantage, ...]
    dns: tuple[Listen, ...] = ()      # empty: the runner's --dns
    interval: float = 0.2            # seconds between one vantage point's requests
    port: int = 8080                 # HTTP port on the answered address
    path: str = "/"
    timeout: float = 1.0


@dataclass(frozen=True)
class Fault:
    type: str
    duration: float
    balancer: str | None = None      # the region's balancer config file (drain, stop_backends)
    pool: str | None = None          # None: every pool of that balancer
    nodes: tuple[str, ...] = ()      # partition: from these GTM nodes
    latency_ms: float = 0.0
    loss: float = 0.0                # 0..1
    node: str | None = None          # stop_node


@dataclass(frozen=True)
class Ramp:
    """Lower the names' TTLs to ``ttl`` in ``steps`` versions before the fault, waiting
    out the previous TTL after each (``step_wait`` seconds when given)."""

    ttl: int
    steps: int = 2
    step_wait: float | None = None


@dataclass(frozen=True)
class WeeklyWindow:
    days: tuple[int, ...]            # 0 = Monday
    start: int                       # minutes after midnight (UTC)
    end: int                         # exclusive; 1440 = the end of the day


@dataclass(frozen=True)
class Safety:
    min_headroom: float = 0.1
    blocked_dates: tuple[dt.date, ...] = ()
    blocked_weekly: tuple[WeeklyWindow, ...] = ()
    min_regions_up: int | None = None  # assertion: regions up once the target is out


@dataclass(frozen=True)
class Abort:
    error_rate: float | None = 0.5   # share of failed requests over ``window``
    window: float = 2.0
    min_samples: int = 5             # in the window before the rate counts
    p95_ms: float | None = None
    move_deadline: float | None = 30.0  # no answer moved this long after the fault


@dataclass(frozen=True)
class Restore:
    expiry_grace: float = 30.0       # an override outlives the planned end by at most this
    settle: float = 30.0             # the longest to wait for answers to come back


@dataclass(frozen=True)
class Plan:
    name: str
    zone: str
    region: str
    fault: Fault
    observe: Observe
    ramp: Ramp | None = None
    safety: Safety = field(default_factory=Safety)
    abort: Abort = field(default_factory=Abort)
    restore: Restore = field(default_factory=Restore)
    description: str = ""

    @property
    def planned_seconds(self) -> float:
        """The longest the drill's overrides should live (ramp, fault, restore)."""
        ramp = 0.0
        if self.ramp is not None:
            ramp = self.ramp.steps * (self.ramp.step_wait or 300.0)
        return ramp + self.fault.duration + self.restore.settle


def parse_plan(raw: Any, source: str, where: str = "") -> Plan:
    top = Reader(raw, source, where, PLAN_KEYS)
    zone = top.text("zone", empty=False).rstrip(".") + "."
    target = top.child("target", ("region",))
    return Plan(
        name=_name(top, "name"),
        zone=zone,
        region=target.text("region", empty=False),
        fault=_fault(top.child("fault", ("type", "duration", "balancer", "pool", "nodes",
                                         "latency_ms", "loss", "node"))),
        observe=_observe(top.child("observe", ("names", "vantage", "dns", "interval", "port",
                                               "path", "timeout"))),
        ramp=_ramp(top.optional_child("ramp", ("ttl", "steps", "step_wait"))),
        safety=_safety(top.child("safety", ("min_headroom", "blocked_dates", "blocked_weekly",
                                            "assertions"))),
        abort=_abort(top.child("abort", ("error_rate", "window", "min_samples", "p95_ms",
                                         "move_deadline"))),
        restore=_restore(top.child("restore", ("expiry_grace", "settle"))),
        description=top.text("description", ""),
    )


def _name(reader: Reader, key: str) -> str:
    name = reader.text(key, empty=False)
    if len(name) > 64 or not all(c.isalnum() or c in "-_." for c in name):
        raise reader.fail(key, "must be 1 to 64 letters, digits, '-', '_' or '.'")
    return name


def _fault(table: Reader) -> Fault:
    kind = table.choice("type", FAULTS)
    fault = Fault(
        type=kind,
        duration=table.number("duration", low=0.1, high=MAX_DURATION, what="seconds"),
        balancer=table.text("balancer", None, empty=False),
        pool=table.text("pool", None, empty=False),
        nodes=tuple(place.text(item, empty=False) for place, item in table.items("nodes")),
        latency_ms=table.number("latency_ms", 0.0, low=0, high=60000, what="milliseconds"),
        loss=table.number("loss", 0.0, low=0, high=1, what="a share"),
        node=table.text("node", None, empty=False),
    )
    needs = {"drain": "balancer", "stop_backends": "balancer", "partition": "nodes",
             "latency": "latency_ms", "loss": "loss", "stop_node": "node"}
    key = needs.get(kind)
    if key is not None and not table.value(key, None):
        raise table.fail(key, f"is required for a {kind} fault")
    return fault


def _observe(table: Reader) -> Observe:
    names = tuple(_domain(place, item) for place, item in table.items("names"))
    if not names or len(names) > MAX_NAMES:
        raise table.fail("names", f"must list 1 to {MAX_NAMES} names to observe")
    vantage = tuple(_vantage(reader) for reader in table.tables("vantage",
                                                                 ("name", "subnet")))
    if not vantage or len(vantage) > MAX_VANTAGE:
        raise table.fail("vantage", f"must list 1 to {MAX_VANTAGE} vantage points")
    if len({v.name for v in vantage}) != len(vantage):
        raise table.fail("vantage", "names must differ")
    path = table.text("path", "/")
    if not path.startswith("/") or not path.isascii() or not path.isprintable() \
            or " " in path:
        raise table.fail("path", "must be an absolute path of printable ASCII without spaces")
    return Observe(
        names=names, vantage=vantage, dns=table.addresses("dns"),
        interval=table.number("interval", 0.2, low=0.02, high=60, what="seconds"),
        port=table.integer("port", 8080, low=1, high=65535, what="a port"),
        path=path,
        timeout=table.number("timeout", 1.0, low=0.05, high=30, what="seconds"),
    )


def _domain(place: Place, value: Any) -> str:
    text = place.text(value, empty=False).rstrip(".")
    labels = text.split(".")
    if len(text) > 253 or not all(0 < len(label) <= 63 and label.isascii()
                                  for label in labels):
        raise place.fail(f"{text!r} is not a domain name")
    return text + "."


def _vantage(table: Reader) -> Vantage:
    name = _name(table, "name")
    network = table.at("subnet").network(table.value("subnet"))
    return Vantage(name, str(network))


def _ramp(table: Reader | None) -> Ramp | None:
    if table is None:
        return None
    wait = table.value("step_wait", None)
    return Ramp(
        ttl=table.integer("ttl", low=1, high=86400, what="seconds"),
        steps=table.integer("steps", 2, low=1, high=10, what="a number of steps"),
        step_wait=None if wait is None else table.number("step_wait", low=0, high=3600,
                                                         what="seconds"),
    )


def _safety(table: Reader) -> Safety:
    min_up = None
    for reader in table.tables("assertions", ("type", "count")):
        reader.choice("type", ("min_regions_up",))
        min_up = reader.integer("count", low=1, high=1000, what="a number of regions")
    return Safety(
        min_headroom=table.number("min_headroom", 0.1, low=0, high=1, what="a share"),
        blocked_dates=tuple(_date(place, item) for place, item in table.items("blocked_dates")),
        blocked_weekly=tuple(_window(reader) for reader in
                             table.tables("blocked_weekly", ("days", "start", "end"))),
        min_regions_up=min_up,
    )


def _date(place: Place, value: Any) -> dt.date:
    text = place.text(value)
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise place.fail(f"{text!r} is not a date (YYYY-MM-DD)") from exc


def _days(table: Reader) -> tuple[int, ...]:
    days = tuple(DAYS.index(place.choice(item, DAYS)) for place, item in table.items("days"))
    if not days:
        raise table.fail("days", f"must list days ({', '.join(DAYS)})")
    return days


def _minutes(table: Reader, key: str, default: str | None = None) -> int:
    text = table.text(key) if default is None else table.text(key, default)
    hours, _, minutes = text.partition(":")
    if not (len(hours) == 2 and len(minutes) == 2 and hours.isdigit() and minutes.isdigit()
            and hours.isascii() and minutes.isascii()):
        raise table.fail(key, "must be a time HH:MM (UTC)")
    value = int(hours) * 60 + int(minutes)
    if int(minutes) > 59 or value > 24 * 60:
        raise table.fail(key, "must be a time from 00:00 to 24:00 (UTC)")
    return value


def _window(table: Reader) -> WeeklyWindow:
    window = WeeklyWindow(_days(table), _minutes(table, "start", "00:00"),
                          _minutes(table, "end", "24:00"))
    if window.end <= window.start:
        raise table.fail("end", "must be after start")
    return window


def _abort(table: Reader) -> Abort:
    def optional(key: str, default: float | None, low: float, high: float, what: str
                 ) -> float | None:
        if key in table and table.value(key) is False:  # false turns a condition off
            return None
        return table.number(key, default, low=low, high=high, what=what)

    return Abort(
        error_rate=optional("error_rate", 0.5, 0, 1, "a share (false: off)"),
        window=table.number("window", 2.0, low=0.1, high=600, what="seconds"),
        min_samples=table.integer("min_samples", 5, low=1, high=100000),
        p95_ms=optional("p95_ms", None, 1, 600000, "milliseconds (false: off)"),
        move_deadline=optional("move_deadline", 30.0, 0.1, 3600, "seconds (false: off)"),
    )


def _restore(table: Reader) -> Restore:
    return Restore(
        expiry_grace=table.number("expiry_grace", 30.0, low=0.5, high=86400, what="seconds"),
        settle=table.number("settle", 30.0, low=0.5, high=3600, what="seconds"),
    )


# ---- blocked windows and the schedule (pure calendar arithmetic, UTC) ----


def blocked_by(safety_dates: tuple[dt.date, ...], weekly: tuple[WeeklyWindow, ...],
               now: dt.datetime) -> str | None:
    """Which blocked window ``now`` (UTC) falls in, described; None when none."""
    if now.date() in safety_dates:
        return f"blocked date {now.date().isoformat()}"
    minute = now.hour * 60 + now.minute
    for window in weekly:
        if now.weekday() in window.days and window.start <= minute < window.end:
            days = ",".join(DAYS[d] for d in window.days)
            return (f"blocked weekly window {days} {window.start // 60:02d}:"
                    f"{window.start % 60:02d}-{window.end // 60:02d}:{window.end % 60:02d} UTC")
    return None


@dataclass(frozen=True)
class Scheduled:
    """A recurring practice run of a stored plan."""

    name: str
    plan: str
    weekly: tuple[tuple[tuple[int, ...], int], ...]  # (days, minute of day)
    blocked_dates: tuple[dt.date, ...] = ()
    window: float = 3600.0  # a run not started this long after its time is skipped
    force: bool = False


def parse_section(raw: Any, source: str, where: str = DRILLS) -> dict[str, Any]:
    """The ``drills`` section: validated, kept as written (the runner parses plans again)."""
    top = Reader(raw, source, where, ("plans", "schedule"))
    plans = top.child("plans")
    for name in plans.table:
        parse_plan(plans.table[name], source, f"{plans.where}.{name}")
    schedule = top.child("schedule")
    for name in schedule.table:
        entry = parse_scheduled(name, schedule.table[name], source, schedule.where)
        if entry.plan not in plans.table:
            raise ConfigError(f"no plan {entry.plan!r} in {DRILLS}.plans", source,
                              f"{schedule.where}.{name}.plan")
    return raw


def parse_scheduled(name: str, raw: Any, source: str, where: str) -> Scheduled:
    table = Reader(raw, source, f"{where}.{name}",
                   ("plan", "weekly", "blocked_dates", "window", "force"))
    weekly = tuple((_days(reader), _minutes(reader, "at"))
                   for reader in table.tables("weekly", ("days", "at")))
    if not weekly:
        raise table.fail("weekly", "must list at least one {days, at}")
    return Scheduled(
        name=name, plan=table.text("plan", empty=False), weekly=weekly,
        blocked_dates=tuple(_date(p, v) for p, v in table.items("blocked_dates")),
        window=table.number("window", 3600.0, low=10, high=86400, what="seconds"),
        force=table.flag("force", False),
    )


def due_slot(entry: Scheduled, now: dt.datetime) -> dt.datetime | None:
    """The scheduled time (UTC) a run is due for at ``now``: the latest slot at or before
    now, within the entry's window, and not on a blocked date. None: nothing is due."""
    for days_back in (0, 1):
        day = (now - dt.timedelta(days=days_back)).date()
        slots = sorted((minute for days, minute in entry.weekly if day.weekday() in days),
                       reverse=True)
        for minute in slots:
            at = dt.datetime.combine(day, dt.time(), dt.UTC) + dt.timedelta(minutes=minute)
            if at <= now:
                if (now - at).total_seconds() > entry.window or day in entry.blocked_dates:
                    return None
                return at
    return None
