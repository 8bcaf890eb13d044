"""Certificates the balancer obtains and renews by itself from an ACME CA (``[lb.acme]``).

The manager runs in worker 0. For each configured certificate it reads what serves
it now (regional_lb.acme_store: a certificate directory, or the control plane),
decides whether it is due (missing, a placeholder, other names than configured, or
inside the renewal window) and runs an order through gtm.acme: HTTP-01 tokens are
files every worker's http listeners answer from (``/.well-known/acme-challenge/TOKEN``),
DNS-01 values go through the control plane to our own authoritative servers. The new
pair rotates in the way any other does: a file the watcher picks up (rescanned at
once here), or a control-plane certificate every subscribed balancer polls for.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gtm import log, metrics
from gtm.acme.client import AcmeClient
from gtm.acme.dns01 import ControlPlaneDns
from gtm.acme.flow import Issued, Solver, issue
from gtm.acme.jws import AccountKey, decode_mac_key
from gtm.errors import AcmeError, GtmError
from gtm.process import cancel_and_wait
from regional_lb.acme_store import Held, control_api, pair_store
from regional_lb.config import AcmeCertificate, AcmeSettings
from regional_lb.l7.acme_http import TokenFiles, tokens_dir


# -- deciding -------------------------------------------------------------------------------
def renewal_due(held: Held | None, cert: AcmeCertificate, now: dt.datetime,
                before_days: float) -> tuple[str | None, dt.datetime]:
    """(why it is due now, or None; when it will be due)."""
    if held is None:
        return "no certificate yet", now
    if held.placeholder:
        return "only a placeholder serves", now
    if held.names != frozenset(cert.domains):
        return "the configured names changed", now
    # Short-lived certificates renew a third of the way from the end, as ACME CAs advise.
    window = min(dt.timedelta(days=before_days), (held.not_after - held.not_before) / 3)
    due_at = held.not_after - window
    if now >= due_at:
        return f"expires {held.not_after:%Y-%m-%d %H:%M} UTC", due_at
    return None, due_at


# -- the manager ----------------------------------------------------------------------------
@dataclass
class CertState:
    reason: str | None = None      # why the last look found it due
    next_at: float = 0.0           # unix time of the next look
    failures: int = 0
    last_error: str | None = None
    issued_at: float | None = None
    not_after: dt.datetime | None = None


class AcmeManager:
    def __init__(self, settings: AcmeSettings, on_issued: Callable[[], Awaitable[None]]):
        self.settings = settings
        self.on_issued = on_issued
        self.states = {cert.name: CertState() for cert in settings.certificates}
        self.store = pair_store(settings)
        self.account: AccountKey | None = None
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    async def _run(self) -> None:
        while True:
            try:
                wait = await self.tick()
            except Exception:  # the manager must outlive a bug in one pass
                log.acme.exception("ACME pass failed")
                wait = self.settings.retry_interval
            await asyncio.sleep(wait)

    async def tick(self, now: dt.datetime | None = None) -> float:
        """Look at every certificate whose time has come; returns seconds to the next."""
        now = now or dt.datetime.now(dt.UTC)
        for cert in self.settings.certificates:
            if self.states[cert.name].next_at <= now.timestamp():
                await self.look(cert, now)
        soonest = min(state.next_at for state in self.states.values())
        return max(0.5, min(self.settings.check_interval, soonest - time.time()))

    async def look(self, cert: AcmeCertificate, now: dt.datetime, force: bool = False) -> bool:
        """Renew ``cert`` if it is due (or ``force``); True when a new one was issued."""
        state = self.states[cert.name]
        try:
            held = await self.store.held(cert.name)
        except AcmeError as exc:  # the control plane is away: look again later
            log.acme.warning("certificate %s: cannot tell what serves it: %s", cert.name, exc)
            self._schedule(cert, state, now.timestamp() + self.settings.retry_interval)
            return False
        reason, due_at = renewal_due(held, cert, now, self.settings.renew_before_days)
        if held is not None:
            state.not_after = held.not_after
        if reason is None and not force:
            self._schedule(cert, state, min(due_at.timestamp(),
                                            now.timestamp() + self.settings.check_interval))
            return False
        state.reason = reason or "renewal asked for"
        return await self._attempt(cert, state)

    async def renew(self, name: str) -> bool:
        """Issue ``name`` now, whatever its expiry (the admin API's renew)."""
        cert = next((c for c in self.settings.certificates if c.name == name), None)
        if cert is None:
            raise GtmError(f"no [[lb.acme.certificates]] named {name!r}")
        return await self.look(cert, dt.datetime.now(dt.UTC), force=True)

    async def _attempt(self, cert: AcmeCertificate, state: CertState) -> bool:
        async with self._lock:  # one order at a time: the CA's rate limits are per account
            log.acme.info("certificate %s (%s): ordering, %s", cert.name,
                          ", ".join(cert.domains), state.reason)
            try:
                issued = await self._order(cert)
                await self.store.write(cert.name, issued)
            except (AcmeError, OSError) as exc:
                state.failures += 1
                state.last_error = str(exc)
                delay = min(self.settings.retry_interval * 2 ** (state.failures - 1),
                            max(self.settings.check_interval, self.settings.retry_interval))
                self._schedule(cert, state, time.time() + delay)
                metrics.acme_orders.labels(cert.name, "failed").inc()
                log.acme.error("certificate %s: order failed (attempt %d, next in %.0f s): %s",
                               cert.name, state.failures, delay, exc)
                return False
        state.failures, state.last_error, state.reason = 0, None, None
        state.issued_at, state.not_after = time.time(), issued.not_after
        metrics.acme_orders.labels(cert.name, "issued").inc()
        log.acme.info("certificate %s issued: serial %x, not after %s UTC", cert.name,
                      issued.serial, f"{issued.not_after:%Y-%m-%d %H:%M}")
        await self.on_issued()
        await self.look(cert, dt.datetime.now(dt.UTC))  # schedules the renewal
        return True

    async def _order(self, cert: AcmeCertificate) -> Issued:
        settings = self.settings
        loop = asyncio.get_running_loop()
        if self.account is None:
            settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.account = await loop.run_in_executor(
                None, AccountKey.load_or_create, settings.state_dir / "account.key")
        context = ssl.create_default_context(
            cafile=str(settings.ca_bundle) if settings.ca_bundle else None)
        async with AcmeClient(settings.directory, self.account, context) as client:
            await client.register(settings.contact, eab(settings))
            return await issue(client, list(cert.domains), self._solver(cert),
                               settings.key_type, settings.timeout)

    def _solver(self, cert: AcmeCertificate) -> Solver:
        settings = self.settings
        if cert.challenge == "http-01":
            return TokenFiles(tokens_dir(settings))
        return ControlPlaneDns(control_api(settings), settings.dns_servers)

    def _schedule(self, cert: AcmeCertificate, state: CertState, at: float) -> None:
        state.next_at = at
        metrics.acme_next_attempt.labels(cert.name).set(at)

    def status(self) -> list[dict[str, object]]:
        """Per certificate: names, expiry, next look, last error (the admin API's view)."""
        return [{
            "name": cert.name, "domains": list(cert.domains), "challenge": cert.challenge,
            "not_after": s.not_after.isoformat() if s.not_after else None,
            "next_attempt": s.next_at, "failures": s.failures, "last_error": s.last_error,
            "due": s.reason,
        } for cert in self.settings.certificates for s in (self.states[cert.name],)]


def eab(settings: AcmeSettings) -> tuple[str, bytes] | None:
    """(key id, MAC key) for external account binding, read when an order needs it."""
    if settings.eab_kid is None or settings.eab_hmac_key_file is None:
        return None
    try:
        text = settings.eab_hmac_key_file.read_text()
    except OSError as exc:
        raise AcmeError(f"cannot read the EAB MAC key {settings.eab_hmac_key_file}: "
                        f"{exc.strerror}") from exc
    return settings.eab_kid, decode_mac_key(text)
