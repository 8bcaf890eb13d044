"""The DNS suite: `gtm serve` against gdnsd on the same zone, driven by dnsperf.

For each round and each server (interleaved: gtm, gdnsd, gtm, gdnsd, ...):

1. start the server pinned to the server CPU, on a free loopback port;
2. wait until it answers, then check every name of the query mix against the zone
   file (rcode, answer records, AA bit), and against what the other server said, so
   a broken server never produces a figure;
3. saturation: `dnsperf -c 4 -l SECONDS -Q 200000` pinned to the client CPU, with the
   server's CPU seconds (utime+stime of all its processes, /proc) taken over exactly
   that window, giving throughput per server core;
4. light load: `dnsperf -Q 2000` for a few seconds, for latency without queueing;
5. stop the server by its PID.

The pieces (peers, dnsperf runs and parsing, the answer check, one measured round)
take the zone, query file and check as arguments so that the steered suite (gtm
steering vs gdnsd DYNA weighted/geoip vs PowerDNS LUA) can reuse them.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.zone
from common import (
    BENCH_DIR,
    LOOPBACK,
    BenchError,
    Deadline,
    Measured,
    Server,
    Servers,
    Suite,
    cpu_busy_seconds,
    free_port,
    machine_info,
    median,
    per_core,
    pinned,
    print_table,
    run_measured,
    run_quiet,
    say,
    write_results,
)

ZONE_ORIGIN = "bench.test."
ZONE_FILE = BENCH_DIR / "zones" / "bench.test.zone"
QUERY_FILE = BENCH_DIR / "queries" / "dns-static.txt"

# gdnsd's copy of the zone gets these appended: the weighted pool of BENCHMARKS.md (the
# steered suite, steered_bench.py, measures it in a zone of its own). gtm's zone parser
# has no DYNA type, and the static mix never asks for `dyn`, so both servers answer the
# static suite from the same records.
GDNSD_EXTRA_RECORDS = "dyn      60    DYNA  weighted!wpool\n"
GDNSD_PLUGINS = """\
plugins => {
  weighted => {
    service_types = up
    wpool => {
      a1 = [ 127.0.10.1, 10 ]
      a2 = [ 127.0.10.2, 20 ]
      a3 = [ 127.0.10.3, 30 ]
    }
  }
}
"""

SATURATION_QPS = 200_000
LIGHT_QPS = 2_000
CLIENTS = 4
STARTUP_TIMEOUT = 20.0  # until a started server answers
DNSPERF_SLACK = 20.0  # beyond -l: dnsperf waits up to 5 s for the last answers
BUSY_WARNING_PCT = 25.0  # other work on the server's CPU beyond this makes a run noisy
OK_RCODES = frozenset({"NOERROR", "NXDOMAIN"})


# -- the servers ------------------------------------------------------------------------


class DnsPeer(ABC):
    """How to run one DNS server on a port, from a fresh directory of its own."""

    name: str

    @abstractmethod
    def command(self, workdir: Path, port: int) -> list[str]:
        """Prepare workdir (config, zones) and return the server's command line."""


class GtmPeer(DnsPeer):
    """`gtm serve`, one worker, serving a copy of the zone file."""

    def __init__(self, gtm: str, zone_file: Path, origin: str = ZONE_ORIGIN):
        self.name = "gtm"
        self.gtm = gtm
        self.zone_file = zone_file
        self.origin = origin

    def command(self, workdir: Path, port: int) -> list[str]:
        zones = workdir / "zones"
        zones.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.zone_file, zones / f"{self.origin.rstrip('.')}.zone")
        return [self.gtm, "serve", "--zones", str(zones), "--listen", f"{LOOPBACK}:{port}",
                "--workers", "1"]


