"""Real handshakes through a running balancer: SNI, key types, versions, ALPN, client
certificates, resumption, L4, re-encryption to backends."""

from __future__ import annotations

import asyncio
import ssl
import warnings
from pathlib import Path

import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from prometheus_client import generate_latest

from gtm.metrics import REGISTRY
from tests.lb.conftest import Client, Env, read_response
from tests.tls.conftest import (
    Pki,
    client_context,
    get,
    san,
    served,
    tls_connect,
    tls_listener,
)
from tests.tls.pki import CA, new_key, write_pair


def test_many_sni_names_wildcard_and_default(env: Env, pki: Pki) -> None:
    backend = env.recorder("app")
    for i in range(60):
        pki.add(f"site{i}", [f"site{i}.example.com"])
    pki.add("apps", ["*.apps.example.com"])
    pki.add("fallback", ["fallback.example.com"])
    address = env.balancer([backend.address], listeners=[tls_listener(pki, default="fallback")])
    ctx = client_context(pki.ca_file)
    for i in range(60):
        name = f"site{i}.example.com"
        with tls_connect(address, name, ctx) as sock:  # check_hostname verifies the name
            assert san(served(sock)) == [name]
            status, _, body = get(sock, name)
            assert status == 200 and body == b"app\n"
    with tls_connect(address, "x.apps.example.com", ctx) as sock:
        assert san(served(sock)) == ["*.apps.example.com"]
    loose = client_context(None)  # no name check: see which certificate comes back
    for name in ("unknown.test", "a.b.apps.example.com", None):
        with tls_connect(address, name, loose) as sock:
            assert san(served(sock)) == ["fallback.example.com"]
    assert backend.header(0, "X-Forwarded-Proto") == ["https"]
    assert "proto=https" in backend.header(0, "Forwarded")[0]
    assert env.handle is not None
    tls = env.handle.snapshot.listeners["web"].tls
    assert tls is not None and len(tls.store.contexts) == 62  # built for the names used only


def test_unknown_names_refused_when_asked(env: Env, pki: Pki) -> None:
    pki.add("www", ["www.example.com"])
    address = env.balancer(["127.0.0.1:1"], listeners=[tls_listener(pki, unknown_sni="refuse")])
    # uvloop closes without flushing the alert, so the client may only see the EOF.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        tls_connect(address, "other.test", client_context(None)).close()
    tls_connect(address, "www.example.com", client_context(pki.ca_file)).close()


def test_ecdsa_and_rsa_side_by_side(env: Env, pki: Pki) -> None:
    pki.add("www-ec", ["www.example.com"], kind="ec")
    pki.add("www-rsa", ["www.example.com"], kind="rsa")
    address = env.balancer(["127.0.0.1:1"], listeners=[tls_listener(pki)])
    cases = {"ECDHE-ECDSA-AES128-GCM-SHA256": ec.EllipticCurvePublicKey,
             "ECDHE-RSA-AES128-GCM-SHA256": rsa.RSAPublicKey}
    for cipher, key_type in cases.items():
        ctx = client_context(pki.ca_file, max_version="1.2", ciphers=cipher)
        with tls_connect(address, "www.example.com", ctx) as sock:
            assert isinstance(served(sock).public_key(), key_type)
            assert sock.version() == "TLSv1.2"
    with tls_connect(address, "www.example.com", client_context(pki.ca_file)) as sock:
        assert sock.version() == "TLSv1.3"


def test_versions_ciphers_and_alpn(env: Env, pki: Pki) -> None:
    pki.add("www", ["www.example.com"])
    address = env.balancer(["127.0.0.1:1"], listeners=[tls_listener(pki)])
    old = client_context(pki.ca_file)
    with warnings.catch_warnings():  # deprecated: which is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        old.minimum_version = ssl.TLSVersion.TLSv1
        old.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        tls_connect(address, "www.example.com", old).close()
    static_rsa = client_context(pki.ca_file, max_version="1.2", ciphers="AES128-GCM-SHA256")
    with pytest.raises(ssl.SSLError):  # no forward secrecy: no shared cipher
        tls_connect(address, "www.example.com", static_rsa).close()
    ctx = client_context(pki.ca_file)
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    with tls_connect(address, "www.example.com", ctx) as sock:
        assert sock.selected_alpn_protocol() == "http/1.1"  # HTTP/2 is opt-in (README)


def _client_pair(ca: CA, root: Path, name: str) -> tuple[Path, Path]:
    chain, key, _ = ca.issue([name], new_key(), client=True)
    (root / f"{name}.crt").write_bytes(chain)
    (root / f"{name}.key").write_bytes(key)
    return root / f"{name}.crt", root / f"{name}.key"


