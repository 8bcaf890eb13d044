"""Where the ACME manager keeps the pairs it obtains, and what it reads back to decide.

``directory`` (the default): ``NAME.pem`` in a certificate directory, written atomically
with mode 0600; the balancer's own watcher (or an immediate rescan) rotates it in. Until
the first order succeeds a short-lived self-signed placeholder serves the names, since a
TLS listener cannot start without a pair.

``control``: the pair goes to the control plane (``PUT /v1/certificates/NAME``, sealed
there), and every balancer whose listener says ``control = true`` serves it. One
balancer of a region orders for all of them, which keeps a region of N balancers from
placing N orders for the same names (CAs limit duplicate certificates per week).
"""

from __future__ import annotations

import datetime as dt
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gtm.acme.control_api import ControlApi
from gtm.acme.flow import Issued
from gtm.acme.jws import write_private
from gtm.errors import AcmeError, ConfigError
from gtm.tlscerts import dns_names
from regional_lb.config import AcmeSettings
from regional_lb.tls import PLACEHOLDER_ISSUER_CN as PLACEHOLDER

PLACEHOLDER_DAYS = 7


@dataclass(frozen=True)
class Held:
    names: frozenset[str]
    not_before: dt.datetime
    not_after: dt.datetime
    placeholder: bool


def held_pair(output: Path, name: str) -> Held | None:
    """The certificate now in ``NAME.pem``, or None when there is none (or it is broken)."""
    try:
        leaf = x509.load_pem_x509_certificate((output / f"{name}.pem").read_bytes())
    except (OSError, ValueError):
        return None
    issuer = leaf.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
    return Held(frozenset(dns_names(leaf)), leaf.not_valid_before_utc, leaf.not_valid_after_utc,
                bool(issuer) and issuer[0].value == PLACEHOLDER)


def ensure_placeholders(settings: AcmeSettings) -> list[str]:
    """Write a self-signed placeholder for each certificate with no pair yet (directory
    store only: a control-plane listener starts without any)."""
    if settings.output is None:
        return []
    settings.output.mkdir(parents=True, exist_ok=True, mode=0o700)
    written = []
    for cert in settings.certificates:
        for suffix in (".crt", ".key"):
            if (settings.output / f"{cert.name}{suffix}").exists():
                raise ConfigError(f"{cert.name}{suffix} is there, but ACME writes "
                                  f"{cert.name}.pem: remove or rename the pair",
                                  str(settings.output))
        if not (settings.output / f"{cert.name}.pem").exists():
            write_private(settings.output / f"{cert.name}.pem", placeholder_pem(cert.domains))
            written.append(cert.name)
    return written


def placeholder_pem(domains: tuple[str, ...]) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, PLACEHOLDER)])
    now = dt.datetime.now(dt.UTC)
    leaf = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=PLACEHOLDER_DAYS))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return leaf.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption())


class PairStore(Protocol):
    async def held(self, name: str) -> Held | None:
        """What serves ``name`` now (None: nothing, or nothing readable)."""

    async def write(self, name: str, issued: Issued) -> None:
        """Keep a new pair; raises AcmeError or OSError when it could not be kept."""


def pair_store(settings: AcmeSettings) -> PairStore:
    if settings.store == "control":
        assert settings.control_api is not None
        return ControlPlaneStore(settings)
    assert settings.output is not None
    return DirectoryStore(settings.output)


class DirectoryStore:
    def __init__(self, output: Path):
        self.output = output

    async def held(self, name: str) -> Held | None:
        return held_pair(self.output, name)

    async def write(self, name: str, issued: Issued) -> None:
        chain = issued.chain_pem if issued.chain_pem.endswith(b"\n") else issued.chain_pem + b"\n"
        write_private(self.output / f"{name}.pem", chain + issued.key_pem)


class ControlPlaneStore:
    def __init__(self, settings: AcmeSettings):
        self.settings = settings

    async def held(self, name: str) -> Held | None:
        status, body = await self._call("GET", name)
        if status == 404:
            return None
        if status != 200:
            raise AcmeError(f"the control plane answered HTTP {status} for certificate "
                            f"{name}: {body[:200]}")
        found = json.loads(body)
        return Held(frozenset(n.lower() for n in found.get("names", [])),
                    dt.datetime.fromisoformat(found["not_before"]),
                    dt.datetime.fromisoformat(found["not_after"]), placeholder=False)

    async def write(self, name: str, issued: Issued) -> None:
        status, body = await self._call("PUT", name, {"chain": issued.chain_pem.decode(),
                                                      "key": issued.key_pem.decode()})
        if status not in (200, 201):
            raise AcmeError(f"the control plane refused certificate {name}: HTTP {status} "
                            f"{body[:300]}")

    async def _call(self, method: str, name: str, body: object = None) -> tuple[int, str]:
        return await control_api(self.settings).call(
            method, f"/v1/certificates/{quote(name, safe='')}", json=body)


def control_token(settings: AcmeSettings) -> str:
    path = settings.control_token_file
    assert path is not None
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise AcmeError(f"cannot read the control plane token {path}: {exc.strerror}") from exc


def control_api(settings: AcmeSettings) -> ControlApi:
    """The control plane as [lb.acme] names it (the token is read anew at each use)."""
    assert settings.control_api is not None
    return ControlApi(settings.control_api, control_token(settings), control_context(settings))


def control_context(settings: AcmeSettings) -> ssl.SSLContext | None:
    """Trust for an https control_api: its CA bundle when given (else the system's)."""
    if settings.control_ca is None:
        return None
    return ssl.create_default_context(cafile=str(settings.control_ca))
