"""``/v1/acme/challenges/{name}``: ACME DNS-01 values in and out of the ``challenges`` section.

An ACME client should not have to race operators for the document: these writes
apply at the head version and retry a few times when another write lands first.
Each is still one validated, audited, announced version, like any other change.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from gtm.config.challenges import CHALLENGES
from gtm.control.auth import actor, principal, requires
from gtm.control.http import field, json_body
from gtm.control.routes_shared import caller_of, proposal_response, service_of
from gtm.control.service import Document, Proposal
from gtm.errors import NotFound, RequestError, VersionConflict

ATTEMPTS = 8


def routes() -> list[web.RouteDef]:
    return [
        web.put("/v1/acme/challenges/{name}", put_challenge),
        web.delete("/v1/acme/challenges/{name}", delete_challenge),
    ]


def challenge_name(request: web.Request) -> str:
    name = request.match_info["name"]
    return name if name.endswith(".") else name + "."


@requires("editor")
async def put_challenge(request: web.Request) -> web.Response:
    """Add values (kept with any already there: several orders may prove one name)."""
    name = challenge_name(request)
    body = await json_body(request)
    values = field(body, "values", list)
    if not values or not all(isinstance(value, str) for value in values):
        raise RequestError(400, "'values' must list at least one TXT value, each a string",
                           "values")

    def change(doc: Document) -> Document:
        section = doc.setdefault(CHALLENGES, {})
        section[name] = list(dict.fromkeys([*section.get(name, []), *values]))
        return doc

    return await _at_head(request, change, f"acme challenge {name} published")


@requires("editor")
async def delete_challenge(request: web.Request) -> web.Response:
    """Remove the values given (``?value=`` repeated), or all of the name's."""
    name = challenge_name(request)
    gone = request.query.getall("value", [])

    def change(doc: Document) -> Document:
        section = doc.get(CHALLENGES, {})
        if name not in section:
            raise NotFound(f"no challenge is published at {name}")
        kept = [v for v in section[name] if gone and v not in gone]
        if kept:
            section[name] = kept
        else:
            del section[name]
        if not section:
            doc.pop(CHALLENGES, None)
        return doc

    return await _at_head(request, change, f"acme challenge {name} withdrawn")


async def _at_head(request: web.Request, change: Any, message: str) -> web.Response:
    service = service_of(request)
    who = actor(principal(request))
    for attempt in range(ATTEMPTS):
        head = await service.store.head()
        try:
            proposal: Proposal = await service.edit(head, who, message, change,
                                                    caller=caller_of(request))
            return proposal_response(proposal, False)
        except VersionConflict:
            if attempt == ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")
