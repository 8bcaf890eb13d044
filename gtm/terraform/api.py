"""The provider's side of the control API: read-modify-write with If-Match and retry.

Every change reads the document, edits one entry and writes it back naming the version
it read (If-Match). A 409 means someone else wrote in between (another resource of the
same `terraform apply -parallelism=10`, or a person): the change is made again on the
new version, after a short random pause so that racing writers spread out.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gtm.control.client import ApiError, Client
from gtm.errors import GtmError

Document = dict[str, Any]
MAX_ATTEMPTS = 40
FIRST_PAUSE = 0.02  # seconds; doubled on each conflict up to LONGEST_PAUSE, with jitter
LONGEST_PAUSE = 0.5


class ProviderError(Exception):
    """A failure told to the user as one diagnostic: a summary, a detail, an attribute."""

    def __init__(self, summary: str, detail: str = "", attribute: str | None = None,
                 field: str | None = None, reason: str = ""):
        super().__init__(summary)
        self.summary = summary
        self.detail = detail
        self.attribute = attribute
        self.field = field  # the JSON path in the document a refusal names, if any
        self.reason = reason  # the API's own words, without the path


class NoChange(Exception):
    """Raised by an edit that finds the document already as wanted: nothing is written."""


@dataclass(frozen=True)
class Settings:
    api: str
    token: str | None
    ca: Path | None


def error_message(body: Any) -> tuple[str, str | None]:
    """The message and field of an error body, whatever its shape: ``{"error": {...}}``,
    ``{"error": "text"}``, ``{"message": ...}`` or anything else."""
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, str):
            return inner, None
        if isinstance(inner, dict):
            text = next((str(inner[k]) for k in ("message", "detail", "reason", "title")
                         if inner.get(k)), None)
            field = inner.get("field")
            if text:
                return text, str(field) if field else None
    return str(body)[:300] if body not in (None, "") else "no details", None


class Api:
    """One provider process's connection to the control plane."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.client = Client(settings.api, settings.token, settings.ca)
        self.versions: dict[int, Document] = {}  # documents of past versions never change

    def call(self, method: str, path: str, body: Any = None,
             if_match: int | None = None) -> Any:
        try:
            return self.client.call(method, path, body, if_match).body
        except ApiError as exc:
            raise self.refusal(exc, method, path) from None
        except GtmError as exc:  # the client's "cannot reach the API at ..."
            raise ProviderError(
                f"cannot reach the gtm control API at {self.settings.api}",
                f"{exc}. Check the provider's `api` (and `ca` for https), and that the "
                "control plane is running.") from None
        except ValueError as exc:  # a URL urllib cannot use at all
            raise ProviderError(f"the provider's api {self.settings.api!r} is not a usable "
                                f"URL", str(exc), "api") from None

    def refusal(self, exc: ApiError, method: str, path: str) -> ProviderError:
        message, field = error_message(exc.body)
        if exc.status == 401:
            return ProviderError(
                "the gtm control API refused the token (HTTP 401)",
                f"{message}. Set the provider's `token` (or GTM_TOKEN) to a live API token.",
                "token")
        if exc.status == 403:
            return ProviderError(
                f"the token may not do this (HTTP 403): {method} {path}",
                f"{message}. This resource needs a token with a stronger role "
                "(certificates and tokens need admin).")
        where = f" (field {field})" if field else ""
        return ProviderError(f"the gtm control API refused {method} {path} "
                             f"(HTTP {exc.status})", f"{message}{where}", field=field,
                             reason=message)

    def status(self, method: str, path: str) -> tuple[int, Any]:
        """A call whose 404 is an answer (the thing is gone), not an error."""
        try:
            return 200, self.client.call(method, path).body
        except ApiError as exc:
            if exc.status == 404:
                return 404, exc.body
            raise self.refusal(exc, method, path) from None
        except GtmError as exc:
            raise ProviderError(f"cannot reach the gtm control API at {self.settings.api}",
                                str(exc)) from None

    def document(self) -> tuple[int, Document]:
        live = self.call("GET", "/v1/config")
        return int(live["version"]), dict(live["document"])

    def edit(self, change: Callable[[Document], None], message: str) -> int | None:
        """Apply ``change`` to the live document as one new version; returns its number,
        or None when ``change`` raised NoChange. Conflicts are retried on a fresh read."""
        pause = FIRST_PAUSE
        for _attempt in range(MAX_ATTEMPTS):
            version, document = self.document()
            try:
                change(document)
            except NoChange:
                return None
            try:
                reply = self.client.call("PUT", "/v1/config",
                                         {"document": document, "message": message},
                                         if_match=version).body
            except ApiError as exc:
                if exc.status != 409:
                    raise self.refusal(exc, "PUT", "/v1/config") from None
                time.sleep(random.uniform(0, pause))
                pause = min(pause * 2, LONGEST_PAUSE)
                continue
            except GtmError as exc:
                raise ProviderError(f"cannot reach the gtm control API at "
                                    f"{self.settings.api}", str(exc)) from None
            return int(reply["version"]["version"]) if isinstance(reply, dict) and \
                isinstance(reply.get("version"), dict) else None
        raise ProviderError(
            f"gave up after {MAX_ATTEMPTS} conflicting writes (HTTP 409)",
            "Other writers changed the configuration every time this change was about to "
            "be written. Nothing of this change was stored; run the apply again.")
