"""Real `gtm` server processes for the integration tests, and small DNS client helpers.

A server is started with ``--listen HOST:0`` and its bound port is read from its own
log line ``listening on HOST port N``, so there is no window in which another
process can take a port picked in advance. The server's stderr goes to a file, which
tests read to check what it logged. Every process is stopped by its PID.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rdatatype

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
QUERY_TIMEOUT = 2.0
REPO = Path(__file__).resolve().parents[2]
EXAMPLE_ZONES = REPO / "zones"
LISTENING = re.compile(r"listening on (\S+) port (\d+)")

T = TypeVar("T")


def gtm_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "gtm.cli", *args]


def subprocess_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("GTM_LOG_LEVEL", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass
class GtmServer:
    """One running `gtm serve` (or `gtm up`) process."""

    process: subprocess.Popen[bytes]
    log_path: Path
    ports: dict[str, int] = field(default_factory=dict)  # listen host -> bound port

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def host(self) -> str:
        return next(iter(self.ports))

    @property
    def port(self) -> int:
        return self.ports[self.host]

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def query(
        self,
        qname: str,
        rdtype: str = "A",
        *,
        tcp: bool = False,
        host: str | None = None,
        timeout: float = QUERY_TIMEOUT,
        **make_query_args: object,
    ) -> dns.message.Message:
        host = host or self.host
        request = dns.message.make_query(qname, rdtype, **make_query_args)  # type: ignore[arg-type]
        send = dns.query.tcp if tcp else dns.query.udp
        return send(request, host, port=self.ports[host], timeout=timeout)

    def addresses(self, qname: str, rdtype: str = "A", **kwargs: object) -> set[str]:
        """The answer's data for qname (after any CNAME chain), as text."""
        return rdata_texts(self.query(qname, rdtype, **kwargs), qname, rdtype)  # type: ignore[arg-type]

    def wait_for_log(self, pattern: str, *, count: int = 1, timeout: float = 5.0) -> str:
        """Wait until the log matches pattern at least count times; return the log."""
        regex = re.compile(pattern)

        def matched() -> str | None:
            text = self.log()
            return text if len(regex.findall(text)) >= count else None

        return wait_until(
            matched,
            timeout,
            f"server log to match {pattern!r} {count} time(s)",
            lambda: self.log(),
        )

    def signal(self, signum: int) -> None:
        os.kill(self.pid, signum)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int:
        """SIGTERM, then the exit code; SIGKILL (and a failure) if it does not stop."""
        if self.process.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"gtm pid {self.pid} ignored SIGTERM for {timeout} s") from None

    def kill(self) -> None:
        """Last resort at teardown: SIGKILL the server and any worker it left behind."""
        workers = children_of(self.pid)
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(STOP_TIMEOUT)
        for pid in workers:
            kill_if_gtm(pid)


def start_gtm(
    args: Sequence[str],
    log_path: Path,
    *,
    listen_hosts: Iterable[str] = ("127.0.0.1",),
    cwd: Path | None = None,
    command: Sequence[str] | None = None,
    timeout: float = START_TIMEOUT,
) -> GtmServer:
    """Start gtm with args, wait until every listen host answers a query over UDP and TCP.

    The caller owns the returned server and must stop it (the fixtures do).
    """
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            list(command or gtm_command()) + list(args),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=subprocess_env(),
        )
    server = GtmServer(process, log_path)
    try:
        _wait_ready(server, list(listen_hosts), time.monotonic() + timeout)
    except BaseException:
        server.kill()
        raise
    return server


def _wait_ready(server: GtmServer, hosts: list[str], deadline: float) -> None:
    while time.monotonic() < deadline:
        code = server.process.poll()
        if code is not None:
            raise AssertionError(f"gtm exited with {code} at startup:\n{server.log()}")
        found = {h: int(p) for h, p in LISTENING.findall(server.log())}
        if all(h in found for h in hosts):
            server.ports = {h: found[h] for h in hosts}
            if all(_answers(server, h) for h in hosts):
                return
        time.sleep(0.05)
    raise AssertionError(f"gtm did not answer within the start timeout:\n{server.log()}")


def _answers(server: GtmServer, host: str) -> bool:
    """Any response at all (even REFUSED) shows the transport is up."""
    try:
        server.query("ready.invalid.", "SOA", host=host, timeout=0.5)
        server.query("ready.invalid.", "SOA", host=host, timeout=0.5, tcp=True)
    except (OSError, dns.exception.Timeout):
        return False
    return True


