"""The balancer's TLS settings: ``[lb.tls]``, a listener's ``tls`` table, ``admin_tls``.

Documented with every other key in regional_lb.config.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from gtm.config_reader import Reader, config_dir, existing_path, files_here
from gtm.errors import CertificateError, ConfigError
from gtm.sealing import key_file
from gtm.store_access import validate_namespace
from regional_lb.tls import tickets
from regional_lb.tls.contexts import CLIENT_AUTH, VERSIONS, TlsPolicy
from regional_lb.tls.control import ControlSource
from regional_lb.tls.listener import TlsSpec

if TYPE_CHECKING:
    from regional_lb.config import LbConfig


@dataclass(frozen=True)
class TlsSettings:
    watch_interval: float = 2.0      # certificate sources polled this often; 0: never
    expiry_warning_days: tuple[float, ...] = (30.0, 7.0, 1.0)
    control_store: str | None = None  # the control plane's store, for tls.control listeners
    control_namespace: str = "gtm"    # its namespace (the PostgreSQL schema)
    secret_key_file: Path | None = None  # a copy of its secret key (else $GTM_SECRET_KEY_FILE)
    control_cache: Path | None = None  # the last rows read (keys sealed), to start without it
    ticket_key_file: Path | None = None  # session ticket keys shared with other balancers

    def control_source(self) -> ControlSource:
        return ControlSource(self.control_store, key_file(self.secret_key_file),
                             self.control_namespace, self.control_cache)


TLS_KEYS = ("certificates", "control", "default", "unknown_sni", "min_version", "alpn",
            "client_auth", "client_ca", "session_tickets", "tickets")
TLS_SETTINGS_KEYS = ("watch_interval", "expiry_warning_days", "control_store",
                     "control_namespace", "secret_key_file", "control_cache",
                     "ticket_key_file")
# A listener's control = true before [lb.tls] (or gtm up) says which control plane.
_UNBOUND = ControlSource(None, None)


def tls_settings(reader: Reader) -> TlsSettings:
    """``[lb.tls]`` (its keys checked by the caller: TLS_SETTINGS_KEYS)."""
    days = []
    for place, value in reader.at("expiry_warning_days").items(
            reader.value("expiry_warning_days", list(TlsSettings().expiry_warning_days))):
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise place.fail("must be a number of days above 0")
        days.append(float(value))
    return TlsSettings(
        watch_interval=reader.number("watch_interval", 2.0, low=0, high=3600),
        expiry_warning_days=tuple(sorted(days, reverse=True)),
        control_store=_store_url(reader, "control_store"),
        control_namespace=_namespace(reader, "control_namespace"),
        secret_key_file=existing_path(reader, "secret_key_file"),
        control_cache=_cache_file(reader, "control_cache"),
        ticket_key_file=_ticket_key_file(reader, "ticket_key_file"),
    )


def _ticket_key_file(reader: Reader, key: str) -> Path | None:
    path = existing_path(reader, key)
    if path is not None and files_here():
        try:
            tickets.read_key_file(path)
        except CertificateError as exc:
            raise reader.fail(key, exc.reason) from exc
    return path


def _cache_file(reader: Reader, key: str) -> Path | None:
    """Relative to the config file; by default beside it (FILE.certificates.json); "" for
    none. Written only when a listener serves control-plane certificates."""
    config_file = Path(reader.source)
    if key not in reader:
        return config_file.with_name(config_file.name + ".certificates.json") \
            if config_file.is_file() else None
    text = reader.text(key)
    return (config_dir(reader) / text).resolve() if text else None


def _store_url(reader: Reader, key: str) -> str | None:
    """postgresql://... as given; sqlite:// paths relative to the config file."""
    text = reader.text(key, None)
    if text is None or text.startswith(("postgresql://", "postgres://")):
        return text
    if not text.startswith("sqlite://") or not text.removeprefix("sqlite://"):
        raise reader.fail(key, "must be postgresql://... or sqlite:///PATH (the control "
                          "plane's store)")
    return f"sqlite://{(config_dir(reader) / text.removeprefix('sqlite://')).resolve()}"


def _namespace(reader: Reader, key: str) -> str:
    try:
        return validate_namespace(reader.text(key, "gtm"))
    except ConfigError as exc:
        raise reader.fail(key, exc.reason) from exc


