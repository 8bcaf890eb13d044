"""The admin API (aiohttp, off the hot path), protected by a bearer token.

Every other path needs ``Authorization: Bearer <admin_token>``. Errors answer in the one
body of the product's APIs (gtm.http_errors), ``{"error": {"status", "message", "field",
"request_id"}}``, ``field`` naming the body key or query parameter to blame; bodies and
parameters are checked in full before anything is changed.

    GET    /health                              200 ok / 503 draining (no token needed)
    GET    /pools                               pools, backends, state and counters
    POST   /pools/{pool}/backends               {"address": "H:P", "weight": 1}: add
    DELETE /pools/{pool}/backends/{address}     remove
    PATCH  /pools/{pool}/backends/{address}     {"weight": n} and/or {"state": "drain"}
    POST   /pools/{pool}/backends/{address}/drain?wait=SECONDS
                                                drain; with wait (0 to 3600), answer once
                                                in-flight is 0 (in every worker)
    POST   /reload                              re-read the config file
    GET    /report                              the region report
    GET    /metrics                             Prometheus text
    GET    /scale, /scale/history; PUT /scale/{pool}; POST /scale/{pool}/pause|resume
                                                auto-scaling (regional_lb.autoscale.admin)

Every applied change (not a refused one) is also an event (lb.backend.add, .remove,
.change, .drain, lb.reload) when the balancer was given somewhere to publish
(``start_balancer(events=...)``: gtm up lends gtm.control.events.publish, `gtm lb serve
--control` the follower's event log); this package never imports the control plane.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gtm import log
from gtm.config_reader import Reader
from gtm.errors import ConfigError, NotFound, RequestError, ServeError
from gtm.http_errors import error_boundary, error_response
from gtm.json_input import read_json
from gtm.metrics_export import metrics_response
from regional_lb import overrides as ov
from regional_lb.autoscale.admin import scale_routes
from regional_lb.balancing import BackendState
from regional_lb.config import BACKEND_KEYS, backend_address, backend_values
from regional_lb.health import health_view
from regional_lb.shares import drained, read_shares, share_dir
from regional_lb.tls.listener import ADMIN_TLS

if TYPE_CHECKING:
    from regional_lb.node import BalancerHandle

ADMIN = "admin"  # the source named in ConfigErrors of requests
# The one error body and status rule of the product's APIs.
admin_errors = error_boundary(log.lb, "the balancer")
MAX_WAIT = 3600.0  # seconds a drain may wait: each waiting request holds a task
WAIT_SYNTAX = re.compile(r"[0-9]{1,4}(\.[0-9]{1,6})?", re.ASCII)  # finite and plain


def authorization_refusal(request: web.Request, token: str | None) -> web.Response | None:
    """None when the request carries ``Authorization: Bearer <token>``, else the refusal.

    RFC 6750: no credentials or another scheme is 401 with a bare ``Bearer`` challenge, a
    malformed header is 400 ``invalid_request``, a wrong token 401 ``invalid_token``.
    """
    values = request.headers.getall("Authorization", [])
    if not values:
        return _challenge(request, 401, "missing bearer token (Authorization: Bearer <token>)")
    if len(values) > 1:
        return _challenge(request, 400, "more than one Authorization header",
                          "invalid_request")
    value = values[0]
    if not (value.isascii() and value.isprintable()):  # undecodable bytes come as surrogates
        return _challenge(request, 400, "the Authorization header must be printable ASCII",
                          "invalid_request")
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer":
        return _challenge(request, 401, "the Authorization scheme must be Bearer")
    if not token or not hmac.compare_digest(credentials.strip(" ").encode(), token.encode()):
        return _challenge(request, 401, "wrong bearer token", "invalid_token")
    return None


def _challenge(request: web.Request, status: int, reason: str,
               code: str | None = None) -> web.Response:
    challenge = f'Bearer error="{code}"' if code else "Bearer"
    return error_response(request, status, reason, "Authorization",
                          headers={"WWW-Authenticate": challenge})


def query(request: web.Request, allowed: tuple[str, ...]) -> dict[str, str]:
    """The query parameters, each known and given once; checked before anything is done."""
    for name in request.query:
        if name not in allowed:
            raise RequestError(400, "unknown query parameter", name)
        if len(request.query.getall(name)) > 1:
            raise RequestError(400, "is given more than once", name)
    return dict(request.query)


@contextlib.contextmanager
def request_fields() -> Iterator[None]:
    """Bodies go through the config file's reader, whose ConfigError here is the request's
    fault: a 400 naming the key (an invalid config, from a reload, is a 422)."""
    try:
        yield
    except ConfigError as exc:
        field = None if exc.where is None or exc.where == "" else str(exc.where)
        raise RequestError(400, exc.reason, field) from exc


def wait_seconds(text: str) -> float:
    """``?wait=``: plain decimal seconds, 0 to MAX_WAIT (no nan, inf, exponents, signs)."""
    if not WAIT_SYNTAX.fullmatch(text) or float(text) > MAX_WAIT:
        raise RequestError(400, f"must be seconds from 0 to {MAX_WAIT:g} (like 5 or 0.5)",
                           "wait")
    return float(text)


def backend_view(backend: BackendState) -> dict[str, Any]:
    return {
        "address": backend.key, "weight": backend.weight, "state": backend.admin,
        "healthy": backend.healthy, "available": backend.available,
        "in_flight": backend.active, "connections": backend.connections,
        "idle_connections": len(backend.idle), "requests": backend.requests,
        "failures": backend.failures,
        "responses": {f"{i}xx": n for i, n in enumerate(backend.responses) if i},
        "slow_start": backend.since is not None, "ewma_ms": round(backend.ewma * 1000, 3),
        **health_view(backend),  # health state, reason, check, ejection, panic
    }


class AdminServer:
    def __init__(self, handle: BalancerHandle, supervised: bool = False, workers: int = 1):
        self.handle = handle
        self.supervised = supervised  # several workers: persist changes and SIGHUP them all
        self.workers = workers
        self.runner: web.AppRunner | None = None
        self.port = 0
        # One change at a time: each edits what the one before left (a reload can wait on
        # a thread, and two interleaved edits of copies would lose the first).
        self.changing = asyncio.Lock()

    async def start(self) -> None:
        config = self.handle.snapshot.config
        assert config.admin is not None
        app = web.Application(middlewares=[admin_errors, self._auth])
        app.router.add_get("/health", self.health)
        app.router.add_get("/pools", self.pools)
        app.router.add_post("/pools/{pool}/backends", self.add)
        app.router.add_delete("/pools/{pool}/backends/{address}", self.remove)
        app.router.add_patch("/pools/{pool}/backends/{address}", self.patch)
        app.router.add_post("/pools/{pool}/backends/{address}/drain", self.drain)
        app.router.add_post("/reload", self.reload)
        app.router.add_get("/report", self.report)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/acme", self.acme)
        app.router.add_post("/acme/{name}/renew", self.acme_renew)
        app.add_routes(scale_routes(self.handle))  # auto-scaling: regional_lb.autoscale.admin
        self.runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self.runner.setup()
        tls = self.handle.worker.tls.listeners.get(ADMIN_TLS)  # rotates like the listeners'
        site = web.TCPSite(self.runner, config.admin.host, config.admin.port, reuse_port=True,
                           ssl_context=tls.front if tls is not None else None)
        try:
            await site.start()
        except OSError as exc:
            raise ServeError(f"cannot serve the admin API on {config.admin}: "
                             f"{exc.strerror or exc}") from exc
        server: Any = site._server
        if server is not None and server.sockets:
            self.port = server.sockets[0].getsockname()[1]
        log.lb.info("admin API on %s:%d", config.admin.host, self.port)

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path != "/health":
            refusal = authorization_refusal(request, self.handle.snapshot.config.admin_token)
            if refusal is not None:
                return refusal
        response: web.StreamResponse = await handler(request)
        return response

    async def health(self, request: web.Request) -> web.Response:
        stopping = self.handle.worker.stopping
        return web.json_response({"status": "draining" if stopping else "ok"},
                                 status=503 if stopping else 200)

    async def pools(self, request: web.Request) -> web.Response:
        snapshot = self.handle.snapshot
        return web.json_response({
            "config_version": snapshot.version,
            "pools": [{"name": p.name, "algorithm": p.algorithm,
                       "backends": [backend_view(b) for b in p.backends]}
                      for p in snapshot.pools.values()],
        })

    def _pool(self, request: web.Request) -> str:
        name = request.match_info["pool"]
        if name not in self.handle.snapshot.pools:
            raise NotFound(f"no pool {name!r}")
        return name

    def _backend(self, request: web.Request) -> BackendState:
        pool = self.handle.snapshot.pools[self._pool(request)]
        address = request.match_info["address"]
        for backend in pool.backends:
            if backend.key == address:
                return backend
        raise NotFound(f"no backend {address!r} in pool {pool.name!r}")

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await read_json(request)  # the shared strict reader: depth, duplicates, NUL
        except RequestError as exc:
            if exc.field == "body":  # the whole body: no one key to blame
                raise RequestError(exc.status, str(exc)) from exc
            raise
        if not isinstance(body, dict):
            raise RequestError(400, "body must be a JSON object")
        return body

    async def _apply(self, edit: Callable[[ov.Overrides], None]) -> None:
        """Edit a copy of the overrides, keep what is live, swap it in, then persist it."""
        async with self.changing:
            overrides = {k: {a: dict(v) for a, v in p.items()}
                         for k, p in self.handle.overrides.items()}
            edit(overrides)
            overrides = ov.prune(overrides, self.handle.base)
            await self.handle.reload_with(overrides)
            if self.handle.path is not None:  # so reloads, restarts and other workers see it
                ov.save_overrides(ov.overrides_path(self.handle.path), overrides)
                if self.supervised:
                    os.kill(os.getppid(), signal.SIGHUP)

    def _tell(self, kind: str, pool: str | None, detail: dict[str, Any]) -> None:
        """An applied change as an event (lb.backend.add, .remove, .change, .drain,
        lb.reload), when the balancer was given somewhere to publish; never raises."""
        publish = self.handle.events
        if publish is None:
            return
        region = self.handle.snapshot.config.region
        address = detail.get("address")
        subject = f"backend {region}/{pool}/{address}" if pool is not None \
            else f"balancer {region}"
        try:
            publish(kind, subject, {"region": region, "pool": pool, **detail},
                    f"lb-admin:{region}")
        except Exception:  # the change is made; a lost event must not turn it into a 500
            log.lb.exception("event %s about %s not published", kind, subject)

    async def add(self, request: web.Request) -> web.Response:
        query(request, ())
        pool = self._pool(request)
        body = await self._body(request)
        with request_fields():
            reader = Reader(body, ADMIN, "", BACKEND_KEYS)
            networks = self.handle.snapshot.config.allowed_backend_networks
            key = str(backend_address(reader, networks))
            values = backend_values(reader)
        await self._apply(lambda o: ov.add(o, self.handle.base, pool, key, values))
        self._tell("lb.backend.add", pool, {"address": key, "settings": values})
        return web.json_response({"added": key}, status=201)

    async def remove(self, request: web.Request) -> web.Response:
        query(request, ())
        pool, key = self._pool(request), self._backend(request).key
        await self._apply(lambda o: ov.remove(o, self.handle.base, pool, key))
        self._tell("lb.backend.remove", pool, {"address": key})
        return web.json_response({"removed": key})

    async def patch(self, request: web.Request) -> web.Response:
        query(request, ())
        pool, key = self._pool(request), self._backend(request).key
        body = await self._body(request)
        with request_fields():
            values = backend_values(Reader(body, ADMIN, "", ("weight", "state")))
        await self._apply(lambda o: ov.change(o, pool, key, values))
        self._tell("lb.backend.change", pool, {"address": key, "changes": values})
        return web.json_response(backend_view(self._backend(request)))

    async def drain(self, request: web.Request) -> web.Response:
        wait = wait_seconds(query(request, ("wait",)).get("wait", "0"))
        pool, address = self._pool(request), self._backend(request).key
        started = time.time()
        await self._apply(lambda o: ov.change(o, pool, address, {"state": "drain"}))
        self._tell("lb.backend.drain", pool, {"address": address, "wait": wait})
        backend = self._backend(request)
        loop = asyncio.get_running_loop()
        end = loop.time() + wait
        while True:
            done, in_flight = self._drained(backend, f"{pool}/{address}", started)
            if done or loop.time() >= end:
                break
            await asyncio.sleep(0.02)
        return web.json_response({"address": backend.key, "state": backend.admin,
                                  "in_flight": in_flight, "drained": done,
                                  "workers": self.workers})

    def _drained(self, backend: BackendState, key: str, since: float) -> tuple[bool, int]:
        """Every worker's view when there are several (their shares), else this one's."""
        if not self.supervised or self.handle.path is None:
            return backend.active == 0, backend.active
        return drained(read_shares(share_dir(self.handle.path), self.workers), key, since)

    async def reload(self, request: web.Request) -> web.Response:
        query(request, ())
        async with self.changing:  # re-reads the runtime file: not under a change's feet
            snapshot = await self.handle.reload()
        self._tell("lb.reload", None, {"config_version": snapshot.version})
        if self.supervised:
            os.kill(os.getppid(), signal.SIGHUP)
        return web.json_response({"config_version": snapshot.version})

    async def acme(self, request: web.Request) -> web.Response:
        manager = self.handle.acme
        return web.json_response({"certificates": manager.status() if manager else []})

    async def acme_renew(self, request: web.Request) -> web.Response:
        """Order a certificate now (the answer waits for the order: seconds to minutes)."""
        query(request, ())
        manager = self.handle.acme
        if manager is None:
            raise NotFound("no [lb.acme] in the configuration")
        issued = await manager.renew(request.match_info["name"])
        status = next(s for s in manager.status() if s["name"] == request.match_info["name"])
        return web.json_response({"issued": issued, **status}, status=200 if issued else 502)

    async def report(self, request: web.Request) -> web.Response:
        return web.json_response(self.handle.reporter.build())

    async def metrics(self, request: web.Request) -> web.Response:
        # Every worker of this balancer added up (gtm.metrics_export), not worker 0 alone.
        return await metrics_response(self.handle.metrics_text)
