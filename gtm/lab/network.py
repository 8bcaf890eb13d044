"""The lab's network, in namespaces only: build, faults, and removal after anything.

Topology (netns mode): the core namespace holds a bridge joining the control plane,
the DNS nodes and the vantage points, and one routed veth per region. Policy routing
in the core sends every packet into or out of region N through its TUN device
``<prefix>tN``, where the delay line (gtm.lab.delay) holds it; packets the delay line
writes back are routed on to the region (table 100+N) or out of it (main table).
Nothing is created in, or routed to, the host's own namespace.
"""

from __future__ import annotations

from gtm import log
from gtm.lab.plan import BRIDGE_PREFIX_LEN, GATEWAY, LabPlan, Region
from gtm.lab.system import (
    ProcessId,
    ip,
    namespaces_with_prefix,
    netns_inode,
    nft,
    pids_in_netns,
    run,
    signal_all,
    wait_gone,
)

NFT_TABLE = "gtmlab"  # the one nftables table the lab adds (ip family), in a region only
INBOUND_TABLE = 100   # + region index: what the delay line writes back, to the region
OUTBOUND_TABLE = 200  # + region index: what the region sends, into the delay line
CORE_SYSCTLS = ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
                "net.ipv4.conf.default.rp_filter=0", "net.ipv4.conf.all.send_redirects=0",
                "net.ipv4.conf.default.send_redirects=0",
                # the core's own probes come back out of the TUN devices with its
                # address as source: accept them rather than drop them as martians
                "net.ipv4.conf.all.accept_local=1", "net.ipv4.conf.default.accept_local=1")


def build(plan: LabPlan) -> None:
    """Namespaces, bridge, veths, addresses and routes (the TUN routes come later,
    once the delay lines have made their devices: `route_region`)."""
    assert plan.core is not None and plan.bridge is not None
    for namespace in plan.namespaces:
        run(["ip", "netns", "add", namespace])
        ip(namespace, "link", "set", "lo", "up")
    core = plan.core
    run(["ip", "netns", "exec", core, "sysctl", "-q", "-w", *CORE_SYSCTLS])
    ip(core, "link", "add", plan.bridge, "type", "bridge")
    ip(core, "addr", "add", f"{GATEWAY}/{BRIDGE_PREFIX_LEN}", "dev", plan.bridge)
    ip(core, "link", "set", plan.bridge, "up")
    assert plan.control_namespace is not None and plan.control_link is not None
    _bridged(plan, plan.control_link, plan.control_namespace,
             f"{plan.control_address}/{BRIDGE_PREFIX_LEN}")
    for node in plan.nodes:
        assert node.namespace is not None and node.link is not None
        _bridged(plan, node.link, node.namespace, f"{node.address}/{BRIDGE_PREFIX_LEN}")
    for vantage in plan.vantages:
        assert vantage.namespace is not None and vantage.link is not None
        # A /32 and a route through the gateway: everything it sends, to the DNS nodes
        # on the bridge too, leaves from its public address, as a resolver's would.
        _bridged(plan, vantage.link, vantage.namespace, f"{vantage.address}/32")
        ip(core, "route", "add", f"{vantage.address}/32", "dev", plan.bridge)
    for region in plan.regions:
        _region_link(plan, region)


def _veth(core: str, link: str, namespace: str) -> None:
    ip(core, "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", namespace)


def _bridged(plan: LabPlan, link: str, namespace: str, address: str) -> None:
    assert plan.core is not None and plan.bridge is not None
    _veth(plan.core, link, namespace)
    ip(plan.core, "link", "set", link, "master", plan.bridge, "up")
    _member_side(namespace, [address])


def _member_side(namespace: str, addresses: list[str]) -> None:
    for address in addresses:
        ip(namespace, "addr", "add", address, "dev", "eth0")
    ip(namespace, "link", "set", "eth0", "up")
    ip(namespace, "route", "replace", GATEWAY, "dev", "eth0", "scope", "link")
    ip(namespace, "route", "replace", "default", "via", GATEWAY, "dev", "eth0")


