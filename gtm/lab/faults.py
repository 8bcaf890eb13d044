"""Driving a running lab from another process (`gtm drill`, tests, a shell).

    from gtm.lab.faults import LabControl
    lab = LabControl.connect()                 # the default state directory, or a path
    lab.cut_link("eu-west"); ...; lab.restore_link("eu-west")
    lab.description.vantages["gb"].namespace   # where to observe from

Each call asks the `gtm lab up` process over its Unix socket and returns once the
fault is in force (a LabError says why not; an Unsupported one, the loopback lab).

Drills use one contract on top (``FAULTS``): ``inject(kind, args)`` and
``undo(kind, args)`` for a fault kind with its arguments, ``identity()`` recorded
with the override, and ``restore_override(lab, kind, args)``, which the control
plane's child `python -m gtm.drill.restore` runs when the override expires.
``sockets(vantage)`` opens sockets inside a vantage point's namespace, for observers.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gtm.lab.plan import DEFAULT_PREFIX
from gtm.lab.state import Lab, default_state_dir
from gtm.lab.system import NETNS_DIR, LabError, ProcessId, Unsupported, in_netns, setns

TIMEOUT = 30.0
# The faults a drill injects into the lab: the arguments each takes, and what it is.
FAULTS: Mapping[str, tuple[tuple[str, ...], str]] = {
    "cut_link": (("region",), "the region's link cut (its veth down)"),
    "partition": (("region", "from_nodes"), "the region partitioned from DNS nodes (nft)"),
    "latency": (("region", "ms"), "a round trip on every path into the region"),
    "loss": (("region", "share", "previous"), "a share of the packets on its path lost"),
    "stop_backends": (("region",), "the region's demo backends stopped"),
    "stop_node": (("node",), "a GTM DNS node stopped"),
}


class LabControl:
    def __init__(self, description: Lab):
        self.description = description

    @classmethod
    def connect(cls, state_dir: Path | None = None) -> LabControl:
        lab = Lab.load(state_dir or default_state_dir(DEFAULT_PREFIX))
        if not lab.supervisor.id.alive():
            raise LabError(f"the lab's `gtm lab up` (PID {lab.supervisor.pid}) is not "
                           "running; `gtm lab down` cleans up what it left")
        return cls(lab)

    def refresh(self) -> Lab:
        self.description = Lab.load(Path(self.description.state_dir))
        return self.description

    def request(self, op: str, **arguments: Any) -> Any:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(TIMEOUT)
            try:
                sock.connect(str(self.description.control_socket))
            except OSError as exc:
                raise LabError(f"cannot reach the lab at {self.description.control_socket}: "
                               f"{exc.strerror or exc}") from None
            sock.sendall(json.dumps({"op": op, **arguments}).encode() + b"\n")
            reply = json.loads(sock.makefile("rb").readline() or b"{}")
        if not reply.get("ok"):
            error = reply.get("error", "no answer from the lab")
            raise Unsupported(error) if reply.get("unsupported") else LabError(error)
        return reply["result"]

    # The network: latency and loss on a region's path (its delay line), link cuts
    # (the core's end of its veth down) and partitions (nftables inside the region).
    def set_latency(self, region: str, ms: float | None) -> None:
        """Every path into ``region`` gets this round trip; None: the distance's again."""
        self.request("set_latency", region=region, ms=ms)

    def set_loss(self, region: str, share: float) -> None:
        """Drop this share (0 to 1) of the packets (TCP and UDP) on ``region``'s path."""
        self.request("set_loss", region=region, share=share)

    def cut_link(self, region: str) -> None:
        self.request("cut_link", region=region)

    def restore_link(self, region: str) -> None:
        self.request("restore_link", region=region)

    def partition(self, region: str, from_nodes: Sequence[str] | None = None) -> None:
        """``region`` can no longer reach or be reached by these DNS nodes (all: None)."""
        self.request("partition", region=region,
                     from_nodes=None if from_nodes is None else list(from_nodes))

    def heal(self, region: str) -> None:
        self.request("heal", region=region)

    # Processes.
    def stop_backends(self, region: str) -> None:
        self.request("stop_backends", region=region)

    def start_backends(self, region: str) -> None:
        self.request("start_backends", region=region)

    def stop_node(self, node: str) -> None:
        self.request("stop_node", node=node)

    def start_node(self, node: str) -> None:
        self.request("start_node", node=node)

    def counters(self) -> dict[str, dict[str, int]]:
        """Per region's delay line: packets forwarded, dropped by loss or a full queue."""
        result: dict[str, dict[str, int]] = self.request("counters")
        return result

    # Faults as drills name them: one way in, one way back.
    def inject(self, kind: str, args: Mapping[str, Any]) -> None:
        a = _arguments(kind, args)
        if kind == "cut_link":
            self.cut_link(a["region"])
        elif kind == "partition":
            self.partition(a["region"], a["from_nodes"])
        elif kind == "latency":
            self.set_latency(a["region"], a["ms"])
        elif kind == "loss":
            self.set_loss(a["region"], a["share"])
        elif kind == "stop_backends":
            self.stop_backends(a["region"])
        else:
            self.stop_node(a["node"])

    def undo(self, kind: str, args: Mapping[str, Any]) -> None:
        """Undo what ``inject`` did; safe to repeat. Loss goes back to the share it had
        before, and only while the path still has the share the drill set."""
        a = _arguments(kind, args)
        if kind == "cut_link":
            self.restore_link(a["region"])
        elif kind == "partition":
            self.heal(a["region"])
        elif kind == "latency":
            self.set_latency(a["region"], None)
        elif kind == "loss":
            if self.refresh().loss.get(a["region"]) == a["share"]:
                self.set_loss(a["region"], a["previous"])
        elif kind == "stop_backends":
            self.start_backends(a["region"])
        else:
            self.start_node(a["node"])

    def identity(self) -> dict[str, Any]:
        """Which lab this is, for an override: its state directory and its `gtm lab up`
        process (a lab built again in the same directory is another lab)."""
        supervisor = self.description.supervisor
        return {"state_dir": str(Path(self.description.state_dir).resolve()),
                "pid": supervisor.pid, "start": supervisor.start}

    # Observing from a vantage point.
    def command(self, vantage: str, argv: Sequence[str]) -> list[str]:
        """``argv`` as run inside a vantage point's namespace (for subprocess)."""
        found = self.description.vantages.get(vantage)
        if found is None:
            raise LabError(f"no vantage point {vantage!r} (the lab has "
                           f"{', '.join(self.description.vantages) or 'none'})")
        return in_netns(found.namespace, argv)

    def run_in(self, vantage: str, argv: Sequence[str], timeout: float = 30.0
               ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self.command(vantage, argv), capture_output=True, text=True,
                              timeout=timeout, check=False)

    def sockets(self, vantage: str | None) -> NamespaceSockets | None:
        """Sockets inside a vantage point's namespace (None: the core's, which reaches
        every host of the lab); None for a loopback lab, whose hosts are this host."""
        if vantage is None:
            namespace = self.description.core
        else:
            found = self.description.vantages.get(vantage)
            if found is None:
                raise LabError(f"no vantage point {vantage!r} in the lab (it has "
                               f"{', '.join(self.description.vantages) or 'none'})")
            namespace = found.namespace
        return None if namespace is None else NamespaceSockets(namespace)


