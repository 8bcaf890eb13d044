"""Real HTTP/2 clients against an h2c listener: curl, nghttp and h2load (nghttp2-client).
Without a tool the test is skipped loudly; under CI (CI=true) it fails."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.lb.conftest import Env
from tests.lb.h2client import require

pytestmark = pytest.mark.integration


def run(*args: str, timeout: float = 60) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def h2c_balancer(env: Env) -> str:
    backend = env.recorder()
    host, port = env.balancer([backend.address],
                              listeners=[{"name": "web", "bind": "127.0.0.1:0", "h2c": True}])
    return f"http://{host}:{port}"


def test_curl_with_prior_knowledge(env: Env, tmp_path: Path) -> None:
    curl = require("curl", "curl")
    url = h2c_balancer(env)
    out = run(curl, "-sS", "-i", "--http2-prior-knowledge", f"{url}/hello")
    assert out.startswith("HTTP/2 200") and out.endswith("b\n")
    body = tmp_path / "body"
    body.write_bytes(b"x" * 200_000)
    posted = run(curl, "-sS", "--http2-prior-knowledge", "--data-binary", f"@{body}",
                 f"{url}/post", timeout=30)
    assert posted == "x" * 200_000
    plain = run(curl, "-sS", "-i", "--http1.1", f"{url}/")  # the same listener, HTTP/1.1
    assert plain.startswith("HTTP/1.1 200")


def test_nghttp(env: Env) -> None:
    nghttp = require("nghttp", "nghttp2-client")
    url = h2c_balancer(env)
    out = run(nghttp, "-nv", f"{url}/one", f"{url}/two")
    assert out.count(":status: 200") == 2


def test_h2load_bounded_run_without_failures(env: Env) -> None:
    h2load = require("h2load", "nghttp2-client")
    url = h2c_balancer(env)
    out = run(h2load, "-n", "2000", "-c", "10", "-m", "10", f"{url}/", timeout=120)
    match = re.search(r"requests: 2000 total, 2000 started, 2000 done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored", out)
    assert match, out
    assert match.groups() == ("2000", "0", "0"), out
    assert "status codes: 2000 2xx" in out, out
