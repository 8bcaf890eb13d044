"""Real resolvers' tools against the server: BIND's dig and Knot's kdig.

Skipped when a tool is not installed, except in CI (CI=true), where a missing tool
is a broken test environment and fails the test instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.integration.servers import GtmServer

pytestmark = pytest.mark.integration

WWW = ["127.0.10.1", "127.0.10.2"]


def require(binary: str, package: str) -> str:
    path = shutil.which(binary)
    if path is not None:
        return path
    message = f"{binary} is not installed (apt-get install {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must have it")
    pytest.skip(message)


def run(*args: str) -> str:
    result = subprocess.run(args, capture_output=True, text=True, timeout=15, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_dig_gets_the_answers(shared_server: GtmServer, hosts: tuple[str, ...]) -> None:
    dig = require("dig", "bind9-dnsutils")
    for host in hosts:
        where = (f"@{host}", "-p", str(shared_server.ports[host]), "+time=2", "+tries=1")
        for transport in ("+notcp", "+tcp"):
            out = run(dig, *where, transport, "+short", "www.example.test", "A")
            assert sorted(out.split()) == WWW
        chain = run(dig, *where, "+short", "docs.example.test", "A").split()
        assert chain[:2] == ["api.example.test.", "www.example.test."]
        assert sorted(chain[2:]) == WWW

    where = (f"@{shared_server.host}", "-p", str(shared_server.port), "+time=2", "+tries=1")
    # 200 addresses: truncated over UDP, so dig retries over TCP by itself.
    large = run(dig, *where, "+short", "large.big.test", "A").split()
    assert len([line for line in large if line.startswith("127.2.")]) == 200
    full = run(dig, *where, "+nsid", "+norecurse", "www.example.test", "A")
    assert "status: NOERROR" in full
    assert "flags: qr aa;" in full
    assert '("gtm-test")' in full  # NSID
    refused = run(dig, *where, "example.com", "A")
    assert "status: REFUSED" in refused


def test_kdig_gets_the_answers_with_client_subnet(shared_server: GtmServer) -> None:
    kdig = require("kdig", "knot-dnsutils")
    where = (f"@{shared_server.host}", "-p", str(shared_server.port), "+time=2", "+retry=0")
    for transport in ("+notcp", "+tcp"):
        out = run(kdig, *where, transport, "+subnet=192.0.2.0/24", "+nsid", "www.example.test", "A")
        assert "status: NOERROR" in out
        assert "CLIENT-SUBNET: 192.0.2.0/24/0" in out
        assert '"gtm-test"' in out
        for address in WWW:
            assert address in out
    short = run(kdig, *where, "+short", "www.example.test", "A")
    assert sorted(short.split()) == WWW
    missing = run(kdig, *where, "missing.example.test", "A")
    assert "status: NXDOMAIN" in missing
