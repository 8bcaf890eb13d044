"""A real delegation, end to end: a parent zone served by Knot delegates gslb.lab. to two
`gtm serve` nodes on port 53, and a recursive resolver (unbound, with the parent as a
stub zone and its ECS module on) resolves the steered names through them.

Everything runs inside one network namespace made for the test (prefix gtmt<pid>-),
where port 53 on any 127.0.0.0/8 address is ours: the parent at 127.0.0.10, the gtm
nodes at 127.0.0.11 and .12 (the glue), unbound at 127.0.0.1. Clients ask unbound with
an EDNS Client Subnet option; unbound forwards it to the gtm nodes (send-client-subnet),
which steer by it: the answers that arrive through the resolver are the client's
region's. Processes are stopped by PID, the namespace deleted, even after a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.integration.knot_reference import require
from tests.integration.servers import (
    EXAMPLE_ZONES,
    REPO,
    gtm_command,
    subprocess_env,
    wait_until,
)
from tests.steering.geofixture import EXAMPLE_REGION_ADDRESSES as REGION
from tests.steering.geofixture import build_fixture_mmdb

pytestmark = pytest.mark.integration

NETNS = f"gtmt{os.getpid()}-deleg"
PARENT, NS1, NS2, RESOLVER = "127.0.0.10", "127.0.0.11", "127.0.0.12", "127.0.0.1"
PARENT_ZONE = f"""$TTL 300
@         SOA  ns.lab. hostmaster.lab. 2026120201 3600 900 604800 60
@         NS   ns.lab.
ns        A    {PARENT}
; The delegation: NS records and glue, as a registrar publishes them.
gslb      NS   ns1.gslb
gslb      NS   ns2.gslb
ns1.gslb  A    {NS1}
ns2.gslb  A    {NS2}
"""
CHILD_ZONE = f"""$TTL 300
@    SOA  ns1 hostmaster 2026120201 3600 900 1209600 60
@    NS   ns1
@    NS   ns2
ns1  A    {NS1}
ns2  A    {NS2}
"""
RESOLVE = Path(__file__).with_name("netns_resolve.py")


def in_netns(*command: str) -> list[str]:
    return ["ip", "netns", "exec", NETNS, *command]


@dataclass
class Lab:
    directory: Path
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, command: list[str]) -> None:
        log = (self.directory / f"{name}.log").open("wb")
        with log:
            self.processes[name] = subprocess.Popen(
                in_netns(*command), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=subprocess_env(), cwd=self.directory)

    def log(self, name: str) -> str:
        return (self.directory / f"{name}.log").read_text(errors="replace")

    def logs(self) -> str:
        return "\n".join(f"--- {name}\n{self.log(name)}" for name in self.processes)

    def ask(self, *questions: dict[str, object]) -> list[dict[str, object]]:
        """Each question through a resolver inside the namespace (unbound by default)."""
        batch = [{"server": RESOLVER, "port": 53, "rdtype": "A", "subnet": None, **q}
                 for q in questions]
        done = subprocess.run(in_netns(sys.executable, str(RESOLVE), json.dumps(batch)),
                              capture_output=True, text=True, timeout=60,
                              env=subprocess_env(), cwd=REPO, check=False)
        assert done.returncode == 0, done.stderr + self.logs()
        answers: list[dict[str, object]] = json.loads(done.stdout)
        return answers

    def stop(self, name: str) -> None:
        process = self.processes[name]
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)


def requirements() -> None:
    for binary, package in (("ip", "iproute2"), ("knotd", "knot"), ("unbound", "unbound")):
        require(binary, package)
    if os.geteuid() != 0:
        message = "the delegation lab needs root (a network namespace, port 53)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def remove_stale_namespaces() -> None:
    """A namespace of ours left by a test run that was killed (its pid is gone)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                            check=False).stdout
    for name in re.findall(r"^(gtmt(\d+)-deleg)\b", listed, re.MULTILINE):
        if not Path(f"/proc/{name[1]}").exists():
            subprocess.run(["ip", "netns", "delete", name[0]], check=False)


