"""Serving ``/metrics``: one process's registry, or a whole node of forked workers.

A process with one worker exposes ``gtm.metrics.REGISTRY`` as it is. A node of N forked
workers (``gtm serve --workers N``, ``gtm lb serve``) has N registries, each counting its
own packets with plain integers. Worker 0 serves the scrape; at scrape time it asks every
other worker for its families over a Unix socket in a private directory made before the
fork (``WorkerFanIn``) and adds them up, so one scrape shows the whole node. Nothing is
published between scrapes: the hot path pays nothing for the fan-in.

How families add up (``merge``): counters and histograms are summed; a gauge is summed
unless ``gtm.metrics.GAUGE_MERGE`` says otherwise (the version a node serves is the
lowest any worker serves; a flag is raised when any worker raises it). Each scrape also
says how many workers answered (``gtm_metrics_workers``), so a partial scrape shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import socket
import tempfile
from collections.abc import Awaitable, Callable, Iterable, Iterator
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.samples import Sample

from gtm import log, metrics
from gtm.config_reader import Listen
from gtm.errors import ServeError

WORKER_TIMEOUT = 2.0  # seconds a scrape waits for another worker's families
MAX_WORKER_REPLY = 64 * 1024 * 1024  # a worker's families, serialized: far above any real one
Family = tuple[str, str, str, list[tuple[str, dict[str, str], float]]]
TextSource = Callable[[], Awaitable[bytes]]


def local_families(registry: CollectorRegistry | None = None) -> list[Family]:
    """This process's families, in a form that crosses a socket (JSON)."""
    out: list[Family] = []
    for family in (registry or metrics.REGISTRY).collect():
        samples = [(s.name, dict(s.labels), float(s.value)) for s in family.samples]
        out.append((family.name, family.type, family.documentation, samples))
    return out


def merge(per_worker: Iterable[list[Family]]) -> list[Family]:
    """The node's families: every worker's samples combined by the family's rule."""
    order: list[str] = []
    kinds: dict[str, tuple[str, str]] = {}
    values: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for families in per_worker:
        for name, kind, documentation, samples in families:
            if name not in kinds:
                order.append(name)
                kinds[name] = (kind, documentation)
                values[name] = {}
            rule = _rule(name, kind)
            table = values[name]
            for sample_name, labels, value in samples:
                key = (sample_name, tuple(sorted(labels.items())))
                known = table.get(key)
                sample_rule = "min" if sample_name.endswith("_created") else rule
                table[key] = value if known is None else _combine(sample_rule, known, value)
    return [(name, kinds[name][0], kinds[name][1],
             [(sample, dict(labels), value) for (sample, labels), value in values[name].items()])
            for name in order]


def _rule(name: str, kind: str) -> str:
    if kind != "gauge":
        return "sum"
    return metrics.GAUGE_MERGE.get(name, "sum")


def _combine(rule: str, known: float, value: float) -> float:
    if rule == "min":
        return min(known, value)
    if rule == "max":
        return max(known, value)
    return known + value


def exposition(families: list[Family]) -> bytes:
    """The Prometheus text format of the given families."""

    class Fixed:
        def collect(self) -> Iterator[Metric]:
            for name, kind, documentation, samples in families:
                family = Metric(name, documentation, kind)
                family.samples = [Sample(s, labels, value) for s, labels, value in samples]
                yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Fixed())
    return generate_latest(registry)


async def local_text() -> bytes:
    return generate_latest(metrics.REGISTRY)


