"""The admin API (aiohttp, off the hot path), protected by a bearer token.

    GET    /health                              200 ok / 503 draining (no token needed)
    GET    /pools                               pools, backends, state and counters
    POST   /pools/{pool}/backends               {"address": "H:P", "weight": 1}: add
    DELETE /pools/{pool}/backends/{address}     remove
    PATCH  /pools/{pool}/backends/{address}     {"weight": n} and/or {"state": "drain"}
    POST   /pools/{pool}/backends/{address}/drain?wait=SECONDS
                                                drain; with wait, answer once in-flight is 0
                                                (in every worker, when there are several)
    POST   /reload                              re-read the config file
    GET    /report                              the region report
    GET    /metrics                             Prometheus text
"""

from __future__ import annotations

import asyncio
import hmac
import os
import signal
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from gtm import log
from gtm.errors import ConfigError, GtmError, ServeError
from regional_lb import overrides as ov
from regional_lb.balancing import BackendState
from regional_lb.health import health_view
from regional_lb.shares import drained, read_shares, share_dir
from regional_lb.tls.listener import ADMIN_TLS

if TYPE_CHECKING:
    from regional_lb.node import BalancerHandle


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

    async def start(self) -> None:
        config = self.handle.snapshot.config
        assert config.admin is not None
        app = web.Application(middlewares=[self._auth])
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
            token = self.handle.snapshot.config.admin_token
            given = request.headers.get("Authorization", "").removeprefix("Bearer ")
            if not token or not hmac.compare_digest(given.encode(), token.encode()):
                return web.json_response({"error": "missing or wrong bearer token"}, status=401)
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except ConfigError as exc:
            return web.json_response({"error": exc.reason, "field": exc.where}, status=400)
        except GtmError as exc:
            return web.json_response({"error": str(exc)}, status=400)

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

    def _backend(self, request: web.Request) -> BackendState:
        pool = self.handle.snapshot.pools.get(request.match_info["pool"])
        if pool is None:
            raise web.HTTPNotFound(text="no such pool\n")
        address = request.match_info["address"]
        for backend in pool.backends:
            if backend.key == address:
                return backend
        raise web.HTTPNotFound(text="no such backend\n")

    async def _body(self, request: web.Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError as exc:
            raise ConfigError("body must be a JSON object", "admin") from exc
        if not isinstance(body, dict):
            raise ConfigError("body must be a JSON object", "admin")
        return body

    async def _apply(self, pool: str, address: str, **values: Any) -> None:
        if pool not in self.handle.snapshot.pools:
            raise web.HTTPNotFound(text="no such pool\n")
        overrides = dict(self.handle.overrides)
        overrides = {k: {a: dict(v) for a, v in p.items()} for k, p in overrides.items()}
        ov.change(overrides, pool, address, **values)
        await self.handle.reload_with(overrides)
        if self.handle.path is not None:  # so that reloads, restarts and other workers see it
            ov.save_overrides(ov.overrides_path(self.handle.path), overrides)
            if self.supervised:
                os.kill(os.getppid(), signal.SIGHUP)

    async def add(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        address = body.get("address")
        if not isinstance(address, str):
            raise ConfigError("is required (\"HOST:PORT\")", "admin", "address")
        values = {k: body[k] for k in ("weight", "state") if k in body}
        await self._apply(request.match_info["pool"], address, removed=False, **values)
        return web.json_response({"added": address}, status=201)

    async def remove(self, request: web.Request) -> web.Response:
        backend = self._backend(request)
        await self._apply(request.match_info["pool"], backend.key, removed=True)
        return web.json_response({"removed": backend.key})

    async def patch(self, request: web.Request) -> web.Response:
        backend = self._backend(request)
        body = await self._body(request)
        unknown = set(body) - {"weight", "state"}
        if unknown:
            raise ConfigError(f"unknown field {sorted(unknown)[0]!r}", "admin")
        await self._apply(request.match_info["pool"], backend.key, **body)
        return web.json_response(backend_view(self._backend(request)))

    async def drain(self, request: web.Request) -> web.Response:
        backend = self._backend(request)
        started = time.time()
        await self._apply(request.match_info["pool"], backend.key, state="drain")
        backend = self._backend(request)
        wait = min(float(request.query.get("wait", "0") or 0), 3600.0)
        loop = asyncio.get_running_loop()
        end = loop.time() + wait
        key = f"{request.match_info['pool']}/{backend.key}"
        while True:
            done, in_flight = self._drained(backend, key, started)
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
        snapshot = await self.handle.reload()
        if self.supervised:
            os.kill(os.getppid(), signal.SIGHUP)
        return web.json_response({"config_version": snapshot.version})

    async def acme(self, request: web.Request) -> web.Response:
        manager = self.handle.acme
        return web.json_response({"certificates": manager.status() if manager else []})

    async def acme_renew(self, request: web.Request) -> web.Response:
        """Order a certificate now (the answer waits for the order: seconds to minutes)."""
        manager = self.handle.acme
        if manager is None:
            return web.json_response({"error": "no [lb.acme] in the configuration"}, status=404)
        issued = await manager.renew(request.match_info["name"])
        status = next(s for s in manager.status() if s["name"] == request.match_info["name"])
        return web.json_response({"issued": issued, **status}, status=200 if issued else 502)

    async def report(self, request: web.Request) -> web.Response:
        return web.json_response(self.handle.reporter.build())

    async def metrics(self, request: web.Request) -> web.Response:
        from prometheus_client import generate_latest

        from gtm import metrics

        return web.Response(body=generate_latest(metrics.REGISTRY),
                            content_type="text/plain", charset="utf-8")
