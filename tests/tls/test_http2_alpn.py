"""HTTP/2 over TLS: ALPN h2 (opt-in: alpn = ["h2", "http/1.1"]), with client
certificates passed on per stream, real clients (curl, h2load), and the admin API,
which speaks HTTP/1.1 only."""

from __future__ import annotations

import re
import ssl
import subprocess
from pathlib import Path

import pytest

from gtm.errors import ConfigError
from regional_lb.config import build_config
from tests.lb.conftest import Env
from tests.lb.h2client import H2Client, require
from tests.tls.conftest import Pki, client_context, tls_connect, tls_listener
from tests.tls.pki import CA
from tests.tls.test_handshakes import _client_pair

pytestmark = pytest.mark.integration
H2 = ["h2", "http/1.1"]


def h2_context(pki: Pki, cert: tuple[Path, Path] | None = None) -> ssl.SSLContext:
    ctx = client_context(pki.ca_file, cert=cert)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


def test_h2_by_alpn_carries_https_and_the_client_certificate(env: Env, pki: Pki,
                                                              tmp_path: Path) -> None:
    backend = env.recorder()
    pki.add("localhost", ["localhost"])
    clients = CA("client CA")
    alice = _client_pair(clients, tmp_path, "alice")
    address = env.balancer([backend.address], listeners=[tls_listener(
        pki, client_auth="optional", client_ca=str(clients.write(tmp_path / "clients.pem")),
        alpn=H2)])
    with H2Client(address, context=h2_context(pki, cert=alice)) as client:
        assert isinstance(client.sock, ssl.SSLSocket)
        assert client.sock.selected_alpn_protocol() == "h2"
        reply = client.request(path="/secure")
        again = client.request(path="/again")
    assert reply.status == 200 and again.status == 200
    assert backend.header(0, "x-forwarded-proto") == ["https"]
    assert backend.header(0, "x-client-verify") == ["SUCCESS"]
    assert backend.header(1, "x-client-cert-subject") == ["CN=alice"]


def test_h2_only_when_asked_and_never_for_the_admin_api(env: Env, pki: Pki) -> None:
    pki.add("www", ["www.example.com"])
    env.balancer(["127.0.0.1:1"], admin="127.0.0.1:0", admin_token="secret",
                 admin_tls={"certificates": str(pki.certs)},
                 listeners=[tls_listener(pki), {**tls_listener(pki, alpn=["h2"]),
                                                "name": "h2only"}])
    ctx = h2_context(pki)
    with tls_connect(env.address("web"), "www.example.com", ctx) as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"  # the default
    with tls_connect(env.address("h2only"), "www.example.com", ctx) as sock:
        assert sock.selected_alpn_protocol() == "h2"
    assert env.handle is not None and env.handle.admin is not None
    with tls_connect(("127.0.0.1", env.handle.admin.port), "www.example.com", ctx) as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"
    with pytest.raises(ConfigError, match=r"admin_tls.alpn\[0\]: this server speaks http/1.1"):
        build_config({"admin": "127.0.0.1:0", "admin_token": "x",
                      "admin_tls": {"certificates": str(pki.certs), "alpn": ["h2"]},
                      "listeners": [{"bind": "127.0.0.1:0"}],
                      "pools": [{"name": "a", "backends": ["127.0.0.1:1"]}]}, "test")
    with pytest.raises(ConfigError, match="h2c: is for plain http listeners"):
        build_config({"listeners": [{**tls_listener(pki), "h2c": True}],
                      "pools": [{"name": "a", "backends": ["127.0.0.1:1"]}]}, "test")


def test_curl_and_h2load_over_tls(env: Env, pki: Pki) -> None:
    curl = require("curl", "curl")
    h2load = require("h2load", "nghttp2-client")
    backend = env.recorder()
    pki.add("localhost", ["localhost"])
    _, port = env.balancer([backend.address], listeners=[tls_listener(pki, alpn=H2)])
    url = f"https://localhost:{port}/"
    resolve = f"localhost:{port}:127.0.0.1"
    out = subprocess.run([curl, "-sS", "-i", "--http2", "--cacert", str(pki.ca_file),
                          "--resolve", resolve, url], capture_output=True, text=True,
                         timeout=30, check=False)
    assert out.returncode == 0 and out.stdout.startswith("HTTP/2 200"), out.stderr
    old = subprocess.run([curl, "-sS", "-i", "--http1.1", "--cacert", str(pki.ca_file),
                          "--resolve", resolve, url], capture_output=True, text=True,
                         timeout=30, check=False)
    assert old.returncode == 0 and old.stdout.startswith("HTTP/1.1 200"), old.stderr
    load = subprocess.run([h2load, "-n", "1000", "-c", "4", "-m", "10",
                           f"https://127.0.0.1:{port}/"], capture_output=True, text=True,
                          timeout=120, check=False)
    match = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", load.stdout)
    assert match and match.groups() == ("1000", "0", "0"), load.stdout + load.stderr
    assert "Application protocol: h2" in load.stdout
