"""`gtm lb ...` and `gtm certs list`: the balancer's subcommands of `gtm`.

gtm.cli finds `register` through the `gtm.cli` entry-point group (pyproject.toml) and
never imports this package; everything it lends (the control-plane client options and
certificate listing) comes in through `hooks`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any


def register(hooks: Any) -> None:
    """Add `gtm lb serve`, `gtm lb demo-backend` and `gtm certs list`."""
    lb = hooks.commands.add_parser("lb", help="the regional load balancer")
    lb_commands = lb.add_subparsers(dest="lb_command", required=True)
    serve = lb_commands.add_parser(
        "serve", help="run the balancer from a TOML config or the control plane",
        description="Run a regional balancer. Its [lb] table comes from a TOML file "
        "(--config FILE) or from the control plane's configuration, section lb.REGION "
        "(--control STORE_URL --region REGION --state-dir DIR, the options of "
        "`gtm serve --control`): the balancer then follows new versions, reloading when "
        "its table changes, and starts from the last one it saw (kept in --state-dir) "
        "when the store is unreachable.")
    serve.add_argument("--config", type=Path, help="TOML file ([lb] table)")
    serve.add_argument("--workers", type=int, help="worker processes (default: lb.workers)")
    serve.add_argument("--region", help="with --control: serve the table lb.REGION")
    serve.add_argument("--admin-token-file", type=Path, metavar="FILE",
                       help="with --control: the admin API's bearer token, read from FILE "
                       "(or from GTM_LB_ADMIN_TOKEN); the shared document holds no secret")
    serve.add_argument("--check", action="store_true",
                       help="compile the configuration and exit, binding nothing: --config "
                       "FILE, or with --control the region file last followed in "
                       "--state-dir; exit 0, or 2 with the error and its path")
    hooks.follow_options(serve)
    serve.set_defaults(handler=lambda args: cmd_lb_serve(args, hooks.section_follow))
    demo = lb_commands.add_parser("demo-backend", help="tiny HTTP backends for trying it out")
    demo.add_argument("--listen", action="append", required=True, metavar="ADDR:PORT")
    demo.set_defaults(handler=cmd_lb_demo)

    listing = hooks.certs().add_parser("list", help="pairs in a directory, with expiry")
    where = listing.add_mutually_exclusive_group(required=True)
    where.add_argument("--dir", type=Path, help="directory of NAME.crt + NAME.key / NAME.pem")
    where.add_argument("--config", type=Path, help="balancer TOML: its TLS listeners' dirs")
    where.add_argument("--control", action="store_true",
                       help="the control plane's certificates (through --api)")
    hooks.client_options(listing)
    listing.add_argument("--warn-days", type=float, default=30.0,
                         help="mark pairs expiring within this many days (30)")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(handler=lambda args: certs_list(args, hooks.list_control_certificates))


def certs_list(args: argparse.Namespace, list_control: Callable[[argparse.Namespace], int]) -> int:
    """Exit status 1 when a pair is broken or expired, so cron jobs can alert on it."""
    import datetime as dt

    from regional_lb.config import load_config
    from regional_lb.tls.inventory import inventory, render_json, render_table

    if args.control:
        return list_control(args)
    if args.dir is not None:
        directories = [args.dir]
    else:
        config = load_config(args.config)
        directories = list(dict.fromkeys(
            spec.tls.certificates for spec in config.listeners
            if spec.tls is not None and spec.tls.certificates is not None))
        if any(spec.tls is not None and spec.tls.control for spec in config.listeners):
            print("# listeners with control = true also serve the control plane's "
                  "certificates: gtm certs list --control")
    now = dt.datetime.now(dt.UTC)
    failed = False
    for directory in directories:
        found, broken = inventory(directory, now)
        if len(directories) > 1:
            print(f"# {directory}")
        render = render_json if args.json else render_table
        print(render(found, broken, now, args.warn_days))
        failed = failed or bool(broken) or any(i.days_left(now) <= 0 for i in found)
    return 1 if failed else 0


def cmd_lb_serve(args: argparse.Namespace,
                 section_follow: Callable[[argparse.Namespace, str], Any]) -> int:
    """Exactly one source: a file, or the control plane (section lb, entry --region)."""
    from gtm.errors import ConfigError
    from regional_lb.node import serve as lb_serve
    from regional_lb.node import serve_followed

    if (args.config is None) == (args.control is None):
        raise ConfigError("give --config FILE or --control STORE_URL --region REGION "
                          "(one of the two)", "command line", "--config")
    if args.config is not None:
        for flag, value in (("--region", args.region),
                            ("--admin-token-file", args.admin_token_file)):
            if value is not None:
                raise ConfigError("is for --control (a file holds its [lb] table whole)",
                                  "command line", flag)
        return check(args) if args.check else lb_serve(args.config, args.workers)
    if args.region is None:
        raise ConfigError("--control needs --region (the table lb.REGION to serve)",
                          "command line", "--region")
    if args.check:
        return check(args)
    return serve_followed(section_follow(args, "lb"), args.region, args.workers,
                          admin_token(args.admin_token_file))


def check(args: argparse.Namespace) -> int:
    """`gtm lb serve --check`: the configuration compiled as serving would compile it,
    with this host's files checked; nothing bound, started or written. An error
    (a GtmError) ends the command with its path, through gtm's one error boundary."""
    from gtm.errors import ConfigError
    from regional_lb.config import load_config
    from regional_lb.follow import RegionFile

    if args.config is not None:
        config, source = load_config(args.config), str(args.config)
    else:
        if args.state_dir is None:
            raise ConfigError("--check --control reads the region file the balancer "
                              "followed: give its --state-dir", "command line", "--state-dir")
        region_file = RegionFile(args.state_dir, args.region,
                                 admin_token(args.admin_token_file))
        config, source = region_file.load(), str(region_file.path)
    print(f"{source}: ok (region {config.region}: {len(config.listeners)} listeners, "
          f"{len(config.pools)} pools)")
    return 0


def admin_token(path: Path | None) -> str | None:
    """The admin API's token of a followed balancer: a file's first line, else
    GTM_LB_ADMIN_TOKEN, else none (the admin API, if the table has one, refuses all)."""
    import os

    from gtm.errors import ConfigError

    if path is None:
        return os.environ.get("GTM_LB_ADMIN_TOKEN") or None
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the admin token: {exc}", str(path),
                          "--admin-token-file") from exc
    token = lines[0].strip() if lines else ""
    if not token:
        raise ConfigError("is empty (one line: the token)", str(path), "--admin-token-file")
    return token


def cmd_lb_demo(args: argparse.Namespace) -> int:
    from gtm.config.settings import parse_listen
    from regional_lb.demo import serve_demo

    return serve_demo([parse_listen(text) for text in args.listen])
