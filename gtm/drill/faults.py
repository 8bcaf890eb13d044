"""The faults a drill injects: one small interface, ``inject()``, ``restore()``,
``describe()``.

Every fault records its override with the control plane (with an expiry) *before* it
acts, so the control plane can undo it if the runner dies. A restore asks the control
plane to undo what the drill set (the same code path as the expiry and `gtm drill
recover`), so there is one way back.

Faults of a plain `gtm up`: ``drain`` and ``stop_backends`` (the region balancer's
admin API: drain, or remove, every backend), ``force_down`` (the endpoints' admin state
in the control plane's ``state`` section). The lab's faults (``cut_link``,
``partition``, ``latency``, ``loss``, ``stop_node``) are thin adapters over
``gtm.lab.faults``, imported only when such a fault is used.
"""

from __future__ import annotations

import asyncio
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gtm.config.drills import Plan
from gtm.control.client import Client
from gtm.control.drills import BalancerAdmin, balancer_access
from gtm.errors import GtmError

LAB_MODULE = "gtm.lab.faults"


class Fault(Protocol):
    def describe(self) -> str: ...
    async def inject(self) -> None: ...
    async def restore(self) -> None: ...


@dataclass
class DrillContext:
    """What a fault needs: the plan, the drill's record in the control plane, the live
    document, and when its overrides expire."""

    plan: Plan
    api: Client
    drill_id: str
    document: dict[str, Any]
    expires_at: float
    plan_dir: Path = Path(".")

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        reply = await asyncio.to_thread(self.api.call, method, path, body)
        return reply.body

    async def record_override(self, override: dict[str, Any]) -> None:
        await self.call("POST", f"/v1/drills/{self.drill_id}/overrides",
                        {**override, "expires_at": self.expires_at})

    async def restore_all(self, reason: str) -> int:
        body = await self.call("POST", f"/v1/drills/{self.drill_id}/restore",
                               {"reason": reason})
        return int(body["restored"])

    def endpoints_of_region(self) -> dict[str, Any]:
        """The zone's steered endpoints in the target region, by name."""
        return {e["name"]: e for e in zone_endpoints(self.document, self.plan.zone)
                if e.get("region") == self.plan.region}


def zone_endpoints(document: dict[str, Any], zone: str) -> list[dict[str, Any]]:
    steering = document.get("steering", {})
    table: dict[str, Any] = next((v for k, v in steering.items()
                  if k.rstrip(".").lower() == zone.rstrip(".").lower()), {})
    return [e for pool in (table.get("pools") or {}).values()
            for e in pool.get("endpoints", []) if isinstance(e, dict) and "name" in e]


def zone_state(document: dict[str, Any], zone: str) -> dict[str, Any]:
    states = document.get("state", {})
    return next((v for k, v in states.items()
                 if k.rstrip(".").lower() == zone.rstrip(".").lower()), {})


class ForceDown:
    """Every endpoint of the region forced down in the control plane's ``state`` section
    (what `gtm steer endpoint --admin force_down` writes), one audited version."""

    def __init__(self, ctx: DrillContext):
        self.ctx = ctx

    def describe(self) -> str:
        return f"force-down of region {self.ctx.plan.region} in {self.ctx.plan.zone}"

    async def inject(self) -> None:
        endpoints = self.ctx.endpoints_of_region()
        if not endpoints:
            raise GtmError(f"zone {self.ctx.plan.zone} has no endpoint in region "
                           f"{self.ctx.plan.region}")
        current = zone_state(self.ctx.document, self.ctx.plan.zone).get("endpoints", {})
        changes = {name: {"value": "force_down",
                          "previous": current.get(name, {}).get("admin", "none")}
                   for name in sorted(endpoints)}
        await self.ctx.record_override({"kind": "state", "zone": self.ctx.plan.zone,
                                        "endpoints": changes,
                                        "description": self.describe()})

    async def restore(self) -> None:
        await self.ctx.restore_all("end of fault")


