"""The ``dns_cookies`` section: the deployment's DNS cookie secrets, sealed.

``{"secrets": [{"sealed": B64, "nonce": B64, "key_id": HEX, "created_at": UNIX}, ...]}``:
the first secret issues server cookies, every listed one is accepted (the overlap of a
rotation). Each is sealed with the control plane's secret key (gtm.sealing), so
the store, its backups and the API only ever show ciphertext; a DNS node opens them with
its copy of the key (gtm.control.cookies).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

from gtm.config_reader import Place

DNS_COOKIES = "dns_cookies"
MAX_SECRETS = 4
SECRET_KEYS = ("sealed", "nonce", "key_id", "created_at")


@dataclass(frozen=True)
class SealedCookieSecret:
    ciphertext: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    key_id: str
    created_at: float


def check_dns_cookies(value: Any, source: str, path: str) -> tuple[SealedCookieSecret, ...]:
    section = Place(source, path).table(value, ("secrets",))
    items = list(section.items("secrets")) if "secrets" in section else []
    if not 1 <= len(items) <= MAX_SECRETS:
        raise section.fail("secrets", f"must list 1 to {MAX_SECRETS} secrets")
    return tuple(_secret(place, item) for place, item in items)


def _secret(place: Place, item: Any) -> SealedCookieSecret:
    table = place.table(item, SECRET_KEYS)
    return SealedCookieSecret(
        ciphertext=_base64(table, "sealed"), nonce=_base64(table, "nonce"),
        key_id=table.text("key_id", empty=False), created_at=table.number("created_at", low=0),
    )


def _base64(table: Any, key: str) -> bytes:
    try:
        return base64.b64decode(table.text(key, empty=False), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise table.fail(key, "must be base64") from exc
