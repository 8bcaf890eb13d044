"""`gtm tsig add | list | remove`: TSIG keys kept (sealed) by the control plane.

``add`` prints the secret once, in the forms the usual peers take (BIND's ``key`` block
for nsupdate and certbot's credentials, Knot's and NSD's); the control plane keeps it
sealed and never shows it again.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gtm.config.tsig import ALGORITHMS
from gtm.control.cli import client


def add_commands(commands: Any, client_options: Any) -> None:
    tsig = commands.add_parser("tsig", help="TSIG keys for zone transfers and updates")
    sub = tsig.add_subparsers(dest="tsig_command", required=True)
    add = client_options(sub.add_parser("add", help="make a key (its secret is shown once)"))
    add.add_argument("name", help="the key's name (lower-case labels: xfr-knot, acme)")
    add.add_argument("--algorithm", choices=ALGORITHMS, default="hmac-sha256")
    add.add_argument("--json", action="store_true", help="print the key as JSON")
    add.set_defaults(handler=cmd_add)
    listing = client_options(sub.add_parser("list", help="the keys (never their secrets)"))
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=cmd_list)
    remove = client_options(sub.add_parser("remove", help="delete a key"))
    remove.add_argument("name")
    remove.set_defaults(handler=cmd_remove)


def cmd_add(args: argparse.Namespace) -> int:
    body = client(args).call("POST", "/v1/tsig", {"name": args.name,
                                                   "algorithm": args.algorithm}).body
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    name, algorithm, secret = body["name"], body["algorithm"], body["secret"]
    print(f'key "{name}" {{\n    algorithm {algorithm};\n    secret "{secret}";\n}};')
    print(f"# version {body['version']}; the secret is not shown again", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    items = client(args).get("/v1/tsig")["items"]
    if args.json:
        print(json.dumps({"keys": items}, indent=2))
        return 0
    for item in items:
        print(f"{item['name']:32} {item['algorithm']}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    body = client(args).call("DELETE", f"/v1/tsig/{args.name}").body
    print(f"TSIG key {args.name} removed (version {body['version']})")
    return 0
