"""What every route module of the control API shares: the service behind a request and
the body of a proposed or committed change. A leaf, so the route modules (api,
certificates_api, challenges_api) import it and not each other."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gtm.control.http import etag
from gtm.control.service import ConfigService, Proposal

SERVICE = web.AppKey("service", ConfigService)


def service_of(request: web.Request) -> ConfigService:
    return request.app[SERVICE]


def proposal_response(proposal: Proposal, dry_run: bool) -> web.Response:
    body: dict[str, Any] = {
        "dry_run": dry_run,
        "base_version": proposal.base,
        "diff": proposal.diff,
        "warnings": list(proposal.warnings),
    }
    if proposal.version is None:
        return web.json_response(body)
    body["version"] = proposal.version.summary()
    number = proposal.version.number
    return web.json_response(body, status=201, headers={
        "ETag": etag(number), "Location": f"/v1/versions/{number}",
    })
