"""Driving a running lab from another process (`gtm drill`, tests, a shell).

    from gtm.lab.faults import LabControl
    lab = LabControl.connect()                 # the default state directory, or a path
    lab.cut_link("eu-west"); ...; lab.restore_link("eu-west")
    lab.description.vantages["gb"].namespace   # where to observe from

Each call asks the `gtm lab up` process over its Unix socket and returns once the
fault is in force (a LabError says why not; an Unsupported one, the loopback lab).
"""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gtm.lab.plan import DEFAULT_PREFIX
from gtm.lab.state import Lab, default_state_dir
from gtm.lab.system import LabError, Unsupported, in_netns

TIMEOUT = 30.0


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
        """Drop this share (0 to 1) of the UDP datagrams crossing ``region``'s path."""
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
