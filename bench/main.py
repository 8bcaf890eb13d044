"""bench/run: run benchmark suites, each comparing gtm with its peers on this machine.

A suite is a common.Suite (see dns_bench.SUITE); to add one, write its module and list
its SUITE in SUITES below. `--suite all` runs every suite. The commands each suite needs
are installed first (apt-get, when missing); then the whole run gets a deadline and
stops by itself when it passes.
"""

from __future__ import annotations

import argparse
import sys

import dns_bench
import h2_bench
import lb_bench
import steered_bench
import tls_bench
from common import (
    BenchError,
    Deadline,
    Interrupted,
    Suite,
    check_cpus,
    ensure_tools,
    install_stop_handlers,
    pin_self,
)

SUITES: dict[str, Suite] = {
    suite.name: suite for suite in (dns_bench.SUITE, steered_bench.SUITE, lb_bench.SUITE,
                                   tls_bench.SUITE, h2_bench.SUITE)
}
DEFAULT_SUITES = ["dns"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bench/run",
        description="Benchmarks of gtm against its peers (method: /work/shared/BENCHMARKS.md).",
    )
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="length of each saturation run, in seconds (10)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved rounds per server; medians are reported (3)")
    parser.add_argument("--suite", action="append", choices=[*sorted(SUITES), "all"],
                        dest="suites",
                        help="suite to run, repeatable; `all` runs every suite "
                             f"(default: {', '.join(DEFAULT_SUITES)})")
    parser.add_argument("--server-cpu", type=int, default=1, help="CPU for the servers (1)")
    parser.add_argument("--client-cpu", type=int, default=0,
                        help="CPU for load generators and this harness (0)")
    parser.add_argument("--gtm", help="gtm executable (default: the one next to this Python)")
    parser.add_argument("--keep-workdir", action="store_true",
                        help="keep the servers' configs and logs (printed at the end)")
    for suite in SUITES.values():
        suite.add_arguments(parser.add_argument_group(f"{suite.name} suite: {suite.help}"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1:
        print("bench: --seconds must be positive and --rounds at least 1", file=sys.stderr)
        return 2
    names = args.suites or DEFAULT_SUITES
    if "all" in names:
        names = list(SUITES)
    chosen = [SUITES[name] for name in dict.fromkeys(names)]
    try:
        check_cpus(args.server_cpu, args.client_cpu)
        pin_self(args.client_cpu)
        needed: dict[str, str] = {}
        for suite in chosen:
            needed.update(suite.tools)
        tools = ensure_tools(needed)
        deadline = Deadline(sum(suite.budget_seconds(args) for suite in chosen))
        install_stop_handlers(deadline)
        status = 0
        for suite in chosen:
            status = max(status, suite.run(args, deadline, tools))
        return status
    except Interrupted as exc:
        print(f"bench: interrupted: {exc}; servers stopped", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
