"""Typed reading of the balancer's TOML tables: every error names the key path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gtm.config.settings import Listen, parse_listen
from gtm.errors import ConfigError

KIND_NAMES = {int: "a whole number", float: "a number", str: "a string", bool: "true or false",
               list: "a list", dict: "a table"}


class Reader:
    """Typed access to one TOML table that remembers where it is, for error messages."""

    def __init__(self, table: Any, where: str, source: str, known: tuple[str, ...]):
        if not isinstance(table, dict):
            raise ConfigError("must be a table", source, where)
        unknown = set(table) - set(known)
        if unknown:
            raise ConfigError(f"unknown key {sorted(unknown)[0]!r}", source, where)
        self.table, self.where, self.source = table, where, source

    def fail(self, key: str, reason: str) -> ConfigError:
        return ConfigError(reason, self.source, f"{self.where}.{key}" if self.where else key)

    def get(self, key: str, kind: type, default: Any = None) -> Any:
        if key not in self.table:
            return default
        value = self.table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise self.fail(key, f"must be {KIND_NAMES[kind]}")
        return value

    def number(self, key: str, kind: type, default: Any, low: float, high: float) -> Any:
        value = self.get(key, kind, default)
        if not low <= value <= high:
            raise self.fail(key, f"must be between {low:g} and {high:g}")
        return value

    def choice(self, key: str, options: tuple[str, ...], default: str) -> str:
        value = self.get(key, str, default)
        if value not in options:
            raise self.fail(key, f"must be one of {', '.join(options)}")
        return str(value)

    def address(self, key: str, required: bool = True) -> Listen | None:
        text = self.get(key, str)
        if text is None:
            if required:
                raise self.fail(key, "is required (\"HOST:PORT\")")
            return None
        if ":" not in text.strip("[]") and not text.startswith("["):
            raise self.fail(key, "needs a port (\"HOST:PORT\")")
        try:
            return parse_listen(text, default_port=0)
        except ConfigError as exc:
            raise self.fail(key, exc.reason) from exc

    def list(self, key: str) -> list[Any]:
        value = self.get(key, list, [])
        return list(value)


def addresses(reader: Reader, key: str) -> tuple[Listen, ...]:
    result = []
    for i, text in enumerate(reader.list(key)):
        item = Reader({"address": text}, f"{reader.where}.{key}[{i}]", reader.source,
                       ("address",))
        address = item.address("address")
        assert address is not None
        result.append(address)
    return tuple(result)


def existing_path(reader: Reader, key: str, directory: bool = False) -> Path | None:
    """A path relative to the config file's directory, which must exist."""
    text = reader.get(key, str)
    if text is None:
        return None
    config_file = Path(reader.source)
    base = config_file.parent if config_file.is_file() else Path.cwd()
    path = (base / text).resolve()
    if directory and not path.is_dir():
        raise reader.fail(key, f"{path} is not a directory")
    if not directory and not path.is_file():
        raise reader.fail(key, f"{path} is not a file")
    return path


def relative_path(reader: Reader, key: str, default: str) -> Path:
    """A path relative to the config file, which need not exist yet (made by its writer)."""
    text = reader.get(key, str, default)
    if not text:
        raise reader.fail(key, "must name a file or directory")
    config_file = Path(reader.source)
    base = config_file.parent if config_file.is_file() else Path.cwd()
    return (base / text).resolve()
