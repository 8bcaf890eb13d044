"""What every route module of the control API shares: the service behind a request, who
is asking (for the service), and the body of a proposed or committed change. A leaf, so
the route modules (api, certificates_api, challenges_api) import it and not each other."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gtm.control.http import etag
from gtm.control.idempotency import idempotency_key
from gtm.control.ratelimit import client_of
from gtm.control.service import Caller, ConfigService, Proposal
from gtm.control.store import Outcome

SERVICE = web.AppKey("service", ConfigService)


def service_of(request: web.Request) -> ConfigService:
    return request.app[SERVICE]


def caller_of(request: web.Request, dry_run: bool = False) -> Caller:
    """Who is asking, for the service: the client, and the Idempotency-Key with the
    answer to keep in the commit's own transaction."""
    return Caller(client_of(request.remote), idempotency_key(request),
                  lambda proposal: proposal_outcome(proposal, dry_run))


def proposal_response(proposal: Proposal, dry_run: bool) -> web.Response:
    return respond(proposal_outcome(proposal, dry_run))


def proposal_outcome(proposal: Proposal, dry_run: bool) -> Outcome:
    body: dict[str, Any] = {
        "dry_run": dry_run,
        "base_version": proposal.base,
        "diff": proposal.diff,
        "warnings": list(proposal.warnings),
    }
    if proposal.version is None:
        return Outcome(200, body)
    body["version"] = proposal.version.summary()
    number = proposal.version.number
    return Outcome(201, body, {"ETag": etag(number), "Location": f"/v1/versions/{number}"})


def respond(outcome: Outcome) -> web.Response:
    return web.json_response(outcome.body, status=outcome.status, headers=outcome.headers)
