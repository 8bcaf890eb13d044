"""bench/tls_certs.py: start-up time and memory of the certificate store with N pairs.

    /tmp/venv/bin/python bench/tls_certs.py --count 2000 [--rsa 200] [--keep DIR]

Generates N pairs (ECDSA P-256, each with its own key; ``--rsa`` of them RSA 2048) under
one generated CA, then measures in a fresh child process, so that generating them does
not count: the store's load time and resident memory, SNI lookups per second, the time
to build one context on first use (what the first handshake for a name pays), and the
memory if every context were built. Then, end to end, `gtm lb serve` with the directory
and with one pair only: seconds from process start to the first TLS answer, and the
process's resident memory. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import gc, json, sys, time
from pathlib import Path

def rss_kib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

from regional_lb.tls.contexts import TlsPolicy, server_context
from regional_lb.tls.store import CertStore
server_context(TlsPolicy())  # OpenSSL's one-time set-up is not the store's cost
gc.collect()
base = rss_kib()
directory, count = Path(sys.argv[1]), int(sys.argv[2])
started = time.perf_counter()
store = CertStore(directory)
store.load()
load_s = time.perf_counter() - started
loaded = rss_kib()
names = [name for info in store.pairs.values() for name in info.names]
started = time.perf_counter()
rounds = 0
while time.perf_counter() - started < 0.5:
    for name in names:
        store.group_for(name)
    rounds += 1
lookups = rounds * len(names) / (time.perf_counter() - started)
policy = TlsPolicy()
groups = sorted({store.group_for(name) for name in names})
started = time.perf_counter()
for group in groups[:50]:
    store.context(policy, group)
first_use_ms = (time.perf_counter() - started) / min(50, len(groups)) * 1000
started = time.perf_counter()
for group in groups:
    store.context(policy, group)
all_s = time.perf_counter() - started
every = rss_kib()
print(json.dumps({
    "pairs": len(store.pairs), "refused": len(store.errors),
    "load_seconds": round(load_s, 3),
    "rss_after_load_mib": round((loaded - base) / 1024, 1),
    "lookups_per_second": round(lookups),
    "first_use_context_ms": round(first_use_ms, 3),
    "all_contexts_seconds": round(all_s, 2),
    "rss_all_contexts_mib": round((every - base) / 1024, 1),
    "rss_per_context_kib": round((every - loaded) / max(1, len(groups)), 1),
}))
"""


def generate(directory: Path, count: int, rsa_count: int) -> float:
    sys.path.insert(0, str(ROOT))
    from tests.tls.pki import CA, new_key, write_pair

    started = time.perf_counter()
    ca = CA("bench CA")
    for i in range(count):
        kind = "rsa" if i < rsa_count else "ec"
        chain, key, _ = ca.issue([f"host{i}.example.com", f"*.host{i}.example.net"],
                                 new_key(kind))
        write_pair(directory, f"host{i}", chain, key)
    return time.perf_counter() - started


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def serve_startup(directory: Path, workdir: Path) -> dict[str, float]:
    """`gtm lb serve` on this directory: seconds to the first TLS answer, RSS then."""
    port = _free_port()
    config = workdir / f"lb-{directory.name}.toml"
    config.write_text(f'[[lb.listeners]]\nbind = "127.0.0.1:{port}"\n'
                      f'tls = {{ certificates = "{directory}", default = "host0" }}\n'
                      '[[lb.pools]]\nname = "app"\nbackends = ["127.0.0.1:1"]\n')
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    gtm = str(Path(sys.executable).parent / "gtm")
    started = time.monotonic()
    process = subprocess.Popen([gtm, "--log-level", "WARNING", "lb", "serve", "--config",
                                str(config)], stdin=subprocess.DEVNULL)
    try:
        while time.monotonic() - started < 60:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as raw, \
                        ctx.wrap_socket(raw, server_hostname="host1.example.com"):
                    break
            except OSError:
                time.sleep(0.01)
        return {"ready_seconds": round(time.monotonic() - started, 2),
                "rss_mib": round(_rss_mib(process.pid), 1)}
    finally:
        process.terminate()  # by its PID
        process.wait(10)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rsa", type=int, default=0, help="how many of them RSA 2048")
    parser.add_argument("--keep", type=Path, help="generate here and keep the files")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        directory = args.keep or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        generated = generate(directory, args.count, args.rsa)
        child = subprocess.run([sys.executable, "-c", CHILD, str(directory), str(args.count)],
                               capture_output=True, text=True, timeout=600, cwd=ROOT,
                               check=False)
        if child.returncode != 0:
            print(child.stderr, file=sys.stderr)
            return 1
        result = json.loads(child.stdout)
        result.update(generated_seconds=round(generated, 1), rsa=args.rsa)
        one = Path(scratch) / "one"
        one.mkdir()
        for path in directory.glob("host0.*"):
            shutil.copy(path, one / path.name)
        result["serve_all"] = serve_startup(directory, Path(scratch))
        result["serve_one_pair"] = serve_startup(one, Path(scratch))
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
