"""Rate limiting and cookies on a real `gtm serve`: a flood from one source is limited and
slipped while another source, TCP and a client with a valid server cookie are served in
full; kdig's cookies are answered and accepted back."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator

import dns.edns
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.integration.servers import GtmServer, ServerFactory, copy_example_zones, query_wire

pytestmark = pytest.mark.integration

FLOOD = 2000
OTHER_SOURCE = "127.0.1.1"  # another /24 of the loopback network


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GtmServer]:
    directory = tmp_path_factory.mktemp("rrl")
    factory = ServerFactory(directory)
    try:
        yield factory(copy_example_zones(directory / "zones"), extra=["--rrl", "20"],
                      config={"udp_batch": True})
    finally:
        factory.stop_all()


def flood(server: GtmServer, source: str, count: int, wire: bytes) -> tuple[int, int]:
    """(full answers, truncated answers) to ``count`` queries sent before any is read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    sock.bind((source, 0))
    full = truncated = 0
    try:
        for _ in range(count):
            sock.sendto(wire, server.address)
        sock.settimeout(1.0)  # the end of the replies: whatever comes no more
        while True:
            try:
                reply = dns.message.from_wire(sock.recv(4096))
            except TimeoutError:
                break
            if reply.flags & dns.flags.TC:
                assert not reply.answer
                truncated += 1
            else:
                assert reply.answer
                full += 1
    finally:
        sock.close()
    return full, truncated


def test_a_flood_is_limited_and_slipped_while_another_source_is_served(
        server: GtmServer) -> None:
    full, truncated = flood(server, "127.0.0.1", FLOOD, query_wire("www.example.test."))
    assert full < FLOOD // 4, "most of a flood must not be answered"
    assert truncated > 0, "slip 2: every other limited response goes out truncated"
    # Another /24, during the same second: every one of its queries is answered.
    assert flood(server, OTHER_SOURCE, 15, query_wire("www.example.test.")) == (15, 0)
    # TCP is never limited.
    for _ in range(30):
        reply = server.query("www.example.test.", tcp=True)
        assert reply.answer and not reply.flags & dns.flags.TC


def test_a_client_with_a_valid_server_cookie_is_not_limited(server: GtmServer) -> None:
    first = server.query("mail.example.test.", use_edns=0,
                         options=[dns.edns.CookieOption(os.urandom(8), b"")], tcp=True)
    cookie = next(o for o in first.options if o.otype == dns.edns.OptionType.COOKIE)
    assert len(cookie.server) == 16
    valid = dns.message.make_query("mail.example.test.", "A", use_edns=0,
                                   options=[cookie])
    full, truncated = flood(server, "127.0.0.1", 300, valid.to_wire())
    assert (full, truncated) == (300, 0)


def test_kdig_cookies_are_answered_and_accepted_back(server: GtmServer) -> None:
    kdig = shutil.which("kdig")
    if kdig is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kdig missing: apt-get install knot-dnsutils")
        pytest.skip("kdig missing: apt-get install knot-dnsutils")
    host, port = server.address
    first = subprocess.run([kdig, "-p", str(port), f"@{host}", "+cookie", "+tcp",
                            "www.example.test.", "A"], capture_output=True, text=True,
                           timeout=10, check=True).stdout
    assert "NOERROR" in first and "127.0.10.1" in first
    cookie_line = next(line for line in first.splitlines() if "COOKIE:" in line)
    value = cookie_line.split("COOKIE:", 1)[1].split()[0]
    assert len(value) == 48  # client (8) and server (16) octets, in hex
    again = subprocess.run([kdig, "-p", str(port), f"@{host}", f"+cookie={value}",
                            "www.example.test.", "A"], capture_output=True, text=True,
                           timeout=10, check=True).stdout
    assert "NOERROR" in again and "127.0.10.1" in again
    # Accepted: the same (still fresh) server cookie comes back, not a replacement.
    echoed = next(line for line in again.splitlines() if "COOKIE:" in line)
    assert echoed.split("COOKIE:", 1)[1].split()[0].lower() == value.lower()
    forged = value[:16] + "01000000" + "00" * 12
    bad = subprocess.run([kdig, "-p", str(port), f"@{host}", f"+cookie={forged}",
                          "+nobadcookie", "www.example.test.", "A"], capture_output=True,
                         text=True, timeout=10, check=True).stdout
    assert "BADCOOKIE" in bad, bad


def test_badcookie_over_udp_names_the_fresh_cookie(server: GtmServer) -> None:
    client = os.urandom(8)
    forged = dns.message.make_query("www.example.test.", "A", use_edns=0, options=[
        dns.edns.CookieOption(client, bytes.fromhex("01000000") + bytes(12))])
    reply = dns.query.udp(forged, *server.address[:1], port=server.port, timeout=2.0)
    assert reply.rcode() == dns.rcode.BADCOOKIE
    fresh = next(o for o in reply.options if o.otype == dns.edns.OptionType.COOKIE)
    retry = dns.message.make_query("www.example.test.", "A", use_edns=0, options=[fresh])
    answer = dns.query.udp(retry, server.host, port=server.port, timeout=2.0)
    assert answer.rcode() == dns.rcode.NOERROR and answer.answer
