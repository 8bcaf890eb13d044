"""The one typed reader of configuration tables, TOML or JSON alike.

Every reader of a config (the DNS settings, steering definitions and state, the
balancer's ``[lb]`` table, its admin API's and overrides' backend entries) reads
through :class:`Reader`: typed getters with bounds and choices, unknown keys refused,
and every error a :class:`gtm.errors.ConfigError` naming the source and the full path
of the value (``lb.pools[0].backends[1].weight``) with the reason::

    reader = Reader(raw, "lb.toml", "lb", keys=("workers", "pools"))
    workers = reader.integer("workers", 1, low=1, high=256)
    for pool in reader.tables("pools"):
        name = pool.text("name")                    # required: "is required"

A getter's ``default`` is returned when the key is absent; without one the key is
required. :class:`Place` checks a value that is not under a key of a table (a list
item, a whole document).
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar, overload

from gtm.errors import ConfigError

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
T = TypeVar("T")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Required()  # a getter's default when the key must be there


@dataclass(frozen=True)
class Listen:
    """An address to bind or connect to: HOST:PORT."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_listen(text: str, default_port: int) -> Listen:
    """Parse ``HOST:PORT``, ``[V6]:PORT``, ``HOST`` or ``:PORT``; the reason of an error
    names the bad part (``where`` is the text)."""
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    host = host or "0.0.0.0"
    try:
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise ConfigError(f"{host!r} is not an IP address", where=text) from exc
    # ipaddress takes any text after "%" (newlines, NUL); a scope is an interface name.
    if "%" in host and not re.fullmatch(r"[A-Za-z0-9_.-]{1,15}", host.partition("%")[2]):
        raise ConfigError(f"{host!r}: the scope after % must be an interface name", where=text)
    # ASCII digits only: int() would also take other scripts' digits, "+1" and "1_0".
    if port_text and not (port_text.isascii() and port_text.isdigit() and len(port_text) <= 5):
        raise ConfigError(f"port {port_text[:16]!r} is not a number from 0 to 65535",
                          where=text)
    port = int(port_text) if port_text else default_port
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} is out of range", where=text)
    return Listen(host, port)


def _must_be(what: str | None, bounds: tuple[float | None, float | None] | None) -> str:
    """``must be a number from 0 to 1``, ``must be at least 1``, ``must be a number``."""
    words = [what] if what else []
    low, high = bounds or (None, None)
    if low is not None and high is not None:
        words.append(f"from {_figure(low)} to {_figure(high)}")
    elif low is not None:
        words.append(f"at least {_figure(low)}")
    elif high is not None:
        words.append(f"at most {_figure(high)}")
    return "must be " + " ".join(words)


def _figure(bound: float) -> str:
    """A bound as a person writes it: 1000000, 86400, 0.05 (not 1e+06 or 86400.0)."""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