def _request_works(address: tuple[str, int], ctx: ssl.SSLContext) -> bool:
    """TLS 1.3 clients learn of a refused certificate on their first read, not before."""
    try:
        with tls_connect(address, "www.example.com", ctx) as sock:
            return get(sock, "www.example.com")[0] == 200
    except (ssl.SSLError, ConnectionError):
        return False


def test_client_certificates_required_and_optional(env: Env, pki: Pki, tmp_path: Path) -> None:
    backend = env.recorder("app")
    pki.add("www", ["www.example.com"])
    clients = CA("client CA")
    clients_file = clients.write(tmp_path / "clients.pem")
    good = _client_pair(clients, tmp_path, "alice")
    stranger = _client_pair(CA("other CA"), tmp_path, "mallory")
    required = tls_listener(pki, client_auth="required", client_ca=str(clients_file))
    optional = {**tls_listener(pki, client_auth="optional", client_ca=str(clients_file)),
                "name": "optional"}
    address = env.balancer([backend.address], listeners=[required, optional])
    assert _request_works(address, client_context(pki.ca_file, cert=good))
    assert not _request_works(address, client_context(pki.ca_file))
    assert not _request_works(address, client_context(pki.ca_file, cert=stranger))
    loose = env.address("optional")
    assert _request_works(loose, client_context(pki.ca_file))
    assert _request_works(loose, client_context(pki.ca_file, cert=good))
    assert not _request_works(loose, client_context(pki.ca_file, cert=stranger))


@pytest.mark.parametrize("version", ["1.3", "1.2"])
def test_resumption_counted_apart(env: Env, pki: Pki, version: str) -> None:
    backend = env.recorder("app")
    pki.add("www", ["www.example.com"])
    address = env.balancer([backend.address], listeners=[tls_listener(pki)])
    ctx = client_context(pki.ca_file, max_version=version)
    with tls_connect(address, "www.example.com", ctx) as sock:
        assert get(sock, "www.example.com")[0] == 200  # TLS 1.3 tickets arrive with it
        session = sock.session
        assert not sock.session_reused
    for _ in range(3):
        with tls_connect(address, "www.example.com", ctx, session=session) as sock:
            assert sock.session_reused
            assert get(sock, "www.example.com")[0] == 200
            session = sock.session
    assert env.handle is not None
    counters = env.handle.worker.tls.counters["web"]
    assert (counters.full, counters.resumed) == (1, 3)
    text = generate_latest(REGISTRY).decode()
    assert 'gtm_lb_tls_handshakes_total{kind="resumed",listener="web"} 3.0' in text
    assert 'gtm_lb_tls_certificate_not_after_seconds{certificate="www"}' in text


def test_tickets_off_means_full_handshakes(env: Env, pki: Pki) -> None:
    pki.add("www", ["www.example.com"])
    address = env.balancer(["127.0.0.1:1"],
                           listeners=[tls_listener(pki, session_tickets=False)])
    ctx = client_context(pki.ca_file)
    with tls_connect(address, "www.example.com", ctx) as sock:
        get(sock, "www.example.com")
        session = sock.session
    with tls_connect(address, "www.example.com", ctx, session=session) as sock:
        assert not sock.session_reused


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


def test_tls_on_a_tcp_listener(env: Env, pki: Pki) -> None:
    pki.add("db", ["db.example.com"])
    echo = env.raw(_echo)
    address = env.balancer([echo.address], listeners=[tls_listener(pki, mode="tcp")])
    with tls_connect(address, "db.example.com", client_context(pki.ca_file)) as sock:
        for size in (1, 1000, 200_000):
            payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            sock.sendall(payload)
            got = b""
            while len(got) < len(payload):
                got += sock.recv(65536)
            assert got == payload