class NamespaceSockets:
    """Opens sockets inside a network namespace for a process that stays outside it.

    A socket belongs to the namespace its creating thread was in, for its whole life,
    so one thread moved into the namespace (setns, root) creates them and the caller's
    event loop uses them: every packet leaves from the namespace's own address along
    its routes (through the lab's delay lines), with no child process to leave behind
    if the caller is killed."""

    def __init__(self, namespace: str):
        self.namespace = namespace
        self._thread = ThreadPoolExecutor(1, thread_name_prefix=f"netns-{namespace}",
                                          initializer=setns,
                                          initargs=(str(NETNS_DIR / namespace),))

    async def open(self, family: int, kind: int) -> socket.socket:
        sock = await asyncio.get_running_loop().run_in_executor(
            self._thread, socket.socket, family, kind)
        sock.setblocking(False)
        return sock

    def close(self) -> None:
        self._thread.shutdown(wait=False)


def _arguments(kind: str, args: Mapping[str, Any]) -> dict[str, Any]:
    if kind not in FAULTS:
        raise LabError(f"no lab fault {kind!r} (one of {', '.join(FAULTS)})")
    wanted = FAULTS[kind][0]
    missing = [name for name in wanted if name not in args]
    unknown = [name for name in args if name not in wanted]
    if missing or unknown:
        raise LabError(f"the lab fault {kind} takes {', '.join(wanted)}"
                       + (f"; missing {', '.join(missing)}" if missing else "")
                       + (f"; unknown {', '.join(unknown)}" if unknown else ""))
    return dict(args)


def restore_override(lab: Mapping[str, Any], kind: str, args: Mapping[str, Any]) -> str:
    """Undo a drill's lab fault recorded with ``identity()`` (the control plane's child
    `python -m gtm.drill.restore` runs this at expiry). A lab that is gone took its
    faults with it: nothing to undo, said so."""
    state_dir = Path(str(lab["state_dir"]))
    description = Lab.load_or_none(state_dir)
    recorded = ProcessId(int(lab["pid"]), int(lab["start"]))
    if description is None or description.supervisor.id != recorded or not recorded.alive():
        return (f"the lab of {state_dir} that held this fault is gone (its namespaces "
                "and faults with it): nothing to undo")
    LabControl(description).undo(kind, args)
    return f"lab fault {kind} undone in {state_dir}"