def with_control_store(config: LbConfig, store_url: str | None = None,
                       key_file: Path | None = None) -> LbConfig:
    """Give ``tls.control`` listeners their control plane: the one of ``[lb.tls]``, else
    ``store_url`` and ``key_file`` (``gtm up`` passes its own). Still none: the listener
    fails to start, saying what is missing."""
    tls = replace(config.tls, control_store=config.tls.control_store or store_url,
                  secret_key_file=config.tls.secret_key_file or key_file)
    source = tls.control_source()

    def bound(spec: TlsSpec | None) -> TlsSpec | None:
        return spec if spec is None or spec.control is None else replace(spec, control=source)

    listeners = tuple(replace(spec, tls=bound(spec.tls)) for spec in config.listeners)
    return replace(config, tls=tls, listeners=listeners, admin_tls=bound(config.admin_tls))


def admin_tls(top: Reader) -> TlsSpec | None:
    if "admin_tls" not in top:
        return None
    table = top.child("admin_tls", TLS_KEYS)
    if "admin" not in top:
        raise top.fail("admin_tls", "needs admin (the address of the admin API)")
    return listener_tls(table, "http", h2=False)


# What http listeners may offer by ALPN. HTTP/2 is opt-in: here a request over it costs
# several times the CPU of one over HTTP/1.1 (README, "TLS at the balancer"), so turning
# it on by default would silently cut the capacity of every existing TLS listener.
HTTP_ALPN = ("h2", "http/1.1")
DEFAULT_HTTP_ALPN = ("http/1.1",)


def _alpn(reader: Reader, mode: str, offered: tuple[str, ...]) -> tuple[str, ...]:
    """ALPN protocols in preference order: tcp listeners any (default none); http ones
    a choice of what the server speaks (default http/1.1; [] offers none, so clients
    speak HTTP/1.1)."""
    if "alpn" not in reader:
        return DEFAULT_HTTP_ALPN if mode == "http" else ()
    alpn: list[str] = []
    for place, protocol in reader.items("alpn"):
        if not isinstance(protocol, str) or not 0 < len(protocol) < 256:
            raise place.fail("must be a protocol name")
        if mode == "http" and protocol not in offered:
            raise place.fail(f"this server speaks {' and '.join(offered)} only")
        if protocol in alpn:
            raise place.fail(f"{protocol} is listed twice")
        alpn.append(protocol)
    return tuple(alpn)


def listener_tls(reader: Reader, mode: str, managed: frozenset[str] = frozenset(),
                 h2: bool = True) -> TlsSpec:
    """A listener's ``tls`` table (its keys checked by the caller: TLS_KEYS); ``h2`` is
    False for servers that speak HTTP/1.1 only (the admin API)."""
    control = reader.flag("control", False)
    certificates = existing_path(reader, "certificates", directory=True)
    if certificates is None and not control:
        raise reader.fail("certificates", "is required (a directory of certificate pairs), "
                          "unless control = true")
    default = reader.text("default", None)
    # A pair ACME manages may not exist yet: a placeholder is written before serving. With
    # control = true the default may be a control-plane certificate, known only at start.
    if default is not None and certificates is not None and not control and files_here() \
            and default not in managed and not any(
            (certificates / (default + suffix)).is_file() for suffix in (".crt", ".pem")):
        raise reader.fail("default", f"names no pair in {certificates} ({default}.crt + "
                          f"{default}.key or {default}.pem)")
    alpn = _alpn(reader, mode, HTTP_ALPN if h2 else ("http/1.1",))
    client_auth = reader.choice("client_auth", tuple(CLIENT_AUTH), "none")
    client_ca = existing_path(reader, "client_ca")
    if client_auth != "none" and client_ca is None:
        raise reader.fail("client_ca", f"is required with client_auth = {client_auth!r}")
    policy = TlsPolicy(
        min_version=reader.choice("min_version", tuple(VERSIONS), "1.2"),
        alpn=alpn, client_auth=client_auth, client_ca=client_ca,
        session_tickets=reader.flag("session_tickets", True),
        tickets=reader.integer("tickets", 2, low=1, high=8),
    )
    return TlsSpec(certificates=certificates, default=default, policy=policy,
                   unknown_sni=reader.choice("unknown_sni", ("default", "refuse"), "default"),
                   control=_UNBOUND if control else None)
