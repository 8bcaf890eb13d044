"""`gtm lab up`: build the lab, run its processes, serve its fault API, tear it down.

One process owns a lab: it builds the network (gtm.lab.network), runs the delay lines
(gtm.lab.delay) and the children (Redis, the control plane, the DNS nodes, a balancer
and demo backends per region, each inside its namespace), forwards a port on the
host's 127.0.0.1 to the control API inside the lab, and answers fault requests on a
Unix socket in the state directory (gtm.lab.faults is its client). The lab's
description (gtm.lab.state) is rewritten after every change, so `gtm lab down` can
remove everything even after this process was killed.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import signal
import socket
import sys
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

from gtm import log
from gtm.lab import network
from gtm.lab.delay import DelayLine, PathSettings, open_tun
from gtm.lab.plan import (
    ADMIN_PORT,
    API_PORT,
    HEALTH_PORT,
    REDIS_PORT,
    LabPlan,
    Region,
)
from gtm.lab.state import (
    CONTROL_SOCKET,
    STATE_FILE,
    Lab,
    LabNode,
    LabProcess,
    LabRegion,
    LabVantage,
)
from gtm.lab.system import (
    LabError,
    ProcessId,
    Unsupported,
    in_netns,
    is_root,
    missing_tools,
    namespaces_with_prefix,
    setns,
    signal_all,
)
from gtm.process import cancel_and_wait

MAX_REQUEST = 64 * 1024     # one fault request, a JSON line
READY_TIMEOUT = 60.0
LOOPBACK_CANNOT = [
    "no network namespaces (needs root): every process runs on this host's loopback",
    "no vantage points in other countries: clients are this host (use ECS to stand "
    "for countries)",
    "no latency or loss (set_latency, set_loss), no link cuts or partitions "
    "(cut_link, partition): they need the namespaces and the delay lines",
    "DNS nodes listen on port 5300, not 53",
]


class Supervisor:
    def __init__(self, plan: LabPlan, state_dir: Path):
        self.plan = plan
        self.state_dir = state_dir.resolve()
        self.children: dict[str, tuple[asyncio.subprocess.Process, LabProcess]] = {}
        self.argv: dict[str, tuple[list[str], str | None]] = {}
        self.lines: dict[str, DelayLine] = {}
        self.faults: dict[str, Any] = {"cut": [], "partitions": {}, "stopped": []}
        self.core: ThreadPoolExecutor | None = None
        self.api_port = 0
        self.token = ""
        self.admin_tokens = {r.name: secrets.token_urlsafe(18) for r in plan.regions}
        self.ready = False
        self.me = ProcessId.of(os.getpid())
        self._servers: list[asyncio.AbstractServer] = []
        self._lock = asyncio.Lock()  # one fault at a time: each sees the last one's state

    # -- the whole life ----------------------------------------------------------------

    async def run(self, on_ready: Callable[[Lab], None]) -> None:
        """Build, announce, serve until SIGTERM or SIGINT (while building too), and take
        everything down again whatever happened."""
        self._prepare()
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
        build = asyncio.create_task(self._build())
        stopping = asyncio.create_task(stop.wait())
        try:
            await asyncio.wait({build, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if build.done():
                build.result()  # a failed build raises here, after the lab is removed
                on_ready(self.describe())
                await stopping
            log.cli.info("stop signal received: taking the lab down")
        finally:
            await cancel_and_wait(build, stopping)
            await self.stop()

    def _prepare(self) -> None:
        plan = self.plan
        if not plan.loopback:
            if not is_root():
                raise LabError("the lab needs root for network namespaces; run as root, "
                               "or `gtm lab up --loopback` for a lab on 127.0.x.x without "
                               "latency or link faults")
            missing = missing_tools(["ip", "nft"])
            if missing:
                raise LabError(f"missing {', '.join(missing)}: apt-get install iproute2 "
                               "nftables")
            existing = namespaces_with_prefix(plan.prefix)
            if existing:
                raise LabError(f"a lab with prefix {plan.prefix!r} exists already "
                               f"({', '.join(existing)}): `gtm lab down` first")
        old = Lab.load_or_none(self.state_dir)
        if old is not None and old.supervisor.id.alive():
            raise LabError(f"a lab runs from {self.state_dir} already (PID "
                           f"{old.supervisor.pid}): `gtm lab down` first")
        for name in ("configs", "logs", "control"):
            (self.state_dir / name).mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.state_dir, 0o700)
        (self.state_dir / CONTROL_SOCKET).unlink(missing_ok=True)
        self._save()  # from here on, `gtm lab down` finds the supervisor

    async def _build(self) -> None:
        plan = self.plan
        if not plan.loopback:
            await asyncio.to_thread(network.build, plan)
            assert plan.core is not None
            core_file = f"/run/netns/{plan.core}"
            self.core = ThreadPoolExecutor(4, thread_name_prefix="lab-core",
                                           initializer=setns, initargs=(core_file,))
            for region in plan.regions:
                await self._start_delay_line(region)
        self._servers.append(await asyncio.start_unix_server(
            self._serve_fault, path=str(self.state_dir / CONTROL_SOCKET), limit=MAX_REQUEST))
        os.chmod(self.state_dir / CONTROL_SOCKET, 0o600)
        await self._start_api_forwarder()
        await self._start_control_plane()
        await asyncio.gather(*(self._start_region(region) for region in plan.regions),
                             *(self._start_node(node.name) for node in plan.nodes))
        await self._wait_ready()
        self.ready = True
        self._save()

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        recorded = [record.id for _, record in self.children.values()]
        await asyncio.to_thread(signal_all, recorded, 2.0)
        for process, _ in list(self.children.values()):
            await process.wait()
        self.children.clear()
        for line in self.lines.values():
            line.close()
        self.lines.clear()
        if self.core is not None:
            self.core.shutdown(wait=False)
        left = []
        if not self.plan.loopback:
            left = await asyncio.to_thread(network.teardown, self.plan.prefix, recorded)
        for name in (STATE_FILE, CONTROL_SOCKET):
            (self.state_dir / name).unlink(missing_ok=True)
        shutil.rmtree(self.state_dir / "control", ignore_errors=True)
        shutil.rmtree(self.state_dir / "configs", ignore_errors=True)
        for what in left:
            log.cli.error("could not remove %s", what)
        log.cli.info("lab %s is down (logs kept in %s)", self.plan.prefix,
                     self.state_dir / "logs")

    # -- processes -----------------------------------------------------------------------

    async def _spawn(self, role: str, namespace: str | None, args: list[str]) -> None:
        self.argv[role] = (args, namespace)
        log_path = self.state_dir / "logs" / f"{role.replace(':', '-')}.log"
        with open(log_path, "ab") as out:
            process = await asyncio.create_subprocess_exec(
                *in_netns(namespace, args), stdin=asyncio.subprocess.DEVNULL, stdout=out,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        identity = ProcessId.of(process.pid)
        if identity is None:
            raise LabError(f"{role} ended at once; see {log_path}")
        record = LabProcess(role, identity.pid, identity.start, namespace, str(log_path))
        self.children[role] = (process, record)
        self._save()

    async def _stop_child(self, role: str) -> None:
        entry = self.children.pop(role, None)
        if entry is None:
            return
        process, record = entry
        await asyncio.to_thread(signal_all, [record.id], 3.0)
        await process.wait()
        self._save()

    def _gtm(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "gtm.cli", "--log-level", "INFO", *args]

    async def _start_control_plane(self) -> None:
        plan = self.plan
        control = self.state_dir / "control"
        redis = shutil.which("redis-server")
        redis_args = []
        if redis:
            await self._spawn("redis", plan.control_namespace, [
                redis, "--bind", plan.control_address, "--port", str(REDIS_PORT),
                "--save", "", "--appendonly", "no", "--dir", str(control),
                "--protected-mode", "no"])
            redis_args = ["--redis", plan.redis_url]
        else:
            log.cli.warning("redis-server is not installed: the DNS nodes learn of new "
                            "versions by polling the store (every second)")
        await self._spawn("api", plan.control_namespace, self._gtm(
            "api", "--listen", f"{plan.control_address}:{API_PORT}", "--state-dir",
            str(control), *redis_args))
        token_file = control / "admin.token"
        await self._until(lambda: token_file.exists() and token_file.read_text().strip(),
                          "the control plane's admin token")
        self.token = token_file.read_text().strip()
        await self._until_async(self._api_answers, "the control plane API")
        await asyncio.to_thread(self._apply_config)

    def _apply_config(self) -> None:
        from gtm.control.client import Client

        client = Client(self.api_url, self.token)
        zone = self.plan.zone + "."
        document = {"zones": {zone: self._zone_text()},
                    "steering": {zone: self.plan.steering}}
        live = client.get("/v1/config")
        client.call("PUT", "/v1/config", {"document": document, "message": "gtm lab up"},
                    if_match=int(live["version"]))

    def _zone_text(self) -> str:
        zone = self.plan.zone + "."
        lines = [f"$ORIGIN {zone}", "$TTL 300",
                 f"@ SOA ns1.{zone} hostmaster.{zone} 1 7200 1800 1209600 30"]
        for i, node in enumerate(self.plan.nodes, start=1):
            lines += [f"@ NS ns{i}.{zone}", f"ns{i} A {node.address}"]
        return "\n".join(lines) + "\n"

    async def _api_answers(self) -> bool:
        from gtm.control.client import Client

        try:
            await asyncio.to_thread(Client(self.api_url, self.token).get, "/v1/config")
            return True
        except Exception:
            return False

    async def _start_region(self, region: Region) -> None:
        config = self.state_dir / "configs" / f"lb-{region.name}.toml"
        config.write_text(self._balancer_toml(region))
        os.chmod(config, 0o600)
        await self._spawn(f"backends:{region.name}", region.namespace, self._backend_args(region))
        await self._spawn(f"lb:{region.name}", region.namespace, self._gtm(
            "lb", "serve", "--config", str(config), "--workers", "1"))

    def _backend_args(self, region: Region) -> list[str]:
        listens = [arg for backend in region.backends for arg in ("--listen", backend)]
        return self._gtm("lb", "demo-backend", *listens)

    def _balancer_toml(self, region: Region) -> str:
        q = json.dumps  # a JSON string is a TOML basic string
        lines = ["[lb]", f"region = {q(region.name)}", f"admin = {q(region.admin)}",
                 f"admin_token = {q(self.admin_tokens[region.name])}", 'access_log = "off"',
                 ""]
        for name, address, _ in region.endpoints:
            lines += ["[[lb.listeners]]", f"name = {q(name)}",
                      f"bind = {q(f'{address}:{HEALTH_PORT}')}", 'pool = "web"', ""]
        lines += ["[[lb.pools]]", 'name = "web"', f"backends = {q(list(region.backends))}",
                  'check = { type = "http", path = "/healthz", interval = 1.0, '
                  "timeout = 0.5, rise = 2, fall = 2 }", ""]
        return "\n".join(lines)

    async def _start_node(self, name: str) -> None:
        plan = self.plan
        node = next(n for n in plan.nodes if n.name == name)
        control = self.state_dir / "control"
        redis = ["--redis", plan.redis_url] if shutil.which("redis-server") else []
        (self.state_dir / name).mkdir(exist_ok=True, mode=0o700)
        await self._spawn(f"node:{name}", node.namespace, self._gtm(
            "serve", "--listen", f"{node.address}:{node.port}", "--workers", "1",
            "--nsid", name, "--control", f"sqlite://{control / 'gtm.db'}", *redis,
            "--node-id", name, "--state-dir", str(self.state_dir / name),
            "--reconcile-interval", "1", "--probe", "--observer-id", name))

    # -- readiness ----------------------------------------------------------------------

    async def _until(self, condition: Callable[[], Any], what: str) -> None:
        async def check() -> bool:
            return bool(condition())
        await self._until_async(check, what)

    async def _until_async(self, condition: Callable[[], Awaitable[bool]], what: str) -> None:
        deadline = asyncio.get_running_loop().time() + READY_TIMEOUT
        while not await condition():
            self._check_children()
            if asyncio.get_running_loop().time() > deadline:
                raise LabError(f"timed out waiting for {what} ({READY_TIMEOUT:g} s); logs "
                               f"in {self.state_dir / 'logs'}")
            await asyncio.sleep(0.1)

    def _check_children(self) -> None:
        for role, (process, record) in self.children.items():
            if process.returncode is not None:
                raise LabError(f"{role} exited with {process.returncode} while the lab "
                               f"started; see {record.log}")

    async def _wait_ready(self) -> None:
        name = f"www.{self.plan.zone}"
        for node in self.plan.nodes:
            await self._until_async(partial(self._answers, node.address, node.port, name),
                                    f"DNS node {node.name} to answer {name}")
        for region in self.plan.regions:
            for address in region.addresses:
                await self._until_async(
                    partial(self._connects, address, HEALTH_PORT),
                    f"the balancer of {region.name} on {address}:{HEALTH_PORT}")

    async def _answers(self, address: str, port: int, name: str) -> bool:
        import dns.message
        import dns.query
        import dns.rcode

        query = dns.message.make_query(name, "A")

        def ask() -> bool:
            try:
                reply = dns.query.udp(query, address, port=port, timeout=0.5)
            except Exception:
                return False
            return reply.rcode() == dns.rcode.NOERROR and bool(reply.answer)

        if self.core is None:
            return await asyncio.to_thread(ask)
        return await asyncio.get_running_loop().run_in_executor(self.core, ask)

    async def _connects(self, address: str, port: int) -> bool:
        try:
            sock = await self._lab_socket()
            try:
                await asyncio.wait_for(asyncio.get_running_loop().sock_connect(
                    sock, (address, port)), 2.0)
                return True
            finally:
                sock.close()
        except (OSError, TimeoutError):
            return False

    async def _lab_socket(self) -> socket.socket:
        """A TCP socket that connects from inside the lab (the core namespace)."""
        if self.core is None:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        else:
            sock = await asyncio.get_running_loop().run_in_executor(
                self.core, socket.socket, socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        return sock

    # -- the control API from the host ------------------------------------------------------

    @property
    def api_url(self) -> str:
        if self.plan.loopback:
            return self.plan.api_inside
        return f"http://127.0.0.1:{self.api_port}"

    async def _start_api_forwarder(self) -> None:
        """The control API lives in the lab's control namespace, out of the host's reach;
        this relays a port on the host's 127.0.0.1 to it (`gtm drill`, `gtm config`)."""
        if self.plan.loopback:
            return
        server = await asyncio.start_server(self._forward, "127.0.0.1", 0)
        self.api_port = server.sockets[0].getsockname()[1]
        self._servers.append(server)

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                       ) -> None:
        try:
            sock = await self._lab_socket()
            await asyncio.wait_for(asyncio.get_running_loop().sock_connect(
                sock, (self.plan.control_address, API_PORT)), 5.0)
            upstream_reader, upstream_writer = await asyncio.open_connection(sock=sock)
        except (OSError, TimeoutError):
            writer.close()
            return
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))

    # -- delay lines -------------------------------------------------------------------------

    async def _start_delay_line(self, region: Region) -> None:
        assert self.core is not None and region.tun is not None
        fd = await asyncio.get_running_loop().run_in_executor(self.core, open_tun, region.tun)
        defaults = {socket.inet_aton(a): ms for a, ms in self.plan.latencies(region).items()}
        settings = PathSettings(defaults=defaults, base_ms=self.plan.base_latency_ms)
        line = DelayLine(region.name, fd, bytes([198, 18, region.index]), settings)
        line.start()
        self.lines[region.name] = line
        await asyncio.to_thread(network.route_region, self.plan, region)

    # -- faults ------------------------------------------------------------------------------

    async def _serve_fault(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                           ) -> None:
        try:
            line = await reader.readline()
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("op"), str):
                raise LabError("a request is a JSON object with an \"op\"")
            async with self._lock:
                result = await self.apply(request)
            reply: dict[str, Any] = {"ok": True, "result": result}
        except (ValueError, asyncio.LimitOverrunError) as exc:
            reply = {"ok": False, "error": f"bad request: {exc}"}
        except Unsupported as exc:
            reply = {"ok": False, "error": str(exc), "unsupported": True}
        except LabError as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:  # a bug: the lab keeps running, the caller learns of it
            log.cli.exception("lab fault request failed")
            reply = {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
        try:
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        finally:
            writer.close()

    async def apply(self, request: dict[str, Any]) -> Any:
        op = request["op"]
        handlers: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "describe": lambda r: self._describe_json(),
            "set_latency": self._set_latency, "set_loss": self._set_loss,
            "cut_link": self._cut_link, "restore_link": self._restore_link,
            "partition": self._partition, "heal": self._heal,
            "stop_backends": self._stop_backends, "start_backends": self._start_backends,
            "stop_node": self._stop_node, "start_node": self._start_node_op,
            "counters": self._counters,
        }
        if op not in handlers:
            raise LabError(f"unknown operation {op!r} (one of {', '.join(sorted(handlers))})")
        result = await handlers[op](request)
        self._save()
        return result

    async def _describe_json(self) -> Any:
        return json.loads(self.describe().to_json())

    def _region(self, request: dict[str, Any]) -> Region:
        name = request.get("region")
        if not isinstance(name, str):
            raise LabError("\"region\" must name a region")
        return self.plan.region(name)

    def _network_fault(self, what: str) -> None:
        if self.plan.loopback:
            raise Unsupported(f"{what} needs the namespaced lab (root); the loopback lab "
                              "has no network paths to change")

    async def _set_latency(self, request: dict[str, Any]) -> Any:
        self._network_fault("set_latency")
        region = self._region(request)
        ms = request.get("ms")
        if ms is not None and (not isinstance(ms, int | float) or isinstance(ms, bool)
                               or not 0 <= ms <= 10000):
            raise LabError("\"ms\" must be a round trip from 0 to 10000 milliseconds, or "
                           "null for the distance's")
        self.lines[region.name].settings.override_ms = None if ms is None else float(ms)
        return {"region": region.name, "ms": ms}

    async def _set_loss(self, request: dict[str, Any]) -> Any:
        self._network_fault("set_loss")
        region = self._region(request)
        share = request.get("share")
        if not isinstance(share, int | float) or isinstance(share, bool) or \
                not 0 <= share <= 1:
            raise LabError("\"share\" must be from 0 to 1")
        self.lines[region.name].settings.loss = float(share)
        return {"region": region.name, "share": share}

    async def _cut_link(self, request: dict[str, Any]) -> Any:
        self._network_fault("cut_link")
        region = self._region(request)
        await asyncio.to_thread(network.cut_link, self.plan, region)
        if region.name not in self.faults["cut"]:
            self.faults["cut"].append(region.name)
        return {"region": region.name, "link": "down"}

    async def _restore_link(self, request: dict[str, Any]) -> Any:
        self._network_fault("restore_link")
        region = self._region(request)
        await asyncio.to_thread(network.restore_link, self.plan, region)
        if region.name in self.faults["cut"]:
            self.faults["cut"].remove(region.name)
        return {"region": region.name, "link": "up"}

    async def _partition(self, request: dict[str, Any]) -> Any:
        self._network_fault("partition")
        region = self._region(request)
        names = request.get("from_nodes")
        known = {n.name: n.address for n in self.plan.nodes}
        if names is None:
            names = list(known)
        if not isinstance(names, list) or not names or any(n not in known for n in names):
            raise LabError(f"\"from_nodes\" must list nodes of the lab ({', '.join(known)})")
        await asyncio.to_thread(network.partition, region, [known[n] for n in names])
        self.faults["partitions"][region.name] = sorted(names)
        return {"region": region.name, "from_nodes": sorted(names)}

    async def _heal(self, request: dict[str, Any]) -> Any:
        self._network_fault("heal")
        region = self._region(request)
        await asyncio.to_thread(network.heal, region)
        self.faults["partitions"].pop(region.name, None)
        return {"region": region.name}

    async def _stop_backends(self, request: dict[str, Any]) -> Any:
        region = self._region(request)
        await self._stop_child(f"backends:{region.name}")
        self._mark_stopped(f"backends:{region.name}", True)
        return {"region": region.name, "backends": "stopped"}

    async def _start_backends(self, request: dict[str, Any]) -> Any:
        region = self._region(request)
        role = f"backends:{region.name}"
        if role not in self.children:
            await self._spawn(role, region.namespace, self._backend_args(region))
        self._mark_stopped(role, False)
        return {"region": region.name, "backends": "started"}

    def _node_name(self, request: dict[str, Any]) -> str:
        name = request.get("node")
        if name not in {n.name for n in self.plan.nodes}:
            raise LabError(f"\"node\" must name a node of the lab "
                           f"({', '.join(n.name for n in self.plan.nodes)})")
        return str(name)

    async def _stop_node(self, request: dict[str, Any]) -> Any:
        name = self._node_name(request)
        await self._stop_child(f"node:{name}")
        self._mark_stopped(f"node:{name}", True)
        return {"node": name, "state": "stopped"}

    async def _start_node_op(self, request: dict[str, Any]) -> Any:
        name = self._node_name(request)
        if f"node:{name}" not in self.children:
            await self._start_node(name)
        self._mark_stopped(f"node:{name}", False)
        return {"node": name, "state": "started"}

    def _mark_stopped(self, role: str, stopped: bool) -> None:
        roles = set(self.faults["stopped"])
        roles = roles | {role} if stopped else roles - {role}
        self.faults["stopped"] = sorted(roles)

    async def _counters(self, request: dict[str, Any]) -> Any:
        return {name: vars(line.counters) for name, line in self.lines.items()}

    # -- the description -------------------------------------------------------------------

    def describe(self) -> Lab:
        plan = self.plan
        assert self.me is not None
        supervisor = LabProcess("supervisor", self.me.pid, self.me.start, None,
                                str(self.state_dir / "logs"))
        regions = {r.name: LabRegion(
            name=r.name, namespace=r.namespace,
            endpoints={name: address for name, address, _ in r.endpoints},
            admin_url=f"http://{r.endpoints[0][1]}:{ADMIN_PORT}",
            admin_token=self.admin_tokens[r.name], backends=list(r.backends),
            link=r.link) for r in plan.regions}
        latency = {}
        for name, line in self.lines.items():
            region = plan.region(name)
            latency[name] = ({peer: line.settings.override_ms for peer in
                              plan.latencies(region)} if line.settings.override_ms is not None
                             else plan.latencies(region))
        return Lab(
            prefix=plan.prefix, mode="loopback" if plan.loopback else "netns",
            state_dir=str(self.state_dir), zone=plan.zone, ready=self.ready,
            supervisor=supervisor, api_url=self.api_url, api_url_inside=plan.api_inside,
            token=self.token,
            redis_url=plan.redis_url if shutil.which("redis-server") else None,
            namespaces=list(plan.namespaces), regions=regions,
            nodes={n.name: LabNode(n.name, n.namespace, n.address, n.port)
                   for n in plan.nodes},
            vantages={v.name: LabVantage(v.name, v.namespace, v.address, v.country)
                      for v in plan.vantages},
            processes=[record for _, record in self.children.values()],
            faults=json.loads(json.dumps(self.faults)),
            latency_ms=latency,
            loss={name: line.settings.loss for name, line in self.lines.items()},
            cannot=list(LOOPBACK_CANNOT) if plan.loopback else [],
        )

    def _save(self) -> None:
        self.describe().save()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()