def wait_until(
    probe: Callable[[], T | None],
    timeout: float,
    what: str,
    explain: Callable[[], str] = lambda: "",
    interval: float = 0.05,
) -> T:
    """Poll probe until it returns something other than None, at most timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{explain()}")
        time.sleep(interval)


def copy_example_zones(target: Path) -> Path:
    shutil.copytree(EXAMPLE_ZONES, target)
    return target


def write_config(path: Path, **dns_settings: object) -> Path:
    """A TOML settings file with a [dns] table (numbers, booleans and strings only)."""
    lines = ["[dns]"]
    for key, value in dns_settings.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


class ServerFactory:
    """Starts `gtm serve` processes for one test and stops every one of them afterwards."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.servers: list[GtmServer] = []

    def __call__(
        self,
        zones: Path | None,
        *,
        workers: int | None = 1,
        config: dict[str, object] | None = None,
        listen: Sequence[str] = ("127.0.0.1",),
        extra: Sequence[str] = (),
        subcommand: str = "serve",
        command: Sequence[str] | None = None,
    ) -> GtmServer:
        number = len(self.servers)
        args = [subcommand]
        if zones is not None:
            args += ["--zones", str(zones)]
        if workers is not None:
            args += ["--workers", str(workers)]
        if config is not None:
            args += ["--config", str(write_config(self.directory / f"gtm{number}.toml", **config))]
        for host in listen if subcommand == "serve" else ():
            args += ["--listen", f"[{host}]:0" if ":" in host else f"{host}:0"]
        server = start_gtm(
            [*args, *extra],
            self.directory / f"gtm{number}.log",
            listen_hosts=listen,
            cwd=self.directory,
            command=command or gtm_command(),
        )
        self.servers.append(server)
        return server

    def stop_all(self) -> None:
        """SIGTERM each server still running; each must exit 0 and leave no worker behind."""
        problems: list[str] = []
        for server in self.servers:
            workers = children_of(server.pid)
            if server.process.poll() is None:
                started = time.monotonic()
                try:
                    code = server.stop()
                except AssertionError as exc:
                    problems.append(str(exc))
                    continue
                if code != 0:
                    problems.append(f"gtm pid {server.pid} exited with {code} on SIGTERM")
                elapsed = time.monotonic() - started
                if elapsed > 5:
                    problems.append(f"gtm pid {server.pid} took {elapsed:.1f} s to stop")
            else:
                server.kill()  # stopped by the test itself; reap stray workers only
            for pid in workers:
                if is_gtm_process(pid):
                    kill_if_gtm(pid)
                    problems.append(f"worker pid {pid} outlived its supervisor")
        if problems:
            logs = "\n".join(server.log() for server in self.servers)
            raise AssertionError("\n".join(problems) + "\n" + logs)


# --- DNS helpers -------------------------------------------------------------------


def rdata_texts(response: dns.message.Message, qname: str, rdtype: str) -> set[str]:
    """Text of every answer record of rdtype (any owner, so CNAME chains are followed)."""
    wanted = dns.rdatatype.from_text(rdtype)
    return {rd.to_text() for rrset in response.answer if rrset.rdtype == wanted for rd in rrset}


def query_wire(qname: str, rdtype: str = "A", qid: int = 0, **kwargs: object) -> bytes:
    request = dns.message.make_query(qname, rdtype, **kwargs)  # type: ignore[arg-type]
    request.id = qid
    return request.to_wire()


def framed(message: bytes) -> bytes:
    """A DNS message with the two-octet length prefix of DNS over TCP."""
    return struct.pack("!H", len(message)) + message


def read_exactly(sock: socket.socket, count: int) -> bytes:
    """count bytes, or fewer if the peer closed first (the socket's timeout applies)."""
    data = bytearray()
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            break
        data += chunk
    return bytes(data)


def read_framed(sock: socket.socket) -> bytes | None:
    """One length-prefixed message, or None when the server closed the connection."""
    prefix = read_exactly(sock, 2)
    if len(prefix) < 2:
        return None
    (length,) = struct.unpack("!H", prefix)
    body = read_exactly(sock, length)
    assert len(body) == length, "connection closed in the middle of a response"
    return body


def tcp_connect(address: tuple[str, int], timeout: float = QUERY_TIMEOUT) -> socket.socket:
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.connect(address)
    return sock


def wait_closed_by_peer(sock: socket.socket, timeout: float) -> bool:
    """True when the peer closes (EOF or reset) within timeout; data read meanwhile is dropped."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            if not sock.recv(4096):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def udp_exchange(
    address: tuple[str, int], packet: bytes, timeout: float = QUERY_TIMEOUT
) -> bytes | None:
    """Send one datagram from a fresh socket; the reply, or None if none came in timeout."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(packet, address)
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


def free_port(hosts: Sequence[str] = ("127.0.0.1",)) -> int:
    """A port free for both UDP and TCP on every host (released before returning).

    Only for commands that need a port up front (`gtm up --port`); another process
    could take it meanwhile, which is why `gtm serve` tests use port 0 instead.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.bind((hosts[0], 0))
            port = int(probe.getsockname()[1])
        if all(
            _bindable(host, port, kind)
            for host in hosts
            for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)
        ):
            return port
    raise AssertionError("no port free for UDP and TCP on " + ", ".join(hosts))


def _bindable(host: str, port: int, kind: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


# The example regions (examples/lb/*.toml) bind fixed addresses: 127.0.N.1:8080 and :8443,
# admin 127.0.N.1:9900, demo backends 127.0.N.10x:9001; the example zone probes :8080.
EXAMPLE_REGIONS_LOCK = Path(tempfile.gettempdir()) / "gtm-tests-example-regions.lock"


@contextlib.contextmanager
def example_regions_held() -> Iterator[None]:
    """The example regions' addresses for the caller alone, while it runs them or probes
    them: a lock of this machine, so the test processes of one run (pytest-xdist
    workers) and of other runs take turns. The kernel drops it when a process dies."""
    with EXAMPLE_REGIONS_LOCK.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


# --- processes -----------------------------------------------------------------------


def children_of(pid: int) -> list[int]:
    """PIDs of pid's child processes, from /proc (Linux)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found.extend(int(text) for text in task.read_text().split())
    return sorted(found)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def is_gtm_process(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return b"gtm" in cmdline and state != "Z"


def kill_if_gtm(pid: int) -> None:
    """SIGKILL a worker we started, checking first that the PID still names a gtm process."""
    if is_gtm_process(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def response_flags(wire: bytes) -> int:
    return int(struct.unpack_from("!H", wire, 2)[0])


def is_truncated(response: dns.message.Message) -> bool:
    return bool(response.flags & dns.flags.TC)
