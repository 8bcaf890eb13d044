"""Knot DNS (knotd) as a reference authoritative server on a loopback port.

Started with its own configuration, run directory and database in a test's temporary
directory, stopped by its PID. The tests compare gtm's answers with Knot's for the
same zone, and the delegation lab serves a parent zone with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import pytest

from tests.integration.servers import wait_until

STOP_TIMEOUT = 10.0


def require(binary: str, package: str) -> str:
    """The binary's path; a loud skip outside CI when missing, a failure under CI."""
    path = shutil.which(binary)
    if path is not None:
        return path
    message = f"{binary} is not installed (apt-get install {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must have it")
    pytest.skip(message)


class Knot:
    """One knotd serving zones (origin -> zone file text) on addresses, port given."""

    def __init__(self, directory: Path, zones: dict[str, str], listen: Sequence[str], port: int):
        knotd = require("knotd", "knot")
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.listen = list(listen)
        self.port = port
        zone_lines = []
        for origin, text in zones.items():
            name = origin.rstrip(".") or "."
            (directory / f"{name}.zone").write_text(text)
            zone_lines += [f"  - domain: {name}", f"    file: {directory / name}.zone"]
        listen_lines = [f"  listen: {host}@{port}" for host in self.listen]
        config = "\n".join([
            "server:",
            f"  rundir: {directory}",
            "  tcp-idle-timeout: 2",
            *listen_lines,
            "control:",
            f"  listen: {directory}/knot.sock",
            "database:",
            f"  storage: {directory}/db",
            "template:",
            "  - id: default",
            f"    storage: {directory}",
            "    zonefile-sync: -1",
            "    journal-content: none",
            "zone:",
            *zone_lines,
            "",
        ])
        (directory / "knot.conf").write_text(config)
        self.log_path = directory / "knot.log"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [knotd, "-c", str(directory / "knot.conf")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        try:
            first = next(iter(zones))
            wait_until(lambda: self._answers(first), 10.0, "knotd to answer",
                       self.log)
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _answers(self, origin: str) -> bool | None:
        if self.process.poll() is not None:
            raise AssertionError(f"knotd exited with {self.process.returncode}:\n{self.log()}")
        try:
            reply = self.query(dns.message.make_query(origin, "SOA"))
        except (OSError, dns.exception.Timeout):
            return None
        return True if reply.answer else None

    def query(self, message: dns.message.Message, tcp: bool = False) -> dns.message.Message:
        send = dns.query.tcp if tcp else dns.query.udp
        return send(message, self.listen[0], port=self.port, timeout=2.0)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                self.process.wait(STOP_TIMEOUT)