class GdnsdPeer(DnsPeer):
    """gdnsd 3, one UDP and one TCP thread, in the foreground (`gdnsd -c DIR start`)."""

    def __init__(
        self,
        gdnsd: str,
        zone_file: Path,
        origin: str = ZONE_ORIGIN,
        extra_records: str = GDNSD_EXTRA_RECORDS,
        plugins: str = GDNSD_PLUGINS,
    ):
        self.name = "gdnsd"
        self.gdnsd = gdnsd
        self.zone_file = zone_file
        self.origin = origin
        self.extra_records = extra_records
        self.plugins = plugins

    def command(self, workdir: Path, port: int) -> list[str]:
        zones = workdir / "zones"
        zones.mkdir(parents=True, exist_ok=True)
        text = self.zone_file.read_text()
        if not text.endswith("\n"):
            text += "\n"
        (zones / self.origin.rstrip(".")).write_text(text + self.extra_records)
        (workdir / "config").write_text(gdnsd_config(workdir, port, self.plugins))
        return [self.gdnsd, "-c", str(workdir), "start"]


def gdnsd_config(workdir: Path, port: int, plugins: str = GDNSD_PLUGINS) -> str:
    return (
        "options => {\n"
        f"  listen => [ {LOOPBACK}:{port} ]\n"
        "  udp_threads => 1\n"
        "  tcp_threads => 1\n"
        f'  run_dir => "{workdir / "run"}"\n'
        f'  state_dir => "{workdir / "state"}"\n'
        "}\n" + plugins
    )


# -- queries and answers ----------------------------------------------------------------


Question = tuple[str, str]  # (name, type), as in a dnsperf query file
Answer = tuple[str, tuple[str, ...]]  # (rcode, sorted answer records)


def read_query_file(path: Path) -> list[Question]:
    """The distinct questions of a dnsperf query file, in the order first seen."""
    seen: dict[Question, None] = {}
    for line in path.read_text().splitlines():
        words = line.split()
        if len(words) >= 2 and not line.startswith(";"):
            seen[(words[0], words[1].upper())] = None
    if not seen:
        raise BenchError(f"no queries in {path}")
    return list(seen)


def expected_answers(zone_file: Path, origin: str, questions: Sequence[Question]) -> dict[
    Question, Answer
]:
    """What an authoritative server must answer, straight from the zone file."""
    zone = dns.zone.from_file(str(zone_file), origin=origin, relativize=False)
    expected: dict[Question, Answer] = {}
    for name, rdtype in questions:
        qname = dns.name.from_text(name)
        node = zone.get_node(qname)
        if node is None:
            expected[(name, rdtype)] = ("NXDOMAIN", ())
            continue
        rdataset = node.get_rdataset(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype))
        records: list[str] = []
        if rdataset is not None:
            records = [_record(qname, rdataset.ttl, rdtype, rd.to_text()) for rd in rdataset]
        expected[(name, rdtype)] = ("NOERROR", tuple(sorted(records)))
    return expected


def _record(name: dns.name.Name, ttl: int, rdtype: str, rdata: str) -> str:
    return f"{name.to_text()} {ttl} IN {rdtype} {rdata}"


def ask(port: int, question: Question, timeout: float = 1.0) -> dns.message.Message:
    query = dns.message.make_query(question[0], question[1])
    return dns.query.udp(query, LOOPBACK, port=port, timeout=timeout)


def answer_of(response: dns.message.Message) -> Answer:
    records = [
        _record(rrset.name, rrset.ttl, dns.rdatatype.to_text(rrset.rdtype), rd.to_text())
        for rrset in response.answer
        for rd in rrset
    ]
    return dns.rcode.to_text(response.rcode()), tuple(sorted(records))


def wait_until_answers(server: Server, port: int, question: Question, deadline: Deadline) -> None:
    """Until the server answers `question`; fail at once if it exits."""
    end = time.monotonic() + deadline.cap(STARTUP_TIMEOUT)
    while time.monotonic() < end:
        if not server.alive():
            raise BenchError(
                f"{server.name} exited with status {server.process.returncode} before "
                f"answering; its log ends:\n{server.log_tail()}"
            )
        try:
            ask(port, question, timeout=0.3)
            return
        except (dns.exception.Timeout, OSError):
            time.sleep(0.1)
    raise BenchError(
        f"{server.name} did not answer within {STARTUP_TIMEOUT:.0f} s; "
        f"its log ends:\n{server.log_tail()}"
    )