def unbound_config(directory: Path) -> str:
    return f"""server:
    interface: {RESOLVER}
    port: 53
    username: ""
    chroot: ""
    directory: "{directory}"
    pidfile: ""
    use-syslog: no
    logfile: ""
    verbosity: 1
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    # ECS (RFC 7871): the subnet module first; ECS goes to our two name servers.
    module-config: "subnetcache validator iterator"
    send-client-subnet: {NS1}
    send-client-subnet: {NS2}
    max-client-subnet-ipv4: 24
    # No trust anchor: lab. is unsigned and declared insecure.
    domain-insecure: "lab."
    qname-minimisation: no
    cache-max-ttl: 0
    cache-max-negative-ttl: 0

stub-zone:
    name: "lab."
    stub-addr: {PARENT}@53
"""


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    requirements()
    remove_stale_namespaces()
    directory = tmp_path_factory.mktemp("delegation")
    subprocess.run(["ip", "netns", "add", NETNS], check=True)
    lab = Lab(directory)
    try:
        subprocess.run(in_netns("ip", "link", "set", "lo", "up"), check=True)
        zones = directory / "zones"
        zones.mkdir()
        (zones / "gslb.lab.zone").write_text(CHILD_ZONE)
        # The example's steering, as steered names of the delegated zone.
        steering = (EXAMPLE_ZONES / "gslb.example.test.steering.toml").read_text()
        (zones / "gslb.lab.steering.toml").write_text(steering)
        shutil.copy(EXAMPLE_ZONES / "latency.json", zones / "latency.json")
        mmdb = build_fixture_mmdb(directory / "geo")
        for name, address in (("ns1", NS1), ("ns2", NS2)):
            lab.start(name, gtm_command("serve", "--zones", str(zones), "--listen",
                                        f"{address}:53", "--workers", "1", "--geoip",
                                        str(mmdb), "--nsid", name))
        (directory / "parent").mkdir()
        (directory / "parent" / "lab.zone").write_text(PARENT_ZONE)
        (directory / "knot.conf").write_text(knot_config(directory / "parent"))
        lab.start("knot", [require("knotd", "knot"), "-c", str(directory / "knot.conf")])
        (directory / "unbound.conf").write_text(unbound_config(directory))
        lab.start("unbound", [require("unbound", "unbound"), "-d", "-c",
                              str(directory / "unbound.conf")])
        for name in ("ns1", "ns2"):
            wait_until(lambda n=name: "listening on" in lab.log(n) or None, 15,
                       f"gtm {name} to listen", lab.logs)
        wait_until(lambda: ready(lab), 20, "the resolver to answer through the delegation",
                   lab.logs)
        yield lab
    finally:
        for name in list(lab.processes):
            lab.stop(name)
        subprocess.run(["ip", "netns", "delete", NETNS], check=False)


def knot_config(directory: Path) -> str:
    return f"""server:
  rundir: {directory}
  listen: {PARENT}@53
control:
  listen: {directory}/knot.sock
database:
  storage: {directory}/db
template:
  - id: default
    storage: {directory}
    zonefile-sync: -1
    journal-content: none
zone:
  - domain: lab
    file: {directory}/lab.zone
"""


def ready(lab: Lab) -> bool | None:
    for name, process in lab.processes.items():
        if process.poll() is not None:
            raise AssertionError(f"{name} exited with {process.returncode}\n{lab.logs()}")
    (reply,) = lab.ask({"qname": "www.gslb.lab.", "subnet": "24.9.0.0/24"})
    return True if reply.get("rcode") == "NOERROR" and reply.get("answer") else None


# (subnet the client sends, its country in the fixture database, the region of www)
CLIENTS = [
    ("20.1.2.0/24", "JP", "ap-northeast"),
    ("21.1.2.0/24", "BR", "sa-east"),
    ("22.1.2.0/24", "FR", "eu-west"),
    ("23.1.0.0/24", "US", "us-east"),
]


def test_the_parent_delegates_to_both_gtm_nodes(lab: Lab) -> None:
    referral, = lab.ask({"qname": "gslb.lab.", "rdtype": "NS", "server": PARENT})
    assert referral["rcode"] == "NOERROR" and "AA" not in str(referral["flags"])
    through, = lab.ask({"qname": "gslb.lab.", "rdtype": "NS"})
    assert through["answer"] == ["ns1.gslb.lab.", "ns2.gslb.lab."]
    assert "RA" in str(through["flags"])  # from the recursive resolver
    for node in (NS1, NS2):  # both authoritative for the delegated zone
        soa, = lab.ask({"qname": "gslb.lab.", "rdtype": "SOA", "server": node})
        assert soa["rcode"] == "NOERROR" and "AA" in str(soa["flags"])


def test_steered_answers_arrive_through_the_resolver_by_the_clients_subnet(lab: Lab) -> None:
    replies = lab.ask(*({"qname": "www.gslb.lab.", "subnet": subnet}
                        for subnet, _, _ in CLIENTS))
    for (subnet, country, region), reply in zip(CLIENTS, replies, strict=True):
        assert reply["rcode"] == "NOERROR", (subnet, reply)
        answered = set(reply["answer"])  # type: ignore[arg-type]
        assert answered and answered <= REGION[region], (country, subnet, reply)
        # unbound tells the client which subnet the answer was for, and its scope.
        assert str(reply["ecs"]).startswith(subnet + "/"), reply
    # Without ECS from the client, unbound sends the client's own /24 (127.0.0.0/24):
    # loopback is located nowhere, so www's default region.
    plain, = lab.ask({"qname": "www.gslb.lab."})
    assert set(plain["answer"]) <= REGION["us-east"], plain  # type: ignore[arg-type]


def test_the_resolver_keeps_answering_when_one_node_stops(lab: Lab) -> None:
    lab.stop("ns1")
    replies = lab.ask(*({"qname": "www.gslb.lab.", "subnet": subnet}
                        for subnet in ("20.7.7.0/24", "22.200.0.0/24")))
    assert set(replies[0]["answer"]) <= REGION["ap-northeast"], replies  # type: ignore[arg-type]
    assert set(replies[1]["answer"]) <= REGION["eu-west"], replies  # type: ignore[arg-type]
    assert all(reply["answer"] for reply in replies), replies


