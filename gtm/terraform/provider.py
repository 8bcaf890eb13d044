"""The provider: its block, its resources and data sources, and the process Terraform
starts (``terraform-provider-gtm``)."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

import grpc
import tf.provider
from tf import types
from tf.gen import tfplugin_pb2 as pb
from tf.iface import Config, DataSource, PlanContext, Provider, Resource
from tf.provider import ProviderServicer, _decode_state, _encode_state
from tf.runner import run_provider
from tf.schema import Attribute, Schema
from tf.utils import Diagnostics, read_dynamic_value, to_dynamic_value

from gtm.terraform import private
from gtm.terraform.api import Api, ProviderError, Settings
from gtm.terraform.base import report
from gtm.terraform.data import AnswerData, ConfigData
from gtm.terraform.install import SOURCE
from gtm.terraform.lb import LbListenerResource, LbPoolResource
from gtm.terraform.schema import WriteOnly
from gtm.terraform.secrets import CertificateResource, TokenResource
from gtm.terraform.steering import (
    PoolResource,
    RegionResource,
    RegionStateResource,
    SteeredNameResource,
)
from gtm.terraform.values import cidr
from gtm.terraform.zone import ZoneResource

DEFAULT_API = "http://127.0.0.1:8080"


class GtmProvider(Provider):
    def __init__(self) -> None:
        self.settings: Settings | None = None
        self.api: Api | None = None
        self.vantage_points: dict[str, str] = {}

    def get_model_prefix(self) -> str:
        return "gtm_"

    def full_name(self) -> str:
        return SOURCE

    def get_provider_schema(self, diags: Diagnostics) -> Schema:
        return Schema(attributes=[
            Attribute("api", types.String(), optional=True,
                      description=f"The control API's URL (default $GTM_API, else {DEFAULT_API})"),
            Attribute("token", types.String(), optional=True, sensitive=True,
                      description="A bearer token (default $GTM_TOKEN); name it `terraform` "
                      "so versions record that author"),
            Attribute("ca", types.String(), optional=True,
                      description="CA bundle file for an https `api`"),
            Attribute("vantage_points", types.Map(types.String()), optional=True,
                      description="label -> client subnet, for plan-time answer simulation"),
        ])

    def validate_config(self, diags: Diagnostics, config: Config) -> None:
        api = config.get("api")
        if isinstance(api, str) and not api.startswith(("http://", "https://")):
            diags.add_error("invalid api: must be an http:// or https:// URL", path=["api"])
        for label, subnet in (config.get("vantage_points") or {}).items():
            if not isinstance(subnet, str):
                continue
            try:
                ipaddress.ip_network(subnet, strict=False)
            except ValueError as exc:
                diags.add_error(f"invalid vantage_points[{label!r}]: {exc}",
                                path=["vantage_points", (label,)])

    def configure_provider(self, diags: Diagnostics, config: Config) -> None:
        ca = config.get("ca")
        self.settings = Settings(
            api=config.get("api") or os.environ.get("GTM_API") or DEFAULT_API,
            token=config.get("token") or os.environ.get("GTM_TOKEN") or None,
            ca=Path(ca) if isinstance(ca, str) else None)
        self.vantage_points = {k: str(cidr(v)) for k, v in
                               (config.get("vantage_points") or {}).items()}
        if self.settings.token is None:
            diags.add_error("no token for the gtm control API",
                            "Set the provider's `token`, or GTM_TOKEN.", path=["token"])
            return
        try:
            self.api = Api(self.settings)
            self.api.document()  # one early, clear error instead of one per resource
        except ProviderError as exc:
            self.api = None
            report(diags, exc)
        except OSError as exc:  # an unreadable `ca` file
            self.api = None
            diags.add_error(f"cannot use the CA file {ca}: {exc}", path=["ca"])

    def connection(self) -> Api:
        if self.api is None:
            raise ProviderError("the gtm provider is not configured",
                                "Its configuration failed; see the error about it above.")
        return self.api

    def get_data_sources(self) -> list[type[DataSource]]:
        return [ConfigData, AnswerData]

    def get_resources(self) -> list[type[Resource]]:
        return [ZoneResource, RegionResource, PoolResource, SteeredNameResource,
                RegionStateResource, CertificateResource, TokenResource, LbPoolResource,
                LbListenerResource]


def write_only_names(servicer: ProviderServicer, type_name: str) -> list[str]:
    return [name for name, attribute in servicer._get_res_attrs(type_name).items()
            if isinstance(attribute, WriteOnly)]


def with_config_values(value: pb.DynamicValue, config: pb.DynamicValue,
                       names: list[str]) -> pb.DynamicValue:
    """``value`` (a planned or proposed state) with ``names`` taken from the config."""
    state = read_dynamic_value(value)
    if state is None or not names:
        return value
    given = read_dynamic_value(config) or {}
    return to_dynamic_value({**state, **{n: given.get(n) for n in names}})


class GtmServicer(ProviderServicer):
    """tf's servicer, with what this provider needs on top:

    - write-only attributes: Terraform sends them in the config only; they are passed
      on in the proposed and planned states so that resources see them;
    - a resource's ``plan`` runs for creates too (tf 1.2.0 calls it for updates only),
      so computed values (a key's fingerprint) are planned the same way both times;
    - private state (gtm.terraform.private) goes to the resource and back, which tf
      drops.
    """

    def ReadResource(self, request: pb.ReadResource.Request,
                     context: grpc.ServicerContext) -> pb.ReadResource.Response:
        with private.exchange(request.private) as current:
            response = super().ReadResource(request, context)
        response.private = current.outgoing if current.outgoing is not None \
            else request.private
        return response

    def ImportResourceState(self, request: pb.ImportResourceState.Request,
                            context: grpc.ServicerContext) -> pb.ImportResourceState.Response:
        with private.exchange(b"") as current:
            response = super().ImportResourceState(request, context)
        for imported in response.imported_resources:
            imported.private = current.outgoing or b""
        return response

    def PlanResourceChange(self, request: pb.PlanResourceChange.Request,
                           context: grpc.ServicerContext) -> pb.PlanResourceChange.Response:
        with private.exchange(request.prior_private) as current:
            response = self.plan_change(request, context)
        response.planned_private = current.outgoing if current.outgoing is not None \
            else request.prior_private
        return response

    def plan_change(self, request: pb.PlanResourceChange.Request,
                    context: grpc.ServicerContext) -> pb.PlanResourceChange.Response:
        names = write_only_names(self, request.type_name)
        if names:
            request.proposed_new_state.CopyFrom(
                with_config_values(request.proposed_new_state, request.config, names))
        response = super().PlanResourceChange(request, context)
        creating = read_dynamic_value(request.prior_state) is None and \
            read_dynamic_value(request.proposed_new_state) is not None
        if creating and not any(d.severity == pb.Diagnostic.ERROR
                                for d in response.diagnostics):
            self.plan_create(request.type_name, response)
        return response

    def plan_create(self, type_name: str, response: pb.PlanResourceChange.Response) -> None:
        diags = Diagnostics()
        attrs, blocks = self._get_res_attrs(type_name), self._get_res_blocks(type_name)
        encoded, planned = _decode_state(diags, attrs, blocks, response.planned_state)
        if planned is None:
            return
        resource = self.app.new_resource(self._get_res_cls(type_name))
        planned = resource.plan(PlanContext(diags, type_name, changed_fields=set(planned)),
                                None, planned)
        response.planned_state.CopyFrom(_encode_state(attrs, blocks, planned, encoded))
        response.diagnostics.extend(diags.to_pb())

    def ApplyResourceChange(self, request: pb.ApplyResourceChange.Request,
                            context: grpc.ServicerContext) -> pb.ApplyResourceChange.Response:
        names = write_only_names(self, request.type_name)
        if names and read_dynamic_value(request.planned_state) is not None:
            request.planned_state.CopyFrom(
                with_config_values(request.planned_state, request.config, names))
        with private.exchange(request.planned_private) as current:
            response = super().ApplyResourceChange(request, context)
        response.private = current.outgoing if current.outgoing is not None \
            else request.planned_private
        return response


def main(argv: list[str] | None = None) -> int:
    # tf's runner builds its servicer by this name when it starts; ours adds the above.
    tf.provider.ProviderServicer = GtmServicer
    run_provider(GtmProvider(), argv or sys.argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
