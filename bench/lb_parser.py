"""Parser choice for the balancer, measured: `python bench/lb_parser.py` (a few seconds).

Compares, per request head of a typical browser-ish request:
  httptools   llhttp with Python callbacks collecting the headers (what a proxy needs)
  strict      regional_lb's own parser (every RFC 9112 rule the corpus tests), uncached
  cached      the same through its cache of identical heads
h11 is not installed here; it is pure Python and slower than both (its own docs say so).
"""

from __future__ import annotations

import timeit

import httptools

from regional_lb.l7.parser import Request, parse_request, parse_request_cached

HEAD = (b"GET /static/app.js?v=3 HTTP/1.1\r\nHost: www.example.test\r\n"
        b"User-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0\r\n"
        b"Accept: */*\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, br\r\n"
        b"Referer: https://www.example.test/\r\nConnection: keep-alive\r\n"
        b"Cookie: session=abc123; theme=dark")


class Collect:
    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.url = b""
        self.done = False

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.done = True


def with_httptools() -> None:
    parser = httptools.HttpRequestParser(Collect())
    parser.feed_data(HEAD + b"\r\n\r\n")


def main() -> None:
    runs = 100_000
    cache: dict[bytes, Request] = {}  # a snapshot's, in the balancer
    rows = [
        ("httptools", timeit.timeit(with_httptools, number=runs)),
        ("strict", timeit.timeit(lambda: parse_request(HEAD), number=runs)),
        ("cached", timeit.timeit(lambda: parse_request_cached(cache, HEAD, 100), number=runs)),
    ]
    for name, seconds in rows:
        print(f"{name:10} {seconds / runs * 1e6:6.2f} us per head")


if __name__ == "__main__":
    main()
