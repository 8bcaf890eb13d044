"""Running the control plane: store, optional Redis fan-out, and the API server.

``start_control_plane(settings)`` is what ``gtm up`` (embedded SQLite) and
``gtm api`` (PostgreSQL + Redis) call. It starts even when PostgreSQL is down:
the API then answers 503 until the store is back, and nodes keep serving from
their snapshots meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from gtm import log
from gtm.control import events
from gtm.control.api import build_app
from gtm.control.api_tls import ApiTls
from gtm.control.auth import FAILURE_BURST, FAILURES_PER_SECOND
from gtm.control.certificates import CertificateService, expiry_events
from gtm.control.certificates_api import CERTIFICATES
from gtm.control.client import ADMIN_TOKEN_FILE
from gtm.control.drills_api import DRILL_SERVICE
from gtm.control.fanout import RedisFanout
from gtm.control.liveness import Liveness
from gtm.control.ratelimit import TokenBuckets
from gtm.control.refusals import DEFAULT_WINDOW
from gtm.control.scale_api import SCALE, mirror_events, scale_store_for
from gtm.control.service import ConfigService
from gtm.control.status_api import status_source
from gtm.control.store import Store, hash_secret, new_token
from gtm.control.stores import DEFAULT_SQLITE_NAME, describe, store_from_url
from gtm.errors import StoreUnavailable
from gtm.sealing import SECRET_KEY_FILE, ensure_key, key_file, read_key
from gtm.store_access import validate_namespace


@dataclass(frozen=True)
class ControlSettings:
    host: str = "127.0.0.1"
    port: int = 8080  # 0 picks a free port (tests)
    store_url: str | None = None  # None: the embedded SQLite file in state_dir
    redis_url: str | None = None
    namespace: str = "gtm"
    state_dir: Path = Path("var/control")
    # With no token in the store yet, create an admin token and write it to
    # state_dir/admin.token (mode 0600): the embedded default needs no setup step.
    bootstrap_admin: bool = True
    # Stored as version 1 when the store has no version yet (the embedded default
    # starts from the example zones).
    seed_document: dict[str, Any] | None = None
    # Seals certificates' private keys (gtm.sealing). None: $GTM_SECRET_KEY_FILE,
    # else state_dir/secret.key.
    secret_key_file: Path | None = None
    # Make a fresh key when there is none (the embedded default). Off for a control plane
    # of several nodes, which must share one key: uploads then get 503 until it is there.
    create_secret_key: bool = True
    # HTTPS for the API (gtm.control.api_tls): a certificate chain and its key, in files
    # polled for rotation. None: plain HTTP (the embedded default, on loopback).
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # The longest one PostgreSQL statement may take before the API answers 503 (seconds).
    store_timeout: float = 5.0
    # The longest one Redis call may take (seconds); commits never wait for Redis anyway.
    redis_timeout: float = 0.5
    # When a node that stopped reporting is shown stale, then gone (gtm.control.liveness).
    liveness: Liveness = field(default_factory=Liveness)
    # Repeated refusals of one kind are counted into one audit row per window (seconds).
    audit_window: float = DEFAULT_WINDOW
    # Failed authentications a client may make at once, then per second (then 429).
    auth_failure_burst: int = FAILURE_BURST
    auth_failures_per_second: float = FAILURES_PER_SECOND
    # Certificates this close to expiry are events (certificate.expiring) and shown on the
    # status page; checked at start and then every expiry_check_interval seconds.
    certificate_warning_days: float = 30.0
    expiry_check_interval: float = 3600.0
    # The DNS listeners scheduled drills observe ("HOST:PORT"; gtm up passes its own).
    drill_dns: tuple[str, ...] = ()

    def resolved_store_url(self) -> str:
        return self.store_url or f"sqlite://{(self.state_dir / DEFAULT_SQLITE_NAME).resolve()}"

    def resolved_key_file(self) -> Path:
        path = key_file(self.secret_key_file, self.state_dir / SECRET_KEY_FILE)
        assert path is not None
        return path


class ControlPlane:
    """A running control plane; ``await stop()`` ends it."""

    def __init__(self, settings: ControlSettings, store: Store, service: ConfigService,
                 runner: web.AppRunner, url: str, tls: ApiTls | None = None):
        self.settings = settings
        self.store = store
        self.service = service
        self.runner = runner
        self.url = url
        self.tls = tls
        self._refusal_counts = asyncio.create_task(service.refusals.run(),
                                                   name="audit-refusal-counts")
        # Drills' overrides are restored at their expiry by this process, runner or not.
        self.drills = runner.app[DRILL_SERVICE]
        self.drills.api_url, self.drills.dns = url, settings.drill_dns
        self.drills.start()
        self._expiry_watch = asyncio.create_task(self._watch_expiry(), name="cert-expiry")
        # publish() of drills, scaling and the like in this process reaches this plane.
        self._previous_events = events.install(service.events)
        self._scale_mirror = start_scale_mirror(runner.app, service)

    async def _watch_expiry(self) -> None:
        """certificate.expiring / .expired events, once per certificate and kind."""
        seen: set[tuple[str, str, str]] = set()
        within = self.settings.certificate_warning_days * 86400
        while True:
            try:
                records = await self.store.certificates(0)
                for kind, subject, detail in expiry_events(records, time.time(), within, seen):
                    self.service.events.publish(kind, subject, detail, "gtm")
            except StoreUnavailable:
                pass  # the next round sees them
            except Exception:  # the watch must outlive any one bad round
                log.control.exception("certificate expiry check failed")
            await asyncio.sleep(self.settings.expiry_check_interval)

    @property
    def admin_token_path(self) -> Path:
        return self.settings.state_dir / ADMIN_TOKEN_FILE

    async def stop(self) -> None:
        await self.drills.stop()
        if self.tls is not None:
            await self.tls.stop()
        await stop_scale_mirror(self.runner.app, self._scale_mirror)
        await self.runner.cleanup()
        for task in (self._refusal_counts, self._expiry_watch):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.service.refusals.flush(everything=True)  # the counts of open windows
        except Exception:  # stopping must go on: the store and Redis are still to close
            log.control.exception("could not write the counts of refused requests")
        if events.installed() is self.service.events:
            events.install(self._previous_events)
        await self.service.events.close()  # the last events, within a bounded time
        if self.service.fanout is not None:
            await self.service.fanout.close()
        await self.store.close()


def start_scale_mirror(app: web.Application, service: ConfigService
                       ) -> asyncio.Task[None] | None:
    """The scalers' events into the audit log (gtm.control.scale_api)."""
    store = app.get(SCALE)
    if store is None:
        return None
    return asyncio.create_task(mirror_events(store, service), name="scale-audit-mirror")


