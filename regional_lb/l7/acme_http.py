"""HTTP-01 (RFC 8555 8.3): token files the manager writes and every worker answers from.

Files rather than memory because the manager runs in worker 0 while the CA's request
may reach any worker sharing the listener.
"""

from __future__ import annotations

import re
from pathlib import Path

from gtm.acme.flow import Challenge
from gtm.errors import AcmeError
from regional_lb.config import AcmeSettings
from regional_lb.l7.rewrite import http_date

CHALLENGE_PREFIX = b"/.well-known/acme-challenge/"
_TOKEN = re.compile(rb"[A-Za-z0-9_-]{1,256}")


def tokens_dir(settings: AcmeSettings) -> Path:
    return settings.tokens_dir


class TokenFiles:
    kind = "http-01"

    def __init__(self, directory: Path):
        self.directory = directory

    async def present(self, challenges: list[Challenge]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        for challenge in challenges:
            (self.directory / _token_name(challenge.token)).write_text(
                challenge.key_authorization, encoding="ascii")

    async def cleanup(self, challenges: list[Challenge]) -> None:
        for challenge in challenges:
            (self.directory / _token_name(challenge.token)).unlink(missing_ok=True)


def _token_name(token: str) -> str:
    if not _TOKEN.fullmatch(token.encode()):  # it becomes a file name: nothing else passes
        raise AcmeError(f"the CA sent a token that is not base64url: {token[:40]!r}")
    return token


def challenge_response(directory: Path, path: bytes, head_only: bool) -> bytes | None:
    """The reply to ``GET /.well-known/acme-challenge/TOKEN``, or None for a token we did
    not publish (the request then goes to the backends, which may run their own ACME)."""
    token = path[len(CHALLENGE_PREFIX):]
    if not _TOKEN.fullmatch(token):
        return None
    try:
        body = (directory / token.decode()).read_bytes()
    except OSError:
        return None
    return (b"HTTP/1.1 200 OK\r\nDate: %s\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\nCache-Control: no-store\r\n\r\n%s"
            % (http_date(), len(body), b"" if head_only else body))
