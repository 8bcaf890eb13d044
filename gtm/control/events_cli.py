"""`gtm events`: read the event stream.

From the API (``--api``, a viewer token): the newest events (``--last``) or those since a
time (``--since``), filtered by ``--type``, and with ``--follow`` every new one as it comes
(a long poll on ``GET /v1/events``).

From Redis as a consumer group (``--group NAME --consumer C --redis URL``): every event
once per group, across restarts. Entries delivered to this consumer and not yet acked
(it stopped between reading and printing) come first, then new ones; each is acked after
its line is printed and flushed. Stopping (SIGTERM, Ctrl-C) finishes the event at hand
first, so a consumer stopped and started again prints every event exactly once; only a
crash between printing and acking prints one again (the event's ``id`` tells).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import signal
import sys
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from gtm.control.events import check_type, event_from_fields, stream_key
from gtm.control.store import Event
from gtm.errors import ConfigError
from gtm.store_access import validate_namespace

WAIT = 25  # seconds of each long poll (the API's longest)
PAGE = 500
BLOCK_MS = 1000  # a consumer notices a stop request within this
_AGE = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([smhd])$")
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_commands(commands: Any, client_options: Callable[[Any], Any]) -> None:
    events = client_options(commands.add_parser(
        "events", help="the event stream: health flips, versions, admin changes, certificates"))
    events.add_argument("--follow", "-f", action="store_true",
                        help="keep printing new events as they come")
    events.add_argument("--since", metavar="WHEN",
                        help="from this time: an age (90s, 10m, 2h, 1d), ISO 8601 "
                        "(2025-05-01T12:00:00Z) or Unix seconds")
    events.add_argument("--type", action="append", default=[], metavar="TYPE",
                        help="only this type (repeatable): health.flip, config.version, ...")
    events.add_argument("--last", type=int, default=20, metavar="N",
                        help="without --since, start with the newest N events (20)")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    group = events.add_argument_group("consumer group (reads the Redis stream directly)")
    group.add_argument("--group", metavar="NAME", help="read as this consumer group")
    group.add_argument("--consumer", metavar="NAME", help="this reader's name in the group")
    group.add_argument("--redis", metavar="URL", help="the Redis the control plane uses")
    group.add_argument("--namespace", default="gtm", help="Redis key prefix (gtm)")
    group.add_argument("--from-start", action="store_true",
                       help="a new group starts at the oldest event kept (default: new ones)")
    group.add_argument("--count", type=int, metavar="N", help="stop after N events")
    events.set_defaults(handler=cmd_events)


def cmd_events(args: argparse.Namespace) -> int:
    types = tuple(check_type(t, "--type") for t in args.type)
    show = (lambda e: print(json.dumps(e.public(), sort_keys=True), flush=True)) \
        if args.json else (lambda e: print(render(e), flush=True))
    if args.group or args.consumer:
        return read_group(args, types, show)
    if args.count is not None:
        raise ConfigError("only with --group", "command line", "--count")
    return read_api(args, types, show)


def render(event: Event) -> str:
    when = dt.datetime.fromtimestamp(event.time, dt.UTC).isoformat(timespec="milliseconds")
    detail = json.dumps(event.detail, sort_keys=True) if event.detail else ""
    return f"{when.replace('+00:00', 'Z')}  {event.type:<20} {event.subject}  " \
           f"by {event.actor}  {detail}".rstrip()


def parse_since(text: str, now: float) -> float:
    """An age (10m), ISO 8601 (naive means UTC) or Unix seconds, as Unix seconds."""
    text = text.strip()
    age = _AGE.match(text)
    if age:
        return now - float(age.group(1)) * _UNITS[age.group(2)]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError("an age (90s, 10m, 2h, 1d), ISO 8601 time or Unix seconds",
                          "command line", "--since") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


# ---- from the API ----


def read_api(args: argparse.Namespace, types: tuple[str, ...],
             show: Callable[[Event], None]) -> int:
    from gtm.control import cli as control_cli

    if not 1 <= args.last <= PAGE:
        raise ConfigError(f"must be 1 to {PAGE}", "command line", "--last")
    api = control_cli.client(args)
    filters: list[tuple[str, str]] = [("type", t) for t in types]
    if args.since is not None:
        filters.append(("since", repr(parse_since(args.since, time.time()))))
        cursor = "0"
        while True:  # every page since then
            body = api.get(events_path([*filters, ("after", cursor), ("limit", PAGE)]))
            print_items(body, show)
            cursor = body["next_cursor"]
            if len(body["items"]) < PAGE:
                break
    else:
        body = api.get(events_path([*filters, ("tail", args.last)]))
        print_items(body, show)
        cursor = body["next_cursor"]
    try:
        while args.follow:
            body = api.get(events_path([*filters, ("after", cursor), ("limit", PAGE),
                                        ("wait", WAIT)]))
            print_items(body, show)
            cursor = body["next_cursor"]
    except KeyboardInterrupt:
        pass
    return 0


def events_path(query: list[tuple[str, Any]]) -> str:
    return f"/v1/events?{urlencode(query)}"


def print_items(body: dict[str, Any], show: Callable[[Event], None]) -> None:
    for item in body["items"]:
        show(Event(item["id"], float(item["time"]), item["type"], item["subject"],
                   item["detail"], item["actor"]))


# ---- a consumer group on the Redis stream ----


def read_group(args: argparse.Namespace, types: tuple[str, ...],
               show: Callable[[Event], None]) -> int:
    import redis
    from redis.exceptions import ResponseError

    for option, value in (("--group", args.group), ("--consumer", args.consumer)):
        if not value or not _NAME.match(value):
            raise ConfigError("1 to 64 letters, digits, '_', '.', ':' or '-' (with --group "
                              "and --consumer both given)", "command line", option)
    if not args.redis:
        raise ConfigError("a consumer group reads Redis: give --redis URL", "command line",
                          "--redis")
    if args.since is not None or args.follow:
        raise ConfigError("a consumer group reads what its group has not had yet; "
                          "--since and --follow do not apply", "command line", "--group")
    stream = stream_key(validate_namespace(args.namespace))
    client = redis.Redis.from_url(args.redis, decode_responses=True, socket_connect_timeout=5,
                                  socket_timeout=BLOCK_MS / 1000 + 5)
    try:
        client.xgroup_create(stream, args.group, id="0" if args.from_start else "$",
                             mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):  # the group exists: carry on where it is
            raise
    stopping = stop_requested()
    consumer = GroupReader(client, stream, args.group, args.consumer, types, show, args.count)
    try:
        consumer.run(stopping)
    finally:
        client.close()
    return 0


def stop_requested() -> list[bool]:
    """A flag SIGTERM and SIGINT set, so the event at hand is printed and acked first."""
    flag = [False]

    def stop(_signum: int, _frame: object) -> None:
        flag[0] = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return flag


class GroupReader:
    def __init__(self, client: Any, stream: str, group: str, consumer: str,
                 types: tuple[str, ...], show: Callable[[Event], None], count: int | None):
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.types = types
        self.show = show
        self.left = count

    def run(self, stopping: list[bool]) -> None:
        # What this consumer was handed before and never acked, then what is new.
        while not stopping[0] and self._more() and self._read("0", block=None):
            pass
        while not stopping[0] and self._more():
            self._read(">", block=BLOCK_MS)

    def _more(self) -> bool:
        return self.left is None or self.left > 0

    def _read(self, start: str, block: int | None) -> bool:
        """Handle one batch; False when there was nothing."""
        reply = self.client.xreadgroup(self.group, self.consumer, {self.stream: start},
                                       count=100 if self.left is None else self.left,
                                       block=block)
        entries = reply[0][1] if reply else []
        for entry_id, fields in entries:
            self._handle(entry_id, fields)
            if not self._more():
                break
        return bool(entries)

    def _handle(self, entry_id: str, fields: dict[str, str] | None) -> None:
        if not fields:  # trimmed (MAXLEN) after it was handed out and before it was read
            print(f"gtm events: entry {entry_id} was trimmed before it was read",
                  file=sys.stderr)
        else:
            try:
                event = event_from_fields(fields)
            except (KeyError, ValueError, TypeError):
                print(f"gtm events: entry {entry_id} is not an event; skipped", file=sys.stderr)
            else:
                if not self.types or event.type in self.types:
                    self.show(event)  # printed and flushed before the ack
                    if self.left is not None:
                        self.left -= 1
        self.client.xack(self.stream, self.group, entry_id)
