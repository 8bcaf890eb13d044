"""Both UDP paths, batched (recvmmsg/sendmmsg) and the plain asyncio protocol,
answer bursts from several clients with every reply going to its own asker."""

from __future__ import annotations

import socket
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from tests.integration.servers import ServerFactory, query_wire

pytestmark = pytest.mark.integration

NAMES = ("www.example.test.", "mail.example.test.", "nothing.example.test.", "example.org.")
EXPECTED = {
    "www.example.test.": {"127.0.10.1", "127.0.10.2"},
    "mail.example.test.": {"127.0.10.25"},
    "nothing.example.test.": set(),
    "example.org.": {"127.0.30.1"},
}


@pytest.mark.parametrize("batched", [True, False], ids=["recvmmsg", "asyncio"])
def test_a_burst_from_three_clients_gets_every_answer_back_to_its_asker(
    gtm_server: ServerFactory, zones_dir: Path, batched: bool
) -> None:
    server = gtm_server(zones_dir, config={"udp_batch": batched})
    clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    try:
        for client in clients:
            client.settimeout(3.0)
        # Sent before any reply is read, so the server finds many datagrams per wake-up.
        sent: dict[tuple[int, int], str] = {}
        for qid in range(150):
            client_index = qid % 3
            name = NAMES[qid % len(NAMES)]
            clients[client_index].sendto(query_wire(name, qid=qid), server.address)
            sent[(client_index, qid)] = name
        received = 0
        for index, client in enumerate(clients):
            for _ in range(50):
                reply = dns.message.from_wire(client.recv(4096))
                name = sent.pop((index, reply.id))  # KeyError: a reply to the wrong asker
                assert reply.question[0].name.to_text() == name
                got = {r.to_text() for rrset in reply.answer for r in rrset}
                assert got == EXPECTED[name]
                expected_rcode = dns.rcode.NXDOMAIN if not EXPECTED[name] else dns.rcode.NOERROR
                assert reply.rcode() == expected_rcode
                received += 1
        assert received == 150 and not sent
    finally:
        for client in clients:
            client.close()


def test_datagrams_that_get_no_reply_do_not_disturb_the_batch(
    gtm_server: ServerFactory, zones_dir: Path
) -> None:
    server = gtm_server(zones_dir)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(3.0)
        for qid in range(40):
            client.sendto(b"\x00" * 5, server.address)  # too short: silence
            client.sendto(query_wire("www.example.test.", qid=qid), server.address)
        ids = {dns.message.from_wire(client.recv(4096)).id for _ in range(40)}
        assert ids == set(range(40))
        client.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.recv(4096)  # and nothing else came back
