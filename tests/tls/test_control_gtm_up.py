"""`gtm up` with a region whose TLS listener says only ``control = true``: gtm up gives it
its own store and secret key, and a certificate uploaded with `gtm certs upload` is
served by the next handshakes, with no restart."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from gtm.sealing import read_key
from tests.integration.conftest import gtm_server  # noqa: F401  (a fixture, used by name)
from tests.integration.servers import ServerFactory, free_port, gtm_command, subprocess_env
from tests.tls.conftest import Pki, client_context, served, tls_connect
from tests.tls.test_rotation import wait_for

pytestmark = pytest.mark.integration

ZONE = """$TTL 60
@    SOA  ns1 hostmaster 1 7200 1800 1209600 60
@    NS   ns1
ns1  A    127.0.0.1
"""


def test_gtm_up_regions_serve_uploaded_certificates(gtm_server: ServerFactory,  # noqa: F811
                                                     pki: Pki, tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("dns", "api", "https")}
    zones = tmp_path / "zones"
    zones.mkdir()
    (zones / "example.test.zone").write_text(ZONE)
    region = tmp_path / "region.toml"
    region.write_text(f"""
[lb]
region = "control-certs"

[[lb.listeners]]
name = "https"
bind = "127.0.0.1:{ports['https']}"
tls = {{ control = true, default = "www" }}

[lb.tls]
watch_interval = 0.2

[[lb.pools]]
name = "app"
backends = ["127.0.0.1:1"]
""")
    state = tmp_path / "var"
    server = gtm_server(zones, workers=None, subcommand="up", extra=[
        "--listen", f"127.0.0.1:{ports['dns']}", "--api-listen", f"127.0.0.1:{ports['api']}",
        "--state-dir", str(state), "--region", str(region), "--no-probe"])
    key_path = state / "control" / "secret.key"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    address = ("127.0.0.1", ports["https"])
    chain, key, cert = pki.ca.issue(["www.example.com"])
    (tmp_path / "www.crt").write_bytes(chain)
    (tmp_path / "www.key").write_bytes(key)
    token = (state / "control" / "admin.token").read_text().strip()
    upload = subprocess.run(
        [*gtm_command(), "certs", "upload", "www", "--chain", str(tmp_path / "www.crt"),
         "--key", str(tmp_path / "www.key"), "--api", f"http://127.0.0.1:{ports['api']}",
         "--token", token],
        capture_output=True, text=True, timeout=30, env=subprocess_env(), check=False)
    assert upload.returncode == 0, upload.stderr
    assert "certificate www stored" in upload.stdout

    def served_serial() -> int | None:
        try:
            with tls_connect(address, "www.example.com", client_context(pki.ca_file)) as sock:
                return int(served(sock).serial_number)
        except OSError:
            return None

    assert wait_for(lambda: served_serial() == cert.serial_number, timeout=10), server.log()
    assert server.process.poll() is None
    assert key.split(b"\n")[1].decode() not in server.log()
    assert f"id {read_key(key_path).id}" in server.log()  # made by gtm up, and said so
