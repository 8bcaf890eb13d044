"""Listening sockets for DNS workers: one UDP and one TCP socket per address per worker.

Each worker gets sockets of its own, all bound with SO_REUSEPORT to the same port,
so the kernel spreads queries over the workers. They are all created before any
worker starts, so a port of 0 resolves once and every worker shares the result.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

from gtm.config.settings import Listen
from gtm.errors import ServeError
from gtm.sockopts import listen_backlog

UDP_BUFFER = 4 * 1024 * 1024
PORT_ATTEMPTS = 20  # for port 0: fresh kernel choices until one is free for TCP too


@dataclass(frozen=True)
class WorkerSockets:
    udp: tuple[socket.socket, ...]
    tcp: tuple[socket.socket, ...]

    def close(self) -> None:
        for sock in (*self.udp, *self.tcp):
            sock.close()


def bind_workers(listen: tuple[Listen, ...], workers: int) -> list[WorkerSockets]:
    """Sockets for every worker; on any failure, close what was opened and say why."""
    per_worker: list[tuple[list[socket.socket], list[socket.socket]]] = [
        ([], []) for _ in range(workers)
    ]
    try:
        for address in listen:
            _bind_address(address, per_worker)
    except (OSError, ServeError):
        for udp, tcp in per_worker:
            for sock in (*udp, *tcp):
                sock.close()
        raise
    return [WorkerSockets(tuple(u), tuple(t)) for u, t in per_worker]


def _bind_address(
    address: Listen, per_worker: list[tuple[list[socket.socket], list[socket.socket]]]
) -> None:
    """UDP and TCP sockets on one address, for every worker.

    TCP takes the same port as UDP, even when the port was chosen by the kernel. A
    port the kernel found free for UDP may be taken for TCP (a connection in
    TIME_WAIT, say), so a kernel-chosen port is tried again with a fresh choice.
    """
    attempts = PORT_ATTEMPTS if address.port == 0 else 1
    for attempt in range(attempts):
        udp: list[list[socket.socket]] = [[] for _ in per_worker]
        tcp: list[list[socket.socket]] = [[] for _ in per_worker]
        try:
            udp_port = _bind_group(address, socket.SOCK_DGRAM, udp)
            _bind_group(Listen(address.host, udp_port), socket.SOCK_STREAM, tcp)
        except ServeError:
            for bucket in (*udp, *tcp):
                for sock in bucket:
                    sock.close()
            if attempt + 1 == attempts:
                raise
            continue
        for (worker_udp, worker_tcp), new_udp, new_tcp in zip(per_worker, udp, tcp, strict=True):
            worker_udp.extend(new_udp)
            worker_tcp.extend(new_tcp)
        return


def _bind_group(address: Listen, kind: int, targets: list[list[socket.socket]]) -> int:
    port = address.port
    for bucket in targets:
        sock = _bind_one(Listen(address.host, port), kind)
        bucket.append(sock)
        port = sock.getsockname()[1]
    return port


def _bind_one(address: Listen, kind: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_DGRAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address.host, address.port))
        if kind == socket.SOCK_STREAM:
            sock.listen(listen_backlog())
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        proto = "UDP" if kind == socket.SOCK_DGRAM else "TCP"
        hint = ""
        if exc.errno == errno.EACCES and 0 < address.port < 1024:
            hint = ("; a port below 1024 needs CAP_NET_BIND_SERVICE (the units in "
                    "deploy/systemd/ give it to an unprivileged user) or root")
        raise ServeError(f"cannot listen on {address} ({proto}): {exc.strerror}{hint}") from exc
    return sock
