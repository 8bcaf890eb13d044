"""ACME end to end on `gtm up`, against Pebble: the balancer of a region gets its
certificates by itself, HTTP-01 served by the balancer, DNS-01 (a wildcard) published
by our own authoritative DNS through the control plane, and a renewal rotates in
under a load loop with no failed request and no restart."""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from tests.acme.pebble import start_pebble
from tests.acme.regions import (
    REGION_HOST,
    WWW,
    example_zones,
    region_config,
    served,
    wait_served,
)
from tests.integration.servers import GtmServer, ServerFactory, free_port, gtm_command

pytestmark = pytest.mark.integration

def admin(ports: dict[str, int], method: str, path: str) -> tuple[int, Any]:
    request = urllib.request.Request(f"http://{REGION_HOST}:{ports['admin']}{path}",
                                     method=method,
                                     headers={"Authorization": "Bearer acme-admin"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def control(ports: dict[str, int], state: Path, path: str) -> tuple[int, Any]:
    token = (state / "var" / "control" / "admin.token").read_text().strip()
    request = urllib.request.Request(f"http://127.0.0.1:{ports['api']}{path}",
                                     headers={"Authorization": f"Bearer {token}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


class LoadLoop(threading.Thread):
    """HTTPS requests on new connections (verified), bounded in count and time."""

    def __init__(self, port: int, root: Path, limit: int = 5000, seconds: float = 40.0):
        super().__init__(daemon=True)
        self.port, self.root, self.limit, self.seconds = port, root, limit, seconds
        self.ok = 0
        self.failures: list[str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        context = ssl.create_default_context(cafile=str(self.root))
        end = time.monotonic() + self.seconds
        while not self.stopping.is_set() and self.ok + len(self.failures) < self.limit \
                and time.monotonic() < end:
            try:
                status = self.request(context)
            except (OSError, ssl.SSLError) as exc:
                self.failures.append(repr(exc))
                continue
            if status == b"200":
                self.ok += 1
            else:
                self.failures.append(f"HTTP {status!r}")

    def request(self, context: ssl.SSLContext) -> bytes:
        with socket.create_connection((REGION_HOST, self.port), timeout=5) as raw, \
                context.wrap_socket(raw, server_hostname="www.example.test") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: www.example.test\r\n"
                        b"Connection: close\r\n\r\n")
            reply = b""
            while chunk := tls.recv(65536):
                reply += chunk
        return reply.split(b" ", 2)[1] if reply.startswith(b"HTTP/1.1 ") else reply[:40]


def gtm_up(gtm_server: ServerFactory, root: Path, ports: dict[str, int], config: Path
           ) -> GtmServer:
    """`gtm up` serving the example zone, with the region of ``config``."""
    script = Path(sys.executable).parent / "gtm"
    return gtm_server(
        example_zones(root), workers=None, subcommand="up",
        extra=["--listen", f"127.0.0.1:{ports['dns']}",
               "--api-listen", f"127.0.0.1:{ports['api']}",
               "--state-dir", str(root / "var"), "--region", str(config)],
        command=[str(script)] if script.exists() else gtm_command(),
    )


def test_certificates_are_issued_renewed_and_rotated_in(
    gtm_server: ServerFactory, tmp_path: Path
) -> None:
    ports = {name: free_port() for name in ("dns", "api", "admin", "https", "backend")}
    pebble = start_pebble(tmp_path, ports["dns"], free_port((REGION_HOST,)))
    try:
        config = region_config(tmp_path / "acme-region.toml", pebble, ports)
        server = gtm_up(gtm_server, tmp_path, ports, config)
        root = pebble.root_pem(tmp_path / "pebble-root.pem")

        www = wait_served(ports["https"], "www.example.test", root)           # HTTP-01
        assert www.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == [
                "www.example.test"]
        wild = wait_served(ports["https"], "any.example.test", root)          # DNS-01
        names = wild.extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        assert sorted(names) == ["*.example.test", "example.test"]
        assert served(ports["https"], "example.test", root) is not None

        # The TXT records were published as versions and withdrawn afterwards.
        status, _ = control(ports, tmp_path, "/v1/config/sections/challenges")
        assert status == 404
        _, audit = control(ports, tmp_path, "/v1/audit?limit=200")
        messages = json.dumps(audit)
        assert "acme challenge _acme-challenge.example.test. published" in messages
        assert "acme challenge _acme-challenge.example.test. withdrawn" in messages

        # A renewal, under load, with no restart.
        loop = LoadLoop(ports["https"], root)
        loop.start()
        time.sleep(0.5)
        status, body = admin(ports, "POST", "/acme/www/renew")
        assert status == 200 and body["issued"] is True, body
        renewed = wait_served(ports["https"], "www.example.test", root, www.serial_number)
        time.sleep(0.5)
        loop.stopping.set()
        loop.join(10)
        assert loop.failures == [] and loop.ok > 0
        assert renewed.not_valid_after_utc >= www.not_valid_after_utc
        assert server.process.poll() is None

        status, body = admin(ports, "GET", "/acme")
        listed = {c["name"]: c for c in body["certificates"]}
        assert listed["www"]["failures"] == 0 and listed["www"]["not_after"]
        assert listed["wild"]["last_error"] is None
        print(f"issued www and *.example.test; renewal under load: {loop.ok} requests, "
              "0 failures")
    finally:
        pebble.stop()


def test_certificates_kept_in_the_control_plane(gtm_server: ServerFactory,
                                                tmp_path: Path) -> None:
    """store = "control": the pair goes to the control plane (sealed), and the listener
    that serves control-plane certificates gets it, with no file written."""
    ports = {name: free_port() for name in ("dns", "api", "admin", "https", "backend")}
    pebble = start_pebble(tmp_path, ports["dns"], free_port((REGION_HOST,)))
    try:
        config = region_config(tmp_path / "region.toml", pebble, ports,
                               'store = "control"\n' + WWW, tls="control = true")
        gtm_up(gtm_server, tmp_path, ports, config)
        root = pebble.root_pem(tmp_path / "pebble-root.pem")
        cert = wait_served(ports["https"], "www.example.test", root)
        status, stored = control(ports, tmp_path, "/v1/certificates/www")
        assert status == 200, stored
        assert stored["names"] == ["www.example.test"] and "Pebble" in stored["issuer"]
        assert stored["fingerprint_sha256"] == cert.fingerprint(hashes.SHA256()).hex()
        assert not any(tmp_path.glob("**/www.pem"))  # nothing on disk: the store keeps it
    finally:
        pebble.stop()
