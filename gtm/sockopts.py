"""Socket settings shared by the DNS node and the balancer."""

from __future__ import annotations

from pathlib import Path

SOMAXCONN = Path("/proc/sys/net/core/somaxconn")
FALLBACK_BACKLOG = 4096


def listen_backlog(configured: int = 0) -> int:
    """The listen queue length: as configured, else the kernel's maximum.

    asyncio's create_server(sock=...) calls listen() again with its own default of 100,
    so every server must pass this value there too, not only to the first listen().
    """
    if configured > 0:
        return configured
    try:
        return max(int(SOMAXCONN.read_text()), 128)
    except (OSError, ValueError):
        return FALLBACK_BACKLOG