def check_answers(
    name: str, port: int, expected: dict[Question, Answer]
) -> dict[Question, Answer]:
    """Every question answered as the zone says, authoritatively; the answers seen."""
    seen: dict[Question, Answer] = {}
    problems: list[str] = []
    for question, want in expected.items():
        try:
            response = ask(port, question)
        except (dns.exception.DNSException, OSError) as exc:
            problems.append(f"{question}: no answer ({exc or type(exc).__name__})")
            continue
        got = answer_of(response)
        seen[question] = got
        if got != want:
            problems.append(f"{' '.join(question)}: got {got}, want {want}")
        if not response.flags & dns.flags.AA:
            problems.append(f"{' '.join(question)}: AA bit not set")
    if problems:
        raise BenchError(f"{name} gives wrong answers:\n  " + "\n  ".join(problems))
    return seen


def compare_servers(answers: dict[str, dict[Question, Answer]]) -> None:
    """All servers must have given the same answers to the same questions."""
    names = list(answers)
    first = names[0]
    for other in names[1:]:
        for question, got in answers[other].items():
            if answers[first].get(question) != got:
                raise BenchError(
                    f"{first} and {other} disagree on {' '.join(question)}: "
                    f"{answers[first].get(question)} vs {got}"
                )


# -- dnsperf ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DnsperfResult:
    sent: int
    completed: int
    lost: int
    lost_pct: float
    qps: float
    run_seconds: float
    avg_latency_s: float
    min_latency_s: float
    max_latency_s: float
    stddev_latency_s: float
    rcodes: dict[str, int]
    wall_seconds: float
    client_cpu_seconds: float


_DNSPERF_FIELDS = {
    "sent": r"Queries sent:\s+(\d+)",
    "completed": r"Queries completed:\s+(\d+)",
    "lost": r"Queries lost:\s+(\d+)",
    "run_seconds": r"Run time \(s\):\s+([\d.]+)",
    "qps": r"Queries per second:\s+([\d.]+)",
    "latency": r"Average Latency \(s\):\s+([\d.]+) \(min ([\d.]+), max ([\d.]+)\)",
    "stddev": r"Latency StdDev \(s\):\s+([\d.]+)",
}


def parse_dnsperf(run: Measured) -> DnsperfResult:
    """dnsperf's summary; a run with errors or unexpected rcodes is refused."""
    text = run.stdout
    found: dict[str, re.Match[str]] = {}
    for key, pattern in _DNSPERF_FIELDS.items():
        match = re.search(pattern, text)
        if match is None:
            raise BenchError(
                f"dnsperf output has no {key!r} (exit {run.returncode}):\n"
                f"{text[-2000:]}\n{run.stderr[-2000:]}"
            )
        found[key] = match
    rcodes: dict[str, int] = {}
    codes = re.search(r"Response codes:\s+(.*)", text)
    if codes is not None:
        for code, count in re.findall(r"([A-Z]+) (\d+)", codes.group(1)):
            rcodes[code] = int(count)
    sent = int(found["sent"].group(1))
    lost = int(found["lost"].group(1))
    latency = found["latency"]
    return DnsperfResult(
        sent=sent,
        completed=int(found["completed"].group(1)),
        lost=lost,
        lost_pct=100.0 * lost / sent if sent else 100.0,
        qps=float(found["qps"].group(1)),
        run_seconds=float(found["run_seconds"].group(1)),
        avg_latency_s=float(latency.group(1)),
        min_latency_s=float(latency.group(2)),
        max_latency_s=float(latency.group(3)),
        stddev_latency_s=float(found["stddev"].group(1)),
        rcodes=rcodes,
        wall_seconds=run.wall_seconds,
        client_cpu_seconds=run.cpu_seconds,
    )


