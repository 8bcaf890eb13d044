"""HTTPS for the control plane API: one certificate pair from files, rotated in place.

The policy is the balancer's (TLS 1.2 and 1.3, forward-secret AEAD suites only): both
tiers take it from gtm.tlscerts. The pair is checked like any other (the key belongs to
the certificate, not expired) before it is served, and the files are polled: a new pair
is loaded into the same context, so new handshakes get it with no restart, and a broken
replacement is refused with the reason while the one before keeps serving.
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

from gtm import log
from gtm.errors import CertificateError
from gtm.process import cancel_and_wait
from gtm.tlscerts import TLS12_CIPHERS, Pem, check_pair, file_signature, load_into

POLL_SECONDS = 5.0


class ApiTls:
    """The API's server context and the watcher that keeps its pair current."""

    def __init__(self, cert: Path, key: Path):
        self.cert, self.key = cert, key
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.minimum_version = ssl.TLSVersion.TLSv1_2
        self.context.set_ciphers(TLS12_CIPHERS)
        self.context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE \
            | ssl.OP_NO_RENEGOTIATION
        self.context.set_alpn_protocols(["http/1.1"])
        self.seen = file_signature((cert, key))
        self._load()  # raises CertificateError: the API does not start on a bad pair
        self._task: asyncio.Task[None] | None = None

    def _load(self) -> None:
        try:
            chain, key = self.cert.read_bytes(), self.key.read_bytes()
        except OSError as exc:
            raise CertificateError(f"cannot read: {exc.strerror}", str(exc.filename)) from exc
        checked = check_pair(chain, key, chain_source=str(self.cert),
                             key_source=str(self.key))
        load_into(self.context, Pem(checked.chain + checked.key.data), str(self.cert))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._watch())

    async def stop(self) -> None:
        await cancel_and_wait(self._task)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            self.rescan()

    def rescan(self) -> bool:
        """Load the pair again if its files changed; True when a new one now serves."""
        try:
            signature = file_signature((self.cert, self.key))
        except OSError:
            return False  # being replaced: the next look sees it whole
        if signature == self.seen:
            return False
        self.seen = signature
        try:
            self._load()
        except CertificateError as exc:
            log.control.error("API certificate refused, keeping the one before: %s", exc)
            return False
        log.control.info("API certificate %s rotated", self.cert)
        return True
