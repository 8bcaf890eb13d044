"""Active probes: TCP connect, HTTP(S), DNS and exec, each bounded by its timeout.

A probe never raises: every outcome, including a timeout or a refused connection,
is a ProbeResult with a reason a person can read in `gtm health`.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import ssl
import time
from dataclasses import dataclass

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from gtm.steering.model import HealthCheck

DEFAULT_PORTS = {"http": 80, "https": 443, "dns": 53}
MAX_BODY = 64 * 1024  # enough for a health page; a probe never reads a whole download
USER_AGENT = "gtm-health/1"


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str
    latency: float  # seconds, from start to verdict
    time: float  # unix seconds at the verdict
    warning: str | None = None  # e.g. a certificate about to expire; not a failure


def port_of(check: HealthCheck) -> int:
    return check.port if check.port is not None else DEFAULT_PORTS.get(check.type, 0)


async def probe(check: HealthCheck, address: str) -> ProbeResult:
    """Run one probe of ``check`` against ``address``; done within check.timeout."""
    started = time.monotonic()
    try:
        ok, reason, warning = await asyncio.wait_for(_run(check, address), check.timeout)
    except TimeoutError:
        ok, reason, warning = False, f"timeout after {check.timeout:g} s", None
    except (OSError, ssl.SSLError, ValueError, dns.exception.DNSException) as exc:
        ok, reason, warning = False, _describe(exc), None
    return ProbeResult(ok, reason, time.monotonic() - started, time.time(), warning)


async def _run(check: HealthCheck, address: str) -> tuple[bool, str, str | None]:
    if check.type == "tcp":
        return await _tcp(address, port_of(check))
    if check.type in ("http", "https"):
        return await _http(check, address, port_of(check))
    if check.type == "dns":
        return await _dns(check, address, port_of(check))
    return await _exec(check, address)


async def _tcp(address: str, port: int) -> tuple[bool, str, str | None]:
    _, writer = await asyncio.open_connection(address, port)
    await _close(writer)
    return True, "connected", None


async def _http(check: HealthCheck, address: str, port: int) -> tuple[bool, str, str | None]:
    context = _tls_context(check) if check.type == "https" else None
    server_hostname = (check.sni or check.host) if context is not None else None
    reader, writer = await asyncio.open_connection(
        address, port, ssl=context, server_hostname=server_hostname)
    try:
        warning = _cert_warning(writer, check) if context is not None else None
        host = check.host or (address if ":" not in address else f"[{address}]")
        writer.write(
            f"{check.method} {check.path} HTTP/1.1\r\nHost: {host}\r\n"
            f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status = await _status(reader)
        if status not in check.expect:
            return False, f"HTTP {status}, expected {_codes(check.expect)}", warning
        if check.body is not None:
            body = await _body(reader)
            if check.body.encode() not in body:
                return False, f"HTTP {status} but body lacks {check.body!r}", warning
        return True, f"HTTP {status}", warning
    finally:
        await _close(writer)


async def _status(reader: asyncio.StreamReader) -> int:
    line = await reader.readline()
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        raise ValueError(f"not an HTTP response: {line[:60]!r}" if line else "connection closed")
    while True:  # skip the headers; the body (if wanted) follows the blank line
        header = await reader.readline()
        if header in (b"\r\n", b"\n", b""):
            return int(parts[1])


async def _body(reader: asyncio.StreamReader) -> bytes:
    # Connection: close means the body ends at EOF; chunk framing is left in, which
    # cannot hide a substring longer than a chunk-size line anyway.
    chunks, size = [], 0
    while size < MAX_BODY:
        chunk = await reader.read(MAX_BODY - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def _tls_context(check: HealthCheck) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not check.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif not (check.sni or check.host):
        # Probing by address with nothing to match the name against: verify the chain only.
        context.check_hostname = False
    return context


def _cert_warning(writer: asyncio.StreamWriter, check: HealthCheck) -> str | None:
    """A warning when the peer's certificate expires within cert_warn_days."""
    from cryptography import x509

    ssl_object = writer.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return None
    expires = x509.load_der_x509_certificate(der).not_valid_after_utc
    left = expires - datetime.datetime.now(datetime.UTC)
    if left < datetime.timedelta(days=check.cert_warn_days):
        return f"certificate expires {expires:%Y-%m-%d} ({left.days} days)"
    return None


async def _dns(check: HealthCheck, address: str, port: int) -> tuple[bool, str, str | None]:
    assert check.query is not None
    query = dns.message.make_query(check.query, check.qtype)
    reply = await dns.asyncquery.udp(query, address, timeout=check.timeout, port=port)
    rcode = dns.rcode.to_text(reply.rcode())
    if rcode != check.rcode.upper():
        return False, f"rcode {rcode}, expected {check.rcode.upper()}", None
    if check.answer is not None:
        seen = {rdata.to_text() for rrset in reply.answer for rdata in rrset}
        if check.answer not in seen:
            return False, f"answer lacks {check.answer} (got {', '.join(sorted(seen)) or 'none'})",\
                None
    return True, f"rcode {rcode}", None


async def _exec(check: HealthCheck, address: str) -> tuple[bool, str, str | None]:
    port = str(port_of(check))
    argv = [arg.replace("{address}", address).replace("{port}", port) for arg in check.command]
    env = {**os.environ, "GTM_CHECK_ADDRESS": address, "GTM_CHECK_PORT": port}
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL, env=env)
    try:
        code = await process.wait()
    finally:
        if process.returncode is None:  # timed out (cancelled): never leave it running
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await asyncio.shield(process.wait())
    return code == 0, f"exit status {code}", None


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), 0.2)


def _codes(codes: tuple[int, ...]) -> str:
    return "/".join(str(c) for c in codes)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate not trusted: {exc.verify_message}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
