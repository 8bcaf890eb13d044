"""DNS cookies (RFC 7873) with the interoperable server cookie of RFC 9018.

A server cookie is 16 octets: version 1, three reserved octets (zero), a 32-bit Unix
timestamp, then SipHash-2-4 (keyed with a 128-bit secret) over the client cookie, those
first eight octets and the client's IP address. Every node of a deployment holding the
same secret issues and accepts the same cookies, so a client moving between anycast
nodes keeps its cookie (RFC 9018 section 4).

Secrets rotate with an overlap: the first secret issues new cookies, every listed one is
accepted (RFC 9018 section 5). A cookie is accepted while its timestamp is at most an
hour old and at most five minutes ahead (section 4.3); one older than half an hour is
replaced by a fresh one in the reply.

The hash is computed once per client and address: what was issued is remembered (a
bounded table, oldest out first), so a client sending its cookie back is checked with
one dictionary lookup and a comparison.
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Callable, Sequence

from siphashc import siphash

from gtm.dns.wire import FormErr, plain_opt, skip_records

OPTION_COOKIE = 10
CLIENT_COOKIE_LEN = 8
SERVER_COOKIE_LEN = 16
SECRET_LEN = 16
VERSION = 1
BADCOOKIE = 23  # extended rcode (RFC 7873 section 8)
MAX_AGE = 3600        # RFC 9018 4.3: older is not accepted
MAX_AHEAD = 300       # RFC 9018 4.3: further in the future is not accepted
RENEW_AFTER = 1800    # RFC 9018 4.3: a cookie this old is replaced in the reply
ISSUED_LIMIT = 100_000

_HEADER = bytes((VERSION, 0, 0, 0))
_OPTION_CODE = OPTION_COOKIE.to_bytes(2, "big")
_TIMESTAMP = struct.Struct("!I")


def valid_length(length: int) -> bool:
    """RFC 7873 5.2.2: a client cookie alone (8) or with a server cookie of 8 to 32."""
    return length == CLIENT_COOKIE_LEN or 16 <= length <= 40


def option_wire(value: bytes) -> bytes:
    """The COOKIE option (code, length, value) as it goes into an OPT record."""
    return _OPTION_CODE + len(value).to_bytes(2, "big") + value


def new_secret() -> bytes:
    return os.urandom(SECRET_LEN)


def server_cookie(secret: bytes, client: bytes, address: bytes, timestamp: int) -> bytes:
    """RFC 9018 section 4.4: version | reserved | timestamp | SipHash-2-4."""
    head = _HEADER + _TIMESTAMP.pack(timestamp & 0xFFFFFFFF)
    digest = siphash(secret, client + head + address)
    return head + digest.to_bytes(8, "little")


def _age(now: int, timestamp: int) -> int:
    """Seconds since ``timestamp`` in serial number arithmetic (RFC 1982): negative
    when it is ahead of ``now``."""
    age = (now - timestamp) & 0xFFFFFFFF
    return age - 0x100000000 if age >= 0x80000000 else age


class Cookies:
    """The secrets of one server and what it issued; swapped whole on rotation."""

    __slots__ = ("accepted", "clock", "current", "issued", "limit")

    def __init__(self, secrets: Sequence[bytes], clock: Callable[[], float] = time.time,
                 limit: int = ISSUED_LIMIT):
        self.current = b""
        self.accepted: tuple[bytes, ...] = ()
        self.issued: dict[bytes, bytes] = {}
        self.clock = clock
        self.limit = limit
        self.use(secrets)

    def use(self, secrets: Sequence[bytes]) -> None:
        """Issue with the first secret from now on; accept every one of them."""
        if not secrets or any(len(secret) != SECRET_LEN for secret in secrets):
            raise ValueError(f"cookie secrets are {SECRET_LEN} octets, at least one")
        self.current = secrets[0]
        self.accepted = tuple(secrets)
        self.issued.clear()  # issued under a secret that may be gone

    def exchange(self, client: bytes, server: bytes, address: bytes) -> tuple[bool, bytes]:
        """(whether ``server`` is a valid server cookie, the server cookie for the reply).

        ``server`` is b"" when the client sent only its own cookie."""
        now = int(self.clock())
        key = client + address
        issued = self.issued.get(key)
        valid = bool(server) and (server == issued or self._verify(client, server, address))
        if valid and _age(now, _TIMESTAMP.unpack_from(server, 4)[0]) > MAX_AGE:
            valid = False
        if valid and _age(now, _TIMESTAMP.unpack_from(server, 4)[0]) < -MAX_AHEAD:
            valid = False
        if issued is not None and _age(now, _TIMESTAMP.unpack_from(issued, 4)[0]) < RENEW_AFTER:
            return valid, issued
        if valid and _age(now, _TIMESTAMP.unpack_from(server, 4)[0]) < RENEW_AFTER:
            # Another node (or this one before a restart) issued it: keep it going.
            fresh = server
        else:
            fresh = server_cookie(self.current, client, address, now)
        if len(self.issued) >= self.limit:
            del self.issued[next(iter(self.issued))]
        self.issued[key] = fresh
        return valid, fresh

    def _verify(self, client: bytes, server: bytes, address: bytes) -> bool:
        if len(server) != SERVER_COOKIE_LEN or server[0] != VERSION:
            return False
        head, digest = server[:8], server[8:]
        return any(siphash(secret, client + head + address).to_bytes(8, "little") == digest
                   for secret in self.accepted)


_OPT_OWNER_AND_TYPE = b"\x00\x00\x29"


def find_cookie(data: bytes) -> tuple[int, int, int] | None:
    """Where the COOKIE option of a plain query is: (offset of the OPT's RDLENGTH, start
    and end of the option), for a query with one question and an OPT as its only other
    record; None for any other shape (the full path handles those) or no cookie."""
    opt = plain_opt(data)
    if opt is None:
        return None
    try:
        rdlength_at = opt + 9
        option = rdlength_at + 2
        end = option + ((data[rdlength_at] << 8) | data[rdlength_at + 1])
        if end != len(data):
            return None
        while option + 4 <= end:
            size = (data[option + 2] << 8) | data[option + 3]
            if option + 4 + size > end:
                return None
            if data[option] == 0 and data[option + 1] == OPTION_COOKIE:
                return rdlength_at, option, option + 4 + size
            option += 4 + size
    except IndexError:
        return None
    return None


def without_cookie(data: bytes, rdlength_at: int, start: int, end: int) -> bytes:
    """The query with its COOKIE option taken out (the OPT's RDLENGTH fixed)."""
    rdlength = ((data[rdlength_at] << 8) | data[rdlength_at + 1]) - (end - start)
    return (data[:rdlength_at] + rdlength.to_bytes(2, "big") + data[rdlength_at + 2 : start]
            + data[end:])


def with_option(reply: bytes, option: bytes) -> bytes | None:
    """``reply`` with ``option`` (wire form) added to its OPT record, which our replies
    always end with; None when the reply has no OPT there."""
    arcount = (reply[10] << 8) | reply[11]
    if not arcount:
        return None
    try:
        position = 12
        for _ in range((reply[4] << 8) | reply[5]):
            while (length := reply[position]) != 0:
                position += length + 1
            position += 5
        records = ((reply[6] << 8) | reply[7]) + ((reply[8] << 8) | reply[9]) + arcount - 1
        position = skip_records(reply, position, records)
    except (FormErr, IndexError):
        return None
    if reply[position : position + 3] != _OPT_OWNER_AND_TYPE:
        return None
    rdlength_at = position + 9
    rdlength = (reply[rdlength_at] << 8) | reply[rdlength_at + 1]
    if rdlength_at + 2 + rdlength != len(reply):
        return None
    return (reply[:rdlength_at] + (rdlength + len(option)).to_bytes(2, "big")
            + reply[rdlength_at + 2 :] + option)
