"""The status page's login sessions, kept on the server.

The browser holds a random session id in an HttpOnly, SameSite=Strict cookie; the server
keeps, under the id's SHA-256, which token logged in (its id and the hash the store keeps
of its secret, never the secret). Every request looks the token up again, so a revoked
token ends its sessions at once. Sessions expire after ``ttl`` seconds; at most ``limit``
are kept (the oldest goes first), so logins cannot make the server hold without bound.
Sessions live in this process: a restart logs everyone out, which is the safe side.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

COOKIE = "gtm_status_session"
TTL = 12 * 3600.0
LIMIT = 1000


@dataclass(frozen=True)
class Session:
    token_id: str
    secret_hash: str  # as the store keeps it: to look the token up on every request
    expires: float


class Sessions:
    def __init__(self, ttl: float = TTL, limit: int = LIMIT):
        self.ttl = ttl
        self.limit = limit
        self._by_key: dict[str, Session] = {}  # insertion order: oldest first

    def start(self, token_id: str, secret_hash: str) -> str:
        """A new session; its id, for the cookie (shown nowhere else)."""
        now = time.time()
        self._forget_expired(now)
        while len(self._by_key) >= self.limit:
            del self._by_key[next(iter(self._by_key))]
        session_id = secrets.token_urlsafe(32)
        self._by_key[_key(session_id)] = Session(token_id, secret_hash, now + self.ttl)
        return session_id

    def get(self, session_id: str) -> Session | None:
        key = _key(session_id)
        session = self._by_key.get(key)
        if session is not None and session.expires <= time.time():
            del self._by_key[key]
            return None
        return session

    def end(self, session_id: str) -> None:
        self._by_key.pop(_key(session_id), None)

    def __len__(self) -> int:
        return len(self._by_key)

    def _forget_expired(self, now: float) -> None:
        for key in [k for k, s in self._by_key.items() if s.expires <= now]:
            del self._by_key[key]


def _key(session_id: str) -> str:
    # Kept hashed: what the server holds cannot be replayed as a cookie.
    return hashlib.sha256(session_id.encode()).hexdigest()
