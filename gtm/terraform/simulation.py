"""What gtm_steered_name's ``simulated_answers`` are computed from, and when.

For each vantage point of the provider block (label -> client subnet) the map holds the
answer line (gtm.terraform.answers) a client there gets, from the product's own compiler
and answer engine, with a node's health merged in as `gtm explain` merges it.

When, and from what:

- **refresh** (read, import): the live document and the health now. The version read
  and the health are kept in the resource's private state: the *basis*.
- **plan, configuration unchanged**: the state's value, untouched. Health that flaps or
  another resource's edit never makes a plan show a change of this name.
- **plan, configuration changed**: the basis's document (that version, read once per
  provider process: versions never change) with this resource's planned entry in place
  of its current one, against the basis's health. The "before" of the plan was computed
  from the same basis at refresh, so the plan shows exactly the vantage points whose
  answers this change moves. Terraform plans again during the apply and requires the
  same values: the same basis gives them.
- **create**: known after apply (a new name has no basis; what its dependencies will
  be is not yet in any document), then computed from the live document.
- **another resource's change** (a pool's weight, a region's state): not shown in this
  name's plan. Terraform plans each resource on its own, and this resource's plan sees
  the live document plus its own change only; the move shows at the next refresh after
  the apply (`terraform apply -refresh-only` lists it; a plain plan keeps quiet).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gtm.terraform.api import Api, Document

BASIS = "simulated_from"


@dataclass(frozen=True)
class Basis:
    version: int
    health: dict[str, Any] | None

    def private(self) -> dict[str, Any]:
        return {BASIS: {"version": self.version, "health": self.health}}

    @staticmethod
    def of(private: Mapping[str, Any]) -> Basis | None:
        basis = private.get(BASIS)
        if not isinstance(basis, dict) or not isinstance(basis.get("version"), int):
            return None
        health = basis.get("health")
        return Basis(basis["version"], health if isinstance(health, dict) else None)


def health_now(api: Api) -> dict[str, Any] | None:
    """The first node's health summary, as `gtm explain` takes it; only what answers
    depend on (gtm.health.service.facts_from_summary reads these keys)."""
    for node in api.call("GET", "/v1/nodes").get("items", []):
        summary = (node.get("info") or {}).get("health") if isinstance(node, dict) else None
        if isinstance(summary, dict):
            return reduced(summary)
    return None


def reduced(summary: Mapping[str, Any]) -> dict[str, Any]:
    endpoints = {}
    for target, item in (summary.get("endpoints") or {}).items():
        fresh = sum(1 for o in item.get("observations", []) if o.get("fresh"))
        endpoints[target] = {
            "state": item["state"], "reason": item.get("reason", ""),
            "since": item.get("since") or 0.0, "observations": [{"fresh": True}] * fresh,
            "doubt": bool(item.get("doubt")), "isolated": bool(item.get("isolated"))}
    regions = {name: {"healthy": bool(fact["healthy"]), "headroom": fact.get("headroom"),
                      "time": fact["time"], "detail": str(fact.get("detail", ""))}
               for name, fact in (summary.get("regions") or {}).items()}
    return {"endpoints": endpoints, "regions": regions}


def document_at(api: Api, version: int) -> Document | None:
    """A copy of the document of ``version`` (None when the store no longer has it)."""
    cached = api.versions.get(version)
    if cached is None:
        status, body = api.status("GET", f"/v1/versions/{version}")
        if status == 404 or not isinstance(body, dict) or \
                not isinstance(body.get("document"), dict):
            return None
        cached = api.versions[version] = body["document"]
    return copy.deepcopy(cached)
