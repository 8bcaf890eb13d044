"""DNS-01 through the control plane: our authoritative servers publish the TXT record.

The solver writes ``_acme-challenge.<name>`` values through the control API (one
version for all of an order's names), then waits until every authoritative server
it was told about answers with them, so the CA never looks before the record is
served; withdrawing removes exactly the values it added.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from urllib.parse import quote

import dns.asyncquery
import dns.exception
import dns.message
import dns.rdatatype

from gtm import log
from gtm.acme.control_api import ControlApi
from gtm.acme.flow import Challenge
from gtm.acme.jws import dns01_value
from gtm.config.settings import Listen
from gtm.errors import AcmeError


def txt_owner(challenge: Challenge) -> str:
    return f"_acme-challenge.{challenge.domain.rstrip('.')}."


class ControlPlaneDns:
    kind = "dns-01"

    def __init__(self, api: ControlApi, servers: tuple[Listen, ...] = (), wait: float = 30.0):
        self.api = api
        self.servers = servers
        self.wait = wait

    async def present(self, challenges: list[Challenge]) -> None:
        wanted = _values_by_owner(challenges)
        for owner, values in wanted.items():
            await self._call("PUT", owner, json={"values": values})
        log.acme.info("dns-01: published %s", ", ".join(sorted(wanted)))
        await self._until_served(wanted)

    async def cleanup(self, challenges: list[Challenge]) -> None:
        for owner, values in _values_by_owner(challenges).items():
            try:
                await self._call("DELETE", owner, params=[("value", v) for v in values])
            except AcmeError as exc:  # the order's outcome matters more than the litter
                log.acme.warning("dns-01: could not withdraw %s: %s", owner, exc)

    async def _call(self, method: str, owner: str, **kwargs: object) -> None:
        status, text = await self.api.call(
            method, f"/v1/acme/challenges/{quote(owner, safe='')}", **kwargs)
        if status >= 300:
            raise AcmeError(f"the control plane refused {method} {owner}: HTTP {status} "
                            f"{text[:300]}")

    async def _until_served(self, wanted: dict[str, list[str]]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait
        missing = _pairs(wanted, self.servers)
        while missing:
            missing = [item for item in missing if not await _serves(*item)]
            if not missing:
                break
            if loop.time() > deadline:
                server, owner, _ = missing[0]
                raise AcmeError(f"dns-01: {server.host} port {server.port} still does not "
                                f"serve the TXT at {owner} after {self.wait:.0f} s")
            await asyncio.sleep(0.1)


def _values_by_owner(challenges: list[Challenge]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = defaultdict(list)
    for challenge in challenges:
        grouped[txt_owner(challenge)].append(dns01_value(challenge.key_authorization))
    return dict(grouped)


def _pairs(wanted: dict[str, list[str]], servers: tuple[Listen, ...]
           ) -> list[tuple[Listen, str, list[str]]]:
    return [(server, owner, values) for server in servers for owner, values in wanted.items()]


async def _serves(server: Listen, owner: str, values: list[str]) -> bool:
    query = dns.message.make_query(owner, dns.rdatatype.TXT)
    try:
        reply = await dns.asyncquery.udp(query, server.host, port=server.port, timeout=1.0)
    except (dns.exception.DNSException, OSError):
        return False
    served = {b"".join(rdata.strings).decode("ascii", "replace")
              for rrset in reply.answer if rrset.rdtype == dns.rdatatype.TXT
              for rdata in rrset}
    return set(values) <= served
