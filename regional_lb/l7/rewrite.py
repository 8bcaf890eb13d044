"""What the proxy sends: request heads to backends, response heads and errors to clients."""

from __future__ import annotations

import time
from email.utils import formatdate

from regional_lb.l7.parser import Request, Response

REASONS = {
    400: b"Bad Request", 403: b"Forbidden", 404: b"Not Found", 408: b"Request Timeout",
    413: b"Content Too Large", 414: b"URI Too Long", 417: b"Expectation Failed",
    429: b"Too Many Requests", 500: b"Internal Server Error",
    431: b"Request Header Fields Too Large", 501: b"Not Implemented", 502: b"Bad Gateway",
    503: b"Service Unavailable", 504: b"Gateway Timeout", 505: b"HTTP Version Not Supported",
    200: b"OK",
}


# The forwarding headers of a client without any of its own, by (client, host, proto):
# one per snapshot (regional_lb.snapshot), handed in.
Suffixes = dict[tuple[bytes, bytes, bytes], bytes]


def request_head(suffixes: Suffixes, request: Request, client_ip: bytes, request_id: bytes,
                 default_host: bytes, proto: bytes = b"http", upgrade: bytes | None = None,
                 via: tuple[bytes, bytes] = (b"", b"")) -> bytes:
    """The request line and headers for the backend.

    Hop-by-hop headers and those named in Connection (but the protected ones) are gone;
    Host, Content-Length and Transfer-Encoding are re-emitted normalized; X-Forwarded-For
    and Forwarded get the client appended; X-Forwarded-Proto and -Host are replaced;
    X-Request-ID is added when absent; Upgrade only as the listener allows it.
    """
    host = request.host or default_host
    prefix = request.prefix
    if prefix is None:
        prefix = _prefix(request, host)
        if request.host:  # else it holds the listener's address: not for sharing
            request.prefix = prefix
    if request.forwarded_for or request.forwarded:
        parts = [prefix, _forwarding(request, client_ip, host, proto)]
    else:
        suffix = suffixes.get((client_ip, host, proto))
        if suffix is None:
            suffix = _forwarding(request, client_ip, host, proto)
            if len(host) <= 256:  # bounded memory whatever the clients send
                if len(suffixes) >= 4096:
                    suffixes.clear()
                suffixes[(client_ip, host, proto)] = suffix
        parts = [prefix, suffix]
    if not request.has_request_id:
        parts += (b"\r\nX-Request-ID: ", request_id)
    if via[request.minor]:
        parts.append(via[request.minor])
    if request.chunked:
        parts.append(b"\r\nTransfer-Encoding: chunked")
    if upgrade is not None:  # what the listener allows of the client's Upgrade
        parts += (b"\r\nConnection: upgrade\r\nUpgrade: ", upgrade)
    parts.append(b"\r\n\r\n")
    return b"".join(parts)


def _forwarding(request: Request, client_ip: bytes, host: bytes, proto: bytes) -> bytes:
    node = b'"[' + client_ip + b']"' if b":" in client_ip else client_ip
    forwarded = b"for=" + node + b';host="' + host + b'";proto=' + proto
    return b"".join((
        b"\r\nX-Forwarded-For: ", b", ".join([*request.forwarded_for, client_ip]),
        b"\r\nX-Forwarded-Proto: ", proto, b"\r\nX-Forwarded-Host: ", host,
        b"\r\nForwarded: ", b", ".join([*request.forwarded, forwarded])))


def _prefix(request: Request, host: bytes) -> bytes:
    """Request line and kept headers: the same for every request with this head."""
    line = request.method + b" " + request.target + b" HTTP/1.1"
    if request.reemit:  # Host and Content-Length left the block: written anew
        length = (b"\r\nContent-Length: %d" % request.content_length
                  if request.content_length is not None else b"")
        return line + b"\r\nHost: " + host + request.forwarded_block() + length
    if not request.host:  # HTTP/1.0 without Host: the backend still needs one
        return line + b"\r\nHost: " + host + request.forwarded_block()
    return line + request.forwarded_block()


def response_head(response: Response, extra: bytes) -> bytes:
    """The client's copy: HTTP/1.1, without hop-by-hop headers, plus our own lines.

    ``extra`` is CRLF-led header lines (framing, Connection) or empty. Parsed responses
    are shared by identical heads, so the result is kept on the response, per extra.
    """
    heads = response.heads
    head = heads.get(extra)
    if head is None:
        lines = extra
        if response.reemit and response.content_length is not None:
            lines = b"\r\nContent-Length: %d" % response.content_length + extra
        head = heads[extra] = b"".join((b"HTTP/1.1", response.tail, response.forwarded_block(),
                                        lines, b"\r\n\r\n"))
    return head


def http_date() -> bytes:
    """The Date header's value (RFC 9110 6.6.1), made once a second."""
    now = int(time.time())
    if now != _date[0]:
        _date[:] = [now, formatdate(now, usegmt=True).encode()]
    return _date[1]  # type: ignore[return-value]


_date: list[int | bytes] = [0, b""]


def error_response(status: int, close: bool, message: str | None = None,
                   keep_alive_1_0: bool = False, headers: bytes = b"") -> bytes:
    """An error of our own: never stored by a cache (it says nothing about the resource).

    ``headers``: more lines, each ending in CRLF (a 429's Retry-After)."""
    reason = REASONS.get(status, b"Error")
    body = (message or reason.decode()).encode() + b"\n"
    connection = b"Connection: close\r\n" if close \
        else b"Connection: keep-alive\r\n" if keep_alive_1_0 else b""
    return (b"HTTP/1.1 %d %s\r\nDate: %s\r\nCache-Control: no-store\r\n"
            b"Content-Type: text/plain\r\nContent-Length: %d\r\n%s%s\r\n%s"
            % (status, reason, http_date(), len(body), headers, connection, body))


def interim_response(response: Response) -> bytes:
    """1xx responses are forwarded as they are, minus hop-by-hop headers."""
    return response_head(response, b"")


def health_response(healthy: bool, close: bool, head_only: bool) -> bytes:
    """The listener's own health path: 200 while serving, 503 once stopping has begun."""
    status = b"200 OK" if healthy else b"503 Service Unavailable"
    body = b"ok\n" if healthy else b"draining\n"
    return (b"HTTP/1.1 %s\r\nDate: %s\r\nCache-Control: no-store\r\n"
            b"Content-Type: text/plain\r\nContent-Length: %d\r\n%s\r\n%s"
            % (status, http_date(), len(body), b"Connection: close\r\n" if close else b"",
               b"" if head_only else body))
