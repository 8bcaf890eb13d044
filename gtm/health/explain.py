"""`gtm explain`: why a steered name answers what it answers, step by step.

The text is meant to be pasted into an incident report: the question, the client
and its location, each filter with what it kept and dropped and why, the state
facts behind those choices, the final selection, the TTL and the ECS scope.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.name
import dns.rdatatype

from gtm.dns.answer import ZoneSet
from gtm.dns.steered import SteeredRecords, SteerInput, record_type_for, steer
from gtm.dns.zone import Zone, name_key
from gtm.errors import ConfigError
from gtm.steering.chain import Client, LocatorLike
from gtm.steering.model import SteeredName
from gtm.wording import counted


@dataclass(frozen=True)
class Question:
    name: str
    rdtype: str = "A"
    client: str | None = None  # an IP address (a resolver, no ECS)
    subnet: str | None = None  # a CIDR sent as EDNS Client Subnet


def explain(zones: ZoneSet, question: Question, locator: LocatorLike | None,
            health: Mapping[str, Any] | None = None) -> str:
    """With ``health`` (a node's health summary), its facts are merged in as that node
    merges them, and listed: who saw what, when."""
    if health is not None:
        from gtm.health.overlay import overlay
        from gtm.health.service import facts_from_summary

        zones = overlay(zones, facts_from_summary(health))
    qname = dns.name.from_text(question.name)
    key = name_key(qname)
    zone = zones.find(key)
    if zone is None:
        raise ConfigError(f"{qname} is in no zone served here")
    steered = zone.steering.names.get(key) if zone.steering else None
    if steered is None:
        raise ConfigError(f"{qname} is not a steered name in zone {zone.origin}")
    rdtype = dns.rdatatype.from_text(question.rdtype)
    answer_type = record_type_for(steered, zone, rdtype)
    if answer_type is None:
        raise ConfigError(f"{qname} is steered for A, AAAA or CNAME, not {question.rdtype}")
    client = _client(question)
    records = steer(zone, steered, qname, answer_type, SteerInput(client, locator))
    lines = _header(zone, steered, question, client, locator)
    for number, step in enumerate(records.decision.steps, 1):
        lines.append(f"  {number}. {step.name}: {step.detail}")
        lines.append(f"       kept: {', '.join(step.kept) or '(none)'}")
        for name, why in step.dropped:
            lines.append(f"       dropped {name}: {why}")
    lines += _outcome(zone, steered, records, answer_type)
    if health is not None:
        from gtm.health.summary import explain_lines

        assert zone.steering is not None
        names = [e.name for e in zone.steering.pools[steered.pool].endpoints]
        lines += explain_lines(health, zone.origin.to_text(), names)
    return "\n".join(lines)


def _client(question: Question) -> Client | None:
    if question.subnet:
        network = ipaddress.ip_network(question.subnet, strict=False)
        return Client(network.network_address, network.prefixlen, from_ecs=True)
    if question.client:
        address = ipaddress.ip_address(question.client)
        return Client(address, address.max_prefixlen)
    return None


def _header(
    zone: Zone,
    steered: SteeredName,
    question: Question,
    client: Client | None,
    locator: LocatorLike | None,
) -> list[str]:
    assert zone.steering is not None
    who = "no client address (defaults apply)"
    if client is not None:
        kind = "EDNS client subnet" if client.from_ecs else "resolver address"
        who = f"{client.address}/{client.source_prefix} ({kind})"
    lines = [
        f"question: {steered.name} {question.rdtype}",
        f"client:   {who}",
    ]
    if client is not None and locator is not None:
        loc = locator.locate(client.address)
        coords = (f"{loc.latitude:.2f},{loc.longitude:.2f}"
                  if loc.latitude is not None and loc.longitude is not None else "unknown")
        lines.append(
            f"location: country {loc.country or '-'}, continent {loc.continent or '-'}, "
            f"subdivision {loc.subdivision or '-'}, coordinates {coords} "
            f"(database network /{loc.prefix_len})"
        )
    lines.append(
        f"policy:   pool {steered.pool}, select {steered.select}, answers {steered.answers}, "
        f"ttl {steered.ttl}, fallback {steered.fallback.mode} ({zone.steering.source})"
    )
    lines.append("state:    " + _state_summary(zone, steered))
    lines.append("chain:")
    return lines


def _state_summary(zone: Zone, steered: SteeredName) -> str:
    assert zone.steering is not None
    parts = []
    for endpoint in zone.steering.pools[steered.pool].endpoints:
        st = zone.state.endpoint_state(endpoint.name)
        region = zone.state.region_state(endpoint.region)
        facts: list[str] = [st.health] + ([st.admin] if st.admin != "none" else [])
        if region.health != "up":
            facts.append(f"region {region.health}")
        if region.headroom is not None:
            facts.append(f"headroom {region.headroom:.2f}")
        if not endpoint.enabled:
            facts.append("disabled")
        parts.append(f"{endpoint.name}={'/'.join(facts)}")
    return ", ".join(parts)


def _outcome(
    zone: Zone, steered: SteeredName, records: SteeredRecords, answer_type: int
) -> list[str]:
    decision = records.decision
    lines = []
    if decision.fallback:
        lines.append(f"fallback: {decision.fallback}")
    total = sum(c.weight for c in decision.candidates) or 1.0
    if decision.candidates:
        shares = ", ".join(f"{c.endpoint.name} {c.weight / total:.0%}"
                           for c in decision.candidates)
        lines.append(f"selection: {steered.select} over {shares}")
    counts = Counter(
        " ".join(sorted(r.to_text() for r in rrset)) if rrset is not None else "(no data)"
        for rrset in records.variants
    )
    kind = dns.rdatatype.to_text(dns.rdatatype.RdataType.make(answer_type))
    lines.append(f"answer ({kind}), in rotation over "
                 f"{counted(len(records.variants), 'variant')}:")
    for text, count in counts.most_common():
        lines.append(f"  {count / len(records.variants):6.1%}  {text}")
    lines.append(f"ttl: {steered.ttl}")
    note = ""
    if records.scope == 0:
        # Scope 0 also means "no client subnet was sent": only claim the answer is the
        # same for every client when the decision did not look at the client at all.
        independent = decision.scope == 0 and steered.select != "sticky"
        note = ("  (answer does not depend on the client)" if independent
                else "  (no client subnet in the question)")
    lines.append(f"ecs scope: /{records.scope}{note}")
    return lines


def explain_directory(
    zones_dir: Path, question: Question, locator: LocatorLike | None
) -> str:
    from gtm.dns.loader import load_directory

    result = load_directory(zones_dir)
    if result.errors:
        raise ConfigError("; ".join(str(e) for e in result.errors))
    return explain(result.zones, question, locator)
