"""What a process outside the control plane may know of its store.

A balancer serving the control plane's certificates (regional_lb.tls.control) reads
them from the store itself, but the stores are gtm.control's and regional_lb never
imports gtm.control (.importlinter). It knows this instead: the namespace rule, the URL
as logs show it, the record of a stored certificate, and :func:`open_certificate_reader`,
which finds the stores through the ``gtm.stores`` entry point (pyproject.toml), as the
control plane finds the balancer's ``lb`` validator through ``gtm.sections``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib.metadata import entry_points
from typing import Any, Protocol

from gtm.errors import ConfigError

STORES_GROUP = "gtm.stores"


class CertificateReader(Protocol):
    """The part of a store a certificate poller uses."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def certificates(self, since_revision: int = 0) -> list[CertificateRecord]: ...


def open_certificate_reader(url: str, namespace: str) -> CertificateReader:
    """A reader of the store at ``url`` that never migrates its schema (nothing connects
    until ``open()``)."""
    found = entry_points(group=STORES_GROUP, name="from_url")
    if not found:
        raise ConfigError("no control-plane store is installed (entry point "
                          f"{STORES_GROUP}:from_url)", describe(url))
    opener: Callable[..., CertificateReader] = next(iter(found)).load()
    return opener(url, namespace, migrate=False)


def validate_namespace(namespace: str) -> str:
    """Namespaces become a schema name, a NOTIFY channel and a Redis key prefix."""
    if not namespace.isidentifier() or not namespace.isascii() or len(namespace) > 40:
        raise ConfigError(
            "a namespace is 1-40 ASCII letters, digits or '_' and starts with a letter",
            "settings",
            "namespace",
        )
    return namespace.lower()


def describe(url: str) -> str:
    """The URL without its password, for logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        credentials, _, host = rest.rpartition("@")
        user = credentials.split(":", 1)[0]
        rest = f"{user}@{host}"
    return f"{scheme}{sep}{rest}"


@dataclass(frozen=True)
class CertificateRecord:
    """A stored certificate, or the tombstone of a deleted one (``deleted``, no chain, no
    key), kept so that pollers reading ``certificates(since_revision)`` see the removal.

    ``revision`` grows by one with every change to any certificate (a put or a delete)."""

    name: str
    revision: int
    chain: str
    sealed_key: bytes = field(repr=False)
    key_nonce: bytes = field(repr=False)
    key_id: str
    names: tuple[str, ...]
    not_after: float
    fingerprint: str
    updated_at: float
    updated_by: str
    deleted: bool = False

    def tombstone(self, deleted_by: str) -> CertificateRecord:
        """What stays of it once deleted: its metadata, never its chain or key."""
        return replace(self, chain="", sealed_key=b"", key_nonce=b"", updated_at=time.time(),
                       updated_by=deleted_by, deleted=True)

    def public(self) -> dict[str, Any]:
        """Metadata only: never the sealed key (nor its nonce)."""
        return {
            "name": self.name,
            "revision": self.revision,
            "names": list(self.names),
            "not_after": self.not_after,
            "fingerprint_sha256": self.fingerprint,
            "key_id": self.key_id,
            "updated_at": self.updated_at,
            "updated_by": self.updated_by,
        }
