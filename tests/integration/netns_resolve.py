"""Run inside a network namespace by the delegation lab: resolve each question of a JSON
list through one resolver and print what came back, as JSON (one process per batch).

Input (argv[1]): [{"qname", "rdtype", "subnet" (CIDR or null), "server", "port"}, ...]
Output: [{"rcode", "answer": [addresses], "ecs": "address/source/scope" or null,
          "flags"}, ...]; a timeout gives {"error": "timeout"}.
"""

from __future__ import annotations

import json
import sys

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype


def resolve(question: dict[str, object]) -> dict[str, object]:
    options: list[dns.edns.Option] = []
    subnet = question.get("subnet")
    if isinstance(subnet, str):
        address, prefix = subnet.split("/")
        options.append(dns.edns.ECSOption(address, int(prefix)))
    query = dns.message.make_query(str(question["qname"]), str(question["rdtype"]),
                                   use_edns=0, options=options)
    try:
        reply = dns.query.udp(query, str(question["server"]), port=int(question["port"]),  # type: ignore[call-overload]
                              timeout=5.0)
    except dns.exception.Timeout:
        return {"error": "timeout"}
    wanted = dns.rdatatype.from_text(str(question["rdtype"]))
    echoed = [o for o in reply.options if isinstance(o, dns.edns.ECSOption)]
    return {
        "rcode": dns.rcode.to_text(reply.rcode()),
        "flags": dns.flags.to_text(reply.flags),
        "answer": sorted(rd.to_text() for rrset in reply.answer if rrset.rdtype == wanted
                         for rd in rrset),
        "ecs": (f"{echoed[0].address}/{echoed[0].srclen}/{echoed[0].scopelen}"
                if echoed else None),
    }


if __name__ == "__main__":
    print(json.dumps([resolve(question) for question in json.loads(sys.argv[1])]))
