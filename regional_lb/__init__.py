"""The regional load balancer: an asyncio L7 (HTTP/1.1) and L4 (TCP) proxy.

It may import gtm's shared core, ACME, the health probes and the check model
(docs/ARCHITECTURE.md, .importlinter); of gtm only gtm.up imports it. Its `gtm`
subcommands come from regional_lb/cli.py through the `gtm.cli` entry-point group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from regional_lb.node import BalancerHandle, start_balancer

__all__ = ["BalancerHandle", "start_balancer"]


def __getattr__(name: str) -> Any:
    """The running parts load on first use: gtm loads regional_lb.sections (the `lb`
    section's validator) in every process that compiles a document, DNS nodes included,
    and must not pay for the proxy's imports there."""
    if name in __all__:
        from regional_lb import node

        return getattr(node, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
