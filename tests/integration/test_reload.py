"""Zone reloads while queries are in flight: by SIGHUP and by the directory watcher."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.rcode
import pytest

from tests.integration.servers import GtmServer, ServerFactory, rdata_texts, wait_until

pytestmark = pytest.mark.integration

QNAME = "host.reload.test."
MAX_QUERIES = 2000
MAX_SECONDS = 10.0


def reload_zone(serial: int) -> str:
    return (
        "$TTL 60\n"
        f"@     SOA  ns1 hostmaster {serial} 7200 1800 1209600 60\n"
        "@     NS   ns1\n"
        "ns1   A    127.0.0.1\n"
        f"host  A    127.0.50.{serial}\n"
    )


# Line 5 holds an address that is not one; the reason must name it.
BROKEN_ZONE = reload_zone(9).replace("127.0.50.9", "127.0.50.999")
BROKEN_LINE = 5


def replace_file(path: Path, text: str, scratch: Path) -> None:
    """Write atomically (rename), so no reader ever sees a half-written file."""
    temporary = scratch / (path.name + ".new")
    temporary.write_text(text)
    os.replace(temporary, path)


@dataclass
class QueryLoop:
    """Queries QNAME from a thread, alternating UDP and TCP, until stopped or a bound is hit.

    Every query is sent once, with no retry: each must be answered.
    """

    server: GtmServer
    answers: list[frozenset[str]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def __enter__(self) -> QueryLoop:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        assert self.thread is not None
        self.thread.join(timeout=MAX_SECONDS + 5)
        assert not self.thread.is_alive(), "query loop did not stop"

    def _run(self) -> None:
        deadline = time.monotonic() + MAX_SECONDS
        for count in range(MAX_QUERIES):
            if self.stop.is_set() or time.monotonic() > deadline:
                return
            tcp = count % 2 == 1
            try:
                response = self.server.query(QNAME, "A", tcp=tcp, timeout=2.0)
            except (OSError, dns.exception.DNSException) as exc:
                self.failures.append(f"query {count} ({'TCP' if tcp else 'UDP'}): {exc!r}")
                continue
            if response.rcode() != dns.rcode.NOERROR:
                self.failures.append(f"query {count}: {dns.rcode.to_text(response.rcode())}")
                continue
            self.answers.append(frozenset(rdata_texts(response, QNAME, "A")))

    def wait_for(self, count: int, timeout: float = 5.0) -> None:
        wait_until(lambda: True if len(self.answers) >= count else None, timeout, "queries")

    def wait_for_answer(self, expected: frozenset[str], timeout: float = 5.0) -> None:
        wait_until(
            lambda: True if self.answers and self.answers[-1] == expected else None,
            timeout,
            f"answer {sorted(expected)}",
        )

    def check(self, old: frozenset[str], new: frozenset[str]) -> None:
        """No query failed; every answer was old or new data, and never old after new."""
        assert self.failures == []
        assert self.answers, "no query was answered"
        assert set(self.answers) <= {old, new}, set(self.answers) - {old, new}
        first_new = self.answers.index(new)
        assert old not in self.answers[first_new:], "old data served after the new data"
        assert self.answers[-1] == new


def data(serial: int) -> frozenset[str]:
    return frozenset({f"127.0.50.{serial}"})


@pytest.fixture
def reload_zones(zones_dir: Path) -> Path:
    (zones_dir / "reload.test.zone").write_text(reload_zone(1))
    return zones_dir


def test_sighup_reloads_under_queries_and_a_bad_edit_keeps_the_old_zone(
    gtm_server: ServerFactory, reload_zones: Path, tmp_path: Path
) -> None:
    server = gtm_server(reload_zones, config={"watch_interval": 0})  # only SIGHUP reloads
    zone_file = reload_zones / "reload.test.zone"
    with QueryLoop(server) as loop:
        loop.wait_for(200)
        replace_file(zone_file, reload_zone(2), tmp_path)
        server.signal(signal.SIGHUP)
        loop.wait_for_answer(data(2))
        loop.wait_for(len(loop.answers) + 200)
    loop.check(old=data(1), new=data(2))
    server.wait_for_log(r"reloaded \d+ zones \(0 errors\)")

    replace_file(zone_file, BROKEN_ZONE, tmp_path)
    server.signal(signal.SIGHUP)
    log = server.wait_for_log(r"reloaded \d+ zones \(1 error\)")
    # file:line: reason, and what is served instead.
    reported = rf"{re.escape(str(zone_file))}:{BROKEN_LINE}: \S.*; still serving serial 2"
    assert re.search(reported, log), log
    assert server.addresses(QNAME) == set(data(2))
    assert server.addresses("www.example.test.") == {"127.0.10.1", "127.0.10.2"}


def test_watcher_reloads_under_queries_and_recovers_from_a_bad_edit(
    gtm_server: ServerFactory, reload_zones: Path, tmp_path: Path
) -> None:
    server = gtm_server(reload_zones, config={"watch_interval": 0.2})
    zone_file = reload_zones / "reload.test.zone"
    with QueryLoop(server) as loop:
        loop.wait_for(200)
        replace_file(zone_file, reload_zone(2), tmp_path)
        loop.wait_for_answer(data(2))
        loop.wait_for(len(loop.answers) + 200)
    loop.check(old=data(1), new=data(2))

    zone_file.write_text(BROKEN_ZONE)  # in place, as an editor would
    log = server.wait_for_log(r"reloaded \d+ zones \(1 error\)")
    assert f"{zone_file}:{BROKEN_LINE}: " in log
    assert "still serving serial 2" in log
    assert server.addresses(QNAME) == set(data(2))

    with QueryLoop(server) as loop:
        loop.wait_for(20)
        zone_file.write_text(reload_zone(3))
        loop.wait_for_answer(data(3))
    loop.check(old=data(2), new=data(3))
