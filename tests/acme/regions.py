"""A region configured for ACME against a Pebble, and what its TLS listener serves."""

from __future__ import annotations

import socket
import ssl
import time
from pathlib import Path

from cryptography import x509

from tests.acme.pebble import Pebble

REGION_HOST = "127.0.9.1"
BACKEND_HOST = "127.0.9.101"
ISSUE_DEADLINE = 45.0
ZONE = """$TTL 60
@    SOA  ns1 hostmaster 1 7200 1800 1209600 60
@    NS   ns1
ns1  A    127.0.0.1
www  A    {host}
nowhere A 127.0.9.250
"""
HTTP_AND_DNS = """
[[lb.acme.certificates]]
name = "www"
domains = ["www.example.test"]

[[lb.acme.certificates]]
name = "wild"
domains = ["*.example.test", "example.test"]
challenge = "dns-01"
"""


WWW = """
[[lb.acme.certificates]]
name = "www"
domains = ["www.example.test"]
"""
FILE_TLS = 'certificates = "certs/"\ndefault = "www"'


def example_zones(root: Path) -> Path:
    """A zones directory with example.test, www pointing at the region."""
    zones = root / "zones"
    zones.mkdir()
    (zones / "example.test.zone").write_text(ZONE.format(host=REGION_HOST))
    return zones


def region_config(path: Path, pebble: Pebble, ports: dict[str, int],
                  certificates: str = HTTP_AND_DNS, tls: str = FILE_TLS) -> Path:
    """``ports``: admin, https, backend, and for dns-01 api (control plane) and dns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"""
[lb]
region = "acme-test"
admin = "{REGION_HOST}:{ports['admin']}"
admin_token = "acme-admin"
demo_backends = ["{BACKEND_HOST}:{ports['backend']}"]

[[lb.listeners]]
name = "http"
bind = "{REGION_HOST}:{pebble.http_port}"

[[lb.listeners]]
name = "https"
bind = "{REGION_HOST}:{ports['https']}"
[lb.listeners.tls]
{tls}

[lb.tls]
watch_interval = 1.0

[[lb.pools]]
name = "web"
backends = ["{BACKEND_HOST}:{ports['backend']}"]

[lb.acme]
directory = "{pebble.directory}"
ca_bundle = "{pebble.ca_file}"
retry_interval = 1.0
control_api = "http://127.0.0.1:{ports.get('api', 0)}"
control_token_file = "var/control/admin.token"
dns_servers = ["127.0.0.1:{ports['dns']}"]
{certificates}""")
    (path.parent / "certs").mkdir(parents=True)
    return path


def served(port: int, server_name: str, root: Path) -> x509.Certificate | None:
    """The certificate for ``server_name`` if it verifies against Pebble's root."""
    context = ssl.create_default_context(cafile=str(root))
    try:
        with socket.create_connection((REGION_HOST, port), timeout=3) as raw, \
                context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
    except OSError:  # refused, reset, no certificate yet (an alert), not verified
        return None
    assert der is not None
    return x509.load_der_x509_certificate(der)


def wait_served(port: int, server_name: str, root: Path, not_serial: int | None = None
                ) -> x509.Certificate:
    deadline = time.monotonic() + ISSUE_DEADLINE
    while time.monotonic() < deadline:
        cert = served(port, server_name, root)
        if cert is not None and cert.serial_number != not_serial:
            return cert
        time.sleep(0.2)
    raise AssertionError(f"no certificate from the CA for {server_name} in {ISSUE_DEADLINE} s")


