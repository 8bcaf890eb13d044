"""Pebble, Let's Encrypt's test ACME server, run by a test on loopback.

Pebble speaks HTTPS only; its certificate comes from a CA made here. It resolves
every name through the DNS server it is given (``-dnsserver``): ours, so HTTP-01
connects where our zone says and DNS-01 reads the TXT record our servers publish.
Nonces are refused at Pebble's default rate (5%), which the client must survive.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from tests.integration.servers import free_port
from tests.tls.pki import CA, key_pem, new_key

PEBBLE = shutil.which("pebble") or "/usr/bin/pebble"
START_TIMEOUT = 15.0


def require_pebble() -> None:
    if Path(PEBBLE).exists():
        return
    message = "pebble is not installed (apt-get install pebble): the ACME tests cannot run"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    import warnings

    warnings.warn(message, stacklevel=2)
    pytest.skip(message)


@dataclass
class Pebble:
    process: subprocess.Popen[bytes]
    directory: str         # the ACME directory URL
    management: str        # roots, intermediates, certificate status
    ca_file: Path          # trust for Pebble's own HTTPS
    http_port: int         # where its VA fetches HTTP-01 tokens
    log: Path

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def root(self) -> x509.Certificate:
        """Pebble's issuing root (made anew at each start)."""
        with urllib.request.urlopen(f"{self.management}/roots/0", context=self.context(),
                                    timeout=5) as response:
            return x509.load_pem_x509_certificate(response.read())

    def root_pem(self, path: Path) -> Path:
        with urllib.request.urlopen(f"{self.management}/roots/0", context=self.context(),
                                    timeout=5) as response:
            path.write_bytes(response.read())
        return path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)


def start_pebble(directory: Path, dns_port: int, http_port: int,
                 eab_keys: dict[str, str] | None = None) -> Pebble:
    """``eab_keys`` (key id -> base64url MAC key): accounts must be bound to one."""
    require_pebble()
    ca = CA("pebble test front CA")
    chain, key, _ = ca.issue(["127.0.0.1", "localhost"], key=new_key("ec"))
    (directory / "pebble.crt").write_bytes(chain)
    (directory / "pebble.key").write_bytes(key)
    ca_file = ca.write(directory / "pebble-front-ca.pem")
    api, management = free_port(), free_port()
    config = {"pebble": {
        "listenAddress": f"127.0.0.1:{api}", "managementListenAddress": f"127.0.0.1:{management}",
        "certificate": str(directory / "pebble.crt"), "privateKey": str(directory / "pebble.key"),
        "httpPort": http_port, "tlsPort": free_port(), "ocspResponderURL": "",
        "externalAccountBindingRequired": eab_keys is not None,
        **({"externalAccountMACKeys": eab_keys} if eab_keys else {}),
    }}
    (directory / "pebble.json").write_text(json.dumps(config))
    log = directory / "pebble.log"
    env = {**os.environ, "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_VA_ALWAYS_VALID": "0"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [PEBBLE, "-config", str(directory / "pebble.json"),
             "-dnsserver", f"127.0.0.1:{dns_port}"],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
            cwd=directory)
    pebble = Pebble(process, f"https://127.0.0.1:{api}/dir",
                    f"https://127.0.0.1:{management}", ca_file, http_port, log)
    _wait_ready(pebble)
    return pebble


def _wait_ready(pebble: Pebble) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if pebble.process.poll() is not None:
            raise AssertionError(f"pebble exited: {pebble.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(pebble.directory, context=pebble.context(),
                                        timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    pebble.stop()
    raise AssertionError(f"pebble did not answer in {START_TIMEOUT} s: "
                         f"{pebble.log.read_text()[-2000:]}")


__all__ = ["Pebble", "key_pem", "start_pebble"]
