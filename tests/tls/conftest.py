"""Harness for the TLS tests: generated CAs and pairs, TLS clients, a balancer per test.

The balancer and backends come from the balancer harness (tests/lb/conftest.py): one
event loop on a background thread, everything on 127.0.0.1, ports from the kernel.
Clients here are blocking ``ssl`` sockets with timeouts.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

# Real PostgreSQL for control-plane certificates (skipped loudly without it, as there).
from tests.control.conftest import namespace, postgres_url  # noqa: F401
from tests.lb.conftest import Client, env, loop_thread, read_response  # noqa: F401
from tests.tls.pki import CA, new_key, write_pair

TIMEOUT = 5.0


class Pki:
    """A CA, a certificate directory, and shortcuts to fill it."""

    def __init__(self, root: Path):
        self.root = root
        self.ca = CA()
        self.ca_file = self.ca.write(root / "ca.pem")
        self.certs = root / "certs"
        self.certs.mkdir()

    def add(self, name: str, hosts: list[str], kind: str = "ec", days: float = 90,
            combined: bool = False) -> x509.Certificate:
        chain, key, cert = self.ca.issue(hosts, new_key(kind), days=days)
        write_pair(self.certs, name, chain, key, combined=combined)
        return cert


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def tls_listener(pki: Pki, mode: str = "http", **tls: Any) -> dict[str, Any]:
    return {"name": "web", "bind": "127.0.0.1:0", "mode": mode,
            "tls": {"certificates": str(pki.certs), **tls}}


def client_context(cafile: Path | None, max_version: str = "1.3", ciphers: str | None = None,
                   cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    if cafile is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if max_version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if ciphers:
        ctx.set_ciphers(ciphers)
    if cert is not None:
        ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    return ctx


def tls_connect(address: tuple[str, int], server_name: str | None,
                ctx: ssl.SSLContext, session: ssl.SSLSession | None = None) -> ssl.SSLSocket:
    raw = socket.create_connection(address, timeout=TIMEOUT)
    try:
        sock = ctx.wrap_socket(raw, server_hostname=server_name, session=session)
    except BaseException:
        raw.close()
        raise
    sock.settimeout(TIMEOUT)
    return sock


def served(sock: ssl.SSLSocket) -> x509.Certificate:
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def san(cert: x509.Certificate) -> list[str]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return list(ext.value.get_values_for_type(x509.DNSName))


def get(sock: ssl.SSLSocket, host: str, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return read_response(Client(sock))