def _region_link(plan: LabPlan, region: Region) -> None:
    assert plan.core is not None and region.link is not None and region.namespace
    _veth(plan.core, region.link, region.namespace)
    ip(plan.core, "addr", "add", f"{GATEWAY}/32", "dev", region.link)
    ip(plan.core, "link", "set", region.link, "up")
    _member_side(region.namespace, [f"{address}/32" for address in region.addresses])
    ip(plan.core, "rule", "add", "iif", region.link, "lookup",
       str(OUTBOUND_TABLE + region.index), "pref", "200")
    if region.tun is not None:
        ip(plan.core, "rule", "add", "iif", region.tun, "lookup",
           str(INBOUND_TABLE + region.index), "pref", "100")


def region_network(region: Region) -> str:
    return f"198.18.{region.index}.0/24"


def route_region(plan: LabPlan, region: Region) -> None:
    """Once its TUN device exists: into the region through the delay line, and what the
    delay line writes back on to the region (the routes a link cut flushes, too)."""
    assert plan.core is not None and region.tun is not None and region.link is not None
    core, net = plan.core, region_network(region)
    ip(core, "link", "set", region.tun, "up")
    ip(core, "route", "replace", net, "dev", region.tun)
    ip(core, "route", "replace", net, "dev", region.link, "table",
       str(INBOUND_TABLE + region.index))
    ip(core, "route", "replace", "default", "dev", region.tun, "table",
       str(OUTBOUND_TABLE + region.index))


def cut_link(plan: LabPlan, region: Region) -> None:
    assert plan.core is not None and region.link is not None
    ip(plan.core, "link", "set", region.link, "down")


def restore_link(plan: LabPlan, region: Region) -> None:
    assert plan.core is not None and region.link is not None
    ip(plan.core, "link", "set", region.link, "up")
    route_region(plan, region)  # an administrative down flushed the routes over it


def partition(region: Region, blocked: list[str]) -> None:
    """Drop, inside the region, everything from and to ``blocked`` addresses."""
    assert region.namespace is not None
    addresses = ", ".join(blocked)
    nft(region.namespace, f"""
table ip {NFT_TABLE}
delete table ip {NFT_TABLE}
table ip {NFT_TABLE} {{
  chain input {{
    type filter hook input priority 0; policy accept;
    ip saddr {{ {addresses} }} drop
  }}
  chain output {{
    type filter hook output priority 0; policy accept;
    ip daddr {{ {addresses} }} drop
  }}
}}
""")


def heal(region: Region) -> None:
    assert region.namespace is not None
    # Declaring the table first makes the delete succeed when there is none.
    nft(region.namespace, f"table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n")


def teardown(prefix: str, recorded: list[ProcessId], grace: float = 2.0) -> list[str]:
    """Remove everything a lab with ``prefix`` made, whatever state it was left in:
    the recorded processes (those still ours), every process inside its namespaces,
    its nft tables, then the namespaces (and with them their links, routes and any
    qdisc). Safe to run again. Returns what could not be removed."""
    namespaces = namespaces_with_prefix(prefix)
    inside = [p for name in namespaces for p in map(ProcessId.of, pids_in_netns(name)) if p]
    signal_all([*recorded, *inside], grace)
    left: list[str] = []
    if not wait_gone([*recorded, *inside], timeout=5.0):
        left.append("processes still running after SIGKILL: " + ", ".join(
            str(p.pid) for p in [*recorded, *inside] if p.alive()))
    for name in namespaces:
        nft(name, f"table ip {NFT_TABLE}\ndelete table ip {NFT_TABLE}\n", check=False)
        run(["ip", "netns", "delete", name], check=False)
        if netns_inode(name) is not None:
            left.append(f"namespace {name}")
    log.cli.debug("lab %s: removed namespaces %s", prefix, namespaces)
    return left
