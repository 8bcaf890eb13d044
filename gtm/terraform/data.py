"""Data sources: gtm_config (the live version) and gtm_answer (gtm explain as data)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from tf import types
from tf.iface import DataSource, ReadDataContext
from tf.schema import Attribute

from gtm.errors import ConfigError
from gtm.terraform.base import Described, guarded
from gtm.terraform.schema import Num

if TYPE_CHECKING:
    pass


class GtmDataSource(Described, DataSource):
    """A data source of this provider."""


class ConfigData(GtmDataSource):
    kind = "config"
    description = "The live configuration version: its number, author, time and message."
    attributes: ClassVar[list[Attribute]] = [
        Attribute("version", Num(), computed=True),
        Attribute("author", types.String(), computed=True),
        Attribute("time", Num(), computed=True, description="Unix time"),
        Attribute("message", types.String(), computed=True),
    ]

    def read(self, ctx: ReadDataContext, config: dict[str, Any]) -> dict[str, Any] | None:
        def work() -> dict[str, Any]:
            api = self.provider.connection()
            items = api.call("GET", "/v1/versions?limit=1")["items"]
            head = items[0] if items else {}
            return {"version": head.get("version", 0), "author": head.get("author"),
                    "time": head.get("created_at"), "message": head.get("message")}

        return guarded(ctx.diagnostics, work)


class AnswerData(GtmDataSource):
    kind = "answer"
    description = ("What the live configuration answers a client for a steered name, "
                   "from the same code as `gtm explain` (a node's health merged in, as it "
                   "merges it): the addresses, the regions in the order the filter chain "
                   "left them, and the ECS scope.")
    attributes: ClassVar[list[Attribute]] = [
        Attribute("name", types.String(), required=True, description="An absolute name"),
        Attribute("client_subnet", types.String(), optional=True,
                  description="The client's subnet, as sent in EDNS Client Subnet"),
        Attribute("qtype", types.String(), optional=True, description="A (default) or AAAA"),
        Attribute("version", Num(), computed=True),
        Attribute("addresses", types.List(types.String()), computed=True,
                  description="Every address (or CNAME target) the answer rotates over"),
        Attribute("regions", types.List(types.String()), computed=True),
        Attribute("ecs_scope", Num(), computed=True),
        Attribute("fallback", types.String(), computed=True,
                  description="Which fallback answered, if one did"),
    ]

    def read(self, ctx: ReadDataContext, config: dict[str, Any]) -> dict[str, Any] | None:
        from gtm.terraform.answers import answer
        from gtm.terraform.simulation import health_now

        def work() -> dict[str, Any]:
            api = self.provider.connection()
            version, document = api.document()
            qtype = config.get("qtype") or "A"
            try:
                found = answer(document, f"version {version}", config["name"],
                               config.get("client_subnet"), qtype, health_now(api))
            except ConfigError as exc:
                raise ConfigError(f"gtm_answer {config['name']}: {exc}") from None
            return {**config, "qtype": config.get("qtype"), "version": version,
                    "addresses": list(found.addresses), "regions": list(found.regions),
                    "ecs_scope": found.scope, "fallback": found.fallback}

        return guarded(ctx.diagnostics, work)
