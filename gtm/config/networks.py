"""Which addresses a backend may have: one check for every way a backend arrives.

The balancer's config file, its admin API, and (as they come) the control plane's
``lb`` section, auto-scaling and Terraform all add backends; each calls
:func:`check_backend_address` with the ``allowed_backend_networks`` in force, so an
address refused by one is refused by all. The default refuses the addresses a
balancer should never be pointed at by mistake or by an attacker: link-local (cloud
metadata services live at 169.254.169.254), unspecified (0.0.0.0 and :: reach this
host) and multicast. It lives in ``gtm`` because the control plane must not import
``regional_lb``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from gtm.errors import ConfigError

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SETTING = "allowed_backend_networks"
REFUSED_BY_DEFAULT = ("169.254.0.0/16", "fe80::/10",   # link-local
                      "0.0.0.0/32", "::/128",          # unspecified
                      "224.0.0.0/4", "ff00::/8")       # multicast


def _everything_except(refused: Iterable[str]) -> tuple[IpNetwork, ...]:
    """The address space minus ``refused``, as a list of networks (an allow list)."""
    holes = [ipaddress.ip_network(text) for text in refused]
    allowed: list[IpNetwork] = []
    for whole in (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")):
        pieces: list[Any] = [whole]
        for hole in (h for h in holes if h.version == whole.version):
            pieces = [part for piece in pieces
                      for part in ((piece,) if not hole.subnet_of(piece)
                                   else piece.address_exclude(hole))]
        allowed.extend(ipaddress.collapse_addresses(pieces))
    return tuple(allowed)


DEFAULT_ALLOWED_BACKEND_NETWORKS = _everything_except(REFUSED_BY_DEFAULT)


def check_backend_address(host: str, allowed: tuple[IpNetwork, ...]) -> None:
    """Raise ConfigError unless ``host`` (an IP address) is inside one of ``allowed``.

    An IPv4-mapped IPv6 address (::ffff:169.254.169.254) is checked as the IPv4 address
    it reaches, so the mapping cannot smuggle a refused address past the list.
    """
    try:
        address: IpAddress = ipaddress.ip_address(host)
    except ValueError as exc:
        raise ConfigError(f"{host!r} is not an IP address") from exc
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        elif address.scope_id is not None:  # fe80::1%eth0: the scope names no other network
            address = ipaddress.IPv6Address(str(address).partition("%")[0])
    if not any(address in network for network in allowed):
        default = " (the default refuses link-local, unspecified and multicast addresses)" \
            if allowed == DEFAULT_ALLOWED_BACKEND_NETWORKS else ""
        raise ConfigError(f"{host} is not in {SETTING}{default}")
