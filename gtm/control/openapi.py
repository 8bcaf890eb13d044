"""The OpenAPI 3.1 description of the API, served at /openapi.json.

Written out by hand, path by path, next to helpers that keep the repetition down;
a test checks that every route the app serves is described here and the reverse, and
another runs schemathesis against the running API: every status, header and body the
API answers must be the one described here.
"""

from __future__ import annotations

from typing import Any

from gtm import __version__
from gtm.control.http import MAX_NUMBER
from gtm.json_input import MAX_DEPTH

Json = dict[str, Any]


def _ref(name: str) -> Json:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Json, description: str = "OK") -> Json:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERROR: Json = {"$ref": "#/components/responses/Error"}
_ERRORS: Json = {"400": _ERROR, "401": _ERROR, "403": _ERROR, "503": _ERROR}
_WRITE_ERRORS: Json = {**_ERRORS, "409": _ERROR, "422": _ERROR, "428": _ERROR}
# What a path parameter may hold: no control characters (400 otherwise).
_PLAIN = "^[^\\u0000-\\u001f\\u007f-\\u009f]+$"
_VERSION_ETAG = '^\\s*(W/)?"?[0-9]{1,18}"?\\s*$'
_IDEMPOTENCY_KEY: Json = {
    "name": "Idempotency-Key", "in": "header", "required": False,
    "description": "1-200 visible ASCII characters. A retry with the same key and the same "
                   "request gets the first answer again (kept 24 h, per token) instead of "
                   "acting twice; the same key with another request is refused (422).",
    "schema": {"type": "string", "pattern": "^[\\x21-\\x7e]{1,200}$"},
}


def _if_match(required: bool) -> Json:
    return {
        "name": "If-Match", "in": "header", "required": required,
        "description": 'The version the change is based on ("N"). '
        + ("Required: this operation has no body."
           if required else "Required unless the body gives base_version (428 without either)."),
        "schema": {"type": "string", "pattern": _VERSION_ETAG},
    }


_DRY_RUN: Json = {
    "name": "dry_run", "in": "query", "schema": {"type": "boolean"},
    "description": "Validate and return the diff without storing anything.",
}
_PAGE: list[Json] = [
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500}},
    {"name": "cursor", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
     "description": "next_cursor of the previous page (opaque, but always digits)"},
]


def _op(summary: str, role: str | None, ok: Json, *, write: bool = False,
        body: Json | None = None, params: list[Json] | None = None,
        created: bool = False) -> Json:
    op: Json = {"summary": summary, "responses": {"201" if created else "200": ok}}
    if role is None:
        op["security"] = []
    else:
        op["description"] = f"Needs the {role} role."
        op["responses"].update(_WRITE_ERRORS if write else _ERRORS)
    if any(p["in"] == "path" for p in params or []):
        op["responses"]["404"] = _ERROR  # nothing of that name (or number)
    if write:
        op["responses"]["201"] = _json(_ref("Proposal"), "Stored as a new version")
        op["responses"]["200"] = _json(_ref("Proposal"), "Dry run: nothing stored")
        params = [*(params or []), _if_match(required=body is None), _DRY_RUN]
    if body is not None:
        op["requestBody"] = {"required": True,
                             "content": {"application/json": {"schema": body}}}
    if params:
        op["parameters"] = params
    return op


def _page_of(schema: str) -> Json:
    return {"type": "object", "properties": {
        "items": {"type": "array", "items": _ref(schema)},
        "next_cursor": {"type": ["string", "null"]}}}


_NAME = [{"name": "name", "in": "path", "required": True,
          "schema": {"type": "string", "pattern": _PLAIN}}]
