"""Two balancers in one process (as `gtm up` runs them) share no state: each keeps its own
TLS session ticket keys and its own limits, and reloading one leaves the other as it was.
Real balancers on the test loop, real TLS 1.3 resumption from a blocking client."""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from regional_lb import BalancerHandle, start_balancer
from regional_lb.config import build_config
from tests.lb.conftest import Client, Env, LoopThread, read_response
from tests.tls.conftest import Pki, client_context, get, tls_connect

HOST = "www.example.com"


def key_file(path: Path) -> Path:
    path.write_text(base64.b64encode(os.urandom(80)).decode() + "\n")
    return path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def raw_config(certs: Pki, backend: str, keys: Path | None,
               max_header_bytes: int = 32768) -> dict[str, Any]:
    return {
        "listeners": [{"name": "web", "bind": "127.0.0.1:0",
                       "tls": {"certificates": str(certs.certs)}}],
        "pools": [{"name": "app", "backends": [backend]}],
        "limits": {"max_header_bytes": max_header_bytes},
        "tls": {"ticket_key_file": str(keys)} if keys is not None else {},
        "timeouts": {"shutdown_grace": 0.0},
    }


class Balancers:
    """Balancers started side by side on the test loop, stopped at the end."""

    def __init__(self, loop: LoopThread):
        self.loop = loop
        self.handles: list[BalancerHandle] = []

    def start(self, raw: dict[str, Any], name: str) -> BalancerHandle:
        handle: BalancerHandle = self.loop.run(start_balancer(build_config(raw, name)))
        self.handles.append(handle)
        return handle

    def reload(self, handle: BalancerHandle, raw: dict[str, Any], name: str) -> None:
        self.loop.run(handle.reload(build_config(raw, name)))

    def stop(self) -> None:
        for handle in self.handles:
            self.loop.run(handle.stop(grace=0, deadline=0.5))


@pytest.fixture
def balancers(env: Env) -> Iterator[Balancers]:
    started = Balancers(env.loop)
    yield started
    started.stop()


def visit(handle: BalancerHandle, ctx: ssl.SSLContext, session: ssl.SSLSession | None,
          header: int = 0) -> tuple[int, ssl.SSLSession, bool]:
    """One request on a new connection (resuming ``session`` when given, with a header of
    ``header`` bytes when asked): the status, the session to use next, and whether this
    connection's handshake was a resumption."""
    with tls_connect(handle.address("web"), HOST, ctx, session) as sock:
        if header:
            sock.sendall(f"GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {'a' * header}\r\n\r\n"
                         .encode())
            status = read_response(Client(sock))[0]
        else:
            status = get(sock, HOST, "/")[0]
        assert sock.session is not None
        return status, sock.session, sock.session_reused


def resumes(handle: BalancerHandle, ctx: ssl.SSLContext, session: ssl.SSLSession) -> bool:
    return visit(handle, ctx, session)[2]


def test_each_balancer_keeps_its_ticket_keys_and_limits(env: Env, balancers: Balancers,
                                                         pki: Pki, tmp_path: Path) -> None:
    pki.add("www", [HOST])
    backend = env.recorder("app").address
    raw_a = raw_config(pki, backend, key_file(tmp_path / "a.key"), max_header_bytes=1024)
    raw_b = raw_config(pki, backend, key_file(tmp_path / "b.key"))
    a = balancers.start(raw_a, "a.toml")
    b = balancers.start(raw_b, "b.toml")
    ctx = client_context(pki.ca_file)

    # Tickets: each balancer resumes its own clients, never the other's.
    status, from_a, _ = visit(a, ctx, None)
    assert status == 200
    assert resumes(a, ctx, from_a) and not resumes(b, ctx, from_a)
    _, from_b, _ = visit(b, ctx, None)
    assert resumes(b, ctx, from_b) and not resumes(a, ctx, from_b)

    # Limits: a 2000-byte header is too large for A (1024), fine for B (32768).
    assert visit(a, ctx, None, header=2000)[0] == 431
    assert visit(b, ctx, None, header=2000)[0] == 200

    # Reloading B (its limit down to 512, a new key file) changes nothing of A's.
    raw_b = raw_config(pki, backend, key_file(tmp_path / "b2.key"), max_header_bytes=512)
    balancers.reload(b, raw_b, "b.toml")
    assert visit(b, ctx, None, header=800)[0] == 431
    assert visit(a, ctx, None, header=800)[0] == 200
    assert resumes(a, ctx, from_a) and not resumes(b, ctx, from_a)
    assert not resumes(b, ctx, from_b)  # B rotated its keys: its old tickets are gone
    # And reloading A (same file) keeps its keys: its clients still resume.
    balancers.reload(a, raw_a, "a.toml")
    assert resumes(a, ctx, from_a)


def test_balancers_without_a_key_file_do_not_take_each_others_tickets(
        env: Env, balancers: Balancers, pki: Pki) -> None:
    """Each makes keys of its own (they used to be one set per process, so a client of
    one balancer resumed its session on any other balancer `gtm up` ran)."""
    pki.add("www", [HOST])
    backend = env.recorder("app").address
    a = balancers.start(raw_config(pki, backend, None), "a.toml")
    b = balancers.start(raw_config(pki, backend, None), "b.toml")
    ctx = client_context(pki.ca_file)
    _, from_a, _ = visit(a, ctx, None)
    assert resumes(a, ctx, from_a)
    assert not resumes(b, ctx, from_a)


def test_a_reload_whose_compile_fails_keeps_the_ticket_keys_in_use(
        env: Env, balancers: Balancers, pki: Pki, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """New ticket keys go live with their snapshot: a reload that names a new key file
    but fails to compile leaves the keys serving clients as they were."""
    from regional_lb import worker as worker_module

    pki.add("www", [HOST])
    backend = env.recorder("app").address
    raw = raw_config(pki, backend, key_file(tmp_path / "first.key"))
    handle = balancers.start(raw, "a.toml")
    ctx = client_context(pki.ca_file)
    _, session, _ = visit(handle, ctx, None)

    def failing(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("injected compile failure")

    monkeypatch.setattr(worker_module, "compile_snapshot", failing)
    with pytest.raises(RuntimeError):
        balancers.reload(handle, raw_config(pki, backend, key_file(tmp_path / "second.key")),
                         "a.toml")
    monkeypatch.undo()
    assert resumes(handle, ctx, session)  # the first keys still serve
    balancers.reload(handle, raw_config(pki, backend, key_file(tmp_path / "second.key")),
                     "a.toml")
    assert not resumes(handle, ctx, session)  # now they are replaced
