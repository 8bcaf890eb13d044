"""Every named logger of the project is declared here, and logging is set up here."""

from __future__ import annotations

import logging
import os
import sys

dns = logging.getLogger("gtm.dns")
zones = logging.getLogger("gtm.zones")
workers = logging.getLogger("gtm.workers")
cli = logging.getLogger("gtm.cli")
lb = logging.getLogger("gtm.lb")
lb_access = logging.getLogger("gtm.lb.access")
tls = logging.getLogger("gtm.lb.tls")
geo = logging.getLogger("gtm.geo")
control = logging.getLogger("gtm.control")
follower = logging.getLogger("gtm.control.follower")
audit = logging.getLogger("gtm.control.audit")
health = logging.getLogger("gtm.health")
acme = logging.getLogger("gtm.acme")


class CurrentStderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted.

    A handler bound to the stream object of the moment outlives it when the stream is
    replaced and closed (pytest's captures, a CLI run in-process), and every later record
    ends in "--- Logging error --- I/O operation on closed file".
    """

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:
        pass  # always sys.stderr, looked up at each record


def setup(level: str | None = None) -> None:
    """Log to stderr with the process id, so lines from several workers can be told apart."""
    chosen = (level or os.environ.get("GTM_LOG_LEVEL") or "INFO").upper()
    handler = CurrentStderrHandler()
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(chosen)
