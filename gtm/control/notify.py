"""NOTIFY (RFC 1996): telling a zone's secondaries that its serial moved.

Each DNS node's first worker notifies, after it serves the new version: a secondary that
asks for the SOA (and then the IXFR) at the node that told it finds the new serial there,
which a notice from the control plane, sent when the version is stored and before the
nodes serve it, could not promise. With several nodes each one notifies: a NOTIFY for a
serial the secondary has is one SOA query, answered and forgotten; a secondary lists as
primaries the nodes it transfers from and refuses notices from the others.

A notice is retried with backoff (1, 2, 4, 8, 16 s) until the secondary answers; a newer
serial replaces a notice still being retried. It is signed with the zone's first transfer
key when the zone has one.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Iterable, Mapping

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.tsig

from gtm import log
from gtm.config.tsig import TransferRule
from gtm.config_reader import Listen
from gtm.dns.zone import Zone

ATTEMPTS = 5
FIRST_TIMEOUT = 1.0
# Let the node's other workers swap the version in before the secondary asks for it.
SETTLE = 0.3


class Notifier:
    def __init__(self, source: str | None = None, attempts: int = ATTEMPTS,
                 first_timeout: float = FIRST_TIMEOUT):
        """``source``: the address notices are sent from (the node's listening address,
        which the secondaries know as their primary); None: the kernel's choice."""
        self.source = source
        self.attempts = attempts
        self.first_timeout = first_timeout
        self.serials: dict[str, int] = {}
        self.tasks: dict[tuple[str, Listen], asyncio.Task[None]] = {}

    def update(self, zones: Iterable[Zone], rules: Mapping[str, TransferRule],
               keys: Mapping[dns.name.Name, dns.tsig.Key]) -> None:
        """Notify the secondaries of every zone whose serial this node has not yet told
        them (all of them after a start: a secondary may have missed a change)."""
        for zone in zones:
            origin = zone.origin.to_text().lower()
            rule = rules.get(origin)
            if rule is None or not rule.notify or self.serials.get(origin) == zone.serial:
                continue
            self.serials[origin] = zone.serial
            key = keys.get(dns.name.from_text(rule.keys[0])) if rule.keys else None
            for target in rule.notify:
                previous = self.tasks.pop((origin, target), None)
                if previous is not None:
                    previous.cancel()
                task = asyncio.get_running_loop().create_task(
                    self._notify(zone, target, key), name=f"notify {origin} {target}")
                self.tasks[(origin, target)] = task
                task.add_done_callback(functools.partial(self._done, (origin, target)))

    def _done(self, key: tuple[str, Listen], task: asyncio.Task[None]) -> None:
        if self.tasks.get(key) is task:
            del self.tasks[key]

    async def close(self) -> None:
        tasks = list(self.tasks.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _notify(self, zone: Zone, target: Listen, key: dns.tsig.Key | None) -> None:
        await asyncio.sleep(SETTLE)
        timeout = self.first_timeout
        for attempt in range(1, self.attempts + 1):
            message = notice(zone, key)
            try:
                response = await dns.asyncquery.udp(
                    message, target.host, timeout=timeout, port=target.port,
                    source=self.source)
            except (dns.exception.DNSException, OSError) as exc:
                log.dns.info("NOTIFY %s serial %d to %s: no answer (%s), attempt %d of %d",
                             zone.origin, zone.serial, target, type(exc).__name__, attempt,
                             self.attempts)
                timeout *= 2
                continue
            rcode = response.rcode()
            if rcode == dns.rcode.NOERROR:
                log.dns.info("NOTIFY %s serial %d to %s: acknowledged", zone.origin,
                             zone.serial, target)
            else:  # a refusal does not change by asking again
                log.dns.warning("NOTIFY %s serial %d to %s: %s", zone.origin, zone.serial,
                                target, dns.rcode.to_text(rcode))
            return
        log.dns.warning("NOTIFY %s serial %d to %s: gave up after %d attempts", zone.origin,
                        zone.serial, target, self.attempts)


def notice(zone: Zone, key: dns.tsig.Key | None) -> dns.message.Message:
    """A NOTIFY for the zone with its SOA in the answer section (RFC 1996 3.7)."""
    message = dns.message.make_query(zone.origin, dns.rdatatype.SOA)
    message.set_opcode(dns.opcode.NOTIFY)
    message.flags = dns.flags.AA | (message.flags & ~dns.flags.RD)
    message.set_opcode(dns.opcode.NOTIFY)
    message.answer.append(zone.soa)
    if key is not None:
        message.use_tsig(key, algorithm=key.algorithm)
    return message