def dnsperf_command(
    dnsperf: str, port: int, query_file: Path, seconds: float, qps: int, cpu: int
) -> list[str]:
    return pinned(cpu, [
        dnsperf, "-s", LOOPBACK, "-p", str(port), "-d", str(query_file),
        "-c", str(CLIENTS), "-l", f"{seconds:g}", "-Q", str(qps),
    ])  # fmt: skip


def run_dnsperf(
    dnsperf: str, port: int, query_file: Path, seconds: float, qps: int, cpu: int,
    deadline: Deadline,
) -> DnsperfResult:
    argv = dnsperf_command(dnsperf, port, query_file, seconds, qps, cpu)
    run = run_measured(argv, deadline.cap(seconds + DNSPERF_SLACK))
    if run.returncode != 0:
        raise BenchError(f"dnsperf exited with {run.returncode}:\n{run.stderr[-2000:]}")
    result = parse_dnsperf(run)
    if result.completed == 0:
        raise BenchError("dnsperf got no answers at all")
    bad = {code: n for code, n in result.rcodes.items() if code not in OK_RCODES}
    if bad:
        raise BenchError(f"unexpected response codes under load: {bad}")
    return result


# -- one measured round -----------------------------------------------------------------


@dataclass(frozen=True)
class RoundResult:
    server: str
    round: int
    saturation: DnsperfResult
    server_cpu_seconds: float
    server_cpu_pct: float
    qps_per_core: float
    client_cpu_pct: float
    # Time on the server's CPU not charged to the server: other processes (a busy
    # machine: compare only within one run) and interrupts (loopback softirq).
    server_core_other_pct: float
    light: DnsperfResult
    light_server_cpu_pct: float


@dataclass(frozen=True)
class Options:
    seconds: float
    light_seconds: float
    server_cpu: int
    client_cpu: int
    dnsperf: str
    query_file: Path
    workdir: Path


CheckFn = Callable[[str, int], dict[Question, Answer]]


def measure_round(
    peer: DnsPeer, round_no: int, opts: Options, servers: Servers, deadline: Deadline,
    check: CheckFn, probe: Question,
) -> tuple[RoundResult, dict[Question, Answer]]:
    """Start the peer pinned, check it, load it twice (saturation, light), stop it."""
    port = free_port()
    workdir = opts.workdir / f"{peer.name}-round{round_no}"
    workdir.mkdir(parents=True)
    argv = pinned(opts.server_cpu, peer.command(workdir, port))
    server = servers.start(peer.name, argv, workdir / "server.log", cwd=workdir)
    try:
        wait_until_answers(server, port, probe, deadline)
        answers = check(peer.name, port)

        before, busy_before = server.cpu_seconds(), cpu_busy_seconds(opts.server_cpu)
        saturation = run_dnsperf(opts.dnsperf, port, opts.query_file, opts.seconds,
                                 SATURATION_QPS, opts.client_cpu, deadline)
        cpu = server.cpu_seconds() - before
        busy = cpu_busy_seconds(opts.server_cpu) - busy_before
        _still_running(server)

        before = server.cpu_seconds()
        light = run_dnsperf(opts.dnsperf, port, opts.query_file, opts.light_seconds,
                            LIGHT_QPS, opts.client_cpu, deadline)
        light_cpu = server.cpu_seconds() - before
        _still_running(server)
    finally:
        servers.stop(server)
    wall = saturation.wall_seconds
    result = RoundResult(
        server=peer.name,
        round=round_no,
        saturation=saturation,
        server_cpu_seconds=cpu,
        server_cpu_pct=100.0 * cpu / wall,
        qps_per_core=per_core(saturation.qps, cpu, wall),
        client_cpu_pct=100.0 * saturation.client_cpu_seconds / wall,
        server_core_other_pct=100.0 * max(0.0, busy - cpu) / wall,
        light=light,
        light_server_cpu_pct=100.0 * light_cpu / light.wall_seconds,
    )
    return result, answers


