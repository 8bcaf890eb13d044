"""Calls from ACME code to the control plane's API (DNS-01 values, certificates kept
there): a bearer token, an optional CA for an https API, and one error for a control
plane that cannot be reached."""

from __future__ import annotations

import ssl
from typing import Any

import aiohttp

from gtm.errors import AcmeError

TIMEOUT = 30.0


class ControlApi:
    def __init__(self, url: str, token: str, ssl_context: ssl.SSLContext | None = None):
        self.url = url.rstrip("/")
        self.token = token
        self.ssl_context = ssl_context  # for an https API: its CA (None: the system's)

    async def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, str]:
        """(status, body text) of one request; AcmeError when the API cannot be reached."""
        try:
            async with aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(ssl=self.ssl_context or True),
                    headers={"Authorization": f"Bearer {self.token}"},
                    timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session, \
                    session.request(method, self.url + path, **kwargs) as response:
                return response.status, await response.text()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise AcmeError(f"cannot reach the control plane at {self.url}: "
                            f"{exc or type(exc).__name__}") from exc
