"""Zone transfers, NOTIFY and dynamic updates against real peers (issue 18).

One `gtm up` for the module: Knot and NSD are its secondaries (AXFR with TSIG, then an
IXFR prompted by NOTIFY after nsupdate changes the zone), dnspython reads the zone back
as external-dns does, and bad TSIG, unsigned updates and refused transfers get their
rcodes while nothing is lost. Each peer runs as a process of this test, on loopback
ports, in a temporary directory, and is killed by its PID.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
import dns.tsig
import dns.tsigkeyring
import dns.update
import dns.zone
import pytest

from gtm.control.client import Client
from tests.integration.servers import (
    GtmServer,
    ServerFactory,
    copy_example_zones,
    framed,
    free_port,
    gtm_command,
    read_framed,
    subprocess_env,
    wait_until,
)

pytestmark = pytest.mark.integration

ZONE = "gslb.example.test."
UP_ARGS = ["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0", "--no-regions",
           "--no-probe"]
TOOLS = {"knotd": "knot", "nsd": "nsd", "nsupdate": "bind9-dnsutils"}


def need(command: str, package: str) -> str:
    path = shutil.which(command) or (f"/usr/sbin/{command}"
                                     if Path(f"/usr/sbin/{command}").exists() else None)
    if path:
        return path
    message = f"{command} is not installed (apt-get install {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    import warnings

    warnings.warn(message, stacklevel=2)
    pytest.skip(message)


@dataclass
class Peer:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)

    def query(self, name: str, rdtype: str) -> dns.message.Message:
        return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1",
                             port=self.port, timeout=2)

    def serial(self) -> int | None:
        try:
            response = self.query(ZONE, "SOA")
        except (dns.exception.Timeout, OSError):
            return None
        if response.rcode() != dns.rcode.NOERROR or not response.answer:
            return None
        return int(response.answer[0][0].serial)


@dataclass
class Lab:
    server: GtmServer
    api: Client
    directory: Path
    secrets: dict[str, tuple[str, str]]  # key name -> (algorithm, base64 secret)
    knot: Peer
    nsd: Peer

    @property
    def address(self) -> tuple[str, int]:
        return self.server.address

    def serial(self) -> int:
        response = self.server.query(ZONE, "SOA")
        return int(response.answer[0][0].serial)

    def keyring(self, name: str) -> dns.tsig.Key:
        algorithm, secret = self.secrets[name]
        return dns.tsig.Key(name, secret, algorithm)

    def head(self) -> int:
        return int(self.api.get("/v1/config")["version"])


def gtm(server: GtmServer, cwd: Path, *args: str) -> str:
    api = re.search(r"control plane API on (http://\S+)", server.log())
    assert api, server.log()
    done = subprocess.run(gtm_command(*args, "--api", api.group(1)), cwd=cwd,
                          env=subprocess_env(), capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def start_knot(directory: Path, primary: tuple[str, int], secret: str) -> Peer:
    knotd = need("knotd", "knot")
    directory.mkdir()
    port = free_port()
    (directory / "knot.conf").write_text(f"""
server:
    rundir: "{directory}"
    listen: 127.0.0.1@{port}
log:
  - target: stderr
    any: info
database:
    storage: "{directory}/db"
key:
  - id: xfr
    algorithm: hmac-sha256
    secret: {secret}
remote:
  - id: gtm
    address: {primary[0]}@{primary[1]}
    key: xfr
acl:
  - id: notify
    address: {primary[0]}
    key: xfr
    action: notify
template:
  - id: default
    storage: "{directory}"
zone:
  - domain: {ZONE}
    master: gtm
    acl: notify
""")
    log = directory / "knotd.log"
    with log.open("wb") as out:
        process = subprocess.Popen([knotd, "-c", str(directory / "knot.conf")],
                                   stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT)
    return Peer("knot", process, port, log)


def start_nsd(directory: Path, primary: tuple[str, int], secret: str) -> Peer:
    nsd = need("nsd", "nsd")
    directory.mkdir()
    port = free_port()
    (directory / "nsd.conf").write_text(f"""