def _still_running(server: Server) -> None:
    if not server.alive():
        raise BenchError(
            f"{server.name} died under load (status {server.process.returncode}); "
            f"its log ends:\n{server.log_tail()}"
        )


# -- summary ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    server: str
    runs: int
    qps: float
    lost_pct: float
    server_cpu_pct: float
    qps_per_core: float
    client_cpu_pct: float
    server_core_other_pct: float
    light_avg_latency_us: float
    light_max_latency_us: float
    light_lost_pct: float


def summarize(server: str, rounds: Sequence[RoundResult]) -> Summary:
    """Medians over the rounds, each figure on its own (per-core is per run, then median)."""
    return Summary(
        server=server,
        runs=len(rounds),
        qps=median([r.saturation.qps for r in rounds]),
        lost_pct=median([r.saturation.lost_pct for r in rounds]),
        server_cpu_pct=median([r.server_cpu_pct for r in rounds]),
        qps_per_core=median([r.qps_per_core for r in rounds]),
        client_cpu_pct=median([r.client_cpu_pct for r in rounds]),
        server_core_other_pct=median([r.server_core_other_pct for r in rounds]),
        light_avg_latency_us=1e6 * median([r.light.avg_latency_s for r in rounds]),
        light_max_latency_us=1e6 * median([r.light.max_latency_s for r in rounds]),
        light_lost_pct=median([r.light.lost_pct for r in rounds]),
    )


def print_summary(summaries: Sequence[Summary], ratio: float | None, ratio_label: str) -> None:
    headers = ["server", "runs", "q/s (median)", "lost %", "server CPU %", "q/s per server core",
               "client CPU %", f"avg latency @{LIGHT_QPS} q/s"]
    rows = [
        [s.server, str(s.runs), f"{s.qps:,.0f}", f"{s.lost_pct:.2f}", f"{s.server_cpu_pct:.0f}",
         f"{s.qps_per_core:,.0f}", f"{s.client_cpu_pct:.0f}", f"{s.light_avg_latency_us:.0f} us"]
        for s in summaries
    ]  # fmt: skip
    print()
    print_table(headers, rows)
    if ratio is not None:
        print(f"\nratio {ratio_label} (q/s per server core): {ratio:.2f}")


def describe(result: RoundResult) -> str:
    sat, light = result.saturation, result.light
    return (
        f"round {result.round} {result.server}: {sat.qps:,.0f} q/s, lost {sat.lost_pct:.2f}%, "
        f"server CPU {result.server_cpu_pct:.0f}%, {result.qps_per_core:,.0f} q/s per core, "
        f"client CPU {result.client_cpu_pct:.0f}%, others on the server's CPU "
        f"{result.server_core_other_pct:.0f}%; at {LIGHT_QPS} q/s avg "
        f"{1e6 * light.avg_latency_s:.0f} us (max {1e6 * light.max_latency_s:.0f} us), "
        f"lost {light.lost_pct:.2f}%"
    )


# -- the suite --------------------------------------------------------------------------


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--light-seconds", type=float, default=3.0,
                       help=f"length of the light-load (-Q {LIGHT_QPS}) latency run (3)")


def budget_seconds(args: argparse.Namespace) -> float:
    seconds: float = args.seconds + args.light_seconds
    rounds: int = args.rounds
    per_run = STARTUP_TIMEOUT + seconds + 2 * DNSPERF_SLACK + 20  # + checks and stopping
    return 2 * rounds * per_run + 30


def gtm_executable(args: argparse.Namespace) -> str:
    candidate = args.gtm or str(Path(sys.executable).parent / "gtm")
    found = shutil.which(candidate)
    if found is None:
        raise BenchError(f"no gtm executable at {candidate}; give one with --gtm")
    return found


