"""The faults a drill injects: one small interface, ``inject()``, ``restore()``,
``describe()``.

Every fault records its override with the control plane (with an expiry) *before* it
acts, so the control plane can undo it if the runner dies. A restore asks the control
plane to undo what the drill set (the same code path as the expiry and `gtm drill
recover`), so there is one way back.

Faults of a plain `gtm up`: ``drain`` and ``stop_backends`` (the region balancer's
admin API: drain, or remove, every backend), ``force_down`` (the endpoints' admin state
in the control plane's ``state`` section). The lab's faults (``cut_link``,
``partition``, ``latency``, ``loss``, ``stop_node``, and ``stop_backends`` without a
balancer file: the region's backend processes stopped) go through the lab's own
contract, ``gtm.lab.faults.LabControl.inject`` / ``undo``; the control plane undoes
them at expiry with a child `python -m gtm.drill.restore` (gtm.drill.restore).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from gtm.config.drills import LAB_FAULTS, Plan
from gtm.control.client import Client
from gtm.control.drills import BalancerAdmin, balancer_access
from gtm.errors import GtmError
from gtm.lab.faults import LabControl


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
    """A fault of the network lab (`gtm lab up`), through its contract: the override is
    recorded with the lab's identity first, then ``LabControl.inject``; the way back
    is the control plane's restore (the one the expiry and `gtm drill recover` take),
    which runs ``LabControl.undo`` in a child `python -m gtm.drill.restore`."""

    def __init__(self, ctx: DrillContext, lab: LabControl):
        self.ctx = ctx
        self.lab = lab
        fault, region = ctx.plan.fault, ctx.plan.region
        self.kind = fault.type
        calls: dict[str, dict[str, Any]] = {
            "cut_link": {"region": region},
            "partition": {"region": region, "from_nodes": list(fault.nodes)},
            "latency": {"region": region, "ms": fault.latency_ms},
            "loss": {"region": region, "share": fault.loss,
                     "previous": lab.refresh().loss.get(region, 0.0)},
            "stop_backends": {"region": region},
            "stop_node": {"node": fault.node},
        }
        self.args = calls[self.kind]

    def describe(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.args.items() if k != "previous")
        return f"lab fault {self.kind} ({args})"

    async def inject(self) -> None:
        await self.ctx.record_override({"kind": "lab", "fault": self.kind, "args": self.args,
                                        "lab": self.lab.identity(),
                                        "description": self.describe()})
        await asyncio.to_thread(self.lab.inject, self.kind, self.args)

    async def restore(self) -> None:
        await self.ctx.restore_all("end of fault")


def needs_lab(plan: Plan) -> bool:
    return plan.fault.type in LAB_FAULTS or (plan.fault.type == "stop_backends"
                                             and plan.fault.balancer is None)


def make_fault(ctx: DrillContext, lab: LabControl | None = None) -> Fault:
    kind = ctx.plan.fault.type
    if needs_lab(ctx.plan):
        if lab is None:
            what = "stop_backends without fault.balancer" if kind == "stop_backends" else kind
            raise GtmError(f"a {what} fault needs the network lab: run `gtm lab up`, then "
                           "`gtm drill run PLAN --lab`")
        return LabFault(ctx, lab)
    if kind == "force_down":
        return ForceDown(ctx)
    if kind == "drain":
        return BalancerFault(ctx, "drain")
    return BalancerFault(ctx, "remove")
