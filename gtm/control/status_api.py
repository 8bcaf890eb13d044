"""The status page: ``/status`` (HTML, a login form until logged in), its script and style,
``POST /status/login`` and ``/status/logout``, and ``GET /v1/status`` (the JSON the page
polls; a bearer token works too).

Front end: one HTML file, one script and one stylesheet, served from package data
(gtm/control/status_page), no build step, no library: the page is a map and a few tables
that the script redraws from ``/v1/status`` every second, so nothing needs more than the
DOM. Served with a strict Content-Security-Policy (no inline script or style at all).

Login: the viewer role at least. The form posts the token once; the server keeps a
session (gtm.control.sessions) and the browser only an HttpOnly, SameSite=Strict cookie
with the session's random id, so the token is never in a URL, a log line or the page's
script. POSTs are refused unless they come from this origin (Origin, else
Sec-Fetch-Site), so another site cannot log a browser in or out; the cookie authorises
GETs only (gtm.control.auth.session_ok). Failed logins are limited and audited like
failed bearer tokens.
"""

from __future__ import annotations

import html
from importlib import resources
from urllib.parse import parse_qs

from aiohttp import web

from gtm import log
from gtm.control.auth import Authenticator, requires, session_ok
from gtm.control.nodes_view import LIVENESS
from gtm.control.routes_shared import SERVICE, service_of
from gtm.control.sessions import COOKIE, Sessions
from gtm.control.status import StatusSource
from gtm.control.store import TokenRecord, hash_secret, role_allows
from gtm.errors import RequestError

SESSIONS = web.AppKey("status_sessions", Sessions)
STATUS = web.AppKey("status_source", StatusSource)
AUTHENTICATOR = web.AppKey("status_authenticator", Authenticator)
MAX_FORM = 4096  # bytes of a login form: a token is about 60
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer browsers send "Origin: null" on the
    # login form's POST, which the same-origin check (rightly) refuses.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}
ASSETS = {"status.js": "text/javascript", "status.css": "text/css"}


def routes(app: web.Application, auth: Authenticator) -> list[web.RouteDef]:
    app[SESSIONS] = Sessions()
    app[STATUS] = StatusSource(app[SERVICE], app[LIVENESS])
    app[AUTHENTICATOR] = auth
    auth.session_principal = session_principal
    return [
        web.get("/status", get_page),
        web.get("/status/status.js", get_asset),
        web.get("/status/status.css", get_asset),
        web.post("/status/login", post_login),
        web.post("/status/logout", post_logout),
        web.get("/v1/status", get_status),
    ]


def status_source(app: web.Application) -> StatusSource:
    return app[STATUS]


def asset(name: str) -> str:
    return resources.files("gtm.control").joinpath("status_page", name).read_text("utf-8")


async def session_principal(request: web.Request) -> TokenRecord | None:
    """The token behind the request's session cookie, if the session and token are live."""
    session_id = request.cookies.get(COOKIE)
    if not session_id or len(session_id) > 100:
        return None
    session = request.app[SESSIONS].get(session_id)
    if session is None:
        return None
    token = await service_of(request).store.token_by_hash(session.secret_hash)
    if token is None or token.revoked_at is not None or token.id != session.token_id:
        request.app[SESSIONS].end(session_id)  # revoked: its sessions end with it
        return None
    return token


def page(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8",
                        headers=PAGE_HEADERS)


def login_page(message: str = "", status: int = 200) -> web.Response:
    error = f'<p class="error" role="alert">{html.escape(message)}</p>' if message else ""
    return page(asset("login.html").replace("<!--error-->", error), status)


async def get_page(request: web.Request) -> web.Response:
    token = await session_principal(request)
    if token is None or not role_allows(token.role, "viewer"):
        return login_page()
    return page(asset("index.html").replace("<!--who-->", html.escape(token.name)))


async def get_asset(request: web.Request) -> web.Response:
    name = request.path.rsplit("/", 1)[-1]
    return web.Response(text=asset(name), content_type=ASSETS[name], charset="utf-8",
                        headers={**PAGE_HEADERS, "Cache-Control": "no-cache"})


def same_origin(request: web.Request) -> bool:
    """Whether a POST comes from a page of this origin: browsers send Origin with every
    POST (else Sec-Fetch-Site); a request with neither is not a form of ours."""
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin == f"{request.scheme}://{request.host}"
    return request.headers.get("Sec-Fetch-Site") == "same-origin"


def check_same_origin(request: web.Request) -> None:
    if not same_origin(request):
        raise RequestError(403, "this form only accepts posts from the status page itself",
                           "Origin")


async def form_token(request: web.Request) -> str:
    if request.content_type != "application/x-www-form-urlencoded":
        raise RequestError(415, "post the login form (application/x-www-form-urlencoded)",
                           "Content-Type")
    body = await request.content.read(MAX_FORM + 1)
    if len(body) > MAX_FORM:
        raise RequestError(413, f"a login form is at most {MAX_FORM} bytes", "body")
    try:
        fields = parse_qs(body.decode("ascii"), max_num_fields=4)
    except (UnicodeDecodeError, ValueError):
        raise RequestError(400, "the form is not URL-encoded ASCII", "body") from None
    values = fields.get("token", [])
    return values[0].strip() if len(values) == 1 else ""


async def post_login(request: web.Request) -> web.Response:
    check_same_origin(request)
    secret = await form_token(request)
    auth = request.app[AUTHENTICATOR]
    token = await auth.token_for(secret) if secret else None
    if token is None or not role_allows(token.role, "viewer"):
        reason = "no token given" if not secret else "unknown or revoked token"
        wait = await auth.refuse_login(request, reason)
        if wait:
            response = login_page(f"Too many failed logins from this address: try again in "
                                  f"{int(wait) + 1} s.", 429)
            response.headers["Retry-After"] = str(int(wait) + 1)
            return response
        return login_page("That token is unknown or revoked.", 401)
    session_id = request.app[SESSIONS].start(token.id, hash_secret(secret))
    log.control.info("status page: %s#%s logged in", token.name, token.id)
    response = see_status()
    response.set_cookie(COOKIE, session_id, httponly=True, samesite="Strict", path="/",
                        secure=request.secure, max_age=int(request.app[SESSIONS].ttl))
    return response


async def post_logout(request: web.Request) -> web.Response:
    check_same_origin(request)
    session_id = request.cookies.get(COOKIE)
    if session_id:
        request.app[SESSIONS].end(session_id)
    response = see_status()
    response.del_cookie(COOKIE, path="/")
    return response


def see_status() -> web.Response:
    """303 to the page: the browser GETs it, so a reload does not post the form again."""
    return web.Response(status=303, headers={**PAGE_HEADERS, "Location": "/status"})


@requires("viewer")
@session_ok
async def get_status(request: web.Request) -> web.Response:
    body = await request.app[STATUS].status()
    return web.json_response(body, headers={"Cache-Control": "no-store"})
