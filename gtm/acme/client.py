"""The ACME protocol over HTTPS (RFC 8555): directory, nonces, signed POSTs, polling.

Every request is a signed POST (reads are POST-as-GET). A ``badNonce`` problem is
retried with the nonce the refusal carried, as section 6.5 asks; other problems
become :class:`AcmeError` with their type and subproblems, so an operator reads what
the CA said rather than an HTTP status.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp

from gtm import log
from gtm.acme.jws import AccountKey, external_account_binding
from gtm.errors import AcmeError

JOSE = "application/jose+json"
PROBLEM = "application/problem+json"
BAD_NONCE = "urn:ietf:params:acme:error:badNonce"
NONCE_RETRIES = 5


@dataclass(frozen=True)
class Response:
    status: int
    body: Any           # parsed JSON, or the text of a certificate chain
    location: str | None
    retry_after: float | None


class AcmeClient:
    """One account at one CA; use ``async with`` or call ``close()``."""

    def __init__(self, directory_url: str, account: AccountKey,
                 ssl_context: ssl.SSLContext | None = None, timeout: float = 30.0):
        self.directory_url = directory_url
        self.account = account
        self.kid: str | None = None
        self.directory: dict[str, Any] = {}
        self._nonces: list[str] = []
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=ssl_context if ssl_context else True),
            timeout=aiohttp.ClientTimeout(total=timeout),
            headers={"User-Agent": "gtm-acme/1"},
        )

    async def __aenter__(self) -> AcmeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._session.close()

    # -- the account ----------------------------------------------------------------------
    async def register(self, contact: tuple[str, ...] = (),
                       eab: tuple[str, bytes] | None = None) -> str:
        """Create the account, or find the one this key already has; returns its URL.

        ``eab`` is (key id, MAC key) for CAs that bind accounts to one of theirs."""
        await self._load_directory()
        payload: dict[str, Any] = {"termsOfServiceAgreed": True}
        if contact:
            payload["contact"] = list(contact)
        if eab is not None:
            payload["externalAccountBinding"] = external_account_binding(
                self.account, eab[0], eab[1], self.directory["newAccount"])
        elif (self.directory.get("meta") or {}).get("externalAccountRequired"):
            raise AcmeError(f"the CA at {self.directory_url} requires external account "
                            "binding: give eab_kid and eab_hmac_key_file (from the CA)")
        reply = await self.post(self.directory["newAccount"], payload, use_jwk=True)
        if reply.location is None:
            raise AcmeError("the CA created an account without telling its URL")
        self.kid = reply.location
        return reply.location

    # -- requests -------------------------------------------------------------------------
    async def post(self, url: str, payload: Any, use_jwk: bool = False) -> Response:
        """A signed POST (``payload`` None: POST-as-GET); retries refused nonces."""
        if not use_jwk and self.kid is None:
            raise AcmeError("no account yet: register() first")
        for attempt in range(NONCE_RETRIES + 1):
            nonce = await self._nonce()
            body = self.account.sign(url, nonce, payload, None if use_jwk else self.kid)
            try:
                return await self._send(url, body)
            except AcmeError as exc:
                if exc.problem != BAD_NONCE or attempt == NONCE_RETRIES:
                    raise
                log.acme.debug("nonce refused by %s, retrying", url)
        raise AssertionError("unreachable")

    async def get(self, url: str) -> Response:
        """A read of an object: POST-as-GET (RFC 8555 6.3)."""
        return await self.post(url, None)

    async def poll(self, url: str, done: tuple[str, ...], timeout: float,
                   interval: float = 0.5) -> dict[str, Any]:
        """Read an object until its status is one of ``done`` (honouring Retry-After)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            reply = await self.get(url)
            status = reply.body.get("status") if isinstance(reply.body, dict) else None
            if status in done:
                return dict(reply.body)
            if status == "invalid":
                raise problem_error(f"{url} became invalid", invalid_reason(reply.body))
            wait = min(reply.retry_after or interval, 10.0)
            if loop.time() + wait > deadline:
                raise AcmeError(f"{url} still {status!r} after {timeout:.0f} s")
            await asyncio.sleep(wait)

    async def _load_directory(self) -> None:
        if self.directory:
            return
        try:
            async with self._session.get(self.directory_url) as response:
                if response.status != 200:
                    raise AcmeError(f"the ACME directory {self.directory_url} answered "
                                    f"HTTP {response.status}")
                self.directory = await response.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise AcmeError(f"cannot read the ACME directory {self.directory_url}: "
                            f"{_describe(exc)}") from exc
        for needed in ("newNonce", "newAccount", "newOrder"):
            if not isinstance(self.directory.get(needed), str):
                raise AcmeError(f"the ACME directory {self.directory_url} has no {needed}")

    async def _nonce(self) -> str:
        if self._nonces:
            return self._nonces.pop()
        await self._load_directory()
        try:
            async with self._session.head(self.directory["newNonce"]) as response:
                nonce = response.headers.get("Replay-Nonce")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise AcmeError(f"cannot get a nonce: {_describe(exc)}") from exc
        if not nonce:
            raise AcmeError("the CA gave no Replay-Nonce")
        return nonce

    async def _send(self, url: str, jws: dict[str, str]) -> Response:
        try:
            async with self._session.post(url, data=json.dumps(jws),
                                          headers={"Content-Type": JOSE}) as response:
                nonce = response.headers.get("Replay-Nonce")
                if nonce:
                    self._nonces.append(nonce)
                text = await response.text()
                kind = response.headers.get("Content-Type", "").split(";")[0].strip()
                if response.status >= 400:
                    body = _parse(text) if kind in (PROBLEM, "application/json") else {}
                    raise problem_error(f"{url}: HTTP {response.status}", body,
                                        response.status)
                return Response(response.status, _parse(text) if "json" in kind else text,
                                response.headers.get("Location"),
                                _retry_after(response.headers.get("Retry-After")))
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise AcmeError(f"cannot reach {url}: {_describe(exc)}") from exc


def invalid_reason(body: dict[str, Any]) -> Any:
    """Why an object is invalid: an order carries ``error``; an authorization does not,
    but the challenge that failed does (RFC 8555 7.1.4, 7.1.5)."""
    if body.get("error"):
        return body["error"]
    for challenge in body.get("challenges") or ():
        if isinstance(challenge, dict) and challenge.get("error"):
            return challenge["error"]
    return {}


def problem_error(context: str, problem: Any, status: int = 0) -> AcmeError:
    """An AcmeError from an RFC 7807 problem document (as ACME uses them)."""
    if not isinstance(problem, dict):
        return AcmeError(context, status=status)
    detail = str(problem.get("detail") or "")
    kind = str(problem.get("type") or "")
    subs = tuple(
        f"{(s.get('identifier') or {}).get('value', '?')}: {s.get('detail', '')}"
        for s in problem.get("subproblems") or () if isinstance(s, dict)
    )
    short = kind.rsplit(":", 1)[-1]
    return AcmeError(f"{context}: {short + ': ' if short else ''}{detail}".rstrip(": "),
                     kind, status, subs)


def _parse(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return {"detail": text[:200]}


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: the caller's own interval is good enough


def _describe(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
