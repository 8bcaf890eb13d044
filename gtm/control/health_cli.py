"""`gtm health` and the health options of `gtm serve` / `gtm up`.

It reads node summaries through the control API (or Redis) and prints them with
gtm.health.summary, so it sits above both.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from typing import TYPE_CHECKING, Any

from gtm.errors import ConfigError

if TYPE_CHECKING:  # imported by the commands that run: every `gtm` parser loads this module
    from gtm.health.service import HealthSettings


def add_probe_options(parser: argparse.ArgumentParser, serve: bool) -> None:
    group = parser.add_argument_group("health checking")
    if serve:
        group.add_argument("--probe", action="store_true",
                           help="probe the endpoints whose pools define a check")
    else:
        group.add_argument("--no-probe", action="store_true", help="do not probe endpoints")
    group.add_argument("--observer-id", help="this node's name on its observations "
                       "(default: host:pid)")
    group.add_argument("--quorum", type=int, default=1,
                       help="fresh observers that must agree on a state (1)")
    group.add_argument("--observation-expiry", type=float, default=6.0,
                       help="seconds an observation counts as fresh (6)")
    group.add_argument("--coalesce", type=float, default=0.5,
                       help="at most one answer rebuild per this many seconds (0.5)")
    group.add_argument("--doubt-ttl", type=int, default=5,
                       help="cap on steered TTLs while observers disagree; 0 to keep TTLs (5)")


def health_settings(args: argparse.Namespace, probe: bool) -> HealthSettings | None:
    from gtm.health.service import HealthSettings

    if not probe:
        return None
    if args.quorum < 1:
        raise ConfigError("must be at least 1", "command line", "--quorum")
    if args.observation_expiry <= 0:
        raise ConfigError("must be above 0", "command line", "--observation-expiry")
    if args.coalesce < 0:
        raise ConfigError("must not be negative", "command line", "--coalesce")
    return HealthSettings(
        observer_id=args.observer_id or f"{os.uname().nodename}:{os.getpid()}",
        quorum=args.quorum, expiry=args.observation_expiry, coalesce=args.coalesce,
        doubt_ttl=args.doubt_ttl or None, redis_url=getattr(args, "redis", None),
        namespace=getattr(args, "namespace", "gtm"),
    )


def add_commands(commands: Any, client_options: Any) -> None:
    health = client_options(commands.add_parser(
        "health", help="endpoints: state, reason, last results and observers"))
    health.add_argument("--redis", metavar="URL",
                        help="read the nodes' health summaries from Redis instead of the API")
    health.add_argument("--namespace", default="gtm", help="Redis key prefix (gtm)")
    health.set_defaults(handler=cmd_health)


def summaries_from_api(args: argparse.Namespace) -> list[dict[str, Any]]:
    from gtm.control import cli as control_cli

    nodes = control_cli.client(args).get("/v1/nodes")["items"]
    return [n["info"]["health"] for n in nodes if (n.get("info") or {}).get("health")]


def summaries_from_redis(url: str, namespace: str) -> list[dict[str, Any]]:
    from gtm.health.bus import RedisBus

    async def read() -> list[dict[str, Any]]:
        bus = RedisBus(url, namespace, expiry=1.0)
        try:
            return await bus.summaries()
        finally:
            await bus.close()

    return asyncio.run(read())


def cmd_health(args: argparse.Namespace) -> int:
    from gtm.health.summary import render_summary

    summaries = (summaries_from_redis(args.redis, args.namespace) if args.redis
                 else summaries_from_api(args))
    if not summaries:
        print("no node reports health (is a node running with checks defined and probing?)")
        return 1
    for summary in sorted(summaries, key=lambda s: str(s.get("observer"))):
        print("\n".join(render_summary(summary)))
        print()
    return 0