async def stop_scale_mirror(app: web.Application, task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    store = app.get(SCALE)
    if store is not None:
        await store.close()


async def start_control_plane(settings: ControlSettings) -> ControlPlane:
    namespace = validate_namespace(settings.namespace)
    tls = ApiTls(settings.tls_cert, settings.tls_key) \
        if settings.tls_cert is not None and settings.tls_key is not None else None
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    store = store_from_url(settings.resolved_store_url(), namespace,
                           timeout=settings.store_timeout)
    fanout = RedisFanout(settings.redis_url, namespace, settings.redis_timeout) \
        if settings.redis_url else None
    event_log = events.EventLog(store, settings.redis_url, namespace,
                                redis_timeout=settings.redis_timeout,
                                store_timeout=settings.store_timeout)
    service = ConfigService(store, fanout, settings.audit_window, event_log)
    certificates = certificate_service(settings, service)  # before anything is opened
    try:
        await store.open()
        await _first_start(settings, service)
    except StoreUnavailable as exc:
        log.control.error("starting without the config store (%s); writes get 503", exc)
    app = build_app(service, settings.liveness, TokenBuckets(
        settings.auth_failure_burst, settings.auth_failures_per_second))
    app[CERTIFICATES] = certificates
    status_source(app).warning_days = settings.certificate_warning_days
    scale = scale_store_for(settings.resolved_store_url(), settings.redis_url, namespace)
    if scale is not None:
        app[SCALE] = scale
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port,
                       ssl_context=tls.context if tls is not None else None)
    await site.start()
    host, port = _bound(runner)
    url = f"{'https' if tls is not None else 'http'}://{host}:{port}"
    if tls is not None:
        tls.start()
    log.control.info("control plane API on %s (store %s, redis %s)", url,
                     describe(settings.resolved_store_url()), settings.redis_url or "off")
    return ControlPlane(settings, store, service, runner, url, tls)


def _bound(runner: web.AppRunner) -> tuple[str, int]:
    host, port = runner.addresses[0][:2]
    return (f"[{host}]" if ":" in host else host), port


async def _first_start(settings: ControlSettings, service: ConfigService) -> None:
    store = service.store
    if settings.seed_document is not None and await store.head() == 0:
        await service.propose(settings.seed_document, 0, "gtm-up", "initial configuration")
    if settings.bootstrap_admin and not await store.tokens():
        record, secret = new_token("bootstrap-admin", "admin", "gtm-up")
        await store.add_token(record, hash_secret(secret))
        path = settings.state_dir / ADMIN_TOKEN_FILE
        write_secret(path, secret)
        await service.audit("gtm-up", "token.create", record.id, "ok",
                            {"name": record.name, "role": "admin", "file": str(path)})
        log.control.info("created an admin token in %s", path)


def certificate_service(settings: ControlSettings, service: ConfigService
                        ) -> CertificateService:
    """Certificates with the secret key that seals them; a key file that exists but
    cannot be used stops the start (SealingError): uploads must never be sealed with
    anything but the deployment's key."""
    path = settings.resolved_key_file()
    if settings.create_secret_key:
        key, created = ensure_key(path)
        if created:
            log.control.info("created the secret key %s (id %s): certificates' private keys "
                             "are sealed with it; balancers that serve them need a copy",
                             path, key.id)
        return CertificateService(service, key)
    if not path.exists():
        problem = (f"no secret key file {path}: make one with `gtm certs keygen {path}` and "
                   "give every control-plane node the same file")
        log.control.warning("certificate uploads are refused: %s", problem)
        return CertificateService(service, None, problem)
    return CertificateService(service, read_key(path))


def write_secret(path: Path, secret: str) -> None:
    """Write a secret readable by its owner only, never visible with wider permissions."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
