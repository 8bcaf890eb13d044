"""The `gtm` command line."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from gtm import __version__, log
from gtm.config.settings import (
    DnsSettings,
    Listen,
    default_workers,
    load_dns_settings,
    parse_listen,
    validate,
)
from gtm.control import cli as control_cli
from gtm.errors import GtmError

REPO_ZONES = Path(__file__).resolve().parent.parent / "zones"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log.setup(args.log_level)
    try:
        return int(args.handler(args))
    except GtmError as exc:
        print(f"gtm: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gtm", description="Global traffic manager")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    parser.add_argument("--version", action="version", version=f"gtm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run everything on this machine (embedded default)")
    _dns_options(up)
    up.add_argument("--port", type=int, help="DNS port on 127.0.0.1 and ::1 (53 when asked)")
    up.set_defaults(handler=cmd_up)

    serve = commands.add_parser("serve", help="run a DNS node alone")
    _dns_options(serve)
    control_cli.add_follow_options(serve)
    serve.set_defaults(handler=cmd_serve)
    control_cli.add_commands(commands)

    explain = commands.add_parser("explain", help="why a steered name answers what it does")
    explain.add_argument("name")
    who = explain.add_mutually_exclusive_group()
    who.add_argument("--client", help="resolver address asking (no ECS)")
    who.add_argument("--subnet", help="client subnet sent as EDNS Client Subnet (CIDR)")
    explain.add_argument("--type", default="A", choices=["A", "AAAA", "CNAME", "ANY"])
    explain.add_argument("--zones", type=Path, help="zone directory (default: as gtm up)")
    explain.add_argument("--geoip", type=Path, help="mmdb file (default: the shipped one)")
    explain.set_defaults(handler=cmd_explain)

    steer = commands.add_parser("steer", help="set endpoint or region state by hand")
    steer_commands = steer.add_subparsers(dest="steer_command", required=True)
    endpoint = steer_commands.add_parser("endpoint", help="health or admin state of one")
    endpoint.add_argument("zone")
    endpoint.add_argument("endpoint")
    endpoint.add_argument("--health", choices=["up", "down"])
    endpoint.add_argument("--admin", choices=["none", "force_up", "force_down", "drain"])
    endpoint.add_argument("--reason", default="set by hand")
    endpoint.add_argument("--zones", type=Path)
    endpoint.set_defaults(handler=cmd_steer_endpoint)
    region = steer_commands.add_parser("region", help="health or headroom of a region")
    region.add_argument("zone")
    region.add_argument("region")
    region.add_argument("--health", choices=["up", "down"])
    region.add_argument("--headroom", type=float, help="0 (saturated) to 1 (idle)")
    region.add_argument("--reason", default="set by hand")
    region.add_argument("--zones", type=Path)
    region.set_defaults(handler=cmd_steer_region)

    zones = commands.add_parser("zones", help="zone files")
    zone_commands = zones.add_subparsers(dest="zones_command", required=True)
    check = zone_commands.add_parser("check", help="validate a zone directory")
    check.add_argument("directory", type=Path)
    check.set_defaults(handler=cmd_zones_check)
    _geo_commands(commands)
    return parser


def _dns_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="TOML settings file ([dns] table)")
    parser.add_argument("--zones", type=Path, help="directory of <zone>.zone files")
    parser.add_argument(
        "--listen", action="append", metavar="ADDR:PORT", help="address to serve (repeatable)"
    )
    parser.add_argument("--workers", type=int, help="worker processes (serve: one per core)")
    parser.add_argument("--nsid", help="name server identifier returned for NSID (RFC 5001)")
    parser.add_argument("--edns-size", type=int, help="advertised EDNS UDP size (1232)")
    parser.add_argument("--geoip", type=Path, help="mmdb geo database (default: geodata/)")


def dns_settings(args: argparse.Namespace, workers: int) -> DnsSettings:
    settings = load_dns_settings(args.config)
    changes: dict[str, object] = {}
    if args.config is None:
        changes["workers"] = workers
        changes["zones_dir"] = default_zones_dir()
    if args.zones is not None:
        changes["zones_dir"] = args.zones
    if args.listen:
        changes["listen"] = tuple(parse_listen(text) for text in args.listen)
    if args.workers is not None:
        changes["workers"] = args.workers
    if args.nsid is not None:
        changes["nsid"] = args.nsid
    if args.edns_size is not None:
        changes["edns_udp_size"] = args.edns_size
    if args.geoip is not None:
        changes["geoip_database"] = args.geoip
    return validate(replace(settings, **changes), "command line")  # type: ignore[arg-type]


def cmd_serve(args: argparse.Namespace) -> int:
    from gtm.dns import node

    follow = control_cli.follower_settings(args)
    return node.serve(dns_settings(args, workers=default_workers()), follow)


def cmd_up(args: argparse.Namespace) -> int:
    from gtm.dns import node

    settings = dns_settings(args, workers=1)
    if args.port is not None:
        settings = replace(
            settings, listen=tuple(Listen(item.host, args.port) for item in settings.listen)
        )
    return node.serve(settings)


def default_zones_dir() -> Path:
    return Path("zones") if Path("zones").is_dir() else REPO_ZONES


def cmd_explain(args: argparse.Namespace) -> int:
    from gtm.config.settings import DnsSettings
    from gtm.dns.node import open_locator
    from gtm.steering.explain import Question, explain_directory

    if args.log_level is None:
        log.setup("WARNING")  # the explanation is the output; keep start-up notes out
    locator = open_locator(DnsSettings(geoip_database=args.geoip))
    question = Question(args.name, args.type, args.client, args.subnet)
    print(explain_directory(args.zones or default_zones_dir(), question, locator))
    return 0


def cmd_steer_endpoint(args: argparse.Namespace) -> int:
    from gtm.steering.admin import set_endpoint

    state = set_endpoint(args.zones or default_zones_dir(), args.zone, args.endpoint,
                         args.health, args.admin, args.reason)
    print(f"{args.endpoint}: health {state.health}, admin {state.admin} ({state.reason})")
    return 0


def cmd_steer_region(args: argparse.Namespace) -> int:
    from gtm.steering.admin import set_region

    state = set_region(args.zones or default_zones_dir(), args.zone, args.region,
                       args.health, args.headroom, args.reason)
    headroom = "unreported" if state.headroom is None else f"{state.headroom:.2f}"
    print(f"{args.region}: health {state.health}, headroom {headroom} ({state.reason})")
    return 0


def cmd_zones_check(args: argparse.Namespace) -> int:
    from gtm.dns.loader import load_directory

    result = load_directory(args.directory)
    for zone in result.zones.zones.values():
        print(f"ok    {zone.origin.to_text():32} serial {zone.serial}  ({zone.source})")
    for error in result.errors:
        print(f"error {error}")
    return 1 if result.errors else 0



def _geo_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    geo = commands.add_parser("geo", help="GeoIP databases")
    geo_commands = geo.add_subparsers(dest="geo_command", required=True)
    build = geo_commands.add_parser("build", help="build an mmdb file from a CSV of networks")
    build.add_argument("csv", type=Path, help="network,country,continent,subdivision,...")
    build.add_argument("out", type=Path, help="the mmdb file to write")
    build.set_defaults(handler=cmd_geo_build)
    lookup = geo_commands.add_parser("lookup", help="where an IP address is located")
    lookup.add_argument("ip")
    lookup.add_argument("--db", type=Path, help="mmdb file (default: the shipped one)")
    lookup.add_argument(
        "--trust-private", action="store_true", help="use the file's records for private networks"
    )
    lookup.set_defaults(handler=cmd_geo_lookup)


def cmd_geo_build(args: argparse.Namespace) -> int:
    from gtm.geo.build import build_mmdb

    count = build_mmdb(args.csv, args.out)
    print(f"wrote {count} networks to {args.out}")
    return 0


def cmd_geo_lookup(args: argparse.Namespace) -> int:
    from gtm.geo.locate import DEFAULT_DATABASE, Locator

    with Locator(args.db or DEFAULT_DATABASE, trust_private=args.trust_private) as locator:
        where = locator.locate(args.ip)
    for name in ("country", "continent", "subdivision", "latitude", "longitude", "prefix_len"):
        value = getattr(where, name)
        print(f"{name:12} {'-' if value is None else value}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
