"""Every named logger of the project is declared here, and logging is set up here.

Two rules hold for everything the product logs, whoever calls the logger:

- One record is one line. Whatever a client can put into a message (a request path,
  a name, a header) has its control characters escaped, so nobody can write a line
  that looks like another record (``gtm.control.audit ...``) or colour a terminal.
  Tracebacks keep their lines, each indented under the record they belong to.
- No request bytes from aiohttp's parser: a malformed request (an over-long or broken
  header line) is logged by aiohttp with its first bytes, which can be a credential.
  That record keeps the fact and the kind of error, never the bytes.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from typing import TextIO

dns = logging.getLogger("gtm.dns")
zones = logging.getLogger("gtm.zones")
workers = logging.getLogger("gtm.workers")
cli = logging.getLogger("gtm.cli")
lb = logging.getLogger("gtm.lb")
lb_access = logging.getLogger("gtm.lb.access")
scale = logging.getLogger("gtm.lb.scale")
tls = logging.getLogger("gtm.lb.tls")
geo = logging.getLogger("gtm.geo")
control = logging.getLogger("gtm.control")
follower = logging.getLogger("gtm.control.follower")
audit = logging.getLogger("gtm.control.audit")
health = logging.getLogger("gtm.health")
acme = logging.getLogger("gtm.acme")
metrics = logging.getLogger("gtm.metrics")
# Not ours, but both HTTP APIs (control plane, balancer admin) run on aiohttp.
aiohttp_server = logging.getLogger("aiohttp.server")

FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s"

# C0 and C1 controls (LF, CR, ESC, ...), DEL, the Unicode line and paragraph separators
# (line breaks to some viewers) and lone surrogates (unencodable): shown as escapes.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
_CONTINUATION = "\n    "


def escape(text: str) -> str:
    """``text`` on one line: every control character becomes a visible escape (\\n, \\x1b)."""
    if _UNSAFE.search(text) is None:  # the common case costs one scan, no copy
        return text
    return _UNSAFE.sub(_escaped, text)


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _indented(block: str) -> str:
    """A multi-line block (a traceback) under its record: each line escaped and indented,
    so not even a newline inside an exception's message starts a line of its own."""
    return _CONTINUATION.join(escape(line) for line in block.rstrip("\n").split("\n"))


class OneLineFormatter(logging.Formatter):
    """The product's formatter: the message escaped, details indented below it."""

    def format(self, record: logging.LogRecord) -> str:
        record.message = escape(record.getMessage())
        if self.usesTime():
            record.asctime = self.formatTime(record, self.datefmt)
        text = self.formatMessage(record)
        # Formatted here rather than taken from record.exc_text, which another handler's
        # formatter may have filled in without escaping.
        if record.exc_info:
            text += _CONTINUATION + _indented(self.formatException(record.exc_info))
        elif record.exc_text:
            text += _CONTINUATION + _indented(record.exc_text)
        if record.stack_info:
            text += _CONTINUATION + _indented(self.formatStack(record.stack_info))
        return text


class WithoutRequestBytes(logging.Filter):
    """aiohttp's record of a request its parser refused, without the request's bytes."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None:
            return True
        from aiohttp.http_exceptions import HttpProcessingError

        if isinstance(error, HttpProcessingError):
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = ("refused a malformed HTTP request from %s: %s (HTTP %d); "
                          "its bytes are not logged")
            record.args = (remote, type(error).__name__, error.code)
            record.exc_info = record.exc_text = None
            # A client's mistake, not the server's error.
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


# On the logger itself, not on a handler: no handler (a test's capture included) and no
# log level ever sees the original record.
aiohttp_server.addFilter(WithoutRequestBytes())


def handler(stream: TextIO | None = None) -> logging.Handler:
    """The product's log handler: one escaped line per record, on ``stream`` (default:
    whatever sys.stderr is at each record)."""
    made = logging.StreamHandler(stream) if stream is not None else CurrentStderrHandler()
    made.setFormatter(OneLineFormatter(FORMAT))
    return made


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
    root = logging.getLogger()
    root.handlers[:] = [handler()]
    root.setLevel(chosen)
