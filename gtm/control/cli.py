"""The control plane's subcommands: `gtm api`, `gtm config ...`, `gtm token ...`, `gtm status`.

`config`, `token` and `status` talk to the API (``--api``, ``GTM_API``) with a
bearer token (``--token``, ``GTM_TOKEN``, or the embedded default's admin token
file). `token create --store URL` works on the store directly: that is how the
first admin token of a PostgreSQL deployment is made.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gtm.config_reader import read_json_file
from gtm.control.client import ADMIN_TOKEN_FILE, Client
from gtm.control.liveness import DEFAULT_GONE_AFTER, Liveness
from gtm.errors import ConfigError
from gtm.wording import plural

# Every `gtm` command imports this module to build its parser: the API server, the
# follower and the diff renderer (aiohttp, the document compiler: a third of a second)
# are imported by the commands that use them.
if TYPE_CHECKING:
    from gtm.control.follower import FollowerSettings
    from gtm.control.sectionfollow import SectionFollow

DEFAULT_API = "http://127.0.0.1:8080"
DEFAULT_STATE = Path("var/control")


def add_follow_options(serve: argparse.ArgumentParser) -> None:
    """`gtm serve --control URL ...`: follow the control plane instead of a zone directory."""
    group = serve.add_argument_group("control plane")
    group.add_argument("--control", metavar="STORE_URL",
                       help="follow this store (postgresql://... or sqlite:///path)")
    group.add_argument("--node-id", help="this node's name in `gtm status` (default: host:pid)")
    group.add_argument("--state-dir", type=Path, help="where the snapshot is kept")
    group.add_argument("--redis", metavar="URL", help="Redis for instant announcements")
    group.add_argument("--namespace", default="gtm", help="schema and key prefix (gtm)")
    group.add_argument("--reconcile-interval", type=float, default=2.0,
                       help="seconds between checks of the store (2)")
    group.add_argument("--no-store-notify", action="store_true",
                       help="ignore PostgreSQL NOTIFY (to measure Redis or reconcile alone)")
    group.add_argument("--secret-key-file", type=Path, default=None, metavar="FILE",
                       help="a copy of the control plane's secret key: opens the deployment's "
                       "DNS cookie secrets (default: $GTM_SECRET_KEY_FILE)")


def follower_settings(args: argparse.Namespace) -> FollowerSettings | None:
    from gtm.control.follower import FollowerSettings

    if args.control is None:
        return None
    if args.state_dir is None:
        raise ConfigError("--control needs --state-dir (the snapshot lives there)",
                          "command line", "--state-dir")
    if args.reconcile_interval <= 0:
        raise ConfigError("must be above 0", "command line", "--reconcile-interval")
    node_id = args.node_id or f"{os.uname().nodename}:{os.getpid()}"
    return FollowerSettings(node_id=node_id, state_dir=args.state_dir, store_url=args.control,
                            redis_url=args.redis, namespace=args.namespace,
                            reconcile_interval=args.reconcile_interval,
                            store_notify=not args.no_store_notify,
                            secret_key_file=args.secret_key_file)


def section_follow(args: argparse.Namespace, kind: str) -> SectionFollow | None:
    """The same options, for a node of another kind that follows one section entry
    (`gtm lb serve --control`: kind lb)."""
    from gtm.control.sectionfollow import SectionFollow

    settings = follower_settings(args)
    return None if settings is None else SectionFollow(replace(settings, kind=kind))


def add_commands(commands: Any) -> None:
    api = commands.add_parser("api", help="run the control plane API (PostgreSQL + Redis)")
    api.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT")
    api.add_argument("--postgres", "--store", dest="store", metavar="URL",
                     help="store URL (default: SQLite in --state-dir)")
    api.add_argument("--redis", metavar="URL")
    api.add_argument("--namespace", default="gtm")
    api.add_argument("--state-dir", type=Path, default=DEFAULT_STATE)
    api.add_argument("--store-timeout", type=float, default=5.0, metavar="SECONDS",
                     help="the longest one PostgreSQL statement may take before a request "
                     "gets 503 with the reason (5)")
    api.add_argument("--node-stale-after", type=float, metavar="SECONDS",
                     help="a node silent this long is stale in `gtm status` (default: "
                     "3 of its own report intervals)")
    api.add_argument("--node-gone-after", type=float, default=DEFAULT_GONE_AFTER,
                     metavar="SECONDS", help="a node silent this long is gone: listed only "
                     f"with `gtm status --all` ({DEFAULT_GONE_AFTER:g})")
    api.add_argument("--secret-key-file", type=Path, metavar="FILE",
                     help="seals certificates' private keys (default: $GTM_SECRET_KEY_FILE, "
                     "else STATE_DIR/secret.key; made when missing only with the SQLite store)")
    add_tls_options(api, "--tls")
    api.set_defaults(handler=cmd_api)

    config = commands.add_parser("config", help="the versioned configuration")
    sub = config.add_subparsers(dest="config_command", required=True)
    apply = client_options(sub.add_parser("apply", help="make the live config equal FILE"))
    apply.add_argument("-f", "--file", type=Path, required=True, help="JSON document")
    apply.add_argument("-m", "--message", default="")
    apply.add_argument("--dry-run", action="store_true", help="show the diff, change nothing")
    apply.add_argument("--yes", action="store_true",
                       help="apply without asking (required when stdin is not a terminal)")
    apply.set_defaults(handler=cmd_apply)
    diff = client_options(sub.add_parser("diff", help="FILE against live, or two versions"))
    diff.add_argument("-f", "--file", type=Path)
    diff.add_argument("--from", dest="from_version", type=int)
    diff.add_argument("--to", dest="to_version", type=int)
    diff.set_defaults(handler=cmd_diff)
    history = client_options(sub.add_parser("history", help="versions, newest first"))
    history.add_argument("--limit", type=int, default=20)
    history.set_defaults(handler=cmd_history)
    get = client_options(sub.add_parser("get", help="print a version's document"))
    get.add_argument("--version", dest="number", type=int)
    get.set_defaults(handler=cmd_get)
    rollback = client_options(sub.add_parser("rollback", help="new version equal to N"))
    rollback.add_argument("number", type=int)
    rollback.add_argument("-m", "--message", default="")
    rollback.set_defaults(handler=cmd_rollback)

    token = commands.add_parser("token", help="API tokens")
    tsub = token.add_subparsers(dest="token_command", required=True)
    create = client_options(tsub.add_parser("create", help="create a token (shown once)"))
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=["viewer", "editor", "admin"])
    create.add_argument("--store", metavar="URL", help="write to the store directly")
    create.add_argument("--namespace", default="gtm")
    create.set_defaults(handler=cmd_token_create)
    revoke = client_options(tsub.add_parser("revoke", help="revoke a token by id"))
    revoke.add_argument("id")
    revoke.set_defaults(handler=cmd_token_revoke)
    tlist = client_options(tsub.add_parser("list", help="list tokens"))
    tlist.set_defaults(handler=cmd_token_list)

    status = client_options(commands.add_parser("status", help="every node and its version"))
    status.add_argument("--all", action="store_true",
                        help="also nodes gone silent long ago (hidden by default)")
    status.set_defaults(handler=cmd_status)


def tls_files(cert: Path | None, key: Path | None, prefix: str) -> tuple[Path, Path] | None:
    """Both files or neither: one alone is a usage error."""
    if (cert is None) != (key is None):
        raise ConfigError(f"{prefix}-cert and {prefix}-key go together", "command line")
    return (cert, key) if cert is not None and key is not None else None


def add_tls_options(parser: argparse.ArgumentParser, prefix: str) -> None:
    """--tls-cert/--tls-key (``prefix`` --api-tls for gtm up): HTTPS for the API."""
    dest = prefix.removeprefix("--").replace("-", "_")
    parser.add_argument(f"{prefix}-cert", dest=f"{dest}_cert", type=Path, metavar="FILE",
                        help="serve the API over HTTPS with this certificate chain (PEM; "
                        "polled: a replaced pair serves new connections)")
    parser.add_argument(f"{prefix}-key", dest=f"{dest}_key", type=Path, metavar="FILE",
                        help="... and its private key")


def client_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--api", default=os.environ.get("GTM_API", DEFAULT_API))
    parser.add_argument("--ca", type=Path, default=_env_path("GTM_API_CA"), metavar="FILE",
                        help="CA bundle the API's HTTPS certificate must chain to "
                        "(default: $GTM_API_CA, else the system's)")
    parser.add_argument("--token", default=os.environ.get("GTM_TOKEN"),
                        help=f"bearer token (default: $GTM_TOKEN, or {DEFAULT_STATE}/"
                        f"{ADMIN_TOKEN_FILE})")
    return parser


def client(args: argparse.Namespace) -> Client:
    token = args.token
    default_file = DEFAULT_STATE / ADMIN_TOKEN_FILE
    if token is None and default_file.exists():
        token = default_file.read_text().strip()
    return Client(args.api, token, getattr(args, "ca", None))


def _env_path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def cmd_api(args: argparse.Namespace) -> int:
    from gtm.config.settings import parse_listen
    from gtm.control.plane import ControlSettings, start_control_plane
    from gtm.process import run_async, wait_for_stop

    listen = parse_listen(args.listen, default_port=8080)
    # With a shared store, every control-plane node must seal with the same key: a key
    # made here would differ from the others', so only the single-node default makes one.
    settings = ControlSettings(host=listen.host, port=listen.port, store_url=args.store,
                               redis_url=args.redis, namespace=args.namespace,
                               state_dir=args.state_dir, secret_key_file=args.secret_key_file,
                               create_secret_key=args.store is None,
                               tls_cert=args.tls_cert, tls_key=args.tls_key,
                               store_timeout=args.store_timeout,
                               liveness=liveness(args.node_stale_after, args.node_gone_after))
    tls_files(args.tls_cert, args.tls_key, "--tls")
    if not 0 < args.store_timeout <= 300:
        raise ConfigError("must be above 0 and at most 300", "command line", "--store-timeout")

    async def main() -> None:
        plane = await start_control_plane(settings)
        print(f"control plane API on {plane.url}", file=sys.stderr, flush=True)

        async def nothing() -> None:
            return None

        await wait_for_stop(on_reload=nothing)
        await plane.stop()

    run_async(main)
    return 0


def liveness(stale_after: float | None, gone_after: float) -> Liveness:
    for name, value in (("--node-stale-after", stale_after), ("--node-gone-after", gone_after)):
        if value is not None and not 0 < value <= 365 * 86400:
            raise ConfigError("must be above 0 and at most a year", "command line", name)
    if stale_after is not None and stale_after >= gone_after:
        raise ConfigError("must be less than --node-gone-after", "command line",
                          "--node-stale-after")
    return Liveness(stale_after, gone_after)


def read_document(path: Path) -> dict[str, Any]:
    document = read_json_file(path)
    if not isinstance(document, dict):
        raise ConfigError("the document must be a JSON object", str(path), "$")
    return document


def cmd_apply(args: argparse.Namespace) -> int:
    from gtm.control.diff import render

    require_confirmation_or_yes(args)
    api = client(args)
    document = read_document(args.file)
    live = api.call("GET", "/v1/config")
    base = int(live.body["version"])
    body = {"document": document, "message": args.message or f"apply {args.file.name}"}
    preview = api.call("PUT", "/v1/config?dry_run=true", body, if_match=base).body
    print(f"changes against version {base}:")
    sys.stdout.write(render(preview["diff"]))
    for warning in preview.get("warnings", []):
        print(f"warning: {warning}")
    if args.dry_run or not preview["diff"]:
        return 0
    if not args.yes and not confirm("apply these changes?"):
        print("nothing changed")
        return 1
    # Same base as the preview: if anyone committed since, this is a 409, not a surprise.
    stored = api.call("PUT", "/v1/config", body, if_match=base).body
    print(f"version {stored['version']['version']} is live")
    return 0


def require_confirmation_or_yes(args: argparse.Namespace) -> None:
    """A change is confirmed at a terminal or asked for with --yes: a script, a pipe or
    a cron job without a terminal never changes the live configuration by default."""
    if args.yes or args.dry_run or sys.stdin.isatty():
        return
    raise ConfigError("stdin is not a terminal, so the change cannot be confirmed and "
                      "nothing was changed; add --yes to apply it (--dry-run to preview)",
                      "command line", "--yes")


def confirm(question: str) -> bool:
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def cmd_diff(args: argparse.Namespace) -> int:
    from gtm.control.diff import render

    api = client(args)
    if args.file is not None:
        base = int(api.get("/v1/config")["version"])
        body = {"document": read_document(args.file)}
        reply = api.call("PUT", "/v1/config?dry_run=true", body, if_match=base).body
        print(f"changes from version {base} to {args.file}:")
        sys.stdout.write(render(reply["diff"]))
        return 0
    to = args.to_version if args.to_version is not None else int(api.get("/v1/config")["version"])
    query = "" if args.from_version is None else f"?against={args.from_version}"
    reply = api.get(f"/v1/versions/{to}/diff{query}")
    print(f"changes from version {reply['from']} to {reply['to']}:")
    sys.stdout.write(render(reply["diff"]))
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    items = client(args).get(f"/v1/versions?limit={max(1, min(args.limit, 500))}")["items"]
    for item in items:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(item["created_at"]))
        extra = f" (rollback to {item['rollback_of']})" if item["rollback_of"] else ""
        changes = f"{item['changes']:>3} {plural(item['changes'], 'change'):<7}"
        print(f"{item['version']:>6}  {when}  {item['author']:<24} {changes}"
              f"  {item['message']}{extra}")
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    api = client(args)
    path = "/v1/config" if args.number is None else f"/v1/versions/{args.number}"
    print(json.dumps(api.get(path)["document"], indent=2, sort_keys=True))
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from gtm.control.diff import render

    api = client(args)
    base = int(api.get("/v1/config")["version"])
    reply = api.call("POST", f"/v1/versions/{args.number}/rollback",
                     {"message": args.message}, if_match=base).body
    sys.stdout.write(render(reply["diff"]))
    print(f"version {reply['version']['version']} is live (equal to version {args.number})")
    return 0


def cmd_token_create(args: argparse.Namespace) -> int:
    if args.store:
        secret, token_id = asyncio.run(_create_in_store(args))
    else:
        reply = client(args).call("POST", "/v1/tokens", {"name": args.name, "role": args.role})
        secret, token_id = reply.body["token"], reply.body["id"]
    print(f"token {token_id} ({args.role}); shown once, keep it safe:", file=sys.stderr)
    print(secret)
    return 0


async def _create_in_store(args: argparse.Namespace) -> tuple[str, str]:
    from gtm.control.service import ConfigService
    from gtm.control.store import hash_secret, new_token
    from gtm.control.stores import store_from_url

    store = store_from_url(args.store, args.namespace)
    await store.open()
    try:
        record, secret = new_token(args.name, args.role, f"cli:{os.environ.get('USER', '?')}")
        await store.add_token(record, hash_secret(secret))
        await ConfigService(store).audit(record.created_by, "token.create", record.id, "ok",
                                         {"name": args.name, "role": args.role})
        return secret, record.id
    finally:
        await store.close()


def cmd_token_revoke(args: argparse.Namespace) -> int:
    client(args).call("DELETE", f"/v1/tokens/{args.id}")
    print(f"token {args.id} revoked")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    for item in client(args).get("/v1/tokens")["items"]:
        state = "revoked" if item["revoked_at"] else "live"
        print(f"{item['id']}  {item['role']:<7} {state:<8} {item['name']}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    reply = client(args).get("/v1/nodes" + ("?all=true" if args.all else ""))
    print(f"live version {reply['version']}")
    from gtm.health.summary import status_column

    print(f"{'NODE':<28} {'KIND':<6} {'STATE':<5} {'VERSION':>7} {'LAG':>4} "
          f"{'LAST CONTACT':>13}  {'HEALTH':<16} ERROR")
    for node in reply["items"]:
        info = node.get("info") or {}
        error = info.get("error") or ""
        print(f"{node['node_id']:<28} {node['kind']:<6} {node.get('state', '?'):<5} "
              f"{node['version']:>7} {node['lag_versions']:>4} "
              f"{node['seconds_since_contact']:>11.1f} s  {status_column(info):<16} {error}")
    hidden = reply.get("gone_hidden", 0)
    if hidden:
        print(f"({hidden} gone node{'s' if hidden != 1 else ''} not shown: --all lists them)")
    return 0

