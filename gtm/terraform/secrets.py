"""gtm_certificate and gtm_token: the control plane's certificate store and API tokens.

A certificate's private key is write-only (Terraform 1.11+): it is sent to the control
plane, which seals it, and never kept in state; state holds its SHA-256 fingerprint, so
a changed key is still a planned change. A token's secret is returned once, at create,
and kept from state afterwards.
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import quote

from tf import types
from tf.iface import (
    CreateContext,
    DeleteContext,
    ImportContext,
    PlanContext,
    ReadContext,
    UpdateContext,
)
from tf.schema import Attribute
from tf.types import Unknown

from gtm.terraform.api import ProviderError
from gtm.terraform.base import GtmResource, State, fingerprint, guarded
from gtm.terraform.schema import Num, WriteOnly

REPLACED_OUTSIDE = "(replaced outside Terraform: fingerprint {})"


class CertificateResource(GtmResource):
    kind = "certificate"
    description = ("A certificate chain and its private key, kept by the control plane "
                   "(the key sealed). The key is write-only: state keeps its SHA-256 "
                   "fingerprint, never the key.")
    import_format = "`NAME`"
    attributes: ClassVar[list[Attribute]] = [
        Attribute("id", types.String(), computed=True),
        Attribute("name", types.String(), required=True, requires_replace=True),
        Attribute("chain", types.String(), required=True,
                  description="PEM chain, leaf first"),
        WriteOnly("key", types.String(), optional=True, sensitive=True,
                  description="PEM private key (write-only: never in plan or state)"),
        Attribute("key_fingerprint", types.String(), computed=True,
                  description="SHA-256 of the key given (hex)"),
        Attribute("fingerprint", types.String(), computed=True,
                  description="SHA-256 of the leaf certificate, as the control plane says"),
        Attribute("not_after", types.String(), computed=True),
        Attribute("names", types.List(types.String()), computed=True),
    ]

    def path(self, name: str) -> str:
        return f"/v1/certificates/{quote(name, safe='')}"

    def plan(self, ctx: PlanContext, current: State | None, planned: State) -> State:
        key = planned.get("key")
        if isinstance(key, str):
            planned["key_fingerprint"] = fingerprint(key)
        elif key is Unknown:
            planned["key_fingerprint"] = Unknown
        planned["key"] = None  # write-only: Terraform keeps it out of plan and state
        changed = current is None or current.get("chain") != planned.get("chain") or \
            current.get("key_fingerprint") != planned.get("key_fingerprint")
        if changed:
            for computed in ("fingerprint", "not_after", "names"):
                planned[computed] = Unknown
        planned["id"] = planned.get("name")
        return planned

    def upload(self, planned: State) -> State:
        key = planned.get("key")
        if not isinstance(key, str):
            raise ProviderError("gtm_certificate needs `key` when it is created or changed",
                                "Give the PEM private key (a write-only attribute).", "key")
        reply = self.api.call("PUT", self.path(planned["name"]),
                              {"chain": planned["chain"], "key": key})
        return self.state_from(reply, planned, fingerprint(key))

    def state_from(self, reply: dict[str, Any], base: State, key_fingerprint: Any) -> State:
        return {"id": base["name"], "name": base["name"], "chain": base.get("chain"),
                "key": None, "key_fingerprint": key_fingerprint,
                "fingerprint": reply.get("fingerprint_sha256"),
                "not_after": reply.get("not_after"), "names": list(reply.get("names") or [])}

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        def work() -> State:
            status, _reply = self.api.status("GET", self.path(planned["name"]))
            if status != 404:
                raise ProviderError(
                    f"gtm_certificate {planned['name']} already exists",
                    "Import it to manage it here: terraform import gtm_certificate.<name> "
                    f"{planned['name']}")
            return self.upload(planned)

        return guarded(ctx.diagnostics, work)

    def read(self, ctx: ReadContext, current: State) -> State | None:
        def work() -> State | None:
            status, reply = self.api.status("GET", self.path(current["name"]))
            if status == 404:
                return None
            fresh = self.state_from(reply, current, current.get("key_fingerprint"))
            if current.get("fingerprint") and reply.get("fingerprint_sha256") != \
                    current.get("fingerprint"):
                # Someone uploaded another pair: the API does not give the chain back,
                # so the chain shows as changed and the next apply uploads ours again.
                fresh["chain"] = REPLACED_OUTSIDE.format(reply.get("fingerprint_sha256"))
            return fresh

        return guarded(ctx.diagnostics, work)

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        return guarded(ctx.diagnostics, lambda: self.upload(planned))

    def delete(self, ctx: DeleteContext, current: State) -> None:
        def work() -> None:
            status, _reply = self.api.status("DELETE", self.path(current["name"]))
            del status  # already gone is as good as deleted

        guarded(ctx.diagnostics, work)

    def import_(self, ctx: ImportContext, id: str) -> State | None:
        def work() -> State | None:
            status, reply = self.api.status("GET", self.path(id))
            if status == 404:
                raise ProviderError(f"no gtm_certificate {id} in the control plane")
            # The chain is not given back by the API: imported state names the leaf's
            # fingerprint, and the first apply uploads the configured pair once.
            return self.state_from(reply, {"name": id, "chain": None}, None)

        return guarded(ctx.diagnostics, work)


class TokenResource(GtmResource):
    kind = "token"
    description = ("An API token (for a pipeline). Its secret is returned once, when it is "
                   "created; changing the name or role makes a new token.")
    import_format = "`TOKEN_ID` (the secret cannot be imported)"
    attributes: ClassVar[list[Attribute]] = [
        Attribute("id", types.String(), computed=True),
        Attribute("name", types.String(), required=True, requires_replace=True),
        Attribute("role", types.String(), required=True, requires_replace=True,
                  description="admin | editor | viewer"),
        Attribute("secret", types.String(), computed=True, sensitive=True,
                  description="The bearer secret (known only to the state that created it)"),
        Attribute("created_at", Num(), computed=True),
    ]

    def validate(self, diags: Any, type_name: str, config: Any) -> None:
        super().validate(diags, type_name, config)
        config = self.decoded(config)
        role = config.get("role")
        if isinstance(role, str) and role not in ("admin", "editor", "viewer"):
            diags.add_error("invalid role: must be admin, editor or viewer", path=["role"])

    def create(self, ctx: CreateContext, planned: State) -> State | None:
        def work() -> State:
            reply = self.api.call("POST", "/v1/tokens",
                                  {"name": planned["name"], "role": planned["role"]})
            return {"id": reply["id"], "name": reply["name"], "role": reply["role"],
                    "secret": reply["token"], "created_at": reply.get("created_at")}

        return guarded(ctx.diagnostics, work)

    def live(self, token_id: str) -> dict[str, Any] | None:
        items = self.api.call("GET", "/v1/tokens")["items"]
        return next((t for t in items if t["id"] == token_id and not t.get("revoked_at")),
                    None)

    def read(self, ctx: ReadContext, current: State) -> State | None:
        def work() -> State | None:
            token = self.live(current["id"])
            if token is None:
                return None
            return {"id": token["id"], "name": token["name"], "role": token["role"],
                    "secret": current.get("secret"), "created_at": token.get("created_at")}

        return guarded(ctx.diagnostics, work)

    def update(self, ctx: UpdateContext, current: State, planned: State) -> State | None:
        return planned  # name and role replace the token; nothing else can change

    def delete(self, ctx: DeleteContext, current: State) -> None:
        def work() -> None:
            status, _reply = self.api.status("DELETE", f"/v1/tokens/{quote(current['id'])}")
            del status  # already revoked is as good as revoked

        guarded(ctx.diagnostics, work)

    def import_(self, ctx: ImportContext, id: str) -> State | None:
        def work() -> State | None:
            token = self.live(id)
            if token is None:
                raise ProviderError(f"no live gtm_token with id {id!r}",
                                    "List them with `gtm token list`.")
            return {"id": token["id"], "name": token["name"], "role": token["role"],
                    "secret": None, "created_at": token.get("created_at")}

        return guarded(ctx.diagnostics, work)
