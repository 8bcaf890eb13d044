"""What per-client limits cost a request: `python bench/lb_limits.py` (a few seconds).

Times the admission functions the protocols call (regional_lb.client_limits), in ns per
request, with the shared tables as `gtm lb serve --workers 2` makes them:

  no limits       the one check a listener without limits pays (Listener.admission)
  rate            a token bucket by client address, admitted
  rate refused    the same bucket, empty (the 429 path, before the response is written)
  rate /24        by client network (the address -> network key comes from a cache)
  rate + route    a route's bucket and the listener's
  header key      a bucket keyed by a request header
  rate + cap      a bucket and the request cap (counted, then released at the end)
"""

from __future__ import annotations

import argparse
import timeit

from regional_lb.client_limits import Limiter
from regional_lb.client_tables import ClientTables
from regional_lb.config import build_config
from regional_lb.l7.parser import parse_request
from regional_lb.snapshot import compile_snapshot

REQUEST = parse_request(b"GET /api/items?page=2 HTTP/1.1\r\nHost: www.example.test\r\n"
                        b"User-Agent: bench\r\nX-Api-Key: k-123456\r\nAccept: */*", 100)


def snapshot(limits: dict[str, object] | None, route_limits: dict[str, object] | None = None):  # type: ignore[no-untyped-def]
    listener: dict[str, object] = {"name": "web", "bind": "127.0.0.1:0"}
    if limits is not None:
        listener["limits"] = limits
    if route_limits is not None:
        listener["routes"] = [{"pool": "app", "path_prefix": "/api", "limits": route_limits}]
    config = build_config({"listeners": [listener],
                           "pools": [{"name": "app", "backends": ["127.0.0.1:9"]}]}, "bench")
    return compile_snapshot(config, None).listeners["web"]


def per_call(statement: str, names: dict[str, object], number: int) -> float:
    """ns per run of the statement: the best of 5 rounds (the least disturbed)."""
    timer = timeit.Timer(statement, globals=names)
    return min(timer.repeat(5, number)) / number * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=200_000)
    args = parser.parse_args()
    limiter = Limiter(ClientTables(65536, workers=2), column=0)
    plain = snapshot(None)
    rate = snapshot({"rate": 1e6, "burst": 10**6})
    refused = snapshot({"rate": 0.001, "burst": 1})
    prefix = snapshot({"rate": 1e6, "burst": 10**6, "ipv4_prefix": 24})
    routed = snapshot({"rate": 1e6, "burst": 10**6}, {"rate": 1e6, "burst": 10**6})
    header = snapshot({"rate": 1e6, "burst": 10**6, "key": "header:X-Api-Key"})
    capped = snapshot({"rate": 1e6, "burst": 10**6, "max_requests": 100})
    limiter.admit(refused.admission, None, REQUEST, b"203.0.113.7")  # spends its burst
    route = routed.match(REQUEST)
    cases = [
        ("no limits", "listener.admission is not None", {"listener": plain}),
        ("rate", "admit(a, None, request, ip)", {"a": rate.admission}),
        ("rate refused", "admit(a, None, request, ip)", {"a": refused.admission}),
        ("rate /24", "admit(a, None, request, ip)", {"a": prefix.admission}),
        ("rate + route", "admit(a, r, request, ip)",
         {"a": routed.admission, "r": route.limits if route else None}),
        ("header key", "admit(a, None, request, ip)", {"a": header.admission}),
        ("rate + cap", "finish(admit(a, None, request, ip)[0])",
         {"a": capped.admission, "finish": limiter.finish_request}),
    ]
    print(f"{'case':<14} {'ns/request':>10}")
    for name, statement, names in cases:
        names = {**names, "admit": limiter.admit, "request": REQUEST, "ip": b"203.0.113.7"}
        print(f"{name:<14} {per_call(statement, names, args.number):>10.0f}")


if __name__ == "__main__":
    main()
