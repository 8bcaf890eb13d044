"""PROXY protocol v1 (text) and v2 (binary), per the HAProxy specification.

Accepted only on listeners that enable it, and only from trusted source networks;
sent to backends when their pool asks (``proxy_protocol = "v1"`` or ``"v2"``).
"""

from __future__ import annotations

import ipaddress
import socket
import struct

from gtm.errors import GtmError

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107
Address = tuple[str, int]


class ProxyHeaderError(GtmError):
    """A PROXY header that is malformed: the connection is refused."""


def parse_proxy_header(data: bytes) -> tuple[Address | None, int] | None:
    """(source address or None for LOCAL/UNKNOWN, bytes used), or None when incomplete.

    Data that starts with neither signature has no header: (None, 0).
    """
    if data[:12] == V2_SIGNATURE[: len(data[:12])] and data[:1] == b"\r":
        return _parse_v2(data) if len(data) >= 16 else None
    if data[:6] == V1_PREFIX[: len(data[:6])] and data[:1] == b"P":
        return _parse_v1(data) if len(data) >= 6 else None
    return None, 0


def _parse_v1(data: bytes) -> tuple[Address | None, int] | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError("PROXY v1 header without CRLF in 107 bytes")
        return None
    parts = data[:end].split(b" ")
    if len(parts) >= 2 and parts[1] == b"UNKNOWN":
        return None, end + 2
    if len(parts) != 6 or parts[1] not in (b"TCP4", b"TCP6"):
        raise ProxyHeaderError("malformed PROXY v1 header")
    try:
        source = ipaddress.ip_address(parts[2].decode())
        ipaddress.ip_address(parts[3].decode())
        ports = [int(p) for p in parts[4:6] if p.isdigit() and (p == b"0" or p[:1] != b"0")]
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProxyHeaderError("malformed PROXY v1 address") from exc
    if len(ports) != 2 or not all(0 <= p <= 65535 for p in ports):
        raise ProxyHeaderError("malformed PROXY v1 port")
    if (source.version == 4) != (parts[1] == b"TCP4"):
        raise ProxyHeaderError("PROXY v1 address family mismatch")
    return (str(source), ports[0]), end + 2


def _parse_v2(data: bytes) -> tuple[Address | None, int] | None:
    if data[:12] != V2_SIGNATURE:
        raise ProxyHeaderError("malformed PROXY v2 signature")
    ver_cmd, family, length = struct.unpack_from("!BBH", data, 12)
    if ver_cmd >> 4 != 2 or ver_cmd & 0xF not in (0, 1):
        raise ProxyHeaderError("unsupported PROXY v2 version or command")
    if len(data) < 16 + length:
        return None
    used = 16 + length
    if ver_cmd & 0xF == 0:  # LOCAL: the sender's own connection (health checks)
        return None, used
    body = data[16:used]
    if family == 0x11 and length >= 12:
        src = socket.inet_ntop(socket.AF_INET, body[:4])
        (port,) = struct.unpack_from("!H", body, 8)
        return (src, port), used
    if family == 0x21 and length >= 36:
        src = socket.inet_ntop(socket.AF_INET6, body[:16])
        (port,) = struct.unpack_from("!H", body, 32)
        return (src, port), used
    if family == 0x00:
        return None, used
    raise ProxyHeaderError("unsupported PROXY v2 address family")


def build_v1(source: Address, dest: Address) -> bytes:
    proto = b"TCP6" if ":" in source[0] else b"TCP4"
    return b"PROXY %s %s %s %d %d\r\n" % (
        proto, source[0].encode(), dest[0].encode(), source[1], dest[1])


def build_v2(source: Address, dest: Address) -> bytes:
    if ":" in source[0]:
        body = (socket.inet_pton(socket.AF_INET6, source[0])
                + socket.inet_pton(socket.AF_INET6, _as_v6(dest[0]))
                + struct.pack("!HH", source[1], dest[1]))
        family = 0x21
    else:
        body = (socket.inet_pton(socket.AF_INET, source[0])
                + socket.inet_pton(socket.AF_INET, dest[0])
                + struct.pack("!HH", source[1], dest[1]))
        family = 0x11
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, family, len(body)) + body


def _as_v6(address: str) -> str:
    return address if ":" in address else f"::ffff:{address}"


def build(version: str, source: Address, dest: Address) -> bytes:
    if ":" in source[0] and ":" not in dest[0]:
        dest = (_as_v6(dest[0]), dest[1])
    return build_v1(source, dest) if version == "v1" else build_v2(source, dest)
