"""The regional load balancer: an asyncio L7 (HTTP/1.1) and L4 (TCP) proxy.

It may import gtm's shared parts (errors, log, metrics, workers); gtm never imports it
except lazily from the CLI.
"""

from __future__ import annotations

from regional_lb.node import BalancerHandle, start_balancer

__all__ = ["BalancerHandle", "start_balancer"]
