"""Each probe type against real servers on loopback: success, the failure modes, timeouts."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import sys
import time
from pathlib import Path

import dns.message
import dns.rcode
import dns.rrset
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gtm.health.probes import probe
from gtm.steering.model import HealthCheck
from tests.health.endpoint import Endpoint, free_port

HOST = "127.0.5.1"


async def test_tcp_connects_and_reports_refusal() -> None:
    port = free_port(HOST)
    server = await Endpoint(HOST, port).start()
    try:
        result = await probe(HealthCheck("tcp", port=port), HOST)
        assert result.ok and result.reason == "connected" and result.latency < 0.5
    finally:
        await server.stop()
    result = await probe(HealthCheck("tcp", port=port), HOST)
    assert not result.ok and result.reason == "connection refused"


@pytest.mark.parametrize(("mode", "ok", "reason"), [
    ("ok", True, "HTTP 200"),
    ("error", False, "HTTP 500, expected 200"),
])
async def test_http_status(mode: str, ok: bool, reason: str) -> None:
    port = free_port(HOST)
    server = await Endpoint(HOST, port, mode).start()
    try:
        result = await probe(HealthCheck("http", port=port, path="/healthz"), HOST)
    finally:
        await server.stop()
    assert (result.ok, result.reason) == (ok, reason)


async def test_http_expect_set_host_and_body_match() -> None:
    port = free_port(HOST)
    server = await Endpoint(HOST, port, "error").start()
    try:
        spec = HealthCheck("http", port=port, expect=(200, 500), host="svc.example")
        assert (await probe(spec, HOST)).ok
        server.mode = "ok"
        spec = HealthCheck("http", port=port, body="healthy")
        assert (await probe(spec, HOST)).ok
        result = await probe(HealthCheck("http", port=port, body="nope"), HOST)
        assert not result.ok and "body lacks 'nope'" in result.reason
    finally:
        await server.stop()


async def test_hanging_and_slow_servers_time_out_within_the_timeout() -> None:
    port = free_port(HOST)
    server = await Endpoint(HOST, port, "hang").start()
    try:
        started = time.monotonic()
        result = await probe(HealthCheck("http", port=port, timeout=0.3), HOST)
        assert not result.ok and result.reason == "timeout after 0.3 s"
        assert 0.25 < time.monotonic() - started < 0.6
        server.mode, server.delay = "slow", 0.1
        assert (await probe(HealthCheck("http", port=port, timeout=0.5), HOST)).ok
        assert not (await probe(HealthCheck("http", port=port, timeout=0.05), HOST)).ok
    finally:
        await server.stop()


def _certificate(directory: Path, days: int) -> ssl.SSLContext:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "svc.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("svc.example")]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return context


async def test_https_verify_sni_and_expiry_warning(tmp_path: Path) -> None:
    port = free_port(HOST)
    context = _certificate(tmp_path, days=5)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, HOST, port, ssl=context)
    try:
        unverified = HealthCheck("https", port=port, verify=False, sni="svc.example")
        result = await probe(unverified, HOST)
        assert result.ok, result.reason
        assert result.warning is not None and "certificate expires" in result.warning
        verified = HealthCheck("https", port=port, sni="svc.example")
        result = await probe(verified, HOST)  # self-signed: not trusted
        assert not result.ok and "certificate" in result.reason
    finally:
        server.close()
        await server.wait_closed()


class _DnsServer(asyncio.DatagramProtocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        query = dns.message.from_wire(data)
        reply = dns.message.make_response(query)
        if query.question[0].name.to_text() == "up.hc.test.":
            reply.answer.append(dns.rrset.from_text("up.hc.test.", 5, "IN", "A", "192.0.2.7"))
        else:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        self.transport.sendto(reply.to_wire(), addr)  # type: ignore[attr-defined]


async def test_dns_rcode_and_answer() -> None:
    port = free_port(HOST)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_DnsServer, local_addr=(HOST, port))
    try:
        ok = HealthCheck("dns", port=port, query="up.hc.test.", answer="192.0.2.7")
        assert (await probe(ok, HOST)).ok
        wrong = HealthCheck("dns", port=port, query="up.hc.test.", answer="192.0.2.8")
        assert "answer lacks 192.0.2.8" in (await probe(wrong, HOST)).reason
        nx = HealthCheck("dns", port=port, query="gone.hc.test.")
        assert (await probe(nx, HOST)).reason == "rcode NXDOMAIN, expected NOERROR"
        nx_expected = HealthCheck("dns", port=port, query="gone.hc.test.", rcode="NXDOMAIN")
        assert (await probe(nx_expected, HOST)).ok
    finally:
        transport.close()
    silent = HealthCheck("dns", port=free_port(HOST), query="up.hc.test.", timeout=0.2)
    assert not (await probe(silent, HOST)).ok


async def test_exec_exit_status_and_timeout() -> None:
    ok = HealthCheck("exec", command=(sys.executable, "-c",
                                      "import sys; sys.exit(sys.argv[1] != '127.0.5.1')",
                                      "{address}"))
    assert (await probe(ok, HOST)).ok
    failing = HealthCheck("exec", command=(sys.executable, "-c", "raise SystemExit(3)"))
    assert (await probe(failing, HOST)).reason == "exit status 3"
    started = time.monotonic()
    hanging = HealthCheck("exec", timeout=0.3,
                          command=(sys.executable, "-c", "import time; time.sleep(30)"))
    result = await probe(hanging, HOST)
    assert not result.ok and result.reason.startswith("timeout")
    assert time.monotonic() - started < 2
