"""Certificates kept by the control plane, for balancers with ``tls.control = true``.

An upload is checked exactly as the balancer checks a pair (:mod:`gtm.tlscerts`, then
OpenSSL), so what the API accepts a balancer can serve. The private key is sealed
(:mod:`gtm.sealing`) before it reaches the store; the chain is kept in the clear
and only its certificates (a key pasted into it is refused, never stored). Every
change, and every refused upload, is audited with names, expiry and fingerprint, never
key material. This is the one path certificates take into the store (API, CLI, and
anything issuing certificates in-process).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from gtm import log
from gtm.control.service import ConfigService
from gtm.control.store import CertificateRecord, NewCertificate, Store
from gtm.errors import CertificateError, NotFound, SealingError
from gtm.sealing import SecretKey
from gtm.tlscerts import NAME, CheckedPair, check_pair, describe_key, openssl_check

MAX_CHAIN_BYTES = 1024 * 1024   # a leaf and its intermediates, with room to spare
MAX_KEY_BYTES = 64 * 1024       # an RSA 16384 key is about 13 KiB of PEM


@dataclass(frozen=True)
class Stored:
    record: CertificateRecord
    checked: CheckedPair
    replaced: bool


class CertificateService:
    """Check, seal, store, audit. ``key`` is None when this control plane has no secret
    key: reads work, uploads raise SealingError (``key_problem`` says why)."""

    def __init__(self, config: ConfigService, key: SecretKey | None, key_problem: str = ""):
        self.config = config
        self.key = key
        self.key_problem = key_problem or "no secret key is configured"

    @property
    def store(self) -> Store:
        return self.config.store

    async def put(self, name: str, chain: str, key: str, actor: str) -> Stored:
        """Store a pair under ``name``; CertificateError naming the field ("name", "chain",
        "key") and the reason when it cannot be served, SealingError without a key."""
        try:
            check_name(name)
            checked = await asyncio.get_running_loop().run_in_executor(
                None, check_upload, chain, key)
        except CertificateError as exc:
            await self.config.audit(actor, "certificate.put", name[:100], "invalid",
                                    {"field": exc.source, "error": exc.reason})
            raise
        secret = self._sealing_key()
        sealed = secret.seal(name, checked.key.data)
        previous = await self.store.certificate(name)
        record = await self.store.put_certificate(NewCertificate(
            name=name, chain=checked.chain.decode("ascii"), sealed_key=sealed.ciphertext,
            key_nonce=sealed.nonce, key_id=sealed.key_id, names=checked.names,
            not_after=checked.not_after.timestamp(), fingerprint=checked.fingerprint,
            updated_by=actor))
        detail = {**audit_detail(record), "replaced": previous is not None}
        await self.config.audit(actor, "certificate.put", name, "ok", detail)
        self.config.events.publish("certificate.put", f"certificate {name}", detail, actor)
        log.control.info("certificate %s stored (revision %d): %s, not after %s, sha256 %s",
                         name, record.revision, ", ".join(record.names[:4]),
                         f"{checked.not_after:%Y-%m-%d}", record.fingerprint[:16])
        return Stored(record, checked, previous is not None)

    async def delete(self, name: str, actor: str) -> CertificateRecord:
        check_name(name)
        tombstone = await self.store.delete_certificate(name, actor)
        if tombstone is None:
            raise NotFound(f"no certificate {name!r}")
        await self.config.audit(actor, "certificate.delete", name, "ok", audit_detail(tombstone))
        self.config.events.publish("certificate.delete", f"certificate {name}",
                                   audit_detail(tombstone), actor)
        log.control.info("certificate %s deleted (revision %d)", name, tombstone.revision)
        return tombstone

    async def get(self, name: str) -> CertificateRecord:
        check_name(name)
        record = await self.store.certificate(name)
        if record is None:
            raise NotFound(f"no certificate {name!r}")
        return record

    async def live(self) -> list[CertificateRecord]:
        rows = await self.store.certificates(0)
        return sorted((r for r in rows if not r.deleted), key=lambda r: r.name)

    def _sealing_key(self) -> SecretKey:
        if self.key is None:
            raise SealingError(f"certificates cannot be stored: {self.key_problem}",
                               "secret key")
        return self.key


def check_name(name: str) -> None:
    if not NAME.fullmatch(name):
        raise CertificateError("a certificate name is 1 to 100 letters, digits, '.', '_' or "
                               "'-', starting with a letter or digit", "name")


def check_upload(chain: str, key: str) -> CheckedPair:
    """The balancer's checks, then OpenSSL's; errors name the field ("chain" or "key")."""
    chain_pem, key_pem = _ascii(chain, "chain", MAX_CHAIN_BYTES), _ascii(key, "key",
                                                                        MAX_KEY_BYTES)
    checked = check_pair(chain_pem, key_pem, chain_source="chain", key_source="key",
                         mismatch_source="key", chain_may_hold_key=False)
    openssl_check(checked.pem, "key")
    return checked


def _ascii(text: str, field: str, limit: int) -> bytes:
    if len(text) > limit:
        raise CertificateError(f"is larger than {limit // 1024} KiB", field)
    try:
        return text.encode("ascii")
    except UnicodeEncodeError as exc:
        raise CertificateError("is not PEM (PEM is ASCII text)", field) from exc


def audit_detail(record: CertificateRecord) -> dict[str, Any]:
    """What the audit log keeps of a change: never the key, sealed or not."""
    return {"names": list(record.names), "not_after": _iso(record.not_after),
            "fingerprint_sha256": record.fingerprint, "revision": record.revision,
            "key_id": record.key_id}


def expiry_events(records: list[CertificateRecord], now: float, within: float,
                  seen: set[tuple[str, str, str]]) -> list[tuple[str, str, dict[str, Any]]]:
    """Events for live certificates expired or expiring within ``within`` seconds (pure but
    for ``seen``, which keeps each (name, fingerprint, kind) to one event per process)."""
    out = []
    for record in records:
        if record.deleted or record.not_after - now > within:
            continue
        kind = "certificate.expired" if record.not_after <= now else "certificate.expiring"
        key = (record.name, record.fingerprint, kind)
        if key in seen:
            continue
        seen.add(key)
        out.append((kind, f"certificate {record.name}", {
            **audit_detail(record), "days_left": round((record.not_after - now) / 86400, 1)}))
    return out


def describe(record: CertificateRecord) -> dict[str, Any]:
    """The API's view of a certificate: its metadata and the leaf's, never the key."""
    body = record.public()
    body["not_after"] = _iso(record.not_after)
    body["updated_at"] = _iso(record.updated_at)
    try:
        chain = x509.load_pem_x509_certificates(record.chain.encode("ascii"))
    except ValueError:  # a tombstone, or a row written past these checks
        return body
    leaf = chain[0]
    body.update(subject=leaf.subject.rfc4514_string(), issuer=leaf.issuer.rfc4514_string(),
                not_before=leaf.not_valid_before_utc.isoformat(),
                key_type=describe_key(leaf.public_key())[0], chain_length=len(chain))
    return body


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat()
