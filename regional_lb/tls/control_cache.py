"""The last certificates a balancer read from the control plane, kept on local disk.

Static stability: a balancer (re)started while the control plane's store cannot be
reached serves what it read last instead of nothing. The file holds the rows as the
store does: chains (public) and private keys still *sealed* (ciphertext, nonce, key
id), so a plaintext key is never written anywhere; it is written whole and renamed into
place, mode 0600.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gtm.atomic import PRIVATE, write_atomic
from gtm.errors import ConfigError
from gtm.store_access import CertificateRecord

VERSION = 1


def write_cache(path: Path, rows: Iterable[CertificateRecord]) -> None:
    items = [_encode(row) for row in sorted(rows, key=lambda r: r.revision)]
    data = json.dumps({"version": VERSION, "rows": items}, separators=(",", ":"))
    write_atomic(path, data, PRIVATE)  # keys are sealed, but the cache is still ours only


def read_cache(path: Path) -> list[CertificateRecord]:
    """The rows of a cache file; ConfigError (file and reason) when it cannot be used."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != VERSION:
            raise ValueError(f"version {data.get('version')!r}, not {VERSION}")
        return [_decode(item) for item in data["rows"]]
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", str(path)) from exc
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigError(f"not a certificate cache: {exc}", str(path)) from exc


def _encode(row: CertificateRecord) -> dict[str, Any]:
    item = asdict(row)
    item["sealed_key"] = base64.b64encode(row.sealed_key).decode("ascii")
    item["key_nonce"] = base64.b64encode(row.key_nonce).decode("ascii")
    item["names"] = list(row.names)
    return item


def _decode(item: dict[str, Any]) -> CertificateRecord:
    return CertificateRecord(**{
        **item, "sealed_key": base64.b64decode(item["sealed_key"]),
        "key_nonce": base64.b64decode(item["key_nonce"]), "names": tuple(item["names"])})
