"""bench/tls_handshakes.py: N full TLS 1.3 handshakes, one after another, for profilers.

    python bench/tls_handshakes.py N PORT

Each connection (no resumption) sends ``GET / HTTP/1.0``, reads the answer, closes;
prints how many got 200. Not a throughput benchmark (bench/run --suite tls is): it gives
a profiler a fixed amount of identical work, so two servers can be compared by what
that work costs them. The comparison in the session-2 note was made this way, with the
TLS suite's configs (a gtm lb and an HAProxy on 127.0.0.1:18443 in turn, the same
ECDSA P-256 pair, nginx behind):

  instructions  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=cg.out \\
                  SERVER...;  callgrind_control -i on PID;
                  python bench/tls_handshakes.py 200 18443;
                  callgrind_control -i off PID;  then stop it and
                  callgrind_annotate --inclusive=yes cg.out | grep -E 'TOTALS|SSL_do_handshake'
  time by library  perf record -F 2999 -g -p PID -o perf.data -- sleep 8  while
                  python bench/tls_handshakes.py 1500 18443 runs;
                  perf report -i perf.data --no-children --sort dso --stdio
                  (µs per connection = samples / 2999 / 1500 x the library's share)
"""

from __future__ import annotations

import socket
import ssl
import sys


def handshakes(count: int, port: int) -> int:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ok = 0
    for _ in range(count):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
                ctx.wrap_socket(raw) as tls:
            tls.sendall(b"GET / HTTP/1.0\r\n\r\n")
            reply = b""
            while chunk := tls.recv(4096):
                reply += chunk
            ok += reply.startswith(b"HTTP/1.1 200")
    return ok


if __name__ == "__main__":
    print(handshakes(int(sys.argv[1]), int(sys.argv[2])))
