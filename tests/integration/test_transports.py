"""UDP and TCP as a client sees them: answers, truncation, pipelining, idle timeouts."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.integration.servers import (
    GtmServer,
    ServerFactory,
    framed,
    is_truncated,
    query_wire,
    rdata_texts,
    read_framed,
    tcp_connect,
    udp_exchange,
    wait_closed_by_peer,
)

pytestmark = pytest.mark.integration

TRANSPORTS = [pytest.param(False, id="udp"), pytest.param(True, id="tcp")]
HOSTS = [pytest.param("127.0.0.1", id="ipv4"), pytest.param("::1", id="ipv6")]

# (qname, type, rcode, answer records of that type, authoritative)
EXAMPLE_ANSWERS = [
    ("www.example.test.", "A", "NOERROR", {"127.0.10.1", "127.0.10.2"}, True),
    ("www.example.test.", "AAAA", "NOERROR", {"fd00::10:1"}, True),
    ("docs.example.test.", "A", "NOERROR", {"127.0.10.1", "127.0.10.2"}, True),  # 2 CNAMEs
    ("anything.apps.example.test.", "A", "NOERROR", {"127.0.10.80"}, True),  # wildcard
    ("db.example.test.", "A", "NOERROR", {"127.0.10.50"}, True),  # from $INCLUDE
    ("example.test.", "MX", "NOERROR", {"10 mail.example.test."}, True),
    ("missing.example.test.", "A", "NXDOMAIN", set(), True),
    ("mail.example.test.", "TXT", "NOERROR", set(), True),  # NODATA
    ("host.lab.example.test.", "A", "NOERROR", set(), False),  # referral
    ("example.org.", "A", "NOERROR", {"127.0.30.1"}, True),
    ("www.example.org.", "A", "NOERROR", {"127.0.30.1"}, True),
    ("example.com.", "A", "REFUSED", set(), False),  # not ours
]


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("tcp", TRANSPORTS)
def test_example_zones_are_answered_over_udp_and_tcp(
    shared_server: GtmServer, hosts: tuple[str, ...], host: str, tcp: bool
) -> None:
    if host not in hosts:
        pytest.skip("IPv6 loopback (::1) is not available on this machine")
    for qname, rdtype, rcode, expected, authoritative in EXAMPLE_ANSWERS:
        response = shared_server.query(qname, rdtype, host=host, tcp=tcp)
        what = f"{qname} {rdtype} over {'TCP' if tcp else 'UDP'} [{host}]"
        assert dns.rcode.to_text(response.rcode()) == rcode, what
        assert rdata_texts(response, qname, rdtype) == expected, what
        assert bool(response.flags & dns.flags.AA) == authoritative, what
        assert not is_truncated(response), what


def test_answers_carry_the_records_resolvers_need(shared_server: GtmServer) -> None:
    chain = shared_server.query("docs.example.test.", "A")
    assert [(r.name.to_text(), dns.rdatatype.to_text(r.rdtype)) for r in chain.answer] == [
        ("docs.example.test.", "CNAME"),
        ("api.example.test.", "CNAME"),
        ("www.example.test.", "A"),
    ]
    negative = shared_server.query("missing.example.test.", "A")
    assert [dns.rdatatype.to_text(r.rdtype) for r in negative.authority] == ["SOA"]
    assert negative.authority[0].ttl == 60  # capped by the SOA minimum (RFC 2308)
    referral = shared_server.query("host.lab.example.test.", "A")
    assert referral.answer == []
    assert {rd.to_text() for rd in referral.authority[0]} == {"ns.lab.example.test."}
    assert {rd.to_text() for rrset in referral.additional for rd in rrset} == {"127.0.20.1"}
    mx = shared_server.query("example.test.", "MX")
    assert {rd.to_text() for rrset in mx.additional for rd in rrset} == {"127.0.10.25"}


def test_edns_client_subnet_and_nsid_are_echoed(shared_server: GtmServer) -> None:
    import dns.edns

    ecs = dns.edns.ECSOption("192.0.2.0", 24)
    nsid = dns.edns.GenericOption(dns.edns.OptionType.NSID, b"")
    response = shared_server.query(
        "www.example.test.", "A", use_edns=0, options=[ecs, nsid], payload=1232
    )
    assert response.rcode() == dns.rcode.NOERROR
    options = {int(option.otype): option for option in response.options}
    echoed = options[dns.edns.OptionType.ECS]
    assert (echoed.address, echoed.srclen, echoed.scopelen) == ("192.0.2.0", 24, 0)
    assert options[dns.edns.OptionType.NSID].to_wire() == b"gtm-test"
    assert response.payload == 1232


def test_big_answers_set_tc_over_udp_and_come_whole_over_tcp(shared_server: GtmServer) -> None:
    address = shared_server.address
    # 50 A records fit in 1232 octets but not in 512.
    classic = udp_exchange(address, query_wire("medium.big.test.", "A", qid=1, use_edns=False))
    assert classic is not None and len(classic) <= 512
    truncated = dns.message.from_wire(classic)
    assert is_truncated(truncated) and truncated.answer == []  # whole RRsets only
    with_edns = shared_server.query("medium.big.test.", "A", use_edns=0, payload=1232)
    assert not is_truncated(with_edns)
    assert len(rdata_texts(with_edns, "medium.big.test.", "A")) == 50

    # 200 A records fit in neither, even when the client offers 4096 octets: the
    # server's own EDNS size (1232) caps what it sends over UDP.
    for payload in (1232, 4096):
        wire = udp_exchange(
            address, query_wire("large.big.test.", "A", qid=2, use_edns=0, payload=payload)
        )
        assert wire is not None and len(wire) <= 1232
        assert is_truncated(dns.message.from_wire(wire))

    request = dns.message.make_query("large.big.test.", "A", use_edns=0, payload=1232)
    response, used_tcp = dns.query.udp_with_fallback(
        request, address[0], port=address[1], timeout=2.0
    )
    assert used_tcp
    assert not is_truncated(response)
    assert len(rdata_texts(response, "large.big.test.", "A")) == 200


PIPELINED_NAMES = [
    "www.example.test.",
    "mail.example.test.",
    "db.example.test.",
    "missing.example.test.",
    "example.org.",
    "large.big.test.",
]


def test_fifty_pipelined_queries_in_one_write_get_fifty_answers_in_order(
    shared_server: GtmServer,
) -> None:
    queries = []
    for index in range(50):
        qname = PIPELINED_NAMES[index % len(PIPELINED_NAMES)]
        if index % 5 == 4:
            qname = f"host{index}.apps.example.test."  # a distinct name: no cached answer
        queries.append((1000 + index * 7, qname))
    stream = b"".join(framed(query_wire(qname, "A", qid=qid)) for qid, qname in queries)
    with tcp_connect(shared_server.address) as sock:
        sock.sendall(stream)
        for qid, qname in queries:
            body = read_framed(sock)
            assert body is not None, f"connection closed before the answer to {qid}"
            response = dns.message.from_wire(body)
            assert response.id == qid
            assert response.question[0].name.to_text() == qname
            assert not is_truncated(response)
        # The conversation stays open for more.
        sock.sendall(framed(query_wire("www.example.test.", "A", qid=7)))
        body = read_framed(sock)
        assert body is not None and dns.message.from_wire(body).id == 7


def test_a_query_followed_by_half_close_is_answered_before_the_server_closes(
    shared_server: GtmServer,
) -> None:
    with tcp_connect(shared_server.address) as sock:
        sock.sendall(framed(query_wire("www.example.test.", "A", qid=5)))
        sock.shutdown(socket.SHUT_WR)
        body = read_framed(sock)
        assert body is not None and dns.message.from_wire(body).id == 5
        assert wait_closed_by_peer(sock, timeout=2.0)


def test_messages_split_across_writes_byte_by_byte_are_reassembled(
    shared_server: GtmServer,
) -> None:
    stream = framed(query_wire("www.example.test.", "A", qid=11)) + framed(
        query_wire("mail.example.test.", "A", qid=12)
    )
    with tcp_connect(shared_server.address) as sock:
        for index in range(len(stream)):
            sock.sendall(stream[index : index + 1])
            time.sleep(0.002)  # with TCP_NODELAY, each byte leaves as its own segment
        first, second = read_framed(sock), read_framed(sock)
    assert first is not None and second is not None
    answers = [dns.message.from_wire(first), dns.message.from_wire(second)]
    assert [a.id for a in answers] == [11, 12]
    assert rdata_texts(answers[0], "www.example.test.", "A") == {"127.0.10.1", "127.0.10.2"}
    assert rdata_texts(answers[1], "mail.example.test.", "A") == {"127.0.10.25"}


def test_stalled_tcp_client_is_dropped_after_idle_timeout_while_others_are_served(
    gtm_server: ServerFactory, zones_dir: Path
) -> None:
    server = gtm_server(zones_dir, config={"tcp_idle_timeout": 1.0, "watch_interval": 0})
    half = framed(query_wire("www.example.test.", "A", qid=21))
    with tcp_connect(server.address) as stalled, tcp_connect(server.address) as silent:
        stalled.sendall(half[: len(half) // 2])
        started = time.monotonic()
        # Meanwhile, everyone else is answered promptly, on both transports.
        served = 0
        while time.monotonic() - started < 0.6:
            for tcp in (False, True):
                response = server.query("www.example.test.", "A", tcp=tcp, timeout=0.5)
                assert response.rcode() == dns.rcode.NOERROR
                served += 1
        assert served >= 4
        assert wait_closed_by_peer(stalled, timeout=3.0), "stalled client was never dropped"
        elapsed = time.monotonic() - started
        assert 0.8 <= elapsed <= 3.0, f"dropped after {elapsed:.2f} s, idle timeout is 1 s"
        assert wait_closed_by_peer(silent, timeout=1.0), "silent client was never dropped"
    assert server.query("www.example.test.", "A", tcp=True).rcode() == dns.rcode.NOERROR


def test_sigterm_closes_idle_connections_and_lets_a_half_sent_query_finish(
    gtm_server: ServerFactory, zones_dir: Path
) -> None:
    server = gtm_server(zones_dir, config={"watch_interval": 0})
    message = framed(query_wire("www.example.test.", "A", qid=31))
    with tcp_connect(server.address) as idle, tcp_connect(server.address) as partial:
        partial.sendall(message[:5])
        time.sleep(0.1)  # both connections accepted before the signal
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        assert wait_closed_by_peer(idle, timeout=1.0), "idle connection kept open on SIGTERM"
        # The conversation in the middle of a message gets a grace period to finish it.
        partial.settimeout(2.0)
        partial.sendall(message[5:])
        body = read_framed(partial)
        assert body is not None, "half-sent query was cut off by SIGTERM"
        assert dns.message.from_wire(body).id == 31
        partial.close()  # the conversation is over; nothing holds the server now
        assert server.process.wait(5) == 0
        assert time.monotonic() - started < 4


def test_a_client_trickling_one_byte_at_a_time_is_closed_by_the_message_deadline(
    gtm_server: ServerFactory, zones_dir: Path
) -> None:
    """Each byte used to restart the idle timer, so the connection lived forever. The
    idle timeout here (30 s) never fires: only the per-message deadline can end it."""
    server = gtm_server(zones_dir, config={"tcp_idle_timeout": 30.0,
                                           "tcp_message_timeout": 1.0, "watch_interval": 0})
    message = framed(query_wire("www.example.test.", "A", qid=41))
    with tcp_connect(server.address) as slow:
        closed = False
        for byte in message:  # about 40 bytes, one every 0.25 s: 10 s for the message
            try:
                slow.sendall(bytes((byte,)))
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            if wait_closed_by_peer(slow, timeout=0.25):
                closed = True
                break
        assert closed, "the server answered a message trickled in over ten seconds"
        # Meanwhile a client sending whole messages is served on the same server.
        assert server.query("www.example.test.", "A", tcp=True).rcode() == dns.rcode.NOERROR


def test_connections_per_client_address_are_capped(
    gtm_server: ServerFactory, zones_dir: Path
) -> None:
    server = gtm_server(zones_dir, config={"tcp_connections_per_client": 3,
                                           "watch_interval": 0})
    message = framed(query_wire("www.example.test.", "A", qid=51))

    def answered(sock: socket.socket) -> bool:
        try:
            sock.sendall(message)
            return read_framed(sock) is not None
        except (OSError, AssertionError):
            return False

    held = [tcp_connect(server.address) for _ in range(3)]
    try:
        assert all(answered(sock) for sock in held)
        with tcp_connect(server.address) as fourth:
            assert wait_closed_by_peer(fourth, timeout=2.0), "a fourth connection was kept"
        # Another client address is not affected by this one's connections.
        with socket.create_connection(server.address, timeout=2.0,
                                      source_address=("127.0.0.2", 0)) as other:
            assert answered(other)
        held.pop().close()  # a place comes free once the server sees the close
        deadline = time.monotonic() + 5.0
        while True:
            with tcp_connect(server.address) as again:
                if answered(again):
                    break
            assert time.monotonic() < deadline, "the freed place was never given back"
            time.sleep(0.05)
        assert all(answered(sock) for sock in held)  # those held were never disturbed
    finally:
        for sock in held:
            sock.close()
