"""A small synchronous client of the API, for the CLI (standard library only).

Every write carries an ``Idempotency-Key`` (gtm.control.idempotency), and a request
whose connection fails is sent once more with the same key: a write the first attempt
made is then answered, not made a second time.
"""

from __future__ import annotations

import http.client
import json
import os
import secrets
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gtm.errors import GtmError

TIMEOUT = 30.0
# The file in the control plane's state directory that holds the admin token it made
# (gtm.control.plane writes it; the CLI reads var/control/admin.token by default).
ADMIN_TOKEN_FILE = "admin.token"
WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _ConnectionLost(Exception):
    """No answer came back: refused, reset, closed or timed out."""


class ApiError(GtmError):
    """The API refused a request; carries its status and the field it named."""

    def __init__(self, status: int, body: dict[str, Any]):
        self.status = status
        self.body = body
        error = body.get("error", {}) if isinstance(body, dict) else {}
        message = error.get("detail") or error.get("message") or f"HTTP {status}"
        field = error.get("field")
        super().__init__(f"{message} (HTTP {status}{', field ' + field if field else ''})")


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any
    etag: str | None


class Client:
    def __init__(self, base_url: str, token: str | None, ca: Path | None = None):
        self.base_url = base_url.rstrip("/")
        self.token = token
        # https: verified against ``ca`` (else $GTM_API_CA, else the system's trust store)
        if ca is None and os.environ.get("GTM_API_CA"):
            ca = Path(os.environ["GTM_API_CA"])
        self.context = ssl.create_default_context(cafile=str(ca) if ca else None) \
            if base_url.startswith("https://") else None

    def call(self, method: str, path: str, body: Any = None,
             if_match: int | None = None) -> Reply:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        if if_match is not None:
            request.add_header("If-Match", f'"{if_match}"')
        if method in WRITES:  # one key for the request and its retry
            request.add_header("Idempotency-Key", secrets.token_urlsafe(18))
        try:
            return self._send(request)
        except _ConnectionLost:
            pass
        try:
            return self._send(request)
        except _ConnectionLost as exc:
            raise GtmError(f"cannot reach the API at {self.base_url}: {exc}") from None

    def _send(self, request: urllib.request.Request) -> Reply:
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT,
                                        context=self.context) as response:
                return Reply(response.status, _json(response.read()), response.headers["ETag"])
        except urllib.error.HTTPError as exc:
            raise ApiError(exc.code, _json(exc.read())) from None
        except urllib.error.URLError as exc:
            raise _ConnectionLost(str(exc.reason)) from None
        except (http.client.HTTPException, OSError) as exc:  # reset or closed mid-answer
            raise _ConnectionLost(str(exc) or type(exc).__name__) from None

    def get(self, path: str) -> Any:
        return self.call("GET", path).body


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw or b"null")
    except ValueError:
        return {"error": {"message": raw.decode(errors="replace")[:200]}}
