"""`--workers N`: a supervisor that restarts crashed workers, forwards SIGHUP, stops on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import dns.message
import pytest

from tests.integration.servers import (
    GtmServer,
    ServerFactory,
    children_of,
    framed,
    is_gtm_process,
    query_wire,
    rdata_texts,
    read_framed,
    tcp_connect,
    udp_exchange,
    wait_until,
)

pytestmark = pytest.mark.integration

WORKERS = 2
SPREAD = 40  # fresh source ports; all landing on one of 2 workers has odds 2**-39


def workers_of(server: GtmServer, count: int = WORKERS) -> list[int]:
    return wait_until(
        lambda: pids if len(pids := children_of(server.pid)) == count else None,
        5.0,
        f"{count} workers",
        server.log,
    )


def answer_from_fresh_sockets(server: GtmServer, qname: str, timeout: float) -> list[set[str]]:
    """Ask SPREAD times over UDP and SPREAD / 4 times over TCP, each from a new socket.

    SO_REUSEPORT spreads new source ports over every worker's socket, so every worker
    must be serving for all of these to be answered.
    """
    answers = []
    for index in range(SPREAD):
        wire = udp_exchange(server.address, query_wire(qname, "A", qid=index), timeout)
        assert wire is not None, f"UDP query {index} was not answered in {timeout} s"
        answers.append(rdata_texts(dns.message.from_wire(wire), qname, "A"))
    for index in range(SPREAD // 4):
        with tcp_connect(server.address, timeout) as sock:
            sock.sendall(framed(query_wire(qname, "A", qid=index)))
            body = read_framed(sock)
        assert body is not None, f"TCP query {index} was not answered"
        answers.append(rdata_texts(dns.message.from_wire(body), qname, "A"))
    return answers


def test_a_killed_worker_is_restarted_and_queries_keep_being_answered(
    gtm_server: ServerFactory, zones_dir: Path
) -> None:
    server = gtm_server(zones_dir, workers=WORKERS, config={"watch_interval": 0})
    first = workers_of(server)
    www = {"127.0.10.1", "127.0.10.2"}
    assert all(a == www for a in answer_from_fresh_sockets(server, "www.example.test.", 1.0))

    victim = first[0]
    os.kill(victim, signal.SIGKILL)
    # Queries meant for the dead worker's socket wait in it (the supervisor keeps it
    # open) until the replacement reads them: answered late, not lost.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        assert all(a == www for a in answer_from_fresh_sockets(server, "www.example.test.", 4.0))
        current = children_of(server.pid)
        if len(current) == WORKERS and victim not in current:
            break
    else:
        raise AssertionError(f"worker {victim} was not replaced:\n{server.log()}")
    replacement = (set(current) - set(first)).pop()
    log = server.wait_for_log(rf"worker \d started as pid {replacement}")
    assert f"(pid {victim}) exited with status -9; restarting" in log
    assert not is_gtm_process(victim)

    # Every worker answers promptly again.
    assert all(a == www for a in answer_from_fresh_sockets(server, "www.example.test.", 1.0))


def test_supervisor_forwards_sighup_to_every_worker_and_stops_all_on_sigterm(
    gtm_server: ServerFactory, zones_dir: Path
) -> None:
    server = gtm_server(zones_dir, workers=WORKERS, config={"watch_interval": 0})
    workers = workers_of(server)
    answer_from_fresh_sockets(server, "db.example.test.", 1.0)  # both workers are up

    hosts = zones_dir / "includes" / "hosts.inc"
    hosts.write_text(hosts.read_text().replace("127.0.10.50", "127.0.10.150"))
    server.signal(signal.SIGHUP)
    log = server.wait_for_log(r"reloaded \d+ zones \(0 errors\)", count=WORKERS)
    reloaded_by = {int(pid) for pid in re.findall(r"zones\[(\d+)\] reloaded", log)}
    assert reloaded_by == set(workers)
    answers = answer_from_fresh_sockets(server, "db.example.test.", 1.0)
    assert all(a == {"127.0.10.150"} for a in answers)

    started = time.monotonic()
    assert server.stop() == 0
    assert time.monotonic() - started < 5
    for pid in workers:
        assert not is_gtm_process(pid), f"worker {pid} outlived the supervisor"
