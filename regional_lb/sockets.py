"""Listening sockets: bound before workers fork, shared through SO_REUSEPORT."""

from __future__ import annotations

import socket

from gtm.config.settings import Listen
from gtm.errors import ServeError
from gtm.sockopts import listen_backlog
from regional_lb.config import LbConfig, ListenerSpec


def listener_key(spec: ListenerSpec) -> str:
    """Same key, same server across a reload; a TLS change makes a new one (new context)."""
    if spec.tls is not None:
        return f"{address_key(spec)}:tls:{spec.tls.key}"
    return address_key(spec)


def address_key(spec: ListenerSpec) -> str:
    """Where and how a listener accepts: servers with the same one can share a socket."""
    return f"{spec.mode}:{spec.bind}"


def bind_listener(address: Listen, backlog: int = 0) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address.host, address.port))
        sock.listen(listen_backlog(backlog))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ServeError(f"cannot listen on {address} (TCP): {exc.strerror}") from exc
    return sock


def bind_workers(config: LbConfig, workers: int) -> tuple[LbConfig, list[dict[str, socket.socket]]]:
    """Sockets for every worker; a port of 0 is resolved once and shared by all of them.

    Returns the config with resolved ports (so reloads keep the same sockets) and,
    per worker, listener key -> socket.
    """
    from dataclasses import replace

    per_worker: list[dict[str, socket.socket]] = [{} for _ in range(workers)]
    listeners = []
    try:
        for spec in config.listeners:
            address = spec.bind
            for bucket in per_worker:
                sock = bind_listener(address, spec.backlog)
                address = Listen(address.host, sock.getsockname()[1])
                resolved = replace(spec, bind=address)
                bucket[listener_key(resolved)] = sock
            listeners.append(resolved)
    except ServeError:
        for bucket in per_worker:
            for sock in bucket.values():
                sock.close()
        raise
    return replace(config, listeners=tuple(listeners)), per_worker
