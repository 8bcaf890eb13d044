"""`gtm certs upload | remove | keygen` and `gtm certs list --control`: certificates kept
by the control plane (through its API, with an admin token for changes).

A private key is sent to the API in the request body: over plain HTTP only to a
loopback address, unless ``--allow-plain-http`` says the network is trusted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from gtm.control.cli import client
from gtm.errors import ConfigError


def add_commands(certs: Any, client_options: Any) -> None:
    """Subcommands of `gtm certs` (its subparsers); ``client_options`` adds --api/--token."""
    upload = client_options(certs.add_parser(
        "upload", help="store a certificate in the control plane (key sealed)"))
    upload.add_argument("name", help="its name (letters, digits, . _ -)")
    upload.add_argument("--chain", type=Path, required=True,
                        help="PEM file: the leaf certificate, then intermediates")
    upload.add_argument("--key", type=Path, required=True, help="PEM file: its private key")
    upload.add_argument("--allow-plain-http", action="store_true",
                        help="send the key over plain HTTP to a non-loopback API")
    upload.set_defaults(handler=cmd_upload)
    remove = client_options(certs.add_parser(
        "remove", help="delete a certificate from the control plane"))
    remove.add_argument("name")
    remove.set_defaults(handler=cmd_remove)
    keygen = certs.add_parser("keygen", help="make a secret key file (seals private keys)")
    keygen.add_argument("file", type=Path, help="where to write it (never overwritten)")
    keygen.set_defaults(handler=cmd_keygen)


def cmd_upload(args: argparse.Namespace) -> int:
    chain, key = _read(args.chain), _read(args.key)
    _check_transport(args.api, args.allow_plain_http)
    reply = client(args).call("PUT", f"/v1/certificates/{args.name}",
                              {"chain": chain, "key": key})
    body = reply.body
    verb = "replaced" if body.get("replaced") else "stored"
    print(f"certificate {body['name']} {verb} (revision {body['revision']}): "
          f"{', '.join(body['names'])}, not after {body['not_after']}, key {body['key_type']}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    reply = client(args).call("DELETE", f"/v1/certificates/{args.name}")
    print(f"certificate {args.name} deleted (revision {reply.body['revision']})")
    return 0


def cmd_keygen(args: argparse.Namespace) -> int:
    from gtm.sealing import create_key  # cryptography: only this command

    key = create_key(args.file)
    print(f"secret key {key.id} written to {args.file} (mode 0600); give every control-plane "
          "node and every balancer serving its certificates the same file", file=sys.stderr)
    return 0


def list_control(args: argparse.Namespace) -> int:
    """`gtm certs list --control`: exit status 1 when a certificate has expired."""
    items = client(args).get("/v1/certificates")["items"]
    now = dt.datetime.now(dt.UTC)
    for item in items:
        left = (dt.datetime.fromisoformat(item["not_after"]) - now).total_seconds() / 86400
        item["days_left"] = round(left, 2)
        item["status"] = "EXPIRED" if left <= 0 else "WARN" if left <= args.warn_days else "ok"
    if args.json:
        print(json.dumps({"certificates": items}, indent=2))
    else:
        print(render(items))
    return 1 if any(item["status"] == "EXPIRED" for item in items) else 0


def render(items: list[dict[str, Any]]) -> str:
    rows = [("NAME", "REV", "KEY", "NOT AFTER (UTC)", "DAYS", "STATUS", "ISSUER", "NAMES")]
    for item in items:
        not_after = dt.datetime.fromisoformat(item["not_after"])
        rows.append((item["name"], str(item["revision"]), item.get("key_type", "?"),
                     f"{not_after:%Y-%m-%d %H:%M}", f"{item['days_left']:.1f}", item["status"],
                     _common_name(item.get("issuer", "")), ",".join(item["names"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths,
                                                                        strict=False))
                     + "  " + row[-1] for row in rows)


def _common_name(issuer: str) -> str:
    for part in issuer.split(","):
        if part.startswith("CN="):
            return part[3:]
    return issuer


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", str(path)) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError("is not PEM (PEM is ASCII text)", str(path)) from exc


def _check_transport(api: str, allow_plain_http: bool) -> None:
    """A private key crosses the network in the clear over http:// to another host."""
    url = urlparse(api)
    if url.scheme != "http" or allow_plain_http:
        return
    host = (url.hostname or "").strip("[]")
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ConfigError(f"refusing to send a private key over plain HTTP to {url.hostname}: "
                      "use an https:// API (or --allow-plain-http on a trusted network)",
                      "command line", "--api")
