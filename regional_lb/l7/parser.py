"""Strict HTTP/1.1 message heads and body framing (RFC 9112), in plain Python.

Why not httptools (llhttp): it folds obs-fold lines and takes bare LF in places, it
cannot be told that a response answers HEAD, and it does not see repeated Host or
Content-Length; the checks below would be needed on top of it anyway. Measured
(``python bench/lb_parser.py``, a 9-header browser request): httptools with the Python
callbacks a proxy needs 2.0 us, this parser 5.5 us, and 0.07 us for a head seen before
(parsed heads are cached by their bytes: health checks, API clients, benchmarks and a
backend's responses, which differ once a second by Date; the caches are the snapshot's,
see regional_lb.snapshot). h11 is pure Python and slower.

A head is checked in one regular-expression pass (request line, then every header line
as ``token ":" value`` with no CR, LF, NUL or other control but HT); only a head that
fails is re-read line by line to say precisely why. A head is the bytes before the blank
line, without the final CRLF CRLF.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from regional_lb.errors import HttpError

_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])")
STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: [\x09\x20-\x7e\x80-\xff]*)?")
HEADER_LINE = re.compile(rb"(" + _TOKEN + rb"):[ \t]*([^\x00-\x08\x0a-\x1f\x7f]*?)[ \t]*")
DIGITS = re.compile(rb"[0-9]{1,18}")
CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})(?:[ \t]*;[^\x00-\x08\x0a-\x1f\x7f]*)?")
HOST_VALUE = re.compile(rb"[A-Za-z0-9\-._~%!$&'()*+,;=:\[\]]*")

# Hop-by-hop: never forwarded (RFC 9110 7.6.1), nor is any header named in Connection.
HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
        b"transfer-encoding", b"upgrade",
    }
)
IDEMPOTENT = frozenset({b"GET", b"HEAD", b"OPTIONS", b"PUT", b"DELETE", b"TRACE"})


def bad(reason: str) -> HttpError:
    return HttpError(400, reason)


def check_line_endings(head: bytes | bytearray) -> None:
    """Every CR must start a CRLF and every LF end one: no bare CR, no bare LF."""
    crlf = head.count(b"\r\n")
    if head.count(b"\r") != crlf or head.count(b"\n") != crlf:
        raise bad("bare CR or LF in the message head")


_VALUE = rb"[^\x00-\x08\x0a-\x1f\x7f]*"  # no CTL but HT: no CR, no LF, no NUL
REQUEST_HEAD = re.compile(rb"(" + _TOKEN + rb") ([\x21-\x7e]+) HTTP/([0-9])\.([0-9])((?:\r\n"
                          + _TOKEN + rb":" + _VALUE + rb")*)")
RESPONSE_HEAD = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])((?: [\x09\x20-\x7e\x80-\xff]*)?)"
                           rb"((?:\r\n" + _TOKEN + rb":" + _VALUE + rb")*)")
_HOP = (rb"transfer-encoding|connection|keep-alive|proxy-connection|te|trailer|upgrade|"
        rb"http2-settings")
# Set by the proxy alone (a client sending them would be believed): always dropped.
_OURS = rb"x-forwarded-proto|x-forwarded-host|x-client-verify|x-client-cert-subject"
REQUEST_SPECIAL = re.compile(
    rb"\r\n(?i:(host|content-length|expect|x-request-id|x-forwarded-for|forwarded|"
    + _OURS + rb"|" + _HOP + rb")):[ \t]*([^\r]*)")
RESPONSE_SPECIAL = re.compile(rb"\r\n(?i:(content-length|" + _HOP + rb")):[ \t]*([^\r]*)")
# What is not forwarded; with host and content-length when the proxy re-emits them.
REQUEST_DROP = re.compile(
    rb"\r\n(?i:" + _HOP + rb"|x-forwarded-for|forwarded|" + _OURS + rb"):[^\r]*")
REQUEST_DROP_ALL = re.compile(
    rb"\r\n(?i:" + _HOP + rb"|x-forwarded-for|forwarded|" + _OURS + rb"|"
    rb"host|content-length):[^\r]*")
RESPONSE_DROP = re.compile(rb"\r\n(?i:" + _HOP + rb"):[^\r]*")
RESPONSE_DROP_ALL = re.compile(rb"\r\n(?i:" + _HOP + rb"|content-length):[^\r]*")
CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade"})
# Headers a Connection option may never remove. RFC 9110 7.6.1 makes every header named
# in Connection hop-by-hop, but removing one of these after the balancer has used it
# would change what it forwards from what it parsed: the framing (Content-Length,
# Transfer-Encoding: a body read by its length then sent without one is a second request
# to the backend), the target (Host), or how it identifies the request (X-Request-ID,
# the forwarding headers it rewrites). Such options are ignored, as HAProxy and nginx do
# (neither removes named headers at all), rather than refused: clients legitimately send
# "Connection: TE" (gRPC) and a 400 would buy nothing, since the framing is safe either way.
PROTECTED_REQUEST_HEADERS = frozenset({
    b"content-length", b"transfer-encoding", b"host", b"x-request-id", b"x-forwarded-for",
    b"x-forwarded-proto", b"x-forwarded-host", b"forwarded", b"x-client-verify",
    b"x-client-cert-subject", b"via",
})
PROTECTED_RESPONSE_HEADERS = frozenset({b"content-length", b"transfer-encoding"})


def check_request_line_length(head: bytes, max_request_line: int) -> None:
    """414 for a long request line comes before 431 for a long head: it is the more
    precise answer (the target is what is too long, RFC 9110 15.5.15)."""
    start = 0
    while head.startswith(b"\r\n", start):
        start += 2  # empty lines before a request line are ignored
    end = head.find(b"\r\n", start)
    if (end if end >= 0 else len(head)) - start > max_request_line:
        raise HttpError(414, "request line too long")


def check_partial_head(data: bytes, max_request_line: int, max_header_bytes: int) -> None:
    """An incomplete head that can already be refused: too long, a bare CR or LF, or a
    complete first line that is no HTTP/1.x request line (HTTP/0.9 "GET /" has no
    version and no headers: waiting for a blank line would only end in a timeout)."""
    check_request_line_length(data, max_request_line)
    if len(data) > max_header_bytes:
        raise HttpError(431, "request head too large")
    text = data[:-1] if data.endswith(b"\r") else data
    crlf = text.count(b"\r\n")
    if text.count(b"\n") != crlf or text.count(b"\r") != crlf:
        raise bad("bare CR or LF in the message head")
    line = text.lstrip(b"\r\n").partition(b"\r\n")
    if line[1] and REQUEST_LINE.fullmatch(line[0]) is None:
        raise bad("malformed request line (HTTP/0.9 is not served)"
                  if b" HTTP/" not in line[0] else "malformed request line")


class Request:
    """A parsed request head: what routing, balancing and forwarding need.

    ``block`` is the header section as received (each line preceded by CRLF). Headers
    are forwarded in place except the ones ``drop`` (a pattern) removes: hop-by-hop ones,
    those named in Connection, and those the proxy re-emits itself.
    """

    __slots__ = (
        "_lower", "block", "body", "chunked", "connection", "content_length", "drop",
        "drop_named", "expect_continue", "fields", "forwarded", "forwarded_cache",
        "forwarded_for", "has_request_id", "host", "keep_alive", "method", "minor", "path",
        "prefix", "reemit", "target", "upgrade",
    )

    def __init__(self, method: bytes, target: bytes, minor: int, block: bytes):
        self.method = method
        self.target = target
        self.path = target
        self.minor = minor
        self.block = block
        self._lower: bytes | None = None
        self.drop: re.Pattern[bytes] | None = None
        self.drop_named: re.Pattern[bytes] | None = None
        self.reemit = False  # Host and Content-Length are dropped and written anew
        self.host = b""
        self.content_length: int | None = None
        self.chunked = False
        self.connection: tuple[bytes, ...] = ()
        self.keep_alive = minor == 1
        self.expect_continue = False
        self.upgrade: bytes | None = None
        self.forwarded_for: list[bytes] = []
        self.forwarded: list[bytes] = []
        self.has_request_id = False
        self.forwarded_cache: bytes | None = None
        self.prefix: bytes | None = None  # request line and kept headers, built once
        self.body = False  # a body follows the head (chunked, or Content-Length above 0)
        self.fields = block.count(b"\r\n")  # header lines (limits differ between balancers)


    def header(self, lname: bytes) -> bytes | None:
        """The first value of a header (name in lower case), or None."""
        if self._lower is None:
            self._lower = self.block.lower()
        start = self._lower.find(b"\r\n" + lname + b":")
        if start < 0:
            return None
        start += len(lname) + 3
        end = self.block.find(b"\r\n", start)
        return self.block[start : end if end >= 0 else len(self.block)].strip(b" \t")

    def forwarded_block(self) -> bytes:
        if self.forwarded_cache is None:
            self.forwarded_cache = _forwarded_block(self.block, self.drop, self.drop_named)
        return self.forwarded_cache


def _forwarded_block(block: bytes, drop: re.Pattern[bytes] | None,
                     drop_named: re.Pattern[bytes] | None) -> bytes:
    if drop is not None:
        block = drop.sub(b"", block)
    if drop_named is not None:
        block = drop_named.sub(b"", block)
    return block


class Response:
    """A parsed response head from a backend."""

    __slots__ = ("block", "chunked", "close", "connection", "content_length", "drop",
                 "drop_named", "forwarded_cache", "heads", "minor", "plain", "reemit", "status",
                 "tail", "upgrade")

    def __init__(self, minor: int, status: int, tail: bytes, block: bytes):
        self.minor = minor
        self.status = status
        self.tail = tail  # the status line after "HTTP/1.x"
        self.block = block
        self.drop: re.Pattern[bytes] | None = None
        self.drop_named: re.Pattern[bytes] | None = None
        self.reemit = False
        self.content_length: int | None = None
        self.chunked = False
        self.close = minor == 0
        self.connection: tuple[bytes, ...] = ()
        self.upgrade: bytes | None = None
        self.forwarded_cache: bytes | None = None
        self.heads: dict[bytes, bytes] = {}  # the client's head, by the lines we add
        self.plain = False  # final, Content-Length framed, keep-alive: the fast path

    def forwarded_block(self) -> bytes:
        if self.forwarded_cache is None:
            self.forwarded_cache = _forwarded_block(self.block, self.drop, self.drop_named)
        return self.forwarded_cache


# Parsed heads by their bytes. Parsed messages are never changed after parsing, so
# identical heads (load balancer health checks, API clients, the same page fetched again)
# share one; a backend's responses differ mostly by Date, once a second. The caches are
# a snapshot's (one balancer's, under its limits; a reload starts empty): the protocols
# look a head up there themselves (hot path) and call these on a miss. Bounded.
CACHE_ENTRIES = 4096
CACHE_HEAD_BYTES = 2048  # larger heads are parsed every time: the cache stays small


def parse_request_cached(cache: dict[bytes, Request], head: bytes, max_headers: int
                         ) -> Request:
    request = cache.get(head)
    if request is None:
        request = parse_request(head, max_headers)
        if len(head) <= CACHE_HEAD_BYTES:
            if len(cache) >= CACHE_ENTRIES:
                cache.clear()
            cache[head] = request
    return request


def parse_response_cached(cache: dict[bytes, Response], head: bytes) -> Response:
    response = cache.get(head)
    if response is None:
        response = parse_response(head)
        if len(head) <= CACHE_HEAD_BYTES:
            if len(cache) >= CACHE_ENTRIES:
                cache.clear()
            cache[head] = response
    return response


def parse_request(head: bytes, max_headers: int = 100) -> Request:
    match = REQUEST_HEAD.fullmatch(head)
    if match is None:
        _diagnose(head, request=True)
    assert match is not None
    method, target, major, minor, block = match.groups()
    if major != b"1":
        raise HttpError(505, "only HTTP/1.0 and HTTP/1.1 are served")
    # A higher minor version is processed as the highest we implement (RFC 9110 2.5).
    request = Request(method, target, min(int(minor), 1), block)
    if request.fields > max_headers:
        raise HttpError(431, "too many header fields")
    hosts = 0
    for name, value in REQUEST_SPECIAL.findall(block):
        hosts += _REQUEST_SPECIAL[name.lower()](request, value.rstrip(b" \t"))
    _drop_connection_options(request, PROTECTED_REQUEST_HEADERS)
    _check_request(request, hosts)
    if request.reemit:
        request.drop = REQUEST_DROP_ALL
    return request


def _drop_connection_options(message: Request | Response,
                             protected: frozenset[bytes]) -> None:
    """Headers named in Connection are hop-by-hop too, except the protected ones."""
    names = [n for n in message.connection
             if n not in CONNECTION_OPTIONS and n not in protected]
    if names:
        message.drop_named = re.compile(
            rb"\r\n(?i:" + b"|".join(re.escape(n) for n in names) + rb"):[^\r]*")


def _diagnose(head: bytes, request: bool) -> None:
    """Why a head failed the one-pass match: the precise reason, for the error response."""
    status = 400 if request else 502
    try:
        check_line_endings(head)
        lines = head.split(b"\r\n")
        pattern = REQUEST_LINE if request else STATUS_LINE
        if pattern.fullmatch(lines[0]) is None:
            raise bad("malformed request line" if request else "malformed status line")
        for line in lines[1:]:
            _header(line)
    except HttpError as exc:
        raise HttpError(status, exc.reason if request else f"backend: {exc.reason}") from None
    raise HttpError(status, "malformed message head")


def _header(line: bytes) -> tuple[bytes, bytes]:
    match = HEADER_LINE.fullmatch(line)
    if match is None:
        if line[:1] in (b" ", b"\t"):
            raise bad("obs-fold (a header line starting with whitespace)")
        if b":" in line and line.split(b":", 1)[0].rstrip(b" \t") != line.split(b":", 1)[0]:
            raise bad("whitespace between a header name and the colon")
        raise bad("malformed header line")
    return match.group(1).lower(), match.group(2)


def _content_length(message: Request | Response, value: bytes) -> int:
    """Digits only; a list of equal values counts as one, differing ones are an error."""
    if DIGITS.fullmatch(value) is None or message.content_length is not None:
        values = {item.strip(b" \t") for item in value.split(b",")}
        if len(values) != 1 or DIGITS.fullmatch(next(iter(values))) is None:
            raise bad("invalid Content-Length")
        value = next(iter(values))
        message.reemit = True  # forwarded as one normalized value
    length = int(value)
    if message.content_length is not None and message.content_length != length:
        raise bad("conflicting Content-Length values")
    message.content_length = length
    return 0


def _transfer_encoding(message: Request | Response, value: bytes) -> int:
    message.drop = message.drop or (REQUEST_DROP if isinstance(message, Request)
                                    else RESPONSE_DROP)
    # Empty list elements do not count (RFC 9110 5.6.1); no coding at all is an error.
    codings = [item for item in (i.strip(b" \t").lower() for i in value.split(b",")) if item]
    if not codings:
        raise bad("empty Transfer-Encoding")
    if message.chunked:
        raise bad("a coding after chunked (chunked must be last, and only once)")
    if codings[-1] != b"chunked" or b"chunked" in codings[:-1]:
        raise bad("chunked is not the last transfer coding")
    if len(codings) > 1:
        raise HttpError(501, "only the chunked transfer coding is supported")
    message.chunked = True
    return 0


def _host(request: Request, value: bytes) -> int:
    if not value or HOST_VALUE.fullmatch(value) is None:
        raise bad("invalid Host")
    request.host = value.lower()
    return 1


def _hop(message: Request | Response, value: bytes) -> int:
    message.drop = message.drop or (REQUEST_DROP if isinstance(message, Request)
                                    else RESPONSE_DROP)
    return 0


def _connection(message: Request | Response, value: bytes) -> int:
    _hop(message, value)
    tokens = tuple(t.strip(b" \t").lower() for t in value.split(b",") if t.strip(b" \t"))
    message.connection += tokens
    return 0


def _expect(request: Request, value: bytes) -> int:
    if value.lower() != b"100-continue":
        raise HttpError(417, "only Expect: 100-continue is supported")
    request.expect_continue = True
    return 0


def _upgrade(message: Request | Response, value: bytes) -> int:
    _hop(message, value)
    message.upgrade = value
    return 0


def _forwarded_for(request: Request, value: bytes) -> int:
    _hop(request, value)
    request.forwarded_for.append(value)
    return 0


def _forwarded(request: Request, value: bytes) -> int:
    _hop(request, value)
    request.forwarded.append(value)
    return 0


def _request_id(request: Request, value: bytes) -> int:
    request.has_request_id = True
    return 0


def _keep(request: Request, value: bytes) -> int:
    return 0


_REQUEST_SPECIAL: dict[bytes, Callable[[Any, bytes], int]] = {
    b"content-length": _content_length,
    b"transfer-encoding": _transfer_encoding,
    b"host": _host,
    b"connection": _connection,
    b"expect": _expect,
    b"upgrade": _upgrade,
    b"x-forwarded-for": _forwarded_for,
    b"forwarded": _forwarded,
    b"x-request-id": _request_id,
    b"x-forwarded-proto": _hop,
    b"x-forwarded-host": _hop,
    b"x-client-verify": _hop,
    b"x-client-cert-subject": _hop,
    b"keep-alive": _hop,
    b"proxy-connection": _hop,
    b"te": _hop,
    b"trailer": _hop,
    b"http2-settings": _hop,
}


def _check_request(request: Request, hosts: int) -> None:
    if hosts > 1:
        raise bad("more than one Host header")
    if hosts == 0 and request.minor == 1:
        raise bad("missing Host header")
    if request.chunked and request.content_length is not None:
        raise bad("both Content-Length and Transfer-Encoding")
    if request.chunked and request.minor == 0:
        raise bad("Transfer-Encoding in an HTTP/1.0 request")
    if b"close" in request.connection:
        request.keep_alive = False
    elif request.minor == 0:
        request.keep_alive = b"keep-alive" in request.connection
    _normalize_target(request)
    request.body = request.chunked or bool(request.content_length)
    if request.upgrade is not None and (b"upgrade" not in request.connection or request.body):
        # Upgrade takes effect only with "Connection: upgrade"; a request with a body is
        # never switched (as HAProxy): the body would be read as the new protocol.
        request.upgrade = None


def _normalize_target(request: Request) -> None:
    target = request.target
    if b"#" in target:  # a fragment is never sent (RFC 9112 3.2; RFC 3986 3.5)
        raise bad("a fragment (#) in the request target")
    if request.method == b"CONNECT":  # authority-form: tunnels are not served here
        raise HttpError(501, "CONNECT is not supported")
    if target[:1] == b"/":
        return
    if target == b"*" and request.method == b"OPTIONS":
        return
    lower = target[:8].lower()
    if lower.startswith(b"http://") or lower.startswith(b"https://"):
        rest = target.split(b"//", 1)[1]
        cut = min((i for i in (rest.find(b"/"), rest.find(b"?")) if i >= 0), default=len(rest))
        authority, path = rest[:cut], rest[cut:]
        if not authority or HOST_VALUE.fullmatch(authority) is None:
            raise bad("invalid absolute-form target")
        request.host = authority.lower()
        # "http://host?q" has an empty path: origin-form is "/?q" (RFC 9112 3.2.1)
        request.target = request.path = path if path[:1] == b"/" else b"/" + path
        request.reemit = True  # the Host header gives way to the target's authority
        return
    raise bad("unsupported request target form")


def allowed_upgrade(offered: bytes | None, allowed: frozenset[bytes]) -> bytes | None:
    """The protocols of an Upgrade value that a listener allows, or None for none.

    Protocols are compared by name (before "/version"), case-insensitively; an Upgrade
    offering only others is dropped and the request forwarded as an ordinary one.
    """
    if offered is None or not allowed:
        return None
    kept = [item for item in (i.strip(b" \t") for i in offered.split(b","))
            if item and upgrade_name(item) in allowed]
    return b", ".join(kept) if kept else None


def upgrade_name(protocol: bytes) -> bytes:
    return protocol.partition(b"/")[0].strip(b" \t").lower()


def parse_response(head: bytes) -> Response:
    match = RESPONSE_HEAD.fullmatch(head)
    if match is None:
        _diagnose(head, request=False)
    assert match is not None
    minor, status, tail, block = match.groups()
    response = Response(int(minor), int(status), b" " + status + tail, block)
    try:
        for name, value in RESPONSE_SPECIAL.findall(block):
            _RESPONSE_SPECIAL[name.lower()](response, value.rstrip(b" \t"))
    except HttpError as exc:
        raise HttpError(502, f"backend response: {exc.reason}") from exc
    if response.reemit:
        response.drop = RESPONSE_DROP_ALL
    _drop_connection_options(response, PROTECTED_RESPONSE_HEADERS)
    if response.chunked and response.content_length is not None:
        raise HttpError(502, "backend response has both Content-Length and Transfer-Encoding")
    if b"close" in response.connection:
        response.close = True
    elif response.minor == 0 and b"keep-alive" in response.connection:
        response.close = False
    response.plain = (response.status >= 200 and response.status not in (204, 304)
                      and response.content_length is not None and not response.close)
    return response


_RESPONSE_SPECIAL: dict[bytes, Callable[[Any, bytes], int]] = {
    b"content-length": _content_length,
    b"transfer-encoding": _transfer_encoding,
    b"connection": _connection,
    b"upgrade": _upgrade,
    b"keep-alive": _hop,
    b"proxy-connection": _hop,
    b"te": _hop,
    b"trailer": _hop,
    b"http2-settings": _hop,
}


# Chunked decoding states.
SIZE, DATA, DATA_END, TRAILER, DONE = range(5)
MAX_CHUNK_LINE = 4096
MAX_TRAILERS = 16384


class ChunkedDecoder:
    """Incremental, strict chunked decoding; trailers are validated, and dropped unless
    ``trailers`` is a list (HTTP/2 clients get them as a trailing HEADERS frame)."""

    __slots__ = ("line", "remaining", "state", "trailer_bytes", "trailers")

    def __init__(self) -> None:
        self.state = SIZE
        self.remaining = 0
        self.line = b""
        self.trailer_bytes = 0
        self.trailers: list[tuple[bytes, bytes]] | None = None  # (lower name, value)

    @property
    def done(self) -> bool:
        return self.state == DONE

    def feed(self, data: bytes, out: list[bytes]) -> int:
        """Append decoded data to out; return how much of data was used (all, or up to the end)."""
        pos, size = 0, len(data)
        while pos < size and self.state != DONE:
            if self.state == DATA:
                take = min(self.remaining, size - pos)
                out.append(data[pos : pos + take])
                pos += take
                self.remaining -= take
                if self.remaining == 0:
                    self.state = DATA_END
                continue
            end = data.find(b"\n", pos)
            if end < 0:
                self.line += data[pos:]
                if len(self.line) > MAX_CHUNK_LINE:
                    raise bad("chunk line too long")
                return size
            line, self.line = self.line + data[pos : end + 1], b""
            pos = end + 1
            self._line(line)
        return pos

    def _line(self, line: bytes) -> None:
        if len(line) < 2 or line[-2] != 13 or b"\r" in line[:-2]:
            raise bad("bare CR or LF in chunked framing")
        line = line[:-2]
        if self.state == SIZE:
            match = CHUNK_SIZE.fullmatch(line)
            if match is None:
                raise bad("invalid chunk size")
            self.remaining = int(match.group(1), 16)
            self.state = DATA if self.remaining else TRAILER
        elif self.state == DATA_END:
            if line:
                raise bad("chunk data longer than its size")
            self.state = SIZE
        elif not line:
            self.state = DONE
        else:
            self.trailer_bytes += len(line)
            if self.trailer_bytes > MAX_TRAILERS:
                raise HttpError(431, "trailer section too large")
            field = _header(line)
            if self.trailers is not None:
                self.trailers.append(field)


def chunk(data: bytes) -> list[bytes]:
    """One chunk of chunked encoding, as pieces for writelines."""
    return [b"%x\r\n" % len(data), data, b"\r\n"]


LAST_CHUNK = b"0\r\n\r\n"
