"""bench/cert_rotation.py: how long a new certificate takes to reach new handshakes.

    /tmp/venv/bin/python bench/cert_rotation.py [--rounds 20] [--watch-interval 2.0]

Runs `gtm up` (embedded control plane, no probes) with one region whose TLS listener
serves both a certificate directory and the control plane's certificates, then, round
after round, replaces the certificate of one name:

  file      a new pair renamed into the directory (what an operator or certbot does)
  control   a new pair uploaded through the API (PUT /v1/certificates/NAME)

and measures the seconds from the write (or the API's answer) to the first handshake
that gets the new serial, polling every 20 ms. The balancer polls both sources every
``watch_interval`` seconds, so the expected figure is about half of it on average and at
most all of it. Prints a table and writes bench/results/cert-rotation-*.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import free_port, machine_info, write_results

ZONE = "$TTL 60\n@ SOA ns1 hostmaster 1 7200 1800 1209600 60\n@ NS ns1\nns1 A 127.0.0.1\n"
POLL = 0.02
DEADLINE = 30.0


class Ca:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench rotation CA")])
        now = dt.datetime.now(dt.UTC)
        self.cert = (x509.CertificateBuilder().subject_name(self.name).issuer_name(self.name)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - dt.timedelta(days=1))
                     .not_valid_after(now + dt.timedelta(days=30))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
                     .sign(self.key, hashes.SHA256()))

    def issue(self, host: str) -> tuple[bytes, bytes, int]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
                .issuer_name(self.name).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(days=1))
                .not_valid_after(now + dt.timedelta(days=30))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), False)
                .sign(self.key, hashes.SHA256()))
        return (cert.public_bytes(serialization.Encoding.PEM),
                key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()), cert.serial_number)


def served_serial(port: int, host: str) -> int | None:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as raw, \
                context.wrap_socket(raw, server_hostname=host) as tls:
            der = tls.getpeercert(binary_form=True)
    except OSError:
        return None
    return x509.load_der_x509_certificate(der).serial_number if der else None


def wait_serial(port: int, host: str, serial: int, since: float) -> float:
    while time.monotonic() - since < DEADLINE:
        if served_serial(port, host) == serial:
            return time.monotonic() - since
        time.sleep(POLL)
    raise SystemExit(f"{host}: the new certificate was not served within {DEADLINE} s")


def upload(api: str, token: str, name: str, chain: bytes, key: bytes) -> None:
    body = json.dumps({"chain": chain.decode(), "key": key.decode()}).encode()
    request = urllib.request.Request(f"{api}/v1/certificates/{name}", data=body, method="PUT",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        if response.status not in (200, 201):
            raise SystemExit(f"upload refused: HTTP {response.status}")


def write_pair(directory: Path, name: str, chain: bytes, key: bytes) -> None:
    temporary = directory / f".{name}.pem.tmp"
    temporary.write_bytes(chain + key)
    os.chmod(temporary, 0o600)
    os.replace(temporary, directory / f"{name}.pem")


def start(workdir: Path, ports: dict[str, int], watch: float, ca: Ca) -> subprocess.Popen[bytes]:
    (workdir / "zones").mkdir()
    (workdir / "zones" / "example.test.zone").write_text(ZONE)
    certs = workdir / "certs"
    certs.mkdir()
    chain, key, _ = ca.issue("file.example.test")
    write_pair(certs, "file", chain, key)
    (workdir / "region.toml").write_text(f"""
[lb]
region = "rotation"
[[lb.listeners]]
name = "https"
bind = "127.0.0.1:{ports['https']}"
tls = {{ certificates = "certs/", control = true, default = "file" }}
[lb.tls]
watch_interval = {watch}
[[lb.pools]]
name = "app"
backends = ["127.0.0.1:1"]
""")
    gtm = shutil.which("gtm", path=str(Path(sys.executable).parent)) or "gtm"
    log = (workdir / "gtm.log").open("wb")
    return subprocess.Popen(
        [gtm, "up", "--zones", str(workdir / "zones"), "--listen", f"127.0.0.1:{ports['dns']}",
         "--api-listen", f"127.0.0.1:{ports['api']}", "--state-dir", str(workdir / "var"),
         "--region", str(workdir / "region.toml"), "--no-probe"],
        cwd=workdir, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": statistics.median(ordered),
            "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
            "max": ordered[-1], "mean": statistics.fmean(ordered)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--watch-interval", type=float, default=2.0)
    args = parser.parse_args()
    ca = Ca()
    ports = {name: free_port() for name in ("dns", "api", "https")}
    with tempfile.TemporaryDirectory(prefix="gtm-rotation-") as temp:
        workdir = Path(temp)
        process = start(workdir, ports, args.watch_interval, ca)
        try:
            results = measure(workdir, ports, args.rounds, ca, args.watch_interval)
        finally:
            process.terminate()
            process.wait(20)
    data: dict[str, Any] = {"machine": machine_info(), "rounds": args.rounds,
                            "watch_interval": args.watch_interval,
                            **{kind: summary(values) for kind, values in results.items()}}
    print(f"{'source':8} {'p50 s':>7} {'p95 s':>7} {'max s':>7}   (watch_interval "
          f"{args.watch_interval:g} s, {args.rounds} rounds)")
    for kind in results:
        row = data[kind]
        print(f"{kind:8} {row['p50']:7.2f} {row['p95']:7.2f} {row['max']:7.2f}")
    print(f"results: {write_results('cert-rotation', data)}")


def measure(workdir: Path, ports: dict[str, int], rounds: int, ca: Ca, watch: float
            ) -> dict[str, list[float]]:
    token_path = workdir / "var" / "control" / "admin.token"
    deadline = time.monotonic() + DEADLINE
    while served_serial(ports["https"], "file.example.test") is None or not token_path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"gtm up did not start: {(workdir / 'gtm.log').read_text()[-2000:]}")
        time.sleep(0.1)
    token = token_path.read_text().strip()
    api = f"http://127.0.0.1:{ports['api']}"
    results: dict[str, list[float]] = {"file": [], "control": []}
    for _ in range(rounds):
        # A random pause, so changes do not fall in step with the balancer's polls.
        time.sleep(random.uniform(0, watch))
        chain, key, serial = ca.issue("file.example.test")
        started = time.monotonic()
        write_pair(workdir / "certs", "file", chain, key)
        results["file"].append(wait_serial(ports["https"], "file.example.test", serial, started))
        time.sleep(random.uniform(0, watch))
        chain, key, serial = ca.issue("control.example.test")
        upload(api, token, "control", chain, key)
        started = time.monotonic()
        results["control"].append(
            wait_serial(ports["https"], "control.example.test", serial, started))
    return results


if __name__ == "__main__":
    main()