class WorkerFanIn:
    """The Unix sockets through which worker 0 reads the other workers' families.

    Made in the parent before the workers fork (``WorkerFanIn.create``); each worker calls
    ``serve`` (workers 1..N-1 answer) and worker 0 calls ``text`` at each scrape.
    """

    def __init__(self, directory: Path, workers: int):
        self.directory = directory
        self.workers = workers
        self.server: asyncio.AbstractServer | None = None

    @classmethod
    def create(cls, workers: int) -> WorkerFanIn:
        return cls(Path(tempfile.mkdtemp(prefix="gtm-metrics-")), workers)  # mode 0700

    def path(self, index: int) -> Path:
        return self.directory / f"worker-{index}.sock"

    async def serve(self, index: int) -> None:
        """Answer worker 0's scrapes with this worker's families (workers 1..N-1)."""
        if index == 0:
            return
        path = self.path(index)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by this worker's crashed predecessor

        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                writer.write(json.dumps(local_families()).encode())
                await writer.drain()
            except Exception:  # one failed scrape must not end the worker
                log.metrics.exception("could not send this worker's metrics")
            finally:
                writer.close()

        self.server = await asyncio.start_unix_server(answer, path=str(path))

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None

    async def text(self) -> bytes:
        """The whole node's exposition: this worker's families and every other's."""
        others = await asyncio.gather(*(self._ask(i) for i in range(1, self.workers)))
        answered = [families for families in others if families is not None]
        per_worker = [local_families(), *answered]
        status = (metrics.METRICS_WORKERS, "gauge", metrics.METRICS_WORKERS_HELP, [
            (metrics.METRICS_WORKERS, {"state": "answered"}, float(len(per_worker))),
            (metrics.METRICS_WORKERS, {"state": "missing"},
             float(self.workers - len(per_worker)))])
        return exposition([*merge(per_worker), status])

    async def _ask(self, index: int) -> list[Family] | None:
        try:
            async with asyncio.timeout(WORKER_TIMEOUT):
                reader, writer = await asyncio.open_unix_connection(
                    str(self.path(index)), limit=MAX_WORKER_REPLY)
                try:
                    data = await reader.read(MAX_WORKER_REPLY)
                finally:
                    writer.close()
            return [(n, k, d, [(s, dict(lb), float(v)) for s, lb, v in samples])
                    for n, k, d, samples in json.loads(data)]
        except (OSError, TimeoutError, ValueError) as exc:  # restarting, or stuck
            log.metrics.warning("worker %d did not answer the metrics scrape: %s", index, exc)
            return None

    def remove(self) -> None:
        """The parent, once every worker has ended."""
        shutil.rmtree(self.directory, ignore_errors=True)


def bind_metrics(listen: Listen) -> socket.socket:
    """The metrics listener, bound before the workers fork (a port of 0 resolves once,
    and a restarted worker 0 serves the same socket)."""
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((listen.host, listen.port))
        sock.listen(64)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen for metrics on {listen}: {exc.strerror}") from exc
    return sock


def url_of(sock: socket.socket, scheme: str = "http") -> str:
    host, port = sock.getsockname()[:2]
    return f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}/metrics"


async def metrics_response(source: TextSource) -> web.Response:
    body = await source()
    response = web.Response(body=body)
    response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
    response.charset = "utf-8"
    return response


class MetricsServer:
    """A plain ``GET /metrics`` listener (no token: bind it where only Prometheus reaches)."""

    def __init__(self, sock: socket.socket, source: TextSource = local_text):
        self.sock = sock
        self.source = source
        self.runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return url_of(self.sock)

    async def start(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            return await metrics_response(self.source)

        app = web.Application()
        app.router.add_get("/metrics", handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.SockSite(self.runner, self.sock).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None



async def start_node_metrics(sock: socket.socket | None, fanin: WorkerFanIn | None,
                             index: int) -> Callable[[], Awaitable[None]]:
    """A node worker's part: worker 0 serves the listener (adding up every worker through
    the fan-in), the others answer worker 0. Returns the stop."""
    server: MetricsServer | None = None
    if fanin is not None:
        await fanin.serve(index)
    if sock is not None and index == 0:
        server = MetricsServer(sock, fanin.text if fanin is not None else local_text)
        await server.start()

    async def stop() -> None:
        if server is not None:
            await server.stop()
        if fanin is not None:
            await fanin.stop()

    return stop
