"""The deployment's DNS cookie secrets, kept sealed in the configuration document.

Every DNS node following the control plane issues and accepts the same server cookies
(RFC 9018), so a client's cookie works at whichever node its query reaches. The secrets
are the ``dns_cookies`` section (gtm.config.cookies), sealed with the control plane's
secret key; a node opens them with its copy of that key when it applies a version.

Rotation puts a new secret first and keeps the one before it, still accepted, until the
next rotation: rotate at most hourly (a server cookie lives an hour, RFC 9018 4.3), so
every cookie issued before a rotation is accepted until it expires anyway.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from typing import Any

from gtm import log
from gtm.config.cookies import DNS_COOKIES, SealedCookieSecret
from gtm.config.document import CompiledConfig
from gtm.control.service import ConfigService
from gtm.dns.cookies import Cookies, new_secret
from gtm.errors import SealingError
from gtm.sealing import Sealed, SecretKey

SEAL_NAME = "dns cookie secret"  # the sealing's associated data: not a certificate's key
KEEP_PREVIOUS = 1  # secrets kept after a rotation besides the new one


def sealed_entry(key: SecretKey, secret: bytes, created_at: float) -> dict[str, Any]:
    sealed = key.seal(SEAL_NAME, secret)
    return {"sealed": base64.b64encode(sealed.ciphertext).decode("ascii"),
            "nonce": base64.b64encode(sealed.nonce).decode("ascii"),
            "key_id": sealed.key_id, "created_at": round(created_at, 3)}


def open_secrets(sealed: Sequence[SealedCookieSecret], key: SecretKey) -> list[bytes]:
    """The secrets in order; SealingError (naming the key ids) when one does not open."""
    return [key.unseal(SEAL_NAME, Sealed(item.ciphertext, item.nonce, item.key_id))
            for item in sealed]


async def ensure_cookie_secret(service: ConfigService, key: SecretKey, actor: str) -> int | None:
    """Store a first secret when the latest version has none; the new version, or None."""
    head = await service.store.head()
    document = await service.document_at(head)
    if DNS_COOKIES in document:
        return None
    return await rotate_cookie_secret(service, key, actor, base=head)


async def rotate_cookie_secret(service: ConfigService, key: SecretKey, actor: str,
                               base: int | None = None) -> int:
    """A new version whose first cookie secret is new; the previous one stays accepted."""
    if base is None:
        base = await service.store.head()

    def change(document: dict[str, Any]) -> dict[str, Any]:
        previous = list(document.get(DNS_COOKIES, {}).get("secrets", []))
        entry = sealed_entry(key, new_secret(), time.time())
        document[DNS_COOKIES] = {"secrets": [entry, *previous[:KEEP_PREVIOUS]]}
        return document

    proposal = await service.edit(base, actor, "DNS cookie secret rotated", change)
    assert proposal.version is not None
    return proposal.version.number


def apply_cookie_secrets(cookies: Cookies | None, compiled: CompiledConfig,
                         key: SecretKey | None) -> None:
    """Issue and accept the version's secrets from the next packet on. A node that cannot
    open them keeps the secrets it has (its own cookies keep working) and says why."""
    sealed = compiled.sections.get(DNS_COOKIES)
    if cookies is None or not sealed:
        return
    if key is None:
        log.dns.error("the configuration has DNS cookie secrets but this node has no secret "
                      "key to open them: its cookies are its own (give it the control "
                      "plane's key file)")
        return
    try:
        cookies.use(open_secrets(sealed, key))
    except SealingError as exc:
        log.dns.error("cannot open the DNS cookie secrets: %s; keeping this node's own", exc)