@dataclass(frozen=True)
class Place:
    """Where a value sits in a source (a file name, "api"), for errors; and the typed
    checks of a value found there."""

    source: str
    where: str = ""

    def key(self, name: str) -> Place:
        return Place(self.source, f"{self.where}.{name}" if self.where else name)

    def index(self, i: int) -> Place:
        return Place(self.source, f"{self.where}[{i}]")

    def fail(self, reason: str) -> ConfigError:
        return ConfigError(reason, self.source, self.where or None)

    def table(self, value: Any, keys: Collection[str] | None = None) -> Reader:
        return Reader(value, self.source, self.where, keys)

    def text(self, value: Any, *, empty: bool = True) -> str:
        if not isinstance(value, str) or (not empty and not value):
            raise self.fail("must be a string" if empty else "must be a non-empty string")
        return value

    def integer(self, value: Any, low: int | None = None, high: int | None = None,
                what: str | None = None) -> int:
        """A whole number within the bounds; ``what`` names it in the error ("a port")."""
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.fail(_must_be(what or "a whole number", (low, high) if what else None))
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.fail(_must_be(what, (low, high)))
        return value

    def number(self, value: Any, low: float | None = None, high: float | None = None,
               what: str | None = None) -> float:
        """A number (a whole one too) within the bounds, as a float; ``what`` names it in
        the error ("a number of seconds")."""
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise self.fail(_must_be(what or "a number", (low, high) if what else None))
        if (low is not None and value < low) or (high is not None and value > high):
            raise self.fail(_must_be(what, (low, high)))
        return float(value)

    def flag(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise self.fail("must be true or false")
        return value

    def list(self, value: Any) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail("must be a list")
        return value

    def items(self, value: Any) -> Iterator[tuple[Place, Any]]:
        """A list's items, each with its place (``where[i]``)."""
        for i, item in enumerate(self.list(value)):
            yield self.index(i), item

    def choice(self, value: Any, options: Collection[str]) -> str:
        if not isinstance(value, str) or value not in options:
            raise self.fail(f"must be one of {', '.join(options)}")
        return value

    def address(self, value: Any, default_port: int | None = None) -> Listen:
        """``HOST:PORT``; without a ``default_port`` the port is required."""
        text = self.text(value)
        if default_port is None and ":" not in text.strip("[]") and not text.startswith("["):
            raise self.fail("needs a port (\"HOST:PORT\")")
        try:
            return parse_listen(text, 0 if default_port is None else default_port)
        except ConfigError as exc:
            raise self.fail(exc.reason) from exc

    def ip(self, value: Any) -> IpAddress:
        text = self.text(value, empty=False)
        try:
            return ipaddress.ip_address(text)
        except ValueError as exc:
            raise self.fail(f"{text!r} is not an IP address") from exc

    def network(self, value: Any, strict: bool = True) -> IpNetwork:
        """A CIDR network; ``strict``: no host bits set (10.0.0.1/8 is refused)."""
        if not isinstance(value, str):
            raise self.fail("must be a network in CIDR form (\"10.0.0.0/8\")")
        try:
            return ipaddress.ip_network(value, strict=strict)
        except ValueError as exc:
            raise self.fail(f"{value!r} is not a network in CIDR form (\"10.0.0.0/8\""
                            f"{', host bits zero' if strict else ''}): {exc}") from exc


class Reader:
    """Typed access to one table (a TOML table, a JSON object) at a place in a source."""

    def __init__(self, table: Any, source: str, where: str = "",
                 keys: Collection[str] | None = None):
        self.place = Place(source, where)
        if not isinstance(table, dict):
            raise self.place.fail("must be a table")
        self.table: dict[str, Any] = table
        if keys is not None:
            self.only(keys)

    @property
    def source(self) -> str:
        return self.place.source

    @property
    def where(self) -> str:
        return self.place.where

    def at(self, key: str) -> Place:
        return self.place.key(key)

    def fail(self, key: str, reason: str) -> ConfigError:
        """An error about ``key`` of this table ("" for the table itself)."""
        return (self.at(key) if key else self.place).fail(reason)

    def only(self, keys: Collection[str]) -> None:
        """Refuse a key outside ``keys``, naming it and the keys there are."""
        for key in self.table:
            if key not in keys:
                raise self.fail(key, f"unknown key {key!r} (expected one of "
                                f"{', '.join(sorted(keys))})")

    def __contains__(self, key: str) -> bool:
        return key in self.table

    def value(self, key: str, default: Any = REQUIRED) -> Any:
        """The raw value (checked by the caller through ``at(key)``)."""
        if key in self.table:
            return self.table[key]
        if default is REQUIRED:
            raise self.fail(key, "is required")
        return default

    @overload
    def text(self, key: str, default: _Required = REQUIRED, *, empty: bool = True) -> str: ...
    @overload
    def text(self, key: str, default: T, *, empty: bool = True) -> str | T: ...
    def text(self, key: str, default: Any = REQUIRED, *, empty: bool = True) -> Any:
        """A string; ``empty=False`` refuses "" (when the key is there)."""
        if key not in self.table:
            return self.value(key, default)
        return self.at(key).text(self.table[key], empty=empty)

    @overload
    def integer(self, key: str, default: _Required = REQUIRED, *, low: int | None = None,
                high: int | None = None, what: str | None = None) -> int: ...
    @overload
    def integer(self, key: str, default: T, *, low: int | None = None,
                high: int | None = None, what: str | None = None) -> int | T: ...
    def integer(self, key: str, default: Any = REQUIRED, *, low: int | None = None,
                high: int | None = None, what: str | None = None) -> Any:
        if key not in self.table:
            return self.value(key, default)
        return self.at(key).integer(self.table[key], low, high, what)

    @overload
    def number(self, key: str, default: _Required = REQUIRED, *, low: float | None = None,
               high: float | None = None, what: str | None = None) -> float: ...
    @overload
    def number(self, key: str, default: T, *, low: float | None = None,
               high: float | None = None, what: str | None = None) -> float | T: ...
    def number(self, key: str, default: Any = REQUIRED, *, low: float | None = None,
               high: float | None = None, what: str | None = None) -> Any:
        """A number (a whole one too), as a float."""
        if key not in self.table:
            return self.value(key, default)
        return self.at(key).number(self.table[key], low, high, what)

    def flag(self, key: str, default: bool) -> bool:
        if key not in self.table:
            return default
        return self.at(key).flag(self.table[key])

    def choice(self, key: str, options: Collection[str], default: str | _Required = REQUIRED
               ) -> str:
        if key not in self.table:
            return str(self.value(key, default))
        return self.at(key).choice(self.table[key], options)

    def list(self, key: str, default: list[Any] | _Required | None = None) -> list[Any]:
        """A list (absent: ``default``, an empty list unless given)."""
        if key not in self.table:
            return list(self.value(key, [] if default is None else default))
        return self.at(key).list(self.table[key])

    def items(self, key: str) -> Iterator[tuple[Place, Any]]:
        """The items of a list (absent: none), each with its place."""
        if key in self.table:
            yield from self.at(key).items(self.table[key])

    def tables(self, key: str, keys: Collection[str] | None = None) -> Iterator[Reader]:
        """The items of a list of tables (absent: none), each a Reader."""
        for place, item in self.items(key):
            yield place.table(item, keys)

    def child(self, key: str, keys: Collection[str] | None = None) -> Reader:
        """The table under ``key`` (absent: an empty one), its keys checked if given."""
        return self.at(key).table(self.table.get(key, {}), keys)

    def optional_child(self, key: str, keys: Collection[str] | None = None) -> Reader | None:
        """The table under ``key``, or None when it is absent."""
        return self.child(key, keys) if key in self.table else None

    def address(self, key: str, default_port: int | None = None) -> Listen:
        """Required ``HOST:PORT`` (see Place.address); ``optional_address`` may be absent."""
        if key not in self.table:
            raise self.fail(key, "is required (\"HOST:PORT\")")
        return self.at(key).address(self.table[key], default_port)

    def optional_address(self, key: str) -> Listen | None:
        return self.address(key) if key in self.table else None

    def addresses(self, key: str, default_port: int | None = None) -> tuple[Listen, ...]:
        return tuple(place.address(item, default_port) for place, item in self.items(key))

    def networks(self, key: str, strict: bool = True) -> tuple[IpNetwork, ...]:
        return tuple(place.network(item, strict) for place, item in self.items(key))


def config_dir(reader: Reader) -> Path:
    """Where relative paths of a config file start: its directory (the working
    directory for a source that is not a file, such as the admin API)."""
    config_file = Path(reader.source)
    return config_file.parent if config_file.is_file() else Path.cwd()


# False while a table is checked for the shared configuration document (at the control
# API, on DNS nodes): the files it names are on the machine that will serve it, not here.
_LOCAL_FILES: ContextVar[bool] = ContextVar("local_files", default=True)


@contextmanager
def files_elsewhere() -> Iterator[None]:
    """Check tables without looking for the files they name (they are another host's)."""
    token = _LOCAL_FILES.set(False)
    try:
        yield
    finally:
        _LOCAL_FILES.reset(token)


def files_here() -> bool:
    """Whether the files a table names are this machine's, so they can be checked."""
    return _LOCAL_FILES.get()


def existing_path(reader: Reader, key: str, directory: bool = False) -> Path | None:
    """A path relative to the config file's directory, which must exist (absent: None;
    not looked for under :func:`files_elsewhere`)."""
    text = reader.text(key, None)
    if text is None:
        return None
    path = (config_dir(reader) / text).resolve()
    if not files_here():
        return path
    if directory and not path.is_dir():
        raise reader.fail(key, f"{path} is not a directory")
    if not directory and not path.is_file():
        raise reader.fail(key, f"{path} is not a file")
    return path


def relative_path(reader: Reader, key: str, default: str) -> Path:
    """A path relative to the config file, which need not exist yet (made by its writer)."""
    text = reader.text(key, default)
    if not text:
        raise reader.fail(key, "must name a file or directory")
    return (config_dir(reader) / text).resolve()


def read_json_file(path: Path) -> Any:
    """A JSON config file's value (state files, documents); every failure a ConfigError
    naming the file. TOML files are read by gtm.toml_input."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", str(path)) from exc
    except ValueError as exc:  # bad JSON, or bytes that are not UTF-8
        raise ConfigError(f"not valid JSON: {exc}", str(path)) from exc
