"""The control plane's ``lb`` section: one ``[lb]`` table per region, compiled by the
balancer's own compiler (regional_lb.config) wherever the document is compiled.

    {"lb": {"eu-west": {"listeners": [...], "pools": [...], ...}, "us-east": {...}}}

gtm finds :func:`validate_lb` through the ``gtm.sections`` entry point (pyproject.toml),
so the API refuses a table the balancer would refuse, before anything is stored, with
the error's path in the document (``lb.eu-west.pools[0].backends[1].address``). This
module stays light: gtm loads it at import, and the compiler is imported at first use.

Paths a table names (certificate directories, CA bundles, key files) are files of the
balancer's host: the API and the DNS nodes check the table without looking for them,
and the balancer checks them when a version arrives (one it cannot serve is refused
there, in its log and `gtm status`, and it keeps what it serves). Relative paths start at
the balancer's working directory.

No secret is kept in the document, which every viewer token can read: a table with
``admin_token`` is refused; the balancer takes its admin token from its own host
(``gtm lb serve --control ... --admin-token-file FILE``).

A region's table may be stored before it has a listener (its pools first: a listener
names a pool, so a tool that writes one entry at a time, such as the Terraform
provider, cannot write them the other way round). Such a table is compiled whole
except for the listeners, and a balancer that follows it refuses it ("needs at least
one [[lb.listeners]]") and keeps serving the table it had, or waits for a complete one.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gtm.config_reader import files_elsewhere
from gtm.errors import ConfigError

if TYPE_CHECKING:
    from regional_lb.config import LbConfig

SECTION = "lb"
SECRET = "admin_token"  # the one secret of an [lb] table: never in the shared document
# A region name is a key of the report channels (<ns>:lb:region:<region>:...) and a
# step of JSON paths: letters, digits, '-' and '_' keep both unambiguous.
REGION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")


def region_path(region: str, section: str = SECTION) -> str:
    """Where a region's table is in the document: ``lb.eu-west`` (``lb["odd name"]``)."""
    if REGION_NAME.fullmatch(region):
        return f"{section}.{region}"
    return f"{section}[{json.dumps(region)}]"


def validate_lb(value: Any, source: str, path: str) -> dict[str, LbConfig]:
    """The ``lb`` section: every region's table compiled, or the first error by path."""
    if not isinstance(value, dict):
        raise ConfigError("must be an object of region name to [lb] table", source, path)
    for region, table in value.items():
        if isinstance(table, dict) and SECRET in table:
            raise ConfigError(
                "a secret is not kept in the configuration document (every viewer reads "
                "it): give the balancer its token on its host (gtm lb serve --control ... "
                "--admin-token-file FILE)", source, f"{region_path(region, path)}.{SECRET}")
    with files_elsewhere():  # the balancer's files: checked on its host, not here
        return {region: region_config(region, without_listeners_yet(table), source, path)
                for region, table in value.items()}


# Stands in for the listeners of a table still being assembled (see the module's text):
# a tcp listener takes any pool and adds no check of its own to the pools'.
_NO_LISTENER_YET = {"name": "(no listener yet)", "bind": "127.0.0.1:1", "mode": "tcp"}


def without_listeners_yet(table: Any) -> Any:
    """A table with pools but no listener, with a stand-in listener so that everything
    else in it is compiled; any other table as it is."""
    if not isinstance(table, dict) or table.get("listeners", []) != []:
        return table
    pools = table.get("pools")
    first = pools[0] if isinstance(pools, list) and pools else None
    if not isinstance(first, dict) or not isinstance(first.get("name"), str):
        return table  # no pool: refused for that, as before
    return {**table, "listeners": [{**_NO_LISTENER_YET, "pool": first["name"]}]}


def region_config(region: str, table: Any, source: str, section: str = SECTION) -> LbConfig:
    """One region's table, as ``gtm lb serve --config`` compiles a file's [lb] table.

    ``region`` in the table may be left out (the section's key is the name) or must
    be that key: a report under another name would describe the wrong region.
    """
    from regional_lb.config import build_config

    where = region_path(region, section)
    if not REGION_NAME.fullmatch(region):
        raise ConfigError("a region name is letters, digits, '-' and '_' (at most 63)",
                          source, where)
    if not isinstance(table, dict):
        raise ConfigError("must be an object (the region's [lb] table)", source, where)
    if table.get("region", region) != region:
        raise ConfigError(f"must be {json.dumps(region)}, the name it is kept under "
                          "(or left out)", source, f"{where}.region")
    try:
        return build_config({**table, "region": region}, source)
    except ConfigError as exc:
        raise ConfigError(exc.reason, source, _rebased(exc.where, where)) from exc


def _rebased(inner: str | int | None, where: str) -> str:
    """``lb.pools[0].weight`` of a file's [lb] table -> ``lb.eu-west.pools[0].weight``."""
    text = "" if inner is None else str(inner)
    if text == SECTION:
        return where
    if text.startswith((f"{SECTION}.", f"{SECTION}[")):
        return where + text[len(SECTION):]
    return f"{where}.{text}" if text else where


# The keys whose values are paths relative to the config file (config_reader's
# existing_path / relative_path, and config_tls's cache and sqlite store), by table.
_PATH_KEYS: dict[str, tuple[str, ...]] = {
    "pools": ("tls_ca",),
    "listener_tls": ("certificates", "client_ca"),
    "tls": ("secret_key_file", "ticket_key_file", "control_cache"),
    "acme": ("state_dir", "ca_bundle", "control_ca", "output", "control_token_file",
             "eab_hmac_key_file"),
}


def anchored(table: dict[str, Any], config_file: Path) -> dict[str, Any]:
    """A file's [lb] table that means the same in the document: its relative paths (and
    the defaults that are relative to the file) made absolute against the file's
    directory, since a table in the document is read relative to the working directory.
    Values that are not what the compiler expects are left for it to refuse."""
    directory = config_file.resolve().parent
    table = copy.deepcopy(table)

    def anchor(part: Any, keys: tuple[str, ...]) -> None:
        if not isinstance(part, dict):
            return
        for key in keys:
            value = part.get(key)
            if isinstance(value, str) and value and not Path(value).is_absolute():
                part[key] = str(directory / value)

    for pool in _list(table.get("pools")):
        anchor(pool, _PATH_KEYS["pools"])
    for listener in _list(table.get("listeners")):
        if isinstance(listener, dict):
            anchor(listener.get("tls"), _PATH_KEYS["listener_tls"])
    anchor(table.get("admin_tls"), _PATH_KEYS["listener_tls"])
    tls = table.setdefault("tls", {}) if _serves_control_certificates(table) \
        else table.get("tls")
    if isinstance(tls, dict):
        if _serves_control_certificates(table):  # by default beside the file; "": none
            tls.setdefault("control_cache", f"{config_file.name}.certificates.json")
        anchor(tls, _PATH_KEYS["tls"])
        store = tls.get("control_store")
        if isinstance(store, str) and store.startswith("sqlite://"):
            path = store.removeprefix("sqlite://")
            if path and not Path(path).is_absolute():
                tls["control_store"] = f"sqlite://{directory / path}"
    acme = table.get("acme")
    if isinstance(acme, dict):
        acme.setdefault("state_dir", "acme")
        anchor(acme, _PATH_KEYS["acme"])
    return table


def _serves_control_certificates(table: dict[str, Any]) -> bool:
    parts = [listener.get("tls") for listener in _list(table.get("listeners"))
             if isinstance(listener, dict)] + [table.get("admin_tls")]
    return any(isinstance(part, dict) and part.get("control") for part in parts)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