def versions(gtm: str, tools: dict[str, str]) -> dict[str, str]:
    def first_match(argv: list[str], pattern: str) -> str:
        done = run_quiet(argv, 10)
        match = re.search(pattern, done.stdout + done.stderr)
        return match.group(1) if match else "unknown"

    return {
        "gtm": first_match([gtm, "--version"], r"gtm (\S+)"),
        "gdnsd": first_match([tools["gdnsd"]], r"gdnsd version (\S+)"),
        "dnsperf": first_match([tools["dnsperf"], "-h"], r"Version (\S+)"),
    }


def run(args: argparse.Namespace, deadline: Deadline, tools: dict[str, str]) -> int:
    gtm = gtm_executable(args)
    questions = read_query_file(QUERY_FILE)
    expected = expected_answers(ZONE_FILE, ZONE_ORIGIN, questions)
    probe = questions[0]
    peers: list[DnsPeer] = [GtmPeer(gtm, ZONE_FILE), GdnsdPeer(tools["gdnsd"], ZONE_FILE)]

    def check(name: str, port: int) -> dict[Question, Answer]:
        return check_answers(name, port, expected)

    workdir = Path(tempfile.mkdtemp(prefix="gtm-bench-dns-"))
    opts = Options(
        seconds=args.seconds, light_seconds=args.light_seconds, server_cpu=args.server_cpu,
        client_cpu=args.client_cpu, dnsperf=tools["dnsperf"], query_file=QUERY_FILE,
        workdir=workdir,
    )
    info = machine_info()
    say(f"dns: {args.rounds} round(s) of {args.seconds:g} s + {args.light_seconds:g} s "
        f"per server; servers on CPU {args.server_cpu}, dnsperf on CPU {args.client_cpu}; "
        f"load average {info['loadavg_at_start'][0]:.2f}")
    results: list[RoundResult] = []
    answers: dict[str, dict[Question, Answer]] = {}
    try:
        with Servers() as servers:
            for round_no in range(1, args.rounds + 1):
                for peer in peers:
                    result, seen = measure_round(peer, round_no, opts, servers, deadline,
                                                 check, probe)
                    answers.setdefault(peer.name, seen)
                    compare_servers(answers)
                    results.append(result)
                    say(describe(result))
                    if result.server_core_other_pct > BUSY_WARNING_PCT:
                        say(f"warning: {result.server_core_other_pct:.0f}% of the server's CPU "
                            "went to other work during this run; its figures are noisy")
    finally:
        if args.keep_workdir:
            say(f"servers' configs and logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    summaries = [summarize(p.name, [r for r in results if r.server == p.name]) for p in peers]
    by_name = {s.server: s for s in summaries}
    ratio = by_name["gtm"].qps_per_core / by_name["gdnsd"].qps_per_core
    print_summary(summaries, ratio, "gtm/gdnsd")
    data: dict[str, Any] = {
        "suite": "dns",
        "method": "BENCHMARKS.md: server and dnsperf pinned apart; server CPU from /proc",
        "options": {
            "seconds": args.seconds, "light_seconds": args.light_seconds, "rounds": args.rounds,
            "server_cpu": args.server_cpu, "client_cpu": args.client_cpu, "clients": CLIENTS,
            "saturation_qps_limit": SATURATION_QPS, "light_qps": LIGHT_QPS,
            "zone_file": str(ZONE_FILE.relative_to(BENCH_DIR.parent)),
            "query_file": str(QUERY_FILE.relative_to(BENCH_DIR.parent)),
        },
        "machine": info,
        "versions": versions(gtm, tools),
        "summary": [asdict(s) for s in summaries],
        "ratio_gtm_gdnsd_qps_per_core": ratio,
        "runs": [asdict(r) for r in results],
    }  # fmt: skip
    path = write_results("dns", data)
    print(f"\nresults: {path}")
    return 0


SUITE = Suite(
    name="dns",
    help="gtm serve vs gdnsd, static names (dnsperf)",
    tools={"dnsperf": "dnsperf", "gdnsd": "gdnsd", "taskset": "util-linux"},
    add_arguments=add_arguments,
    budget_seconds=budget_seconds,
    run=run,
)
