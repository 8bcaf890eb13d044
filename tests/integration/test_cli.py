"""The commands as an operator runs them: `gtm serve` refusing bad zones, `gtm zones check`,
and `gtm up` serving the repository's example zones."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import dns.rcode
import pytest

from tests.integration.servers import (
    EXAMPLE_ZONES,
    ServerFactory,
    free_port,
    gtm_command,
    ipv6_loopback_available,
    subprocess_env,
)

pytestmark = pytest.mark.integration

ZONE_HEAD = (
    "$TTL 300\n"
    "@     SOA  ns1 hostmaster 1 7200 1800 1209600 60\n"
    "@     NS   ns1\n"
    "ns1   A    127.0.0.1\n"
)
# (id, what follows ZONE_HEAD, the line at fault, a regex for the reason)
BAD_ZONES = [
    ("bad-address", "www   A    127.0.0.999\n", 5, r"not an IPv4 address: 127\.0\.0\.999"),
    ("unknown-type", "www   AX   127.0.0.1\n", 5, r"unknown record type 'AX'"),
    (
        "cname-and-other-data",
        "www   CNAME ns1\nwww   A    127.0.0.9\n",
        5,
        r"CNAME at www\.bad\.test\. next to other data \(A\)",
    ),
    ("outside-the-zone", "www.example.com.  A  127.0.0.1\n", 5, r"outside the zone bad\.test\."),
    (
        "rrset-over-64k",  # no message could carry it: TC over TCP was a dead end
        "".join(f"big   AAAA 2001:db8::{i:x}\n" for i in range(3000)),
        5,
        r"the AAAA RRset at big\.bad\.test\. takes 84,\d{3} octets on the wire",
    ),
]


def run_gtm(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        gtm_command(*args),
        cwd=cwd,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )


@pytest.fixture(params=BAD_ZONES, ids=[case[0] for case in BAD_ZONES])
def bad_zones(request: pytest.FixtureRequest, zones_dir: Path) -> tuple[Path, int, str]:
    _, body, line, reason = request.param
    path = zones_dir / "bad.test.zone"
    path.write_text(ZONE_HEAD + body)
    return path, line, reason


def test_serve_refuses_to_start_with_an_invalid_zone(
    bad_zones: tuple[Path, int, str], tmp_path: Path
) -> None:
    path, line, reason = bad_zones
    result = run_gtm(
        "serve", "--zones", str(path.parent), "--listen", "127.0.0.1:0", "--workers", "1",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "refusing to start with invalid zones" in result.stderr
    assert_names_file_line_reason(result.stderr, path, line, reason)
    assert "listening on" not in result.stderr


def test_zones_check_reports_each_invalid_zone(
    bad_zones: tuple[Path, int, str], tmp_path: Path
) -> None:
    path, line, reason = bad_zones
    result = run_gtm("zones", "check", str(path.parent), cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert_names_file_line_reason(result.stdout, path, line, reason)
    assert "example.test." in result.stdout  # the good zones are still listed as ok


def test_zones_check_passes_the_example_zones(tmp_path: Path) -> None:
    result = run_gtm("zones", "check", str(EXAMPLE_ZONES), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    checked = [line for line in result.stdout.splitlines() if line.startswith("ok ")]
    assert len(checked) == len(list(EXAMPLE_ZONES.glob("*.zone")))
    assert not [line for line in result.stdout.splitlines() if line.startswith("error")]


def assert_names_file_line_reason(output: str, path: Path, line: int, reason: str) -> None:
    pattern = rf"{re.escape(str(path))}:{line}: .*{reason}"
    assert re.search(pattern, output), f"expected {pattern!r} in:\n{output}"


# Without --region, `gtm up` runs the example regions on their fixed addresses.
@pytest.mark.serial
@pytest.mark.usefixtures("example_regions")
def test_up_serves_the_example_zones_on_the_given_port(
    gtm_server: ServerFactory, tmp_path: Path
) -> None:
    if not ipv6_loopback_available():
        pytest.skip("`gtm up` listens on ::1 as well, and IPv6 loopback is not available")
    hosts = ("127.0.0.1", "::1")
    port = free_port(hosts)
    script = Path(sys.executable).parent / "gtm"
    command = [str(script)] if script.exists() else gtm_command()
    # Started in an empty directory, so the zones served are the repository's.
    server = gtm_server(
        None, workers=None, subcommand="up", listen=hosts,
        extra=["--port", str(port), "--api-listen", "127.0.0.1:0"],
        command=command,
    )  # fmt: skip
    assert server.ports == {"127.0.0.1": port, "::1": port}
    for host in hosts:
        for tcp in (False, True):
            assert server.addresses("www.example.test.", host=host, tcp=tcp) == {
                "127.0.10.1",
                "127.0.10.2",
            }
            assert server.addresses("example.org.", host=host, tcp=tcp) == {"127.0.30.1"}
    assert server.query("db.example.test.", "A").rcode() == dns.rcode.NOERROR


# Commands whose output a user pipes into `head`, `grep -q` and the like, and their exit
# status then: 141, as a shell reports a command ended by SIGPIPE (argparse's own help
# ignores a failed write and exits 0).
PIPED_COMMANDS = [
    ("zones-check", ["zones", "check", str(EXAMPLE_ZONES)], 141),
    ("help", ["--help"], 0),
    ("geo-lookup", ["geo", "lookup", "81.2.69.1"], 141),
    ("explain", ["explain", "www.gslb.example.test", "--zones", str(EXAMPLE_ZONES),
                 "--subnet", "81.2.69.0/24"], 141),
]


@pytest.mark.parametrize(("args", "status"), [c[1:] for c in PIPED_COMMANDS],
                         ids=[c[0] for c in PIPED_COMMANDS])
def test_a_reader_that_went_away_ends_the_command_quietly(
        args: list[str], status: int, tmp_path: Path) -> None:
    process = subprocess.Popen(
        gtm_command(*args), cwd=tmp_path, env=subprocess_env(), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the command writes a byte
    stderr = process.stderr.read().decode()
    assert (process.wait(timeout=20), stderr) == (status, "")


# Runs the console script's two lines with a Ctrl-C (SIGINT) arriving while the
# commands' modules are loading: the first half second of every command.
# The Ctrl-C comes while gtm.cli imports the modules of its commands (gtm.control.cli is
# one: the heavy ones, aiohttp among them, load only with the command that needs them).
CTRL_C_WHILE_LOADING = """
import importlib.abc, os, signal, sys
class CtrlC(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "gtm.control.cli":
            sys.meta_path.remove(self)
            os.kill(os.getpid(), signal.SIGINT)
        return None
sys.meta_path.insert(0, CtrlC())
from gtm.cli import main
sys.exit(main())
"""


def _as_at_a_terminal() -> None:
    """Ctrl-C as a person at a terminal sends it: a runner started in the background
    (`cmd &`, nohup) ignores SIGINT, its children inherit that, and Python then keeps
    ignoring it, so the command would (rightly) never see the Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_while_the_commands_load_ends_quietly(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", CTRL_C_WHILE_LOADING, "zones", "check", str(EXAMPLE_ZONES)],
        cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True, timeout=20,
        check=False, preexec_fn=_as_at_a_terminal,
    )  # fmt: skip
    assert (result.returncode, result.stderr, result.stdout) == (130, "", "")


def test_ctrl_c_while_waiting_for_the_api_ends_quietly(tmp_path: Path) -> None:
    # An API that accepts the connection and never answers: the command waits on it.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        process = subprocess.Popen(
            gtm_command("config", "history", "--api", f"http://127.0.0.1:{port}",
                        "--token", "gtm_x"),
            cwd=tmp_path, env=subprocess_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_as_at_a_terminal,
        )  # fmt: skip
        connection, _ = silent.accept()
        with connection:
            process.send_signal(signal.SIGINT)
            stdout, stderr = process.communicate(timeout=20)
    assert (process.returncode, stderr.decode(), stdout.decode()) == (130, "", "")


def test_serve_counts_one_zone_and_one_worker_in_the_singular(
    gtm_server: ServerFactory, tmp_path: Path
) -> None:
    zones = tmp_path / "one"
    zones.mkdir()
    (zones / "one.test.zone").write_text(ZONE_HEAD)
    server = gtm_server(zones, workers=1)
    assert "serving 1 zone: one.test. (1 worker)" in server.log()
