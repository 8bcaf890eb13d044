"""gtm answers meta and obsolete query types as Knot does, for the same zone.

Knot (the issue's reference) answers every type it does not hold with NODATA, follows a
CNAME for them, and answers ANY, RRSIG and NSEC at a CNAME owner without following it.
Both servers run as processes on loopback ports and get the same queries over UDP;
rcode, flags, question and the three sections are compared. AXFR and IXFR are transfers,
answered on their own terms, and are not compared here.
"""

from __future__ import annotations

from collections.abc import Iterator

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import pytest

from tests.integration.knot_reference import Knot
from tests.integration.servers import GtmServer, ServerFactory, free_port

pytestmark = pytest.mark.integration

ZONE = """$TTL 300
@        SOA   ns1 hostmaster 7 7200 900 1209600 60
@        NS    ns1
ns1      A     127.0.0.1
www      A     192.0.2.1
www      TXT   "hello"
alias    CNAME www
outside  CNAME www.example.net.
*.wild   CNAME www
"""
NAMES = ["www", "alias", "outside", "x.wild", "@", "missing"]
META_TYPES = {"OPT": 41, "TKEY": 249, "TSIG": 250, "MAILB": 253, "MAILA": 254, "ANY": 255,
              "TYPE128": 128, "TYPE200": 200}
OBSOLETE_TYPES = {"MD": 3, "MF": 4, "MB": 7, "MG": 8, "MR": 9, "NULL": 10, "WKS": 11,
                  "MINFO": 14, "NSAP-PTR": 23, "SIG": 24, "KEY": 25, "GPOS": 27, "NXT": 30,
                  "A6": 38, "SINK": 40, "SPF": 99, "UINFO": 100, "UID": 101, "GID": 102,
                  "UNSPEC": 103}
DNSSEC_TYPES = {"RRSIG": 46, "NSEC": 47, "DNSKEY": 48, "NSEC3": 50, "DS": 43}
TYPES = {**META_TYPES, **OBSOLETE_TYPES, **DNSSEC_TYPES}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Knot, GtmServer]]:
    directory = tmp_path_factory.mktemp("knot-reference")
    zones = directory / "zones"
    zones.mkdir()
    (zones / "example.test.zone").write_text(ZONE)
    knot = Knot(directory / "knot", {"example.test.": ZONE}, ["127.0.0.1"], free_port())
    factory = ServerFactory(directory)
    try:
        yield knot, factory(zones, config={"watch_interval": 0, "cookies": False})
    finally:
        knot.stop()
        factory.stop_all()


def summary(reply: dns.message.Message) -> dict[str, object]:
    """What a client sees, in a form two servers' replies can be compared in."""
    def texts(section: list) -> list[str]:
        return sorted(rrset.to_text() for rrset in section)

    return {
        "rcode": dns.rcode.to_text(reply.rcode()),
        "flags": dns.flags.to_text(reply.flags),
        "question": [q.to_text() for q in reply.question],
        "answer": texts(reply.answer),
        "authority": texts(reply.authority),
        "additional": texts(reply.additional),
        "edns": reply.edns,
    }


@pytest.mark.parametrize("rdtype", TYPES.values(), ids=TYPES.keys())
def test_answers_match_knot(servers: tuple[Knot, GtmServer], rdtype: int) -> None:
    knot, gtm = servers
    differences = []
    for name in NAMES:
        qname = "example.test." if name == "@" else f"{name}.example.test."
        for use_edns in (-1, 0):
            query = dns.message.make_query(qname, rdtype, use_edns=use_edns)
            expected = summary(knot.query(query))
            got = summary(dns.query.udp(query, gtm.host, port=gtm.port, timeout=2.0))
            if got != expected:
                differences.append(f"{qname} EDNS {use_edns}:\n  knot {expected}\n  gtm  {got}")
    assert not differences, "\n".join(differences)
