"""The Terraform test harness: the real `terraform` CLI, the provider installed into a
plugin directory of the test's own, and a real control plane (SQLite store) served from
a thread of the test process.

A missing `terraform` binary skips the tests loudly, except under CI=true, where it
fails them. Each `terraform` run is timed (printed with -s, summed in the report)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
import warnings
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gtm.control.plane import ControlPlane, ControlSettings, start_control_plane
from gtm.terraform.install import install

ZONE = "gslb.example.test."
ZONE_TEXT = """$TTL 60
@    SOA  ns1 hostmaster 1 7200 1800 1209600 60
@    NS   ns1
ns1  A    127.0.0.1
"""
SEED = {"zones": {"example.test.": "$TTL 60\n@ SOA ns1 hostmaster 1 7200 1800 1209600 60\n"
                  "@ NS ns1\nns1 A 127.0.0.1\nwww A 192.0.2.1\n"}}
TIMINGS: list[tuple[str, float]] = []


def terraform_binary() -> str:
    path = shutil.which("terraform")
    if path is not None:
        return path
    if os.environ.get("CI") == "true":
        pytest.fail("the terraform CLI is not on PATH: CI requires it (no skipping in CI)")
    reason = "!!! SKIPPED: the terraform CLI is not on PATH; these tests need it !!!"
    warnings.warn(reason, stacklevel=1)
    pytest.skip(reason)


class Plane:
    """A control plane on its own event loop in a thread (terraform runs outside)."""

    def __init__(self, state_dir: Path):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        settings = ControlSettings(port=0, state_dir=state_dir, seed_document=SEED)
        self.plane: ControlPlane = self.run(start_control_plane(settings))
        self.url = self.plane.url
        self.admin = self.plane.admin_token_path.read_text().strip()

    def run(self, work: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(work, self.loop)
        return future.result(timeout=30)

    def stop(self) -> None:
        self.run(self.plane.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()

    def call(self, method: str, path: str, body: Any = None, token: str | None = None,
             if_match: int | None = None) -> Any:
        request = urllib.request.Request(
            self.url + path, method=method,
            data=None if body is None else json.dumps(body).encode())
        request.add_header("Authorization", f"Bearer {token or self.admin}")
        request.add_header("Content-Type", "application/json")
        if if_match is not None:
            request.add_header("If-Match", f'"{if_match}"')
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def document(self) -> tuple[int, dict[str, Any]]:
        live = self.call("GET", "/v1/config")
        return int(live["version"]), live["document"]

    def edit(self, change: Any, message: str = "out of band") -> None:
        version, document = self.document()
        change(document)
        self.call("PUT", "/v1/config", {"document": document, "message": message},
                  if_match=version)


@dataclass
class Run:
    code: int
    out: str
    err: str
    seconds: float

    @property
    def text(self) -> str:
        return self.out + self.err


@dataclass
class Terraform:
    binary: str
    env: dict[str, str]
    workdir: Path
    runs: list[tuple[str, float]] = field(default_factory=list)

    def __call__(self, *args: str, check: bool = True, timeout: float = 60,
                 env: dict[str, str] | None = None) -> Run:
        started = time.monotonic()
        done = subprocess.run([self.binary, *args], cwd=self.workdir, capture_output=True,
                              text=True, timeout=timeout, env={**self.env, **(env or {})})
        seconds = time.monotonic() - started
        TIMINGS.append((args[0], seconds))
        print(f"terraform {' '.join(args)}: {seconds:.2f} s")
        run = Run(done.returncode, done.stdout, done.stderr, seconds)
        if check and done.returncode not in (0, 2):
            raise AssertionError(f"terraform {' '.join(args)} failed:\n{run.text}")
        return run

    def write(self, text: str, name: str = "main.tf") -> None:
        (self.workdir / name).write_text(text)


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    running = Plane(tmp_path_factory.mktemp("control"))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def terraform_token(plane: Plane) -> str:
    """An admin token named `terraform`: the author versions made by Terraform record."""
    return str(plane.call("POST", "/v1/tokens", {"name": "terraform", "role": "admin"})["token"])


@pytest.fixture(scope="module")
def cli_config(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    binary = terraform_binary()
    root = tmp_path_factory.mktemp("terraform")
    plugins = root / "plugins"
    install(plugins)
    config = root / "cli.tfrc"
    config.write_text(
        "provider_installation {\n"
        f'  filesystem_mirror {{\n    path = "{plugins}"\n    include = ["gtm/gtm"]\n  }}\n'
        '  direct {\n    exclude = ["gtm/gtm"]\n  }\n}\n')
    return binary, config


def make_terraform(cli_config: tuple[str, Path], workdir: Path, token: str) -> Terraform:
    binary, config = cli_config
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(workdir),
           "TF_CLI_CONFIG_FILE": str(config), "TF_IN_AUTOMATION": "1",
           "CHECKPOINT_DISABLE": "1", "GTM_TOKEN": token, "TF_INPUT": "0"}
    return Terraform(binary, env, workdir)


def provider_block(url: str, extra: str = "") -> str:
    return ('terraform {\n  required_providers {\n    gtm = { source = "gtm/gtm" }\n  }\n}\n'
            f'provider "gtm" {{\n  api = "{url}"\n{extra}}}\n')


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TIMINGS:
        return
    terminalreporter.section("terraform wall times")
    for command in sorted({c for c, _ in TIMINGS}):
        times = [s for c, s in TIMINGS if c == command]
        terminalreporter.write_line(
            f"terraform {command:8} runs {len(times):3}  mean {sum(times) / len(times):5.2f} s"
            f"  max {max(times):5.2f} s  total {sum(times):6.2f} s")
