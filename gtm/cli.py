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
    serve.set_defaults(handler=cmd_serve)

    zones = commands.add_parser("zones", help="zone files")
    zone_commands = zones.add_subparsers(dest="zones_command", required=True)
    check = zone_commands.add_parser("check", help="validate a zone directory")
    check.add_argument("directory", type=Path)
    check.set_defaults(handler=cmd_zones_check)
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


def dns_settings(args: argparse.Namespace, workers: int) -> DnsSettings:
    settings = load_dns_settings(args.config)
    changes: dict[str, object] = {}
    if args.config is None:
        changes["workers"] = workers
        changes["zones_dir"] = Path("zones") if Path("zones").is_dir() else REPO_ZONES
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
    return validate(replace(settings, **changes), "command line")  # type: ignore[arg-type]


def cmd_serve(args: argparse.Namespace) -> int:
    from gtm.dns import node

    return node.serve(dns_settings(args, workers=default_workers()))


def cmd_up(args: argparse.Namespace) -> int:
    from gtm.dns import node

    settings = dns_settings(args, workers=1)
    if args.port is not None:
        settings = replace(
            settings, listen=tuple(Listen(item.host, args.port) for item in settings.listen)
        )
    return node.serve(settings)


def cmd_zones_check(args: argparse.Namespace) -> int:
    from gtm.dns.loader import load_directory

    result = load_directory(args.directory)
    for zone in result.zones.zones.values():
        print(f"ok    {zone.origin.to_text():32} serial {zone.serial}  ({zone.source})")
    for error in result.errors:
        print(f"error {error}")
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
