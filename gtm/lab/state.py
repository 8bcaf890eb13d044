"""The lab's description: one JSON file in the lab's state directory.

`gtm lab up` writes it (private: it holds the control plane's admin token and the
balancers' admin tokens) and rewrites it on every change; other processes (`gtm lab
status`, `gtm drill`) read it to find and drive the lab: its namespaces, addresses,
processes, the control API and the faults in force.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gtm.atomic import write_atomic
from gtm.lab.system import LabError, ProcessId

STATE_FILE = "lab.json"
CONTROL_SOCKET = "control.sock"


def default_state_dir(prefix: str) -> Path:
    """Beside the namespaces (/run/netns) when root: both are gone after a reboot."""
    name = prefix.rstrip("-_") or "gtmlab"
    if os.geteuid() == 0:
        return Path("/run") / name
    return Path("var") / name


@dataclass(frozen=True)
class LabRegion:
    name: str
    namespace: str | None
    endpoints: dict[str, str]   # endpoint name -> address (its listener on port 8080)
    admin_url: str              # the balancer's admin API
    admin_token: str
    backends: list[str]
    link: str | None            # the core's end of its veth


@dataclass(frozen=True)
class LabNode:
    name: str
    namespace: str | None
    address: str
    port: int


@dataclass(frozen=True)
class LabVantage:
    name: str
    namespace: str | None
    address: str
    country: str | None


@dataclass(frozen=True)
class LabProcess:
    role: str                   # "api", "redis", "node:dns1", "lb:eu-west", ...
    pid: int
    start: int                  # kernel start time: a reused PID is not ours
    namespace: str | None
    log: str

    @property
    def id(self) -> ProcessId:
        return ProcessId(self.pid, self.start)


@dataclass(frozen=True)
class Lab:
    prefix: str
    mode: str                   # "netns" or "loopback"
    state_dir: str
    zone: str
    ready: bool
    supervisor: LabProcess      # the `gtm lab up` process
    api_url: str                # reachable from the host (127.0.0.1)
    api_url_inside: str         # reachable from the lab's namespaces
    token: str
    redis_url: str | None
    namespaces: list[str]
    regions: dict[str, LabRegion]
    nodes: dict[str, LabNode]
    vantages: dict[str, LabVantage]
    processes: list[LabProcess]
    faults: dict[str, Any] = field(default_factory=dict)
    latency_ms: dict[str, dict[str, float]] = field(default_factory=dict)  # region: peer
    loss: dict[str, float] = field(default_factory=dict)
    cannot: list[str] = field(default_factory=list)  # what this lab cannot do, and why

    @property
    def control_socket(self) -> Path:
        return Path(self.state_dir) / CONTROL_SOCKET

    def process(self, role: str) -> LabProcess | None:
        for process in self.processes:
            if process.role == role:
                return process
        return None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def save(self) -> None:
        write_atomic(Path(self.state_dir) / STATE_FILE, self.to_json(), durable=False)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Lab:
        values = dict(raw)
        values["supervisor"] = LabProcess(**raw["supervisor"])
        values["regions"] = {k: LabRegion(**v) for k, v in raw["regions"].items()}
        values["nodes"] = {k: LabNode(**v) for k, v in raw["nodes"].items()}
        values["vantages"] = {k: LabVantage(**v) for k, v in raw["vantages"].items()}
        values["processes"] = [LabProcess(**p) for p in raw["processes"]]
        return cls(**values)

    @classmethod
    def load(cls, state_dir: Path) -> Lab:
        path = state_dir / STATE_FILE
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise LabError(f"no lab described in {path} (is `gtm lab up` running, with "
                           "this --state-dir?)") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise LabError(f"{path} is not a lab description: {exc}") from exc

    @classmethod
    def load_or_none(cls, state_dir: Path) -> Lab | None:
        try:
            return cls.load(state_dir)
        except LabError:
            return None
