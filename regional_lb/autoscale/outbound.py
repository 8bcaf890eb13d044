"""Outbound calls of the scaler (Prometheus, webhooks, notifications) reach only
``[lb.autoscale] outbound_networks`` (default: all but link-local, unspecified and
multicast, as backends: gtm.config.networks). A host name is resolved at each call and
every address it resolves to is checked, so DNS cannot point a call at the metadata
service later."""

from __future__ import annotations

import asyncio
import socket
from typing import Any
from urllib.parse import urlsplit

from gtm.config.networks import check_backend_address
from gtm.errors import ConfigError, GtmError


async def checked_host(url: str, outbound: tuple[Any, ...]) -> None:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                         type=socket.SOCK_STREAM)
    for info in infos:
        try:
            check_backend_address(str(info[4][0]), outbound)
        except ConfigError as exc:
            raise GtmError(f"{host} resolves to {info[4][0]}, outside outbound_networks: "
                           f"{exc.reason}") from exc
