"""One ACME order, from a list of names to a certificate chain and its new key.

The steps of RFC 8555 section 7: new order, one authorization per name, a challenge
of the solver's kind presented for all of them at once (so a DNS solver publishes
one change for an order of many names), answered, polled, withdrawn; then the order
is finalized with a CSR for a key made here, and the chain downloaded.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from gtm import log
from gtm.acme.client import AcmeClient
from gtm.acme.jws import b64url
from gtm.errors import AcmeError

KEY_TYPES = ("ec256", "ec384", "rsa2048", "rsa3072", "rsa4096")


@dataclass(frozen=True)
class Challenge:
    """What a solver must publish for one name."""

    domain: str              # the identifier, without "*." for a wildcard
    wildcard: bool
    kind: str                # http-01 | dns-01
    token: str
    key_authorization: str
    url: str                 # the challenge, answered with {}
    authorization: str       # its authorization, polled until valid


class Solver(Protocol):
    kind: str

    async def present(self, challenges: list[Challenge]) -> None:
        """Publish them; return once the CA can see them."""

    async def cleanup(self, challenges: list[Challenge]) -> None:
        """Withdraw them (called whatever the outcome)."""


@dataclass(frozen=True)
class Issued:
    chain_pem: bytes
    key_pem: bytes
    not_after: dt.datetime
    serial: int


def new_key(kind: str) -> ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey:
    if kind == "ec256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "ec384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind.startswith("rsa") and kind in KEY_TYPES:
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:]))
    raise AcmeError(f"unknown key type {kind!r} (one of {', '.join(KEY_TYPES)})")


def csr_for(domains: list[str], key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    """A DER CSR naming every domain in its SAN (the CN is not needed by ACME CAs)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])])
    ).add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]),
                    critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


async def issue(client: AcmeClient, domains: list[str], solver: Solver,
                key_type: str = "ec256", timeout: float = 120.0) -> Issued:
    """Run one order to its end; raises AcmeError saying which step failed and why."""
    if client.kid is None:
        await client.register()
    identifiers = [{"type": "dns", "value": d} for d in domains]
    created = await client.post(client.directory["newOrder"], {"identifiers": identifiers})
    if created.location is None:
        raise AcmeError("the CA created an order without telling its URL")
    order_url, order = created.location, created.body
    challenges = await _pending_challenges(client, order.get("authorizations", []), solver.kind)
    if challenges:
        await _prove(client, challenges, solver, timeout)
    order = await client.poll(order_url, ("ready", "valid"), timeout)
    key = new_key(key_type)
    if order["status"] == "ready":
        await client.post(order["finalize"], {"csr": b64url(csr_for(domains, key))})
        order = await client.poll(order_url, ("valid",), timeout)
    chain = await client.get(order["certificate"])
    if not isinstance(chain.body, str) or "BEGIN CERTIFICATE" not in chain.body:
        raise AcmeError("the CA's certificate download is not a PEM chain")
    leaf = x509.load_pem_x509_certificate(chain.body.encode())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return Issued(chain.body.encode(), key_pem, leaf.not_valid_after_utc, leaf.serial_number)


async def _pending_challenges(client: AcmeClient, urls: list[str], kind: str
                              ) -> list[Challenge]:
    """The challenge of ``kind`` of every authorization not yet valid."""
    found = []
    for url in urls:
        authz = (await client.get(url)).body
        if authz.get("status") == "valid":
            continue  # the CA still trusts an earlier proof for this name
        offered = {c.get("type"): c for c in authz.get("challenges", [])}
        chosen = offered.get(kind)
        domain = authz.get("identifier", {}).get("value", "?")
        if chosen is None:
            raise AcmeError(f"the CA offers no {kind} challenge for {domain} "
                            f"(offered: {', '.join(sorted(map(str, offered))) or 'none'})")
        token = chosen["token"]
        found.append(Challenge(domain, bool(authz.get("wildcard")), kind, token,
                               client.account.key_authorization(token), chosen["url"], url))
    return found


async def _prove(client: AcmeClient, challenges: list[Challenge], solver: Solver,
                 timeout: float) -> None:
    await solver.present(challenges)
    try:
        for challenge in challenges:
            await client.post(challenge.url, {})
        for challenge in challenges:
            try:
                await client.poll(challenge.authorization, ("valid",), timeout)
            except AcmeError as exc:
                raise AcmeError(f"{challenge.kind} for {challenge.domain} failed: {exc}",
                                exc.problem, exc.status, exc.subproblems) from exc
            log.acme.info("%s proved for %s%s", challenge.kind,
                          "*." if challenge.wildcard else "", challenge.domain)
    finally:
        await solver.cleanup(challenges)