def _tls_backend(env: Env, ca: CA, tmp_path: Path) -> int:
    chain, key, _ = ca.issue(["backend.internal"])
    (tmp_path / "b.crt").write_bytes(chain)
    (tmp_path / "b.key").write_bytes(key)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(tmp_path / "b.crt", tmp_path / "b.key")

    async def handle(request: web.Request) -> web.Response:
        return web.Response(text=f"secure={request.secure}\n")

    async def start() -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_get("/", handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    runner, port = env.loop.run(start())
    env.backends.append(_Stopper(runner))  # type: ignore[arg-type]
    return port


class _Stopper:
    def __init__(self, runner: web.AppRunner):
        self.runner = runner

    async def stop(self) -> None:
        await self.runner.cleanup()


def test_reencryption_to_backends(env: Env, pki: Pki, tmp_path: Path) -> None:
    pki.add("www", ["www.example.com"])
    backend_ca = CA("backend CA")
    port = _tls_backend(env, backend_ca, tmp_path)
    ca_file = backend_ca.write(tmp_path / "backend-ca.pem")
    pools = [
        {"name": "good", "backends": [f"127.0.0.1:{port}"], "tls": True,
         "tls_ca": str(ca_file), "tls_server_name": "backend.internal"},
        {"name": "wrong-name", "backends": [f"127.0.0.1:{port}"], "tls": True,
         "tls_ca": str(ca_file), "tls_server_name": "other.internal", "retries": 0},
        {"name": "wrong-ca", "backends": [f"127.0.0.1:{port}"], "tls": True,
         "tls_ca": str(pki.ca_file), "tls_server_name": "backend.internal", "retries": 0},
    ]
    listeners = [{**tls_listener(pki), "name": pool["name"], "pool": pool["name"]}
                 for pool in pools]
    env.balancer(pools=pools, listeners=listeners)
    ctx = client_context(pki.ca_file)
    expected = {"good": (200, b"secure=True\n"), "wrong-name": (502, None),
                "wrong-ca": (502, None)}
    for name, (status, body) in expected.items():
        with tls_connect(env.address(name), "www.example.com", ctx) as sock:
            got_status, _, got_body = get(sock, "www.example.com")
            assert got_status == status, name
            assert body is None or got_body == body


def test_admin_api_over_tls(env: Env, pki: Pki) -> None:
    pki.add("admin", ["admin.example.com"])
    env.balancer(["127.0.0.1:1"], admin="127.0.0.1:0", admin_token="secret",
                 admin_tls={"certificates": str(pki.certs)})
    assert env.handle is not None and env.handle.admin is not None
    address = ("127.0.0.1", env.handle.admin.port)
    with tls_connect(address, "admin.example.com", client_context(pki.ca_file)) as sock:
        sock.sendall(b"GET /pools HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer secret\r\n"
                     b"Connection: close\r\n\r\n")
        status, _, body = read_response(Client(sock))
        assert status == 200 and b"app" in body


def test_a_pair_openssl_refuses_falls_back_to_the_default(env: Env, pki: Pki) -> None:
    pki.add("www", ["www.example.com"])
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    chain, key, _ = pki.ca.issue(["weak.example.com"], weak)
    write_pair(pki.certs, "weak", chain, key)
    address = env.balancer(["127.0.0.1:1"], listeners=[tls_listener(pki, default="www")])
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        probe.load_cert_chain(pki.certs / "weak.crt", pki.certs / "weak.key")
        pytest.skip("this OpenSSL's security level accepts RSA 1024")
    except ssl.SSLError:
        pass
    for _ in range(3):
        with tls_connect(address, "weak.example.com", client_context(None)) as sock:
            assert san(served(sock)) == ["www.example.com"]
    assert env.handle is not None
    (store,) = env.handle.worker.tls.stores.values()
    assert len(store.failed) == 1 and "weak" in store.errors


def test_backends_learn_the_client_certificate_and_cannot_be_fooled(
        env: Env, pki: Pki, tmp_path: Path) -> None:
    backend = env.recorder("app")
    pki.add("www", ["www.example.com"])
    clients = CA("client CA")
    clients_file = clients.write(tmp_path / "clients.pem")
    alice = _client_pair(clients, tmp_path, "alice")
    listener = tls_listener(pki, client_auth="optional", client_ca=str(clients_file))
    address = env.balancer([backend.address], listeners=[listener])
    forged = (b"GET / HTTP/1.1\r\nHost: www.example.com\r\nX-Client-Verify: SUCCESS\r\n"
              b"X-Client-Cert-Subject: CN=admin\r\n\r\n")
    for cert in (None, alice):
        with tls_connect(address, "www.example.com",
                         client_context(pki.ca_file, cert=cert)) as sock:
            sock.sendall(forged)
            assert read_response(Client(sock))[0] == 200
    assert backend.header(0, "X-Client-Verify") == ["NONE"]
    assert backend.header(0, "X-Client-Cert-Subject") == []
    assert backend.header(1, "X-Client-Verify") == ["SUCCESS"]
    assert backend.header(1, "X-Client-Cert-Subject") == ["CN=alice"]
    env.close()  # listeners without client_auth drop them too
    env.backends = []
    plain = env.recorder("plain")
    address = env.balancer([plain.address], listeners=[tls_listener(pki)])
    with tls_connect(address, "www.example.com", client_context(pki.ca_file)) as sock:
        sock.sendall(forged)
        assert read_response(Client(sock))[0] == 200
    assert plain.header(0, "X-Client-Verify") == [] and plain.header(0, "X-Forwarded-Proto") \
        == ["https"]
