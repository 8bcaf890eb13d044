"""The regional load balancer: an asyncio L7 (HTTP/1.1) and L4 (TCP) proxy.

It may import gtm's shared core, ACME, the health probes and the check model
(docs/ARCHITECTURE.md, .importlinter); of gtm only gtm.up imports it. Its `gtm`
subcommands come from regional_lb/cli.py through the `gtm.cli` entry-point group.
"""

from __future__ import annotations

from regional_lb.node import BalancerHandle, start_balancer

__all__ = ["BalancerHandle", "start_balancer"]