server:
    ip-address: 127.0.0.1@{port}
    zonesdir: "{directory}"
    database: ""
    pidfile: "{directory}/nsd.pid"
    xfrdfile: "{directory}/xfrd.state"
    xfrdir: "{directory}"
    zonelistfile: "{directory}/zone.list"
    username: ""
    chroot: ""
    logfile: "{directory}/nsd.log"
    verbosity: 2
    server-count: 1
    hide-version: yes
remote-control:
    control-enable: no
key:
    name: xfr
    algorithm: hmac-sha256
    secret: "{secret}"
zone:
    name: {ZONE}
    zonefile: "gslb.example.test.zone"
    request-xfr: {primary[0]}@{primary[1]} xfr
    allow-notify: {primary[0]} xfr
""")
    log = directory / "nsd.log"
    with (directory / "nsd.out").open("wb") as out:
        process = subprocess.Popen([nsd, "-d", "-c", str(directory / "nsd.conf")],
                                   stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT)
    return Peer("nsd", process, port, log)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    for command, package in TOOLS.items():
        need(command, package)
    directory = tmp_path_factory.mktemp("xfr")
    zones = copy_example_zones(directory / "zones")
    factory = ServerFactory(directory)
    peers: list[Peer] = []
    try:
        server = factory(zones, workers=None, subcommand="up", extra=UP_ARGS)
        api_url = re.search(r"control plane API on (http://\S+)", server.log())
        assert api_url
        token = (directory / "var" / "control" / "admin.token").read_text().strip()
        api = Client(api_url.group(1), token, None)
        secrets = {}
        for name, algorithm in (("xfr", "hmac-sha256"), ("xfr512", "hmac-sha512"),
                                ("acme", "hmac-sha256")):
            added = json.loads(gtm(server, directory, "tsig", "add", name, "--algorithm",
                                   algorithm, "--json"))
            secrets[name] = (algorithm, added["secret"])
        knot = start_knot(directory / "knot", server.address, secrets["xfr"][1])
        peers.append(knot)
        nsd = start_nsd(directory / "nsd", server.address, secrets["xfr"][1])
        peers.append(nsd)
        document = api.get("/v1/config")
        doc = document["document"]
        doc["transfers"] = {ZONE: {"allow": ["127.0.0.0/8"], "keys": ["xfr", "xfr512"],
                                   "notify": [f"127.0.0.1:{knot.port}",
                                              f"127.0.0.1:{nsd.port}"]}}
        doc["updates"] = {ZONE: [{"key": "acme", "names": [
            f"_acme-challenge.{ZONE}", f"_acme-challenge.*.{ZONE}"], "types": ["TXT"]}]}
        api.call("PUT", "/v1/config", {"document": doc}, if_match=document["version"])
        yield Lab(server, api, directory, secrets, knot, nsd)
    finally:
        for peer in peers:
            peer.stop()
        factory.stop_all()


def test_knot_and_nsd_receive_the_zone_by_axfr_with_tsig_steered_names_at_their_default(
        lab: Lab) -> None:
    serial = lab.serial()
    for peer in (lab.knot, lab.nsd):
        wait_until(lambda p=peer: p.serial() == serial or None, 20,
                   f"{peer.name} to serve serial {serial}")
        status = peer.query(f"status.{ZONE}", "A")
        assert {r.to_text() for r in status.answer[0]} == {"127.0.0.1"}
        # A steered name: its default answer (no location, every region healthy).
        www = peer.query(f"www.{ZONE}", "A")
        assert www.rcode() == dns.rcode.NOERROR and www.answer, peer.name
    assert "AXFR of gslb.example.test." in lab.server.log()


def test_nsupdate_changes_the_zone_and_the_secondaries_follow_by_ixfr(lab: Lab) -> None:
    nsupdate = need("nsupdate", "bind9-dnsutils")
    before, head = lab.serial(), lab.head()
    host, port = lab.address
    algorithm, secret = lab.secrets["acme"]

    def run(commands: str) -> subprocess.CompletedProcess[str]:
        script = f"server {host} {port}\nzone {ZONE}\n{commands}\nsend\n"
        return subprocess.run([nsupdate, "-y", f"{algorithm}:acme:{secret}"], input=script,
                              capture_output=True, text=True, timeout=20, check=False)

    added = run(f"update add _acme-challenge.{ZONE} 60 TXT \"token-1\"")
    assert added.returncode == 0, added.stdout + added.stderr
    txt = lab.server.query(f"_acme-challenge.{ZONE}", "TXT")
    assert [r.to_text() for r in txt.answer[0]] == ['"token-1"']
    after = lab.serial()
    assert after == before + 1
    audit = lab.api.get("/v1/audit?limit=5")["items"]
    assert any(e["actor"] == "tsig:acme" and e["outcome"] == "ok" for e in audit), audit

    refused = run(f"update add www2.{ZONE} 60 A 192.0.2.9")
    assert refused.returncode != 0 and "REFUSED" in refused.stdout + refused.stderr
    assert lab.server.query(f"www2.{ZONE}", "A").rcode() == dns.rcode.NXDOMAIN

    for peer in (lab.knot, lab.nsd):
        wait_until(lambda p=peer: p.serial() == after or None, 20,
                   f"{peer.name} to serve serial {after} after NOTIFY")
        got = peer.query(f"_acme-challenge.{ZONE}", "TXT")
        assert [r.to_text() for r in got.answer[0]] == ['"token-1"']
    log = lab.server.log()
    assert f"NOTIFY gslb.example.test. serial {after} to 127.0.0.1:{lab.knot.port}: " \
           "acknowledged" in log
    assert log.count(f"IXFR from {before} of gslb.example.test.") >= 2, log[-3000:]

    deleted = run(f"update delete _acme-challenge.{ZONE} TXT")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert lab.server.query(f"_acme-challenge.{ZONE}", "TXT").rcode() == dns.rcode.NXDOMAIN
    assert lab.head() == head + 2


def test_axfr_over_tsig_read_back_with_dnspython_as_external_dns_does(lab: Lab) -> None:
    host, port = lab.address
    zone = dns.zone.Zone(ZONE)
    dns.query.inbound_xfr(host, zone, port=port, timeout=10,
                          query=_axfr_query(lab.keyring("xfr512")))
    assert zone.get_rdataset("status", "A") is not None
    www = zone.get_rdataset("www", "A")
    assert www is not None and len(www) >= 1  # the steered name's default answer
    assert int(zone.get_soa().serial) == lab.serial()


def _axfr_query(key: dns.tsig.Key) -> dns.message.Message:
    query = dns.message.make_query(ZONE, "AXFR")
    query.use_tsig(key, algorithm=key.algorithm)
    return query


def test_bad_tsig_unsigned_updates_and_refused_transfers_get_their_rcodes_and_lose_nothing(
        lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    host, port = lab.address
    head, serial = lab.head(), lab.serial()

    def tcp(message: dns.message.Message) -> dns.message.Message:
        return dns.query.tcp(message, host, port=port, timeout=5)

    # An AXFR with no key: the zone's rule asks for one.
    plain = tcp(dns.message.make_query(ZONE, "AXFR"))
    assert plain.rcode() == dns.rcode.REFUSED
    # A wrong secret under a known name: NOTAUTH with BADSIG, which dnspython reports.
    wrong = dns.tsig.Key("xfr", "c2VjcmV0LXRoYXQtaXMtd3Jvbmc=", "hmac-sha256")
    with pytest.raises(dns.tsig.PeerBadSignature):
        tcp(_axfr_query(wrong))
    unknown = dns.tsig.Key("nobody", "c2VjcmV0LXRoYXQtaXMtd3Jvbmc=", "hmac-sha256")
    with pytest.raises(dns.tsig.PeerBadKey):
        tcp(_axfr_query(unknown))
    # A signature made an hour ago: NOTAUTH with BADTIME, signed.
    stale = dns.update.UpdateMessage(ZONE)
    stale.add(f"_acme-challenge.{ZONE}", 60, "TXT", '"late"')
    stale.use_tsig(lab.keyring("acme"), algorithm=lab.keyring("acme").algorithm)
    real_time = time.time
    monkeypatch.setattr(dns.message.time, "time", lambda: real_time() - 3600)
    wire = stale.to_wire()
    monkeypatch.undo()
    with pytest.raises(dns.tsig.PeerBadTime):
        _send_wire(wire, stale, host, port)
    # An update with no TSIG at all: REFUSED.
    unsigned = dns.update.UpdateMessage(ZONE)
    unsigned.add(f"_acme-challenge.{ZONE}", 60, "TXT", '"unsigned"')
    assert dns.query.udp(unsigned, host, port=port, timeout=5).rcode() == dns.rcode.REFUSED
    # A malformed TSIG record (cut short): FORMERR.
    signed = _axfr_query(lab.keyring("xfr")).to_wire()
    cut = signed[:-4]
    reply = _raw_tcp(cut, host, port)
    assert reply is not None and reply[3] & 0xF == dns.rcode.FORMERR
    # A transfer of a zone not served here: NOTAUTH.
    other = dns.message.make_query("not-served.test.", "AXFR")
    assert tcp(other).rcode() == dns.rcode.NOTAUTH
    # Nothing was stored and everything still answers.
    assert lab.head() == head and lab.serial() == serial
    assert lab.server.query(f"status.{ZONE}", "A").rcode() == dns.rcode.NOERROR
    assert "refused, REFUSED: an update must be signed" in lab.server.log()


def _send_wire(wire: bytes, query: dns.message.Message, host: str, port: int
               ) -> dns.message.Message:
    reply = _raw_tcp(wire, host, port)
    assert reply is not None
    return dns.message.from_wire(reply, keyring=query.keyring, request_mac=query.mac)


def _raw_tcp(wire: bytes, host: str, port: int) -> bytes | None:
    with socket.create_connection((host, port), timeout=5) as sock:
        sock.sendall(framed(wire))
        return read_framed(sock)


def test_certbot_dns_rfc2136_obtains_a_certificate_from_pebble_through_gtm_up(
        lab: Lab) -> None:
    certbot = need("certbot", "certbot python3-certbot-dns-rfc2136")
    from tests.acme.pebble import start_pebble

    host, port = lab.address
    directory = lab.directory / "certbot"
    directory.mkdir()
    pebble = start_pebble(directory, port, free_port())
    try:
        algorithm, secret = lab.secrets["acme"]
        credentials = directory / "rfc2136.ini"
        credentials.write_text(f"dns_rfc2136_server = {host}\ndns_rfc2136_port = {port}\n"
                               f"dns_rfc2136_name = acme\ndns_rfc2136_secret = {secret}\n"
                               f"dns_rfc2136_algorithm = {algorithm.upper()}\n")
        credentials.chmod(0o600)
        name = f"secure.{ZONE}".rstrip(".")
        done = subprocess.run(
            [certbot, "certonly", "--non-interactive", "--agree-tos",
             "--register-unsafely-without-email", "--server", pebble.directory,
             "--dns-rfc2136", "--dns-rfc2136-credentials", str(credentials),
             "--dns-rfc2136-propagation-seconds", "1", "-d", name,
             "--config-dir", str(directory / "etc"), "--work-dir", str(directory / "work"),
             "--logs-dir", str(directory / "logs")],
            env={**os.environ, "REQUESTS_CA_BUNDLE": str(pebble.ca_file)},
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Successfully received certificate" in done.stdout + done.stderr
        chain = directory / "etc" / "live" / name / "fullchain.pem"
        assert chain.read_text().startswith("-----BEGIN CERTIFICATE-----")
    finally:
        pebble.stop()
    # The challenge came and went as two versions by the acme key; nothing is left.
    log = lab.server.log()
    assert f"update of {ZONE} by key acme" in log
    gone = lab.server.query(f"_acme-challenge.secure.{ZONE}", "TXT")
    assert gone.rcode() == dns.rcode.NXDOMAIN
