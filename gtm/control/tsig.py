"""TSIG keys (RFC 8945) kept sealed in the configuration document.

The ``tsig`` section (gtm.config.tsig) holds each key's secret sealed with the control
plane's secret key, as the DNS cookie secrets are (gtm.control.cookies): the store and the
API only ever hold ciphertext; the secret is shown once, to whoever added the key. A DNS
node opens the keys with its copy of the secret key when it applies a version.
"""

from __future__ import annotations

import base64
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dns.name
import dns.tsig

from gtm import log
from gtm.config.tsig import ALGORITHMS, TRANSFERS, TSIG, UPDATES, SealedTsigKey, valid_key_name
from gtm.control.service import ConfigService
from gtm.errors import ConfigError, NotFound, SealingError
from gtm.sealing import Sealed, SecretKey

SEAL_NAME = "tsig key"  # the sealing's associated data
SECRET_BYTES = {"hmac-sha256": 32, "hmac-sha512": 64}  # the HMAC's output size (RFC 8945 6)
DNS_ALGORITHMS = {"hmac-sha256": dns.tsig.HMAC_SHA256, "hmac-sha512": dns.tsig.HMAC_SHA512}


@dataclass(frozen=True)
class NewKey:
    name: str
    algorithm: str
    secret: str  # base64, as nsupdate, Knot, NSD and certbot take it
    version: int


def describe(sealed: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The keys of a ``tsig`` section without their secrets."""
    keys = sealed.get("keys", {}) if isinstance(sealed, dict) else {}
    return [{"name": name, "algorithm": item.get("algorithm"),
             "created_at": item.get("created_at")} for name, item in sorted(keys.items())]


async def add_key(service: ConfigService, key: SecretKey, name: str, algorithm: str,
                  actor: str) -> NewKey:
    """A new key with a fresh secret, stored sealed in a new version."""
    if not valid_key_name(name):
        raise ConfigError("a key name is lower-case letters, digits, '-' and '_' in "
                          "dot-separated labels", "request", "name")
    if algorithm not in ALGORITHMS:
        raise ConfigError(f"must be one of {', '.join(ALGORITHMS)}", "request", "algorithm")
    secret = secrets.token_bytes(SECRET_BYTES[algorithm])
    sealed = key.seal(SEAL_NAME, secret)
    entry = {"algorithm": algorithm,
             "sealed": base64.b64encode(sealed.ciphertext).decode("ascii"),
             "nonce": base64.b64encode(sealed.nonce).decode("ascii"),
             "key_id": sealed.key_id, "created_at": round(time.time(), 3)}

    def change(document: dict[str, Any]) -> dict[str, Any]:
        keys = document.setdefault(TSIG, {}).setdefault("keys", {})
        if name in keys:
            raise ConfigError(f"a key named {name!r} exists (remove it first)", "request",
                              "name")
        keys[name] = entry
        return document

    head = await service.store.head()
    proposal = await service.edit(head, actor, f"TSIG key {name} added", change)
    assert proposal.version is not None
    return NewKey(name, algorithm, base64.b64encode(secret).decode("ascii"),
                  proposal.version.number)


async def remove_key(service: ConfigService, name: str, actor: str) -> int:
    """A new version without the key; refused while a transfer rule or grant names it."""
    def change(document: dict[str, Any]) -> dict[str, Any]:
        keys = document.get(TSIG, {}).get("keys", {})
        if name not in keys:
            raise NotFound(f"no TSIG key named {name!r}")
        for section in (TRANSFERS, UPDATES):
            for zone, value in document.get(section, {}).items():
                named = value.get("keys", []) if isinstance(value, dict) else \
                    [g.get("key") for g in value if isinstance(g, dict)]
                if name in named:
                    raise ConfigError(f"{section}[{zone!r}] names this key: change it first",
                                      "request", "name")
        del keys[name]
        return document

    head = await service.store.head()
    proposal = await service.edit(head, actor, f"TSIG key {name} removed", change)
    assert proposal.version is not None
    return proposal.version.number


def open_keys(sealed: Mapping[str, SealedTsigKey], key: SecretKey | None
              ) -> dict[dns.name.Name, dns.tsig.Key]:
    """The keys this node can use, by their DNS name; a key that does not open is left
    out (and said), so one bad key does not disable the others."""
    opened: dict[dns.name.Name, dns.tsig.Key] = {}
    if not sealed:
        return opened
    if key is None:
        log.dns.error("the configuration has TSIG keys but this node has no secret key to "
                      "open them: transfers and updates that need them are refused (give "
                      "it the control plane's key file)")
        return opened
    for name, item in sealed.items():
        try:
            secret = key.unseal(SEAL_NAME, Sealed(item.ciphertext, item.nonce, item.key_id))
        except SealingError as exc:
            log.dns.error("cannot open the TSIG key %s: %s", name, exc)
            continue
        dns_name = dns.name.from_text(name)
        opened[dns_name] = dns.tsig.Key(dns_name, secret, DNS_ALGORITHMS[item.algorithm])
    return opened