class BalancerFault:
    """Drain (``drain``) or remove (``stop_backends``) every backend of the region's
    balancer through its admin API; the balancer then reports the region unable to
    serve, and health checks take it out of the answers."""

    def __init__(self, ctx: DrillContext, action: str):
        self.ctx = ctx
        self.action = action
        fault = ctx.plan.fault
        assert fault.balancer is not None
        self.config = (ctx.plan_dir / fault.balancer).resolve()
        self.admin = BalancerAdmin(balancer_access(self.config))

    def describe(self) -> str:
        what = "drain" if self.action == "drain" else "removal"
        pool = f"pool {self.ctx.plan.fault.pool}" if self.ctx.plan.fault.pool else "every pool"
        return f"{what} of {pool}'s backends of region {self.ctx.plan.region} ({self.config.name})"

    async def inject(self) -> None:
        backends = await self.admin.backends(self.ctx.plan.fault.pool)
        if not backends:
            raise GtmError(f"the balancer {self.admin.access.url} has no backend to "
                           f"{self.action}")
        await self.ctx.record_override({"kind": "balancer", "config": str(self.config),
                                        "action": self.action, "backends": backends,
                                        "description": self.describe()})
        for backend in backends:
            if self.action == "drain":
                await self.admin.set_state(backend["pool"], backend["address"], "drain")
            else:
                await self.admin.remove(backend["pool"], backend["address"])

    async def restore(self) -> None:
        await self.ctx.restore_all("end of fault")


class LabFault:
    """A fault of the network lab (`gtm lab up`). Contract with ``gtm.lab.faults``: the
    named function injects (``cut_link(region)``, ``partition(region, nodes)``,
    ``set_latency(region, ms)``, ``set_loss(region, share)``, ``stop_node(node)``) and
    ``restore(fault, **args)`` undoes one (also what the control plane's child runs
    at expiry)."""

    CALLS = {"cut_link": "cut_link", "partition": "partition", "latency": "set_latency",
             "loss": "set_loss", "stop_node": "stop_node"}

    def __init__(self, ctx: DrillContext):
        self.ctx = ctx
        fault = ctx.plan.fault
        self.kind = fault.type
        calls: dict[str, dict[str, Any]] = {
            "cut_link": {"region": ctx.plan.region},
            "partition": {"region": ctx.plan.region, "nodes": list(fault.nodes)},
            "latency": {"region": ctx.plan.region, "ms": fault.latency_ms},
            "loss": {"region": ctx.plan.region, "share": fault.loss},
            "stop_node": {"node": fault.node},
        }
        self.args = calls[self.kind]

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.args.items())
        return f"lab fault {self.kind} ({args})"

    async def inject(self) -> None:
        lab = lab_faults()
        await self.ctx.record_override({"kind": "lab", "fault": self.kind, "args": self.args,
                                        "description": self.describe()})
        await asyncio.to_thread(getattr(lab, self.CALLS[self.kind]), **self.args)

    async def restore(self) -> None:
        await asyncio.to_thread(lab_faults().restore, self.kind, **self.args)
        await self.ctx.restore_all("end of fault")


def lab_faults() -> Any:
    """``gtm.lab.faults``, or a clear error when the lab is not there."""
    try:
        module = importlib.import_module(LAB_MODULE)
    except ImportError as exc:
        raise GtmError(f"this fault needs `gtm lab up` (the network lab): {LAB_MODULE} "
                       f"cannot be imported ({exc})") from None
    running = getattr(module, "lab_running", None)
    if callable(running) and not running():
        raise GtmError("this fault needs `gtm lab up`: no lab is running")
    return module


def restore_lab_override(override: dict[str, Any]) -> None:
    """What `gtm drill restore-override` runs for the control plane (a lab fault)."""
    lab_faults().restore(override["fault"], **override["args"])


def make_fault(ctx: DrillContext) -> Fault:
    kind = ctx.plan.fault.type
    if kind == "force_down":
        return ForceDown(ctx)
    if kind == "drain":
        return BalancerFault(ctx, "drain")
    if kind == "stop_backends":
        return BalancerFault(ctx, "remove")
    return LabFault(ctx)
