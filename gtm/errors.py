"""The one error hierarchy of the project.

Every error raised on purpose derives from :class:`GtmError`, carries a message a
user can act on, and, where the error comes from input, says where in that input.
"""

from __future__ import annotations


class GtmError(Exception):
    """Root of every error this project raises deliberately."""


class ConfigError(GtmError):
    """Invalid configuration: names the source, the place inside it and the reason."""

    def __init__(self, reason: str, source: str | None = None, where: str | int | None = None):
        self.reason = reason
        self.source = source
        self.where = where
        super().__init__(self._render())

    def _render(self) -> str:
        if self.source is None:
            return self.reason
        if self.where is None:
            return f"{self.source}: {self.reason}"
        return f"{self.source}:{self.where}: {self.reason}"


class ZoneError(ConfigError):
    """A zone file that cannot be served: file, line and reason."""


class CertificateError(ConfigError):
    """A certificate or key that cannot be served: the file and the reason (never key bytes)."""


class SealingError(ConfigError):
    """A sealed secret that cannot be opened or made: a missing or malformed secret key file,
    a value sealed under another key (both key ids named), or ciphertext that fails its
    authentication (tampered with, or moved to another name)."""


class DnsWireError(GtmError):
    """A DNS message that cannot be parsed; the server answers FORMERR or nothing."""


class ServeError(GtmError):
    """A server that cannot start: an address in use, a port not allowed, ..."""


class StoreError(GtmError):
    """A config store operation that failed for a reason the caller can act on."""


class StoreUnavailable(StoreError):
    """The config store cannot be reached; writes are refused (HTTP 503), serving goes on."""


class VersionConflict(StoreError):
    """A write based on a version that is no longer the latest (HTTP 409); nothing was stored."""

    def __init__(self, base: int, current: int):
        self.base = base
        self.current = current
        super().__init__(
            f"the write was based on version {base} but version {current} is live; "
            "fetch it, reapply your change and try again"
        )


class NotFound(StoreError):
    """A version, token or resource that does not exist (HTTP 404)."""


class RequestError(GtmError):
    """An API request that cannot be acted on: its HTTP status, and the field at fault."""

    def __init__(self, status: int, message: str, field: str | None = None):
        self.status = status
        self.field = field
        super().__init__(message)


class AcmeError(GtmError):
    """An ACME server refused a request or an order failed; carries the RFC 8555 problem
    type (``urn:ietf:params:acme:error:...``) so callers can tell retryable ones apart."""

    def __init__(self, message: str, problem: str = "", status: int = 0,
                 subproblems: tuple[str, ...] = ()):
        self.problem = problem
        self.status = status
        self.subproblems = subproblems
        detail = "; ".join(subproblems)
        super().__init__(f"{message}{': ' + detail if detail else ''}")
