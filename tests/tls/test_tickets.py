"""Session tickets that every worker accepts, and that balancers sharing a key file accept
from each other: real `gtm lb serve` processes, real resumed TLS 1.3 handshakes."""

from __future__ import annotations

import base64
import os
import ssl
from pathlib import Path

import pytest

from gtm.errors import ConfigError
from regional_lb.config import build_config
from tests.lb.process import LbProcess, free_port
from tests.tls.conftest import Pki, client_context, get, tls_connect

pytestmark = pytest.mark.integration


def config(path: Path, pki: Pki, port: int, key_file: Path | None = None) -> Path:
    tickets = f'ticket_key_file = "{key_file}"' if key_file else ""
    path.write_text(f"""
[lb]
[[lb.listeners]]
bind = "127.0.0.1:{port}"
tls = {{ certificates = "{pki.certs}" }}
[lb.tls]
{tickets}
[[lb.pools]]
name = "app"
backends = ["127.0.0.1:1"]
""")
    return path


def visit(port: int, ctx: ssl.SSLContext, session: ssl.SSLSession | None
          ) -> tuple[ssl.SSLSession, bool]:
    """One connection (resuming ``session`` if given): the session to use next, and
    whether this one was resumed."""
    with tls_connect(("127.0.0.1", port), "www.example.com", ctx, session) as sock:
        assert get(sock, "www.example.com", "/.gtm/health")[0] == 200
        assert sock.session is not None
        return sock.session, sock.session_reused


def key_file(path: Path) -> Path:
    path.write_text(base64.b64encode(os.urandom(80)).decode() + "\n")
    return path


def test_every_worker_resumes_the_others_tickets(pki: Pki, tmp_path: Path) -> None:
    pki.add("www", ["www.example.com"])
    port = free_port()
    balancer = LbProcess(config(tmp_path / "lb.toml", pki, port), workers=2)
    try:
        balancer.wait_for_log(r"listener .* 2 workers")
        ctx = client_context(pki.ca_file)
        session, _ = visit(port, ctx, None)
        resumed = []
        # SO_REUSEPORT spreads new connections over both workers (by their source port):
        # with per-worker keys about half of these would be full handshakes.
        for _ in range(30):
            session, reused = visit(port, ctx, session)
            resumed.append(reused)
        assert all(resumed), resumed
    finally:
        balancer.stop()


def test_balancers_with_one_key_file_resume_each_other(pki: Pki, tmp_path: Path) -> None:
    pki.add("www", ["www.example.com"])
    shared = key_file(tmp_path / "tickets.key")
    ports = [free_port(), free_port(), free_port()]
    balancers = [
        LbProcess(config(tmp_path / "a.toml", pki, ports[0], shared)),
        LbProcess(config(tmp_path / "b.toml", pki, ports[1], shared)),
        LbProcess(config(tmp_path / "c.toml", pki, ports[2], key_file(tmp_path / "other.key"))),
    ]
    try:
        for balancer in balancers:
            balancer.wait_for_log(r"listener .* 1 workers")
        ctx = client_context(pki.ca_file)
        session, _ = visit(ports[0], ctx, None)
        _, on_b = visit(ports[1], ctx, session)
        _, on_c = visit(ports[2], ctx, session)
        assert on_b and not on_c
    finally:
        for balancer in balancers:
            balancer.stop()


@pytest.mark.parametrize(("content", "words"), [
    ("not base64!", "80 random bytes in base64 (head -c 80"),
    (base64.b64encode(b"short").decode(), "80 random bytes in base64, not 5"),
])
def test_a_bad_ticket_key_file_is_refused(tmp_path: Path, content: str, words: str) -> None:
    path = tmp_path / "tickets.key"
    path.write_text(content)
    raw = {"listeners": [{"bind": "127.0.0.1:0"}],
           "pools": [{"name": "app", "backends": ["127.0.0.1:1"]}],
           "tls": {"ticket_key_file": str(path)}}
    with pytest.raises(ConfigError) as caught:
        build_config(raw, "lb.toml")
    assert caught.value.where == "lb.tls.ticket_key_file" and words in caught.value.reason
