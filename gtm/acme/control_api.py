"""Calls from ACME code to the control plane's API (DNS-01 values, certificates kept
there): a bearer token, an optional CA for an https API, and one error for a control
plane that cannot be reached. Writes carry an Idempotency-Key, and a call whose
connection fails is sent once more with the same key, so a write the first attempt
made is answered rather than made twice."""

from __future__ import annotations

import secrets
import ssl
from typing import Any

import aiohttp

from gtm.errors import AcmeError

TIMEOUT = 30.0
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class ControlApi:
    def __init__(self, url: str, token: str, ssl_context: ssl.SSLContext | None = None):
        self.url = url.rstrip("/")
        self.token = token
        self.ssl_context = ssl_context  # for an https API: its CA (None: the system's)

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, str]:
        """(status, body text) of one request; AcmeError when the API cannot be reached."""
        headers = {"Authorization": f"Bearer {self.token}"}
        if method in WRITES:  # one key for the request and its retry
            headers["Idempotency-Key"] = secrets.token_urlsafe(18)
        for attempt in (1, 2):
            try:
                async with aiohttp.ClientSession(
                        connector=aiohttp.TCPConnector(ssl=self.ssl_context or True),
                        headers=headers, timeout=aiohttp.ClientTimeout(total=TIMEOUT)
                ) as session, session.request(method, self.url + path, **kwargs) as response:
                    return response.status, await response.text()
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                if attempt == 1:
                    continue  # no answer came back: once more, with the same key
                raise AcmeError(f"cannot reach the control plane at {self.url}: "
                                f"{exc or type(exc).__name__}") from exc
            except aiohttp.ClientError as exc:
                raise AcmeError(f"cannot reach the control plane at {self.url}: "
                                f"{exc or type(exc).__name__}") from exc
        raise AssertionError("unreachable")