_CERTIFICATE_NAME = [{"name": "name", "in": "path", "required": True,
                      "schema": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"}}]
_NUMBER = [{"name": "number", "in": "path", "required": True,
            "schema": {"type": "integer", "minimum": 0, "maximum": MAX_NUMBER}}]
_WRITE_BODY: Json = {"message": {"type": "string"},
                     "base_version": {"type": "integer", "minimum": 0, "maximum": MAX_NUMBER}}


def _certificate_put() -> Json:
    op = _op("Store a chain and key; the key is sealed before it is stored", "admin",
             _json(_ref("Certificate"), "Replaced"), params=_CERTIFICATE_NAME,
             body={"type": "object", "required": ["chain", "key"], "properties": {
                 "chain": {"type": "string", "description": "PEM: the leaf, then intermediates"},
                 "key": {"type": "string", "description": "PEM: the leaf's private key"}}})
    op["responses"]["201"] = _json(_ref("Certificate"), "Stored (new name)")
    op["description"] = ("Needs the admin role. 400 names the field at fault; 503 when the "
                         "store or the secret key is unavailable.")
    return op


def _rollback() -> Json:
    op = _op("New version equal to this one", "editor", {}, write=True, params=_NUMBER,
             body={"type": "object", "properties": _WRITE_BODY})
    op["requestBody"]["required"] = False
    return op


def _paths() -> Json:
    return {
        "/openapi.json": {"get": _op("This document", None, _json({"type": "object"}))},
        "/v1/health": {"get": _op("Liveness", None, _json({"type": "object"}))},
        "/metrics": {"get": _op("Prometheus metrics (text exposition format)", "viewer", {
            "description": "The metrics",
            "content": {"text/plain": {"schema": {"type": "string"}}}})},
        "/v1/config": {
            "get": _op("The live document and its version (ETag)", "viewer",
                       _json(_ref("Config"))),
            "put": _op("Replace the whole document", "editor", {}, write=True,
                       body={"type": "object", "required": ["document"], "properties": {
                           "document": _ref("Document"), **_WRITE_BODY}}),
        },
        "/v1/config/zones": {"get": _op("Zone names", "viewer",
                                        _json({"type": "object"}), params=_PAGE)},
        "/v1/config/zones/{name}": {
            "get": _op("One zone's master-file text", "viewer", _json(_ref("Zone")),
                       params=_NAME),
            "put": _op("Set one zone", "editor", {}, write=True, params=_NAME,
                       body={"type": "object", "required": ["text"], "properties": {
                           "text": {"type": "string"}, **_WRITE_BODY}}),
            "delete": _op("Remove one zone", "editor", {}, write=True, params=_NAME),
        },
        "/v1/config/sections/{name}": {
            "get": _op("One section (steering, lb, ...)", "viewer", _json({"type": "object"}),
                       params=_NAME),
            "put": _op("Set one section", "editor", {}, write=True, params=_NAME,
                       body={"type": "object", "required": ["value"], "properties": {
                           "value": {}, **_WRITE_BODY}}),
            "delete": _op("Remove one section", "editor", {}, write=True, params=_NAME),
        },
        "/v1/versions": {"get": _op("Version history, newest first", "viewer",
                                    _json(_page_of("VersionSummary")), params=_PAGE)},
        "/v1/versions/{number}": {"get": _op("One version with its document and diff",
                                             "viewer", _json({"type": "object"}),
                                             params=_NUMBER)},
        "/v1/versions/{number}/diff": {"get": _op(
            "Diff between two versions", "viewer", _json({"type": "object"}),
            params=[*_NUMBER, {"name": "against", "in": "query", "schema": {
                "type": "integer", "minimum": 0, "maximum": MAX_NUMBER}}])},
        "/v1/versions/{number}/rollback": {"post": _rollback()},
        "/v1/nodes": {"get": _op(
            "Every node, the version it serves, lag, last contact, state (live, stale, gone)",
            "viewer", _json({"type": "object"}),
            params=[{"name": "all", "in": "query", "schema": {"type": "boolean"},
                     "description": "also gone nodes (silent for long; hidden by default)"}])},
        "/v1/audit": {"get": _op("Audit log, newest first", "admin",
                                 _json(_page_of("AuditEntry")), params=_PAGE)},
        "/v1/tokens": {
            "get": _op("API tokens (never their secrets)", "admin", _json({"type": "object"})),
            "post": _op("Create a token; its secret is returned once", "admin",
                        _json({"type": "object"}, "Created"), created=True,
                        body={"type": "object", "required": ["name", "role"], "properties": {
                            "name": {"type": "string", "minLength": 1, "maxLength": 100},
                            "role": {"enum": ["viewer", "editor", "admin"]}}}),
        },
        "/v1/certificates": {"get": _op(
            "TLS certificates for the balancers (metadata, never keys)", "viewer",
            _json({"type": "object", "properties": {
                "items": {"type": "array", "items": _ref("Certificate")},
                "next_cursor": {"type": "null"}}}))},
        "/v1/certificates/{name}": {
            "get": _op("One certificate's metadata (never its key)", "viewer",
                       _json(_ref("Certificate")), params=_CERTIFICATE_NAME),
            "put": _certificate_put(),
            "delete": _op("Delete a certificate (balancers stop serving it)", "admin",
                          _json({"type": "object"}), params=_CERTIFICATE_NAME),
        },
        **_scale_paths(),
        "/v1/tsig": {
            "get": _op("TSIG keys (names and algorithms, never secrets)", "admin",
                       _json({"type": "object"})),
            "post": _op("Make a TSIG key; its secret is returned once", "admin",
                        _json({"type": "object"}, "Created"), created=True,
                        body={"type": "object", "required": ["name"], "properties": {
                            "name": {"type": "string", "minLength": 1, "maxLength": 253},
                            "algorithm": {"enum": ["hmac-sha256", "hmac-sha512"]}}}),
        },
        "/v1/tsig/{name}": {"delete": _op(
            "Delete a TSIG key no transfer rule or grant names", "admin",
            _json({"type": "object"}),
            params=[{"name": "name", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": _PLAIN}}])},
        "/v1/tokens/{id}": {"delete": _op(
            "Revoke a token", "admin", _json({"type": "object"}),
            params=[{"name": "id", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": _PLAIN}}])},
        "/v1/events": {"get": _op(
            "The event stream, oldest first in cursor pages; ?wait= holds the request until "
            "an event arrives (long poll)", "viewer", _json(_ref("EventPage")),
            params=_EVENT_PARAMS)},
        "/v1/status": {"get": _op(
            "What the status page shows: regions (place, state, headroom, rate), the DNS "
            "split, nodes, recent events, certificates close to expiry", "viewer",
            _json({"type": "object"}))},
        "/v1/acme/challenges/{name}": {
            "put": _challenge_op("Publish ACME DNS-01 values at a name (kept with any there)",
                                 body={"type": "object", "required": ["values"], "properties": {
                                     "values": {"type": "array", "items": {"type": "string"}},
                                 }}),
            "delete": _challenge_op(
                "Withdraw the values given (?value=, repeatable), or all of the name's",
                params=[{"name": "value", "in": "query", "schema": {"type": "string"}}]),
        },
    }


def _scale_paths() -> Json:
    """Auto-scaling (gtm.control.scale_api): status and events, operator bounds, pause."""
    target = [{"name": name, "in": "path", "required": True,
               "schema": {"type": "string", "pattern": _PLAIN, "maxLength": 200}}
              for name in ("region", "pool")]
    region = [{"name": "region", "in": "query", "schema": {"type": "string"}}]
    changed = _json({"type": "object", "properties": {
        "region": {"type": "string"}, "pool": {"type": "string"},
        "settings": {"type": "object"}}})
    bound = {"anyOf": [{"type": "integer", "minimum": 0, "maximum": 1000}, {"type": "null"}]}
    return {
        "/v1/scale": {"get": _op("Auto-scaling status of every region (or ?region=)",
                                 "viewer", _json({"type": "object"}), params=region)},
        "/v1/scale/history": {"get": _op(
            "Scaling events, newest first", "viewer", _json({"type": "object"}),
            params=[*region, {"name": "limit", "in": "query",
                              "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}])},
        "/v1/scale/{region}/{pool}": {"put": _no_store(_op(
            "Operator bounds of an auto-scaled pool (null: back to the policy's)", "editor",
            changed, params=target, body={"type": "object", "minProperties": 1,
                                          "additionalProperties": False, "properties": {
                                              "min": bound, "max": bound}}))},
        "/v1/scale/{region}/{pool}/pause": {"post": _no_store(_op(
            "Pause a pool's scaling decisions", "editor", changed, params=target))},
        "/v1/scale/{region}/{pool}/resume": {"post": _no_store(_op(
            "Resume a pool's scaling decisions", "editor", changed, params=target))},
    }


def _no_store(op: Json) -> Json:
    """409: this control plane has no scale store (PostgreSQL without Redis)."""
    op["responses"]["409"] = _ERROR
    return op


_EVENT_PARAMS: list[Json] = [
    {"name": "after", "in": "query", "schema": {"type": "string", "pattern": "^[0-9]{1,18}$"},
     "description": "next_cursor of the previous page: the events stored after it"},
    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                "maximum": 500}},
    {"name": "tail", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500},
     "description": "the newest N events instead of a page after a cursor"},
    {"name": "type", "in": "query", "style": "form", "explode": True,
     "schema": {"type": "array", "maxItems": 20, "items": {
         "type": "string", "pattern": "^[a-z][a-z0-9_]{0,31}(\\.[a-z0-9_]{1,32}){0,3}$"}},
     "description": "only these types (repeatable)"},
    {"name": "since", "in": "query", "schema": {"type": "number", "minimum": 0,
                                                "maximum": 1e11},
     "description": "only events from this Unix time on"},
    {"name": "wait", "in": "query", "schema": {"type": "integer", "minimum": 0, "maximum": 25},
     "description": "seconds to hold the request while there is no event (long poll)"},
]


def _html(description: str) -> Json:
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}}}}


def _status_page_paths() -> Json:
    """The status page (HTML, its assets, login and logout): public routes, they take no
    bearer token. POSTs must come from the page itself (Origin): 403 otherwise."""
    see_page = {"description": "To the page (GET /status)",
                "headers": {"Location": {"schema": {"type": "string"}}}}
    login = {"summary": "Log in with a token (form); a session cookie is set", "security": [],
             "requestBody": {"required": True, "content": {
                 "application/x-www-form-urlencoded": {"schema": {
                     "type": "object", "properties": {"token": {"type": "string"}}}}}},
             "responses": {"303": see_page, "400": _ERROR, "401": _html("Login refused"),
                           "403": _ERROR, "413": _ERROR, "415": _ERROR,
                           "429": _html("Too many failed logins from this address")}}
    return {
        "/status": {"get": {"summary": "The status page, or its login form", "security": [],
                            "responses": {"200": _html("The page or the login form")}}},
        "/status/status.js": {"get": {"summary": "The page's script", "security": [],
                                      "responses": {"200": {"description": "JavaScript"}}}},
        "/status/status.css": {"get": {"summary": "The page's style", "security": [],
                                       "responses": {"200": {"description": "CSS"}}}},
        "/status/login": {"post": login},
        "/status/logout": {"post": {"summary": "End the session", "security": [],
                                    "responses": {"303": see_page, "403": _ERROR}}},
    }


def _challenge_op(summary: str, body: Json | None = None,
                  params: list[Json] | None = None) -> Json:
    """Applied at the head version (retried when another write lands first): no If-Match."""
    op = _op(summary, "editor", _json(_ref("Proposal")), body=body,
             params=[*_NAME, *(params or [])])
    op["responses"].update({"201": _json(_ref("Proposal"), "Stored as a new version"),
                            "404": {"$ref": "#/components/responses/Error"},
                            "422": {"$ref": "#/components/responses/Error"}})
    return op


_ID = [{"name": "id", "in": "path", "required": True,
        "schema": {"type": "string", "pattern": _PLAIN}}]


def _drill_op(summary: str, role: str, *, body: Json | None = None,
              params: list[Json] | None = None, created: bool = False) -> Json:
    """The drill routes (gtm.control.drills_api): not versions, so no If-Match."""
    op = _op(summary, role, _json({"type": "object"}), body=body, params=params,
             created=created)
    if role != "viewer":
        op["responses"].update({"409": _ERROR, "413": _ERROR})
    return op


def _drill_paths() -> Json:
    anything = {"type": "object"}
    return {
        "/v1/drills": {
            "get": _drill_op("Drills, newest first (without reports)", "viewer", params=[
                {"name": "active", "in": "query", "schema": {"type": "boolean"}},
                {"name": "limit", "in": "query",
                 "schema": {"type": "integer", "minimum": 1, "maximum": 500}}]),
            "post": _drill_op("Open a drill's record (running, or refused by safety)",
                              "editor", created=True, body={
                                  "type": "object", "required": ["plan"], "properties": {
                                      "plan": anything, "status": {"type": "string"},
                                      "reason": {"type": "string"}, "detail": anything}}),
        },
        "/v1/drills/{id}": {"get": _drill_op("One drill with its report", "viewer",
                                             params=_ID)},
        "/v1/drills/{id}/overrides": {
            "post": _drill_op("Record an override with its expiry (then applied)", "editor",
                              params=_ID, body=anything, created=True)},
        "/v1/drills/{id}/restore": {
            "post": _drill_op("Restore what the drill set, now", "editor", params=_ID,
                              body={"type": "object", "properties": {
                                  "reason": {"type": "string"}}})},
        "/v1/drills/{id}/abort": {
            "post": _drill_op("Abort: flag the runner and restore now", "editor", params=_ID,
                              body={"type": "object", "properties": {
                                  "reason": {"type": "string"}}})},
        "/v1/drills/{id}/recover": {
            "post": _drill_op("Restore the drill's overrides now (id `active`: every active "
                              "drill's)", "editor", params=_ID)},
        "/v1/drills/{id}/result": {
            "put": _drill_op("The drill's outcome and report", "editor", params=_ID, body={
                "type": "object", "required": ["status", "report"], "properties": {
                    "status": {"type": "string"}, "reason": {"type": "string"},
                    "report": anything}})},
    }


def _schemas() -> Json:
    return {
        "Document": {"type": "object", "properties": {
            "zones": {"type": "object", "additionalProperties": {"type": "string"},
                      "description": "zone name (absolute) -> RFC 1035 master-file text"},
            "steering": {"type": "object"}, "lb": {"type": "object"}}},
        "Config": {"type": "object", "properties": {
            "version": {"type": "integer"}, "document": _ref("Document")}},
        "Zone": {"type": "object", "properties": {
            "version": {"type": "integer"}, "name": {"type": "string"},
            "text": {"type": "string"}}},
        "VersionSummary": {"type": "object", "properties": {
            "version": {"type": "integer"}, "created_at": {"type": "number"},
            "author": {"type": "string"}, "message": {"type": "string"},
            "digest": {"type": "string"}, "rollback_of": {"type": ["integer", "null"]},
            "changes": {"type": "integer"}}},
        "Proposal": {"type": "object", "properties": {
            "dry_run": {"type": "boolean"}, "base_version": {"type": "integer"},
            "diff": {"type": "array", "items": {"type": "object"}},
            "warnings": {"type": "array", "items": {"type": "string"}},
            "version": _ref("VersionSummary")}},
        "AuditEntry": {"type": "object", "properties": {
            "id": {"type": "integer"}, "at": {"type": "number"}, "actor": {"type": "string"},
            "action": {"type": "string"}, "target": {"type": "string"},
            "outcome": {"type": "string"}, "detail": {"type": "object"}}},
        "Certificate": {"type": "object", "properties": {
            "name": {"type": "string"}, "revision": {"type": "integer"},
            "names": {"type": "array", "items": {"type": "string"}},
            "not_before": {"type": "string"}, "not_after": {"type": "string"},
            "subject": {"type": "string"}, "issuer": {"type": "string"},
            "key_type": {"type": "string"}, "chain_length": {"type": "integer"},
            "fingerprint_sha256": {"type": "string"},
            "key_id": {"type": "string", "description": "the secret key that sealed it"},
            "updated_at": {"type": "string"}, "updated_by": {"type": "string"},
            "replaced": {"type": "boolean", "description": "PUT only"}}},
        "Event": {"type": "object", "required": ["id", "time", "type", "subject", "detail",
                                                 "actor"], "properties": {
            "id": {"type": "string"}, "time": {"type": "number"}, "type": {"type": "string"},
            "subject": {"type": "string"}, "detail": {"type": "object"},
            "actor": {"type": "string"}}},
        "EventPage": {"type": "object", "properties": {
            "items": {"type": "array", "items": _ref("Event")},
            "next_cursor": {"type": "string", "description": "where to go on from (digits)"}}},
        "Error": {"type": "object", "properties": {"error": {"type": "object", "properties": {
            "status": {"type": "integer"}, "message": {"type": "string"},
            "field": {"type": ["string", "null"],
                      "description": "the offending input: JSON path, parameter or header"},
            "request_id": {"type": "string", "description": "also in X-Request-ID; a 500's "
                           "log line names it"},
        }}}},
    }


def _with_common_conventions(paths: Json) -> Json:
    """What every operation shares: writes take an Idempotency-Key (422 when it was used
    for another request), and any operation that needs a token can meet 429 (too many
    failed authentications from the client)."""
    for operations in paths.values():
        for method, op in operations.items():
            if method in ("put", "post", "patch", "delete"):
                op["parameters"] = [*op.get("parameters", []), _IDEMPOTENCY_KEY]
                op["responses"].setdefault("422", _ERROR)
            if op.get("security") != []:
                op["responses"]["429"] = _ERROR
    return paths


def openapi_document() -> Json:
    return {
        "openapi": "3.1.0",
        "info": {"title": "gtm control plane", "version": __version__, "description": (
            f"Request bodies are JSON, read strictly: at most {MAX_DEPTH} levels deep, no "
            "duplicate keys, no NaN or Infinity, no NUL or lone surrogate in any string "
            "(400 naming what and where).")},
        "security": [{"bearer": []}],
        "paths": {**_with_common_conventions({**_paths(), **_drill_paths()}),
                  **_status_page_paths()},
        "components": {
            "schemas": _schemas(),
            "responses": {"Error": _json(_ref("Error"), "An error naming the field at fault")},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
