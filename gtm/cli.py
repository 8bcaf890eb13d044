"""The `gtm` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from gtm import __version__, log

try:  # Ctrl-C while the commands load ends quietly
    from gtm.config.settings import (
        DnsSettings,
        Listen,
        RrlSettings,
        default_workers,
        load_dns_settings,
        parse_listen,
        validate,
    )
    from gtm.control import certs_cli, events_cli, health_cli, scale_cli, tsig_cli
    from gtm.control import cli as control_cli
    from gtm.drill import cli as drill_cli
    from gtm.errors import ConfigError, GtmError
    from gtm.lab import cli as lab_cli
    from gtm.steering.state import SteeringState
    from gtm.terraform import install as terraform_install
except KeyboardInterrupt:
    raise SystemExit(130) from None

REPO_ZONES = Path(__file__).resolve().parent.parent / "zones"
EXAMPLE_REGIONS = tuple(
    REPO_ZONES.parent / "examples" / "lb" / f"{name}.toml"
    for name in ("eu-west", "us-east", "ap-northeast", "sa-east")
)


def main(argv: list[str] | None = None) -> int:
    """Every command ends here: errors become one line, and a reader that went away
    (`gtm config history | head -1`) or a Ctrl-C ends the command quietly."""
    try:
        try:
            return _command(argv)
        finally:
            # A closed pipe shows here (after --help too), not in the interpreter's exit.
            sys.stdout.flush()
    except BrokenPipeError:
        _discard_stdout()
        return 141  # what a shell reports for a command ended by SIGPIPE (128 + 13)
    except KeyboardInterrupt:
        return 130  # 128 + SIGINT, as shells report it


def _command(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    log.setup(args.log_level)
    try:
        return int(args.handler(args))
    except GtmError as exc:
        print(f"gtm: {exc}", file=sys.stderr)
        return 2


def _discard_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush of what is still
    buffered does not fail again on the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (stdout replaced in-process)
        pass
    finally:
        os.close(devnull)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gtm", description="Global traffic manager")
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO (default), WARNING")
    parser.add_argument("--version", action="version", version=f"gtm {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="run everything on this machine (embedded default)")
    _dns_options(up)
    up.add_argument("--port", type=int, help="DNS port on 127.0.0.1 and ::1 (53 when asked)")
    up.add_argument("--api-listen", default="127.0.0.1:8080", metavar="ADDR:PORT",
                    help="control plane API (127.0.0.1:8080)")
    up.add_argument("--state-dir", type=Path, default=Path("var"),
                    help="embedded store, node snapshots, admin token (var/)")
    up.add_argument("--postgres", help="PostgreSQL URL instead of the embedded SQLite store")
    up.add_argument("--redis", help="Redis URL for fan-out to other nodes")
    up.add_argument("--region", action="append", type=Path, metavar="FILE",
                    help="a regional balancer config (repeatable; default: examples/lb's four)")
    up.add_argument("--no-regions", action="store_true", help="run no regional balancers")
    up.add_argument("--metrics", metavar="ADDR:PORT",
                    help="also serve Prometheus /metrics here, no token (the API's needs one)")
    control_cli.add_tls_options(up, "--api-tls")
    health_cli.add_probe_options(up, serve=False)
    up.set_defaults(handler=cmd_up)

    serve = commands.add_parser("serve", help="run a DNS node alone")
    _dns_options(serve)
    serve.add_argument("--metrics", metavar="ADDR:PORT",
                       help="serve Prometheus /metrics here, no token (every worker added up)")
    control_cli.add_follow_options(serve)
    health_cli.add_probe_options(serve, serve=True)
    serve.set_defaults(handler=cmd_serve)
    control_cli.add_commands(commands)
    health_cli.add_commands(commands, control_cli.client_options)
    events_cli.add_commands(commands, control_cli.client_options)
    scale_cli.add_commands(commands, control_cli.client_options)

    explain = commands.add_parser("explain", help="why a steered name answers what it does")
    explain.add_argument("name")
    who = explain.add_mutually_exclusive_group()
    who.add_argument("--client", help="resolver address asking (no ECS)")
    who.add_argument("--subnet", help="client subnet sent as EDNS Client Subnet (CIDR)")
    explain.add_argument("--type", default="A", choices=["A", "AAAA", "CNAME", "ANY"])
    _steer_target_options(explain)
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
    _steer_target_options(endpoint)
    endpoint.set_defaults(handler=cmd_steer_endpoint)
    region = steer_commands.add_parser("region", help="health or headroom of a region")
    region.add_argument("zone")
    region.add_argument("region")
    region.add_argument("--health", choices=["up", "down"])
    region.add_argument("--headroom", type=float, help="0 (saturated) to 1 (idle)")
    region.add_argument("--reason", default="set by hand")
    _steer_target_options(region)
    region.set_defaults(handler=cmd_steer_region)

    zones = commands.add_parser("zones", help="zone files")
    zone_commands = zones.add_subparsers(dest="zones_command", required=True)
    check = zone_commands.add_parser("check", help="validate a zone directory")
    check.add_argument("directory", type=Path)
    check.set_defaults(handler=cmd_zones_check)
    take = control_cli.client_options(zone_commands.add_parser(
        "apply", help="make a zone's live configuration equal its files again (gtm up)"))
    take.add_argument("zone", help="the zone whose files should win (example.test)")
    take.add_argument("--zones", type=Path, help="the zone directory (default: zones/)")
    take.add_argument("--dry-run", action="store_true", help="show the diff, change nothing")
    take.add_argument("--yes", action="store_true",
                      help="apply without asking (required when stdin is not a terminal)")
    take.set_defaults(handler=cmd_zones_apply)
    _geo_commands(commands)
    terraform_install.register(commands)
    lab_cli.add_commands(commands)
    drill_cli.add_commands(commands, control_cli.client_options)
    hooks = CliHooks(commands)
    for register in _command_plugins():
        register(hooks)
    certs_cli.add_commands(hooks.certs(), control_cli.client_options)
    tsig_cli.add_commands(commands, control_cli.client_options)
    return parser


# Packages that bring their own subcommands (regional_lb: `gtm lb`, `gtm certs list`)
# name a `register(hooks)` function in this entry-point group, so gtm imports none of them.
PLUGIN_GROUP = "gtm.cli"


def _command_plugins() -> list[Callable[[CliHooks], None]]:
    from importlib.metadata import entry_points

    return [entry.load() for entry in sorted(entry_points(group=PLUGIN_GROUP),
                                             key=lambda e: e.name)]


class CliHooks:
    """What a plugin's `register(hooks)` may add to: top-level commands, the `certs`
    group (made when first asked for), the control-plane options and listing, and
    following the control plane (`gtm serve --control`'s options, and a follower of one
    section entry built from them)."""

    def __init__(self, commands: argparse._SubParsersAction[argparse.ArgumentParser]):
        self.commands = commands
        self.client_options = control_cli.client_options
        self.list_control_certificates = certs_cli.list_control
        self.follow_options = control_cli.add_follow_options
        self.section_follow = control_cli.section_follow
        self._certs: argparse._SubParsersAction[argparse.ArgumentParser] | None = None

    def certs(self) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        if self._certs is None:
            certs = self.commands.add_parser("certs", help="TLS certificates of the balancer")
            self._certs = certs.add_subparsers(dest="certs_command", required=True)
        return self._certs


def _steer_target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--zones", type=Path, help="write <zone>.state.json in this directory")
    parser.add_argument("--api", help="write through the control plane at this URL")
    parser.add_argument("--token", default=os.environ.get("GTM_TOKEN"), help="bearer token")
    parser.add_argument("--ca", type=Path, default=None, metavar="FILE",
                        help="CA bundle for an https --api (default: $GTM_API_CA, else the "
                        "system's)")


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
    _rrl_options(parser)


def _rrl_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("response rate limiting and cookies")
    group.add_argument("--rrl", type=float, metavar="RATE", help="limit UDP responses to RATE "
                       "a second per client prefix, response class and name (see README)")
    group.add_argument("--rrl-slip", type=int, metavar="N",
                       help="send every Nth limited response truncated (2; 0: drop all)")
    group.add_argument("--rrl-log-only", action="store_true",
                       help="count and log what would be limited, limit nothing")
    group.add_argument("--no-cookies", action="store_true",
                       help="ignore DNS cookies (RFC 7873) instead of answering them")


def dns_settings(args: argparse.Namespace, workers: int) -> DnsSettings:
    defaults = DnsSettings(workers=workers, zones_dir=default_zones_dir())
    settings = load_dns_settings(args.config, defaults)
    changes: dict[str, object] = {}
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
    if args.no_cookies:
        changes["cookies"] = False
    rrl = _rrl_changes(args, settings.rrl)
    if rrl != settings.rrl:
        changes["rrl"] = rrl
    return validate(replace(settings, **changes), "command line")  # type: ignore[arg-type]


def _rrl_changes(args: argparse.Namespace, rrl: RrlSettings) -> RrlSettings:
    if args.rrl is not None:
        if args.rrl < 0.1:
            raise ConfigError("must be at least 0.1 (responses a second)", "command line",
                              "--rrl")
        rrl = replace(rrl, enabled=True, responses_per_second=args.rrl)
    if args.rrl_slip is not None:
        if not 0 <= args.rrl_slip <= 100:
            raise ConfigError("must be 0 to 100", "command line", "--rrl-slip")
        rrl = replace(rrl, slip=args.rrl_slip)
    if args.rrl_log_only:
        rrl = replace(rrl, log_only=True)
    return rrl


def cmd_serve(args: argparse.Namespace) -> int:
    from gtm import node

    follow = control_cli.follower_settings(args)
    settings = dns_settings(args, workers=default_workers())
    health = health_cli.health_settings(args, args.probe)
    if health is not None and settings.workers > 1 and not args.redis:
        # Only worker 0 probes; the others can hear its observations only through Redis.
        raise ConfigError("--probe with several workers needs --redis (or use --workers 1)",
                          "command line", "--probe")
    metrics = parse_listen(args.metrics, default_port=9153) if args.metrics else None
    return node.serve(settings, follow, health, metrics)


def cmd_up(args: argparse.Namespace) -> int:
    from gtm.up import UpSettings, up

    settings = dns_settings(args, workers=1)
    if args.port is not None:
        settings = replace(
            settings, listen=tuple(Listen(item.host, args.port) for item in settings.listen)
        )
    return up(UpSettings(
        dns=settings,
        state_dir=args.state_dir,
        api=parse_listen(args.api_listen, default_port=8080),
        api_tls=control_cli.tls_files(args.api_tls_cert, args.api_tls_key, "--api-tls"),
        postgres=args.postgres,
        redis=args.redis,
        health=health_cli.health_settings(args, not args.no_probe),
        regions=() if args.no_regions else tuple(args.region or EXAMPLE_REGIONS),
        metrics=parse_listen(args.metrics, default_port=9153) if args.metrics else None,
    ))


def default_zones_dir() -> Path:
    return Path("zones") if Path("zones").is_dir() else REPO_ZONES


def cmd_explain(args: argparse.Namespace) -> int:
    from gtm.config.settings import DnsSettings
    from gtm.health.explain import Question, explain_directory
    from gtm.node import open_locator

    if args.log_level is None:
        log.setup("WARNING")  # the explanation is the output; keep start-up notes out
    locator = open_locator(DnsSettings(geoip_database=args.geoip))
    question = Question(args.name, args.type, args.client, args.subnet)
    if _use_api(args):
        from gtm.config.document import compile_document
        from gtm.health.explain import explain

        api = control_cli.client(args)
        live = api.get("/v1/config")
        zones = compile_document(live["document"], f"version {live['version']}").zones
        print(f"(configuration version {live['version']} from {args.api})")
        summaries = health_cli.summaries_from_api(args)
        print(explain(zones, question, locator, summaries[0] if summaries else None))
        return 0
    print(explain_directory(args.zones or default_zones_dir(), question, locator))
    return 0


def _use_api(args: argparse.Namespace) -> bool:
    """The control plane is where nodes read from: --api, $GTM_API, or a `gtm up` here.
    Sets args.api to the URL to use."""
    if args.zones is not None:
        return False
    if args.api or os.environ.get("GTM_API") or (control_cli.DEFAULT_STATE /
                                                 "admin.token").exists():
        args.api = args.api or os.environ.get("GTM_API") or control_cli.DEFAULT_API
        return True
    return False


def cmd_steer_endpoint(args: argparse.Namespace) -> int:
    from gtm.control.steer_cli import with_endpoint

    def change(state: SteeringState) -> SteeringState:
        return with_endpoint(state, args.endpoint, args.health, args.admin, args.reason)

    state, where = _steer(args, args.endpoint, None, change,
                          f"steer endpoint {args.endpoint}: {args.reason}")
    current = state.endpoint_state(args.endpoint)
    print(f"{args.endpoint}: health {current.health}, admin {current.admin} "
          f"({current.reason}) {where}")
    return 0


def cmd_steer_region(args: argparse.Namespace) -> int:
    from gtm.control.steer_cli import with_region

    def change(state: SteeringState) -> SteeringState:
        return with_region(state, args.region, args.health, args.headroom, args.reason)

    state, where = _steer(args, None, args.region, change,
                          f"steer region {args.region}: {args.reason}")
    current = state.region_state(args.region)
    headroom = "unreported" if current.headroom is None else f"{current.headroom:.2f}"
    print(f"{args.region}: health {current.health}, headroom {headroom} "
          f"({current.reason}) {where}")
    return 0


def _steer(
    args: argparse.Namespace,
    endpoint: str | None,
    region: str | None,
    change: Callable[[SteeringState], SteeringState],
    message: str,
) -> tuple[SteeringState, str]:
    """Write the state where the nodes read it: the control plane when one is in use
    (--api, $GTM_API, or a `gtm up` state directory here), else the zone directory."""
    from gtm.control.steer_cli import change_in_directory, change_through_api

    if _use_api(args):
        state, version = change_through_api(control_cli.client(args), args.zone, endpoint,
                                            region, change, message)
        return state, f"-> version {version} through {args.api}"
    zones_dir = args.zones or default_zones_dir()
    state = change_in_directory(zones_dir, args.zone, endpoint, region, change)
    return state, f"-> {zones_dir}"


def cmd_zones_check(args: argparse.Namespace) -> int:
    from gtm.dns.loader import load_directory

    result = load_directory(args.directory)
    for zone in result.zones.zones.values():
        print(f"ok    {zone.origin.to_text():32} serial {zone.serial}  ({zone.source})")
    for error in result.errors:
        print(f"error {error}")
    return 1 if result.errors else 0



def cmd_zones_apply(args: argparse.Namespace) -> int:
    """Take a zone back from the control plane: its files' content becomes live, and
    `gtm up`'s watcher follows the files of that zone again."""
    from gtm.control.diff import render
    from gtm.control.zonedir import take_back

    control_cli.require_confirmation_or_yes(args)
    zones_dir = args.zones or default_zones_dir()
    zone = args.zone.rstrip(".") + "."
    api = control_cli.client(args)
    live = api.call("GET", "/v1/config")
    base = int(live.body["version"])
    body = {"document": take_back(zones_dir, zone, live.body["document"]),
            "message": f"zones apply {zone}: its files in {zones_dir} are live again"}
    preview = api.call("PUT", "/v1/config?dry_run=true", body, if_match=base).body
    if not preview["diff"]:
        print(f"version {base} already holds the files of {zone}; nothing to change")
        return 0
    print(f"changes against version {base}:")
    sys.stdout.write(render(preview["diff"]))
    if args.dry_run:
        return 0
    if not args.yes and not control_cli.confirm("apply these changes?"):
        print("nothing changed")
        return 1
    stored = api.call("PUT", "/v1/config", body, if_match=base).body
    print(f"version {stored['version']['version']} is live; {zone} follows its files again")
    return 0


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
        "--trust-private", action="store_true",
        help="show the file's record for a private or other special-purpose address too "
             "(steering never uses those)")
    lookup.set_defaults(handler=cmd_geo_lookup)


def cmd_geo_build(args: argparse.Namespace) -> int:
    from gtm.geo.build import build_mmdb
    from gtm.wording import counted

    count = build_mmdb(args.csv, args.out)
    print(f"wrote {counted(count, 'network')} to {args.out}")
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
