"""Balancer configuration: the ``[lb]`` table of a TOML file, validated into frozen objects.

Every error is a :class:`gtm.errors.ConfigError` naming the file, the key path
(``lb.pools[0].backends[1].weight``) and the reason. The smallest useful file::

    [[lb.listeners]]
    bind = "127.0.0.1:8080"
    [[lb.pools]]
    name = "app"
    backends = ["127.0.0.1:9001", "127.0.0.1:9002"]

Every key, with its default::

    [lb]
    workers = 1                # processes sharing the listeners (gtm lb serve --workers)
    access_log = "off"         # off | text | json  (logger gtm.lb.access)
    admin = "127.0.0.1:9900"   # admin API (absent: none); needs admin_token
    admin_token = "..."        # Authorization: Bearer <token> (visible ASCII, no spaces)
    admin_tls = { certificates = "certs/" }  # HTTPS for the admin API (keys as a listener's tls)
    metrics = "127.0.0.1:9901" # Prometheus /metrics, no token (absent: only the admin API's);
                               # every worker added up; bind it where only Prometheus reaches
    region = "local"           # the name in region reports
    capacity = 0               # in-flight requests the region takes; 0: sum of max_connections
    redis_url = "redis://..."  # publish region reports there too (absent: in-process only)
    redis_namespace = "gtm"    # key prefix: <ns>:lb:region:<region>:<worker>, <ns>:lb:regions
    report_interval = 1.0
    demo_backends = []         # "HOST:PORT" demo HTTP servers started with the balancer
    via = "gtm"                # Via: 1.1 gtm on forwarded requests and responses; "" for none
    allowed_backend_networks = ["10.0.0.0/8"]  # CIDRs backends may be in, whoever adds them
                               # (this file, the admin API, runtime overrides); absent:
                               # all but link-local (169.254.0.0/16, fe80::/10), unspecified
                               # (0.0.0.0, ::) and multicast (224.0.0.0/4, ff00::/8);
                               # ::ffff:a.b.c.d is checked as a.b.c.d
    priority_classes = ["high", "normal", "low"]  # queue classes of requests, highest first

    [lb.timeouts]              # seconds
    header_read = 10.0         # a whole request head (slowloris): 408
    idle_keepalive = 60.0      # between requests on a client connection: closed quietly
    backend_connect = 3.0      # then the next backend; at the end 504
    backend_response = 30.0    # request sent -> response head, and body inactivity: 504
    tcp_idle = 300.0           # L4 and WebSocket tunnels without a byte either way
    shutdown_grace = 1.0       # SIGTERM: health fails, listeners still accept this long
    shutdown_deadline = 8.0    # then in-flight requests get this long

    [lb.limits]
    max_request_line = 8192    # 414 above
    max_header_bytes = 32768   # 431 above
    max_headers = 100          # 431 above
    max_body_bytes = 0         # 413 above; 0: unlimited
    max_client_connections = 20000  # per worker (all listeners); beyond, closed at once
    client_table = 65536       # entries of the per-client tables (rate buckets; connection
                               # and request counts), shared by the workers; fixed at start

    [lb.http2]                 # HTTP/2 toward clients (TLS listeners by ALPN, h2c below)
    max_concurrent_streams = 100  # streams open at once per connection; a client opening
                               # more gets GOAWAY (PROTOCOL_ERROR)
    initial_window_size = 65535  # (or more) request body bytes a client may send ahead
                               # per stream; acknowledged as written to the backend
    max_resets = 100           # streams the client resets (RST_STREAM) per abuse_window;
                               # more: GOAWAY (ENHANCE_YOUR_CALM), close (CVE-2023-44487)
    max_control_frames = 1000  # SETTINGS, PING, PRIORITY and unknown frames per window;
                               # more: GOAWAY (ENHANCE_YOUR_CALM), close
    abuse_window = 10.0        # seconds the two counts run over
                               # Also: a request head over max_header_bytes gets 431; a
                               # header block (HEADERS and its CONTINUATIONs) over twice it
                               # GOAWAY (ENHANCE_YOUR_CALM); frames over 16384 bytes
                               # FRAME_SIZE_ERROR at the frame's head; a stream without
                               # progress for backend_response RST_STREAM (CANCEL); see
                               # regional_lb.l7.http2

    [[lb.listeners]]
    name = "http-8080"         # default: mode-port
    bind = "127.0.0.1:8080"    # required
    mode = "http"              # http | tcp
    pool = "app"               # required when there are several pools
    proxy_protocol = false     # accept PROXY v1/v2 headers ...
    trusted_networks = []      # ... from these networks only (required with it)
    health_path = "/.gtm/health"
    upgrades = ["websocket"]   # Upgrade protocols tunnelled to backends ([] for none; never h2c)
    h2c = false                # plain listeners: also HTTP/2 with prior knowledge (a
                               # connection opening with the HTTP/2 preface); never by Upgrade
    backlog = 0                # listen queue length; 0: the kernel's maximum (somaxconn)
    priority = "normal"        # queue class of its requests (default normal, else the lowest)
    priority_header = "X-Priority"  # a request's class from this header: a class name ...
    priority_values = { "1" = "high", "batch" = "low" }  # ... or a value mapped here; else
                               # the route's or listener's class. Clients can send it: map
                               # only to classes anyone may have, or set it at a proxy before
    [lb.listeners.limits]      # per client (absent: none, at no cost); refused: 429 with
                               # Retry-After (the connection stays open when the request
                               # was read whole), counts shared by the workers
    rate = 0.0                 # requests a second per key: a token bucket (0: no rate limit)
    burst = 10                 # requests a key may send at once (default: rate, at least 1)
    key = "client_ip"          # client_ip | header:NAME | cookie:NAME (absent: client_ip)
    ipv4_prefix = 32           # client addresses count by network: 24 puts a /24 in one
    ipv6_prefix = 128          # bucket (56 a /56), for rate, connections and requests
    max_connections = 0        # open connections per client network (0: no cap); beyond:
                               # closed at accept
    max_requests = 0           # requests in flight per client network (0: no cap); beyond: 429
    allow = ["10.0.0.0/8"]     # client networks never limited
    [lb.listeners.tls]         # TLS on this listener (absent: plain TCP); see regional_lb.tls
    certificates = "certs/"    # NAME.crt + NAME.key or NAME.pem files (relative to this file)
    control = false            # true: also the control plane's certificates ([lb.tls] below);
                               # then certificates is optional
    default = "www"            # pair served without SNI or for unknown names (default: first)
    unknown_sni = "default"    # default | refuse (alert unrecognized_name)
    min_version = "1.2"        # 1.2 | 1.3
    alpn = ["http/1.1"]        # http: "h2" and/or "http/1.1" (["h2", "http/1.1"] turns
                               # HTTP/2 on; [] none); tcp: any (default none)
    client_auth = "none"       # none | optional | required (needs client_ca)
    client_ca = "clients.pem"  # CA bundle client certificates must chain to
    session_tickets = true     # resumption by tickets
    tickets = 2                # TLS 1.3 tickets per full handshake (1-8)
    [[lb.listeners.routes]]    # first match wins, else the listener's pool (http only)
    pool = "api"
    host = "api.example.com"   # all given conditions must hold
    path_prefix = "/api/"
    header = "X-Canary: 1"     # or just "X-Canary" for any value
    limits = { rate = 1.0, burst = 5, key = "client_ip" }  # a rate limit of its own, charged
                               # before the listener's (prefixes and allow: the listener's)
    priority = "high"          # queue class of the requests it matches

    [lb.tls]
    watch_interval = 2.0       # seconds between looks at directories and the control plane
    expiry_warning_days = [30, 7, 1]  # log a warning as a certificate crosses each
    control_store = "sqlite:///var/control/gtm.db"  # or postgresql://...: the control
                               # plane's store, for listeners with control = true (gtm up
                               # gives its own when absent); read only, no DDL needed
    control_namespace = "gtm"  # the control plane's namespace (PostgreSQL schema)
    secret_key_file = "secret.key"  # a copy of the control plane's secret key, which opens
                               # the sealed private keys (default: $GTM_SECRET_KEY_FILE)
    control_cache = "lb.toml.certificates.json"  # the last rows read, keys still sealed: a
                               # start while the store is unreachable serves them; "" for
                               # none (default: beside this file)
    ticket_key_file = "tickets.key"  # session ticket keys (base64 of 80 random bytes)
                               # shared with other balancers; default: made at start,
                               # shared by this balancer's workers

    [lb.acme]                  # certificates issued and renewed by an ACME CA (RFC 8555)
    directory = "https://acme-v02.api.letsencrypt.org/directory"  # required
    contact = ["mailto:ops@example.com"]
    ca_bundle = "ca.pem"       # trust for the CA's own HTTPS (default: the system's)
    state_dir = "acme/"        # account key and HTTP-01 tokens (created; default "acme")
    output = "certs/"          # where NAME.pem goes (default: the first TLS listener's
                               # certificates); a placeholder serves until the first issue
    renew_before_days = 30     # renew when fewer days are left (or a third of the lifetime)
    check_interval = 3600.0    # seconds between looks at expiry
    retry_interval = 60.0      # after a failure; doubles up to check_interval
    key_type = "ec256"         # ec256 | ec384 | rsa2048 | rsa3072 | rsa4096
    timeout = 120.0            # one order, from start to certificate
    store = "directory"        # directory (NAME.pem in output) | control: the control
                               # plane keeps it (sealed) for every balancer whose listener
                               # says control = true; one balancer orders for the region
    control_api = "http://127.0.0.1:8080"  # the control plane, for dns-01 and store = control
    control_token_file = "var/control/admin.token"  # editor for dns-01, admin to store
    control_ca = "api-ca.pem"  # for an https control_api (default: the system's trust)
    eab_kid = "kid-1"          # external account binding (CAs such as ZeroSSL or Google
    eab_hmac_key_file = "eab.key"  # Trust Services require it): the key id and MAC key
    dns_servers = ["127.0.0.1:53"]     # authoritative servers that must serve it first
    [[lb.acme.certificates]]
    name = "www"               # the pair's file name (www.pem)
    domains = ["www.example.com", "example.com"]  # a wildcard needs dns-01
    challenge = "http-01"      # http-01 (served by this balancer's http listeners) | dns-01

    [[lb.pools]]
    name = "app"
    algorithm = "round_robin"  # weighted_round_robin | least_connections | least_request |
                               # peak_ewma | consistent_hash | random
    hash_key = "client_ip"     # consistent_hash: client_ip | cookie:NAME | header:NAME
    slow_start = 0.0           # seconds to ramp new / re-enabled backends (weighted algorithms)
    max_connections = 10000    # in-flight requests per backend; above it the backend is skipped
    max_idle = 256             # pooled keep-alive connections per backend
    retries = 2                # further backends tried when one fails
    retry_budget = 0.2         # retries at most this share of requests (plus a reserve of 10)
    proxy_protocol = "off"     # off | v1 | v2, sent to backends (pools of tcp listeners)
    tls = false                # re-encrypt to the backends (verified, with SNI)
    tls_ca = "backends.pem"    # CA bundle for them (default: the system's)
    tls_server_name = "app.internal"  # SNI and name checked (default: the backend's host)
    tls_verify = true          # false: encrypt without checking (tests only)
    backends = ["127.0.0.1:9001", { address = "127.0.0.1:9002", weight = 2, state = "drain" }]
    check = { type = "http", path = "/healthz", interval = 2.0, timeout = 1.0, rise = 2, fall = 2,
              fastinter = 0.5 }  # active checks (tcp | http | https); see regional_lb.health
    outlier = { consecutive_5xx = 5, consecutive_gateway = 3, base_ejection = 10.0,
                max_ejection = 300.0, max_ejection_percent = 50 }  # passive; absent:
                               # gateway errors only (consecutive_5xx = 0); false: off
    panic_below = 0.5          # fewer healthy than this share: balance over all enabled
    queue_size = 0             # requests that wait while every backend is at max_connections
                               # (0: none, 503 at once); beyond it 503 at once
    queue_timeout = 5.0        # seconds one waits, then 503; highest class first, FIFO within
                               # a class; a client that closes leaves the queue
    [lb.pools.autoscale]       # auto-scaling of this pool: min, max, metric and target (or
                               # steps), windows, rates, warm-up, predictive, actuator; every
                               # key in regional_lb.config_autoscale (README, Auto-scaling)

    [lb.autoscale]             # the region's scaler: store, interval, lease, notify,
                               # outbound_networks, history_days, state_dir (same module)

Control-plane certificates (``control = true``) are the ones ``gtm certs upload`` (or
``PUT /v1/certificates/NAME``) stored: each poll reads what changed, opens the sealed
keys in memory only, and checks them as files are checked; a replacement that cannot be
served is refused and the certificate before keeps serving. With a directory too, a
pair of the same name in the directory wins. The *default* (clients without SNI, or
names no certificate covers): ``default`` may name a certificate of either source; when
it is not given, the first name in order among those present at start (or, starting
with none, among the first to arrive) becomes the default and stays it. A listener with
only control-plane certificates starts even when none is there yet (or the store cannot
be reached): until one serves a name, handshakes for it fail. As for files, deleting
the default does not stop it being served.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gtm.config.networks import DEFAULT_ALLOWED_BACKEND_NETWORKS, check_backend_address
from gtm.config_reader import Listen, Place, Reader, existing_path
from gtm.errors import ConfigError
from gtm.steering.model import HealthCheck
from gtm.toml_input import read_toml
from regional_lb.config_acme import (
    ACME_KEY_TYPES,
    AcmeCertificate,
    AcmeSettings,
    acme_names,
    parse_acme,
)
from regional_lb.config_autoscale import (
    POLICY_KEYS,
    SETTINGS_KEYS,
    ScalePolicy,
    ScaleSettings,
    parse_policy,
    parse_settings,
)
from regional_lb.config_http2 import Http2Settings, http2_settings
from regional_lb.config_limits import (
    DEFAULT_CLASSES,
    LISTENER_LIMIT_KEYS,
    RATE_KEYS,
    ClientLimitsSpec,
    PrioritySpec,
    RateLimitSpec,
    class_index,
    listener_limits,
    listener_priority,
    priority_classes,
    queue_settings,
    route_limits,
)
from regional_lb.config_tls import (
    TLS_KEYS,
    TLS_SETTINGS_KEYS,
    TlsSettings,
    admin_tls,
    listener_tls,
    tls_settings,
    with_control_store,
)
from regional_lb.health_spec import (
    OUTLIER_KEYS,
    OutlierSpec,
    parse_check,
    parse_outlier,
    parse_panic_below,
)
from regional_lb.tls.listener import TlsSpec

__all__ = ["ACME_KEY_TYPES", "AcmeCertificate", "AcmeSettings", "Http2Settings",
           "TlsSettings", "with_control_store"]  # re-exported: their home modules are details

ALGORITHMS = ("round_robin", "weighted_round_robin", "least_connections", "least_request",
              "peak_ewma", "consistent_hash", "random")
ADMIN_STATES = ("enabled", "drain", "maintenance")
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Timeouts:
    header_read: float = 10.0       # whole request head (slowloris): 408
    idle_keepalive: float = 60.0    # between requests on a client connection
    backend_connect: float = 3.0    # then the next backend, then 504
    backend_response: float = 30.0  # request sent -> response head: 504
    tcp_idle: float = 300.0         # L4: no bytes either way
    shutdown_grace: float = 1.0     # SIGTERM: health fails, listeners still accept
    shutdown_deadline: float = 8.0  # then in-flight requests get this long


@dataclass(frozen=True)
class Limits:
    max_request_line: int = 8192    # 414 above
    max_header_bytes: int = 32768   # 431 above
    max_headers: int = 100          # 431 above
    max_body_bytes: int = 0         # 413 above; 0 = unlimited
    max_client_connections: int = 20000  # per worker, all listeners; more are refused
    client_table: int = 65536       # entries of the per-client tables (regional_lb.client_limits)


@dataclass(frozen=True)
class BackendSpec:
    address: Listen
    weight: int = 1
    state: str = "enabled"

    @property
    def key(self) -> str:
        return str(self.address)


@dataclass(frozen=True)
class PoolSpec:
    name: str
    backends: tuple[BackendSpec, ...]
    algorithm: str = "round_robin"
    hash_key: str = "client_ip"      # client_ip | cookie:NAME | header:NAME
    slow_start: float = 0.0          # seconds to ramp a new or recovered backend's weight
    max_connections: int = 10000     # per backend, busy and idle
    max_idle: int = 256              # pooled keep-alive connections per backend
    retries: int = 2                 # other backends tried per request
    retry_budget: float = 0.2        # retries at most this share of requests (plus 10)
    proxy_protocol: str = "off"      # L4: off | v1 | v2, sent to backends
    tls: bool = False                # re-encrypt to backends
    tls_ca: Path | None = None       # CA bundle (None: the system's)
    tls_server_name: str | None = None  # SNI and checked name (None: the backend's host)
    tls_verify: bool = True
    check: HealthCheck | None = None    # active checks of every backend (regional_lb.health)
    outlier: OutlierSpec | None = None  # passive outlier detection on live traffic
    panic_below: float = 0.5         # fewer healthy than this share: balance over all
    queue_size: int = 0              # requests waiting for a backend slot; 0: 503 at once
    queue_timeout: float = 5.0       # seconds a request waits in the queue, then 503
    autoscale: ScalePolicy | None = None  # regional_lb.config_autoscale


@dataclass(frozen=True)
class RouteSpec:
    pool: str
    host: bytes | None = None
    path_prefix: bytes | None = None
    header: tuple[bytes, bytes | None] | None = None  # (lower name, value or any)
    limits: RateLimitSpec | None = None  # a rate limit of the route's own
    priority: int | None = None      # queue class (index into priority_classes)


@dataclass(frozen=True)
class ListenerSpec:
    name: str
    bind: Listen
    pool: str
    mode: str = "http"               # http | tcp
    routes: tuple[RouteSpec, ...] = ()
    proxy_protocol: bool = False     # accept a PROXY header, from trusted networks only
    trusted_networks: tuple[IpNetwork, ...] = ()
    health_path: str = "/.gtm/health"
    tls: TlsSpec | None = None       # terminate TLS on this listener
    upgrades: tuple[str, ...] = ("websocket",)  # Upgrade protocols tunnelled to backends
    backlog: int = 0                 # listen queue; 0: the kernel's maximum (somaxconn)
    h2c: bool = False                # plain HTTP/2 with prior knowledge (the preface)
    limits: ClientLimitsSpec | None = None  # per-client limits (regional_lb.client_limits)
    priority: PrioritySpec = field(default_factory=PrioritySpec)  # queue class of a request


@dataclass(frozen=True)
class LbConfig:
    listeners: tuple[ListenerSpec, ...]
    pools: tuple[PoolSpec, ...]
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)
    workers: int = 1
    access_log: str = "off"          # off | text | json
    admin: Listen | None = None
    admin_token: str | None = None
    admin_tls: TlsSpec | None = None  # HTTPS for the admin API
    metrics: Listen | None = None    # a /metrics listener without the admin token
    region: str = "local"
    capacity: int = 0                # in-flight requests the region takes; 0 = from backends
    redis_url: str | None = None
    redis_namespace: str = "gtm"     # key prefix, as the control plane's
    report_interval: float = 1.0
    demo_backends: tuple[Listen, ...] = ()  # built-in demo servers started with the balancer
    via: str = "gtm"                 # pseudonym in the Via header; "" sends none
    allowed_backend_networks: tuple[IpNetwork, ...] = DEFAULT_ALLOWED_BACKEND_NETWORKS
    tls: TlsSettings = field(default_factory=TlsSettings)
    acme: AcmeSettings | None = None
    http2: Http2Settings = field(default_factory=Http2Settings)
    priority_classes: tuple[str, ...] = DEFAULT_CLASSES  # queue classes, highest first
    autoscale: ScaleSettings = field(default_factory=ScaleSettings)  # [lb.autoscale]
    source: str = "config"

    def pool(self, name: str) -> PoolSpec:
        return next(p for p in self.pools if p.name == name)


def load_config(path: Path) -> LbConfig:
    return build_config(read_toml(path).get("lb"), str(path))


_TOP = ("listeners", "pools", "timeouts", "limits", "workers", "access_log", "admin",
        "admin_token", "admin_tls", "metrics", "region", "capacity", "redis_url", "redis_namespace",
        "report_interval", "demo_backends", "tls", "acme", "via", "allowed_backend_networks",
        "http2", "priority_classes", "autoscale")


def build_config(raw: Any, source: str) -> LbConfig:
    top = Reader(raw if raw is not None else {}, source, "lb", _TOP)
    allowed = _allowed_backend_networks(top)
    scaling = parse_settings(top.optional_child("autoscale", SETTINGS_KEYS),
                             DEFAULT_ALLOWED_BACKEND_NETWORKS)
    pools = tuple(_pool(reader, allowed, scaling.outbound_networks)
                  for reader in top.tables("pools", _POOL_KEYS))
    if not pools:
        raise top.fail("pools", "needs at least one [[lb.pools]]")
    names = [p.name for p in pools]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise top.at("pools").index(i).key("name").fail(f"pool {name!r} is defined twice")
    acme_table = top.optional_child("acme")
    managed = acme_names(acme_table)
    classes = priority_classes(top)
    listeners = tuple(_listener(reader, names, managed, classes)
                      for reader in top.tables("listeners", _LISTENER_KEYS))
    if not listeners:
        raise top.fail("listeners", "needs at least one [[lb.listeners]]")
    _check_proxy_protocol_pools(listeners, pools, top)
    return with_control_store(LbConfig(
        listeners=listeners,
        pools=pools,
        timeouts=_timeouts(top.child("timeouts", tuple(Timeouts.__dataclass_fields__))),
        limits=_limits(top.child("limits", tuple(Limits.__dataclass_fields__))),
        workers=top.integer("workers", 1, low=1, high=256),
        access_log=top.choice("access_log", ("off", "text", "json"), "off"),
        admin=top.optional_address("admin"),
        admin_token=_admin_token(top),
        admin_tls=admin_tls(top),
        metrics=top.optional_address("metrics"),
        region=top.text("region", "local"),
        capacity=top.integer("capacity", 0, low=0, high=10**9),
        redis_url=top.text("redis_url", None),
        redis_namespace=top.text("redis_namespace", "gtm"),
        report_interval=top.number("report_interval", 1.0, low=0.05, high=3600),
        demo_backends=top.addresses("demo_backends"),
        via=_via(top),
        allowed_backend_networks=allowed,
        tls=tls_settings(top.child("tls", TLS_SETTINGS_KEYS)),
        acme=parse_acme(acme_table, listeners) if acme_table is not None else None,
        http2=http2_settings(top.child("http2", tuple(Http2Settings.__dataclass_fields__))),
        priority_classes=classes,
        autoscale=scaling,
        source=source,
    ))


def _via(top: Reader) -> str:
    pseudonym = top.text("via", "gtm")
    if pseudonym and TOKEN.fullmatch(pseudonym) is None:
        raise top.fail("via", "must be a pseudonym (an HTTP token), or empty for no Via")
    return pseudonym


def _allowed_backend_networks(top: Reader) -> tuple[IpNetwork, ...]:
    if "allowed_backend_networks" not in top:
        return DEFAULT_ALLOWED_BACKEND_NETWORKS
    return top.networks("allowed_backend_networks")


def _admin_token(top: Reader) -> str | None:
    """Visible ASCII only: what a client can send in an Authorization header and match."""
    token = top.text("admin_token", None)
    if token is not None and not (token.isascii() and token.isprintable()
                                  and " " not in token):
        raise top.fail("admin_token", "must be visible ASCII characters without spaces")
    return token


def _check_proxy_protocol_pools(listeners: tuple[ListenerSpec, ...],
                                pools: tuple[PoolSpec, ...], top: Reader) -> None:
    """A PROXY header describes one client connection: pooled HTTP upstreams cannot send it."""
    http_pools = {r.pool for spec in listeners if spec.mode == "http"
                  for r in spec.routes} | {spec.pool for spec in listeners if spec.mode == "http"}
    for i, pool in enumerate(pools):
        if pool.proxy_protocol != "off" and pool.name in http_pools:
            raise top.at("pools").index(i).key("proxy_protocol").fail(
                "is for pools of tcp listeners only (HTTP gets Forwarded)")


def _timeouts(reader: Reader) -> Timeouts:
    defaults = Timeouts()
    return Timeouts(**{
        name: reader.number(name, getattr(defaults, name),
                            low=0.0 if name.startswith("shutdown") else 0.001, high=86400)
        for name in Timeouts.__dataclass_fields__})


def _limits(reader: Reader) -> Limits:
    defaults = Limits()
    values = {name: reader.integer(name, getattr(defaults, name), low=0, high=2**62)
              for name in Limits.__dataclass_fields__}
    if values["max_request_line"] < 16 or values["max_header_bytes"] < 64:
        raise reader.fail("max_header_bytes", "is too small to hold a request")
    if values["max_client_connections"] < 1:
        raise reader.fail("max_client_connections", "must be at least 1")
    if not 64 <= values["client_table"] <= 1 << 24:
        raise reader.fail("client_table", "must be from 64 to 16777216")
    return Limits(**values)


_POOL_KEYS = ("name", "backends", "algorithm", "hash_key", "slow_start", "max_connections",
              "max_idle", "retries", "retry_budget", "proxy_protocol", "tls", "tls_ca",
              "tls_server_name", "tls_verify", "check", "outlier", "panic_below", "queue_size",
              "queue_timeout", "autoscale")


def _pool(reader: Reader, allowed: tuple[IpNetwork, ...],
          outbound: tuple[IpNetwork, ...] = DEFAULT_ALLOWED_BACKEND_NETWORKS) -> PoolSpec:
    name = reader.text("name", "")
    if not name:
        raise reader.fail("name", "is required")
    backends = tuple(parse_backend(item, place, allowed)
                     for place, item in reader.items("backends"))
    keys = [b.key for b in backends]
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise reader.at("backends").index(i).fail(f"backend {key} is listed twice")
    hash_key = reader.text("hash_key", "client_ip")
    if hash_key != "client_ip" and not hash_key.startswith(("cookie:", "header:")):
        raise reader.fail("hash_key", "must be client_ip, cookie:NAME or header:NAME")
    queue_size, queue_timeout = queue_settings(reader)
    return PoolSpec(
        name=name,
        backends=backends,
        algorithm=reader.choice("algorithm", ALGORITHMS, "round_robin"),
        hash_key=hash_key,
        slow_start=reader.number("slow_start", 0.0, low=0, high=3600),
        max_connections=reader.integer("max_connections", 10000, low=1, high=10**6),
        max_idle=reader.integer("max_idle", 256, low=0, high=10**6),
        retries=reader.integer("retries", 2, low=0, high=10),
        retry_budget=reader.number("retry_budget", 0.2, low=0, high=1),
        proxy_protocol=reader.choice("proxy_protocol", ("off", "v1", "v2"), "off"),
        tls=reader.flag("tls", False),
        tls_ca=existing_path(reader, "tls_ca"),
        tls_server_name=reader.text("tls_server_name", None),
        tls_verify=reader.flag("tls_verify", True),
        check=parse_check(reader.at("check"), reader.value("check")) if "check" in reader
        else None,
        outlier=_outlier(reader),
        panic_below=parse_panic_below(reader),
        queue_size=queue_size,
        queue_timeout=queue_timeout,
        autoscale=parse_policy(reader.child("autoscale", POLICY_KEYS), outbound)
        if "autoscale" in reader else None,
    )


# Passive ejection on gateway errors (refused, reset, timed out) is on unless a pool says
# outlier = false: a dead backend then leaves rotation after a few failed attempts even
# without active checks. 5xx responses are the application's business: not by default.
DEFAULT_OUTLIER = OutlierSpec(consecutive_5xx=0)


def _outlier(reader: Reader) -> OutlierSpec | None:
    value = reader.value("outlier", True)
    if isinstance(value, bool):
        return DEFAULT_OUTLIER if value else None
    return parse_outlier(reader.child("outlier", OUTLIER_KEYS))


BACKEND_KEYS = ("address", "weight", "state")


def parse_backend(raw: Any, place: Place, allowed: tuple[IpNetwork, ...]) -> BackendSpec:
    """One backend entry (``"H:P"`` or a table): of the file, the admin API and the
    runtime overrides alike, so all of them accept and refuse the same things."""
    if isinstance(raw, str):
        raw = {"address": raw}
    reader = place.table(raw, BACKEND_KEYS)
    return BackendSpec(backend_address(reader, allowed), **backend_values(reader))


def backend_address(reader: Reader, allowed: tuple[IpNetwork, ...]) -> Listen:
    """The ``address`` key: HOST:PORT with a port, inside allowed_backend_networks."""
    address = reader.address("address")
    if address.port == 0:
        raise reader.fail("address", "needs a port above 0")
    try:
        check_backend_address(address.host, allowed)
    except ConfigError as exc:
        raise reader.fail("address", exc.reason) from exc
    return address


def backend_values(reader: Reader) -> dict[str, Any]:
    """The ``weight`` and ``state`` keys that are present (a change names only those)."""
    values: dict[str, Any] = {}
    if "weight" in reader:
        values["weight"] = reader.integer("weight", low=0, high=10000)
    if "state" in reader:
        values["state"] = reader.choice("state", ADMIN_STATES)
    return values


_LISTENER_KEYS = ("name", "bind", "pool", "mode", "routes", "proxy_protocol",
                  "trusted_networks", "health_path", "tls", "upgrades", "backlog", "h2c",
                  "limits", "priority", "priority_header", "priority_values")
_ROUTE_KEYS = ("pool", "host", "path_prefix", "header", "limits", "priority")
# Upgrade protocols a listener may switch to. h2c is never one: HTTP/2 is the balancer's
# own to speak, and a tunnel would let a client talk h2c to a backend past every check.
NEVER_UPGRADES = frozenset({"h2c"})
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2


def _listener(reader: Reader, pools: list[str], managed: frozenset[str] = frozenset(),
              classes: tuple[str, ...] = DEFAULT_CLASSES) -> ListenerSpec:
    bind = reader.address("bind")
    pool = reader.text("pool", pools[0] if len(pools) == 1 else None)
    if pool is None:
        raise reader.fail("pool", "is required when there is more than one pool")
    if pool not in pools:
        raise reader.fail("pool", f"names no pool ({', '.join(pools)})")
    mode = reader.choice("mode", ("http", "tcp"), "http")
    routes = tuple(_route(route, pools, classes)
                   for route in reader.tables("routes", _ROUTE_KEYS))
    if routes and mode == "tcp":
        raise reader.fail("routes", "are for http listeners only")
    limits = listener_limits(reader.child("limits", LISTENER_LIMIT_KEYS)) \
        if "limits" in reader else None
    if limits is not None and mode == "tcp":
        raise reader.fail("limits", "are for http listeners only")
    networks = reader.networks("trusted_networks", strict=False)
    accept_proxy = reader.flag("proxy_protocol", False)
    if accept_proxy and not networks:
        raise reader.fail("trusted_networks", "is required when proxy_protocol is on")
    health = reader.text("health_path", "/.gtm/health")
    if not health.startswith("/"):
        raise reader.fail("health_path", "must start with /")
    upgrades = _upgrades(reader)
    tls = listener_tls(reader.child("tls", TLS_KEYS), mode, managed) \
        if "tls" in reader else None
    if tls is not None and accept_proxy:  # the PROXY header comes before the handshake
        raise reader.fail("proxy_protocol", "cannot be combined with tls (not supported yet)")
    h2c = reader.flag("h2c", False)
    if h2c and (mode != "http" or tls is not None):
        raise reader.fail("h2c", "is for plain http listeners (TLS ones offer h2 by ALPN)")
    return ListenerSpec(
        name=reader.text("name", f"{mode}-{bind.port}"), bind=bind, pool=pool, mode=mode,
        routes=routes, proxy_protocol=accept_proxy, trusted_networks=networks,
        health_path=health, tls=tls, upgrades=upgrades,
        backlog=reader.integer("backlog", 0, low=0, high=1 << 20), h2c=h2c,
        limits=limits,
        priority=listener_priority(reader, classes),
    )


def _upgrades(reader: Reader) -> tuple[str, ...]:
    names = []
    for place, item in reader.at("upgrades").items(reader.value("upgrades", ["websocket"])):
        if not isinstance(item, str) or TOKEN.fullmatch(item) is None:
            raise place.fail("is not a protocol name (an HTTP token)")
        if item.lower() in NEVER_UPGRADES:
            raise place.fail(f"{item} cannot be tunnelled (HTTP/2 toward clients is the "
                             "balancer's own, never a backend's)")
        names.append(item.lower())
    return tuple(names)


def _route(reader: Reader, pools: list[str],
           classes: tuple[str, ...] = DEFAULT_CLASSES) -> RouteSpec:
    pool = reader.text("pool", None)
    if pool not in pools:
        raise reader.fail("pool", f"names no pool ({', '.join(pools)})")
    host = reader.text("host", None)
    prefix = reader.text("path_prefix", None)
    if prefix is not None and not prefix.startswith("/"):
        raise reader.fail("path_prefix", "must start with /")
    header_text = reader.text("header", None)
    header: tuple[bytes, bytes | None] | None = None
    if header_text is not None:
        name, colon, value = header_text.partition(":")
        if not name.strip():
            raise reader.fail("header", "must be \"Name\" or \"Name: value\"")
        header = (name.strip().lower().encode(), value.strip().encode() if colon else None)
    return RouteSpec(
        pool=pool,
        host=host.lower().encode() if host else None,
        path_prefix=prefix.encode() if prefix else None,
        header=header,
        limits=route_limits(reader.child("limits", RATE_KEYS)) if "limits" in reader
        else None,
        priority=class_index(reader, "priority", classes),
    )
