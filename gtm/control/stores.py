"""Choosing a config store from a URL: ``postgresql://...`` or ``sqlite:///path``."""

from __future__ import annotations

from pathlib import Path

from gtm.control.store import Store
from gtm.errors import ConfigError
from gtm.store_access import describe

__all__ = ["describe", "store_from_url"]  # describe: where it always was, for gtm's own users

DEFAULT_SQLITE_NAME = "gtm.db"


def store_from_url(url: str, namespace: str = "gtm", migrate: bool = True,
                   timeout: float | None = None) -> Store:
    """A store for the URL; nothing connects until ``open()`` or the first call.

    ``migrate=False``: a reader that never changes the PostgreSQL schema (and so needs no
    rights to); SQLite, a local file, is always brought up to date. ``timeout``: the
    longest a PostgreSQL statement may take (None: the store's default)."""
    if url.startswith(("postgresql://", "postgres://")):
        from gtm.control.postgres_store import COMMAND_TIMEOUT, PostgresStore

        return PostgresStore(url, namespace, migrate, timeout or COMMAND_TIMEOUT)
    if url.startswith("sqlite://"):
        from gtm.control.sqlite_store import SqliteStore

        path = url.removeprefix("sqlite://")
        if not path:
            raise ConfigError("sqlite:// needs a path (sqlite:///var/gtm/gtm.db)", url)
        return SqliteStore(Path(path))
    raise ConfigError("a store URL starts with postgresql:// or sqlite://", url)
