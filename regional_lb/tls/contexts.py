"""How SSL contexts are made: one policy for every context a listener may switch to.

OpenSSL takes some settings from the context a connection starts with (verify mode,
cipher list, ticket keys) and others from the context the SNI callback switches to
(certificate, client CA store, ALPN callback). Building both from the same
:class:`TlsPolicy` keeps them from ever disagreeing.
"""

from __future__ import annotations

import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from gtm.errors import CertificateError
from gtm.tlscerts import TLS12_CIPHERS, load_into, ssl_reason
from regional_lb.tls.certs import CertInfo

if TYPE_CHECKING:
    from regional_lb.config import PoolSpec

CLIENT_AUTH = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL,
               "required": ssl.CERT_REQUIRED}
VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


@dataclass(frozen=True)
class TlsPolicy:
    """Everything about a listener's TLS except which certificate: hashable, a cache key."""

    min_version: str = "1.2"             # 1.2 | 1.3
    alpn: tuple[str, ...] = ("http/1.1",)
    client_auth: str = "none"            # none | optional | required
    client_ca: Path | None = None        # PEM bundle the client certificates must chain to
    session_tickets: bool = True
    tickets: int = 2                     # TLS 1.3 tickets sent after each full handshake


def server_context(policy: TlsPolicy, pairs: Sequence[CertInfo] = ()) -> ssl.SSLContext:
    """A server context under ``policy`` serving ``pairs`` (one per key kind)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = VERSIONS[policy.min_version]
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE \
        | ssl.OP_NO_RENEGOTIATION | ssl.OP_SINGLE_ECDH_USE
    if policy.session_tickets:
        ctx.options &= ~ssl.OP_NO_TICKET
        ctx.num_tickets = policy.tickets
    else:
        ctx.options |= ssl.OP_NO_TICKET
        ctx.num_tickets = 0
    if policy.alpn:
        ctx.set_alpn_protocols(list(policy.alpn))
    ctx.verify_mode = CLIENT_AUTH[policy.client_auth]
    if policy.client_ca is not None:
        try:
            ctx.load_verify_locations(cafile=str(policy.client_ca))
        except (OSError, ssl.SSLError) as exc:
            raise CertificateError(f"cannot load the CA bundle: {ssl_reason(exc)}",
                                   str(policy.client_ca)) from exc
    for pair in pairs:
        load_pair_into(ctx, pair)
    return ctx


def load_pair_into(ctx: ssl.SSLContext, pair: CertInfo) -> None:
    """Load the bytes that were checked (not the source, which may have changed since),
    through an anonymous in-memory file: no key is ever written anywhere."""
    load_into(ctx, pair.pem, pair.source or pair.name)


def backend_tls(spec: PoolSpec | None, host: str) -> tuple[ssl.SSLContext | None, str | None]:
    """The context and server name for connections to a backend of this pool (or none)."""
    if spec is None or not spec.tls:
        return None, None
    return client_context(spec.tls_ca, spec.tls_verify), spec.tls_server_name or host


@lru_cache(maxsize=64)
def client_context(ca: Path | None, verify: bool) -> ssl.SSLContext:
    """For re-encryption to backends: TLS 1.2+, the CA bundle (or the system's). One per
    (bundle, verify), so the client session cache is shared by the pools using it."""
    ctx = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.set_alpn_protocols(["http/1.1"])
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx

