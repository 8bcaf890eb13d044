"""Errors of the balancer, all under gtm's one hierarchy (:class:`gtm.errors.GtmError`)."""

from __future__ import annotations

from gtm.errors import GtmError


class HttpError(GtmError):
    """A request or response that must not be forwarded: the status to answer and why.

    Raised by the parser and the framing checks; the client protocol is the one error
    boundary that turns it into a response (and, for framing errors, a closed connection).
    """

    headers = b""  # header lines for that response, each ending in CRLF (Retry-After)

    def __init__(self, status: int, reason: str):
        self.status = status
        self.reason = reason
        super().__init__(f"{status}: {reason}")


class UpstreamError(GtmError):
    """A backend that failed before a usable response head: refused, reset, timed out."""

    def __init__(self, status: int, reason: str, retryable: bool, unsent: bool = False):
        self.status = status
        self.reason = reason
        self.retryable = retryable
        # Refused or reset before any byte of the request left: a retry costs no backend
        # any work, so it is not charged to the pool's retry budget.
        self.unsent = unsent
        super().__init__(f"{status}: {reason}")
