"""terraform/examples/local applied with the real terraform CLI to a real `gtm up`: the
four regions' configuration, DNS answers checked with dnspython after each apply, the
plan of a geo edit showing exactly the vantage points whose answers move, what the
modules render validated by the tools that consume it, and destroy.

One `gtm up` (its four example balancers on 127.0.N.x, DNS and API on ports of its own)
and one apply are shared by the module's tests: the suite runs serially, so nothing else
binds 127.0.N.x meanwhile."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.edns
import dns.message
import dns.query
import pytest

from gtm.cli import main
from tests.integration.servers import (
    GtmServer,
    ServerFactory,
    copy_example_zones,
    example_regions_held,
    free_port,
    wait_until,
)
from tests.terraform.conftest import Terraform, make_terraform

pytestmark = [pytest.mark.integration, pytest.mark.serial, pytest.mark.timeout(150)]

REPO = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
VANTAGE_POINTS = {"GB": "81.2.69.0/24", "NL": "2.16.0.0/24", "US": "8.8.8.0/24",
                  "BR": "200.160.2.0/24", "JP": "133.1.1.0/24", "AU": "1.1.1.0/24"}
FIRST = {"GB": "eu-west 127.0.1.1", "NL": "eu-west 127.0.1.1", "US": "us-east 127.0.2.1",
         "BR": "sa-east 127.0.4.1", "JP": "ap-northeast 127.0.3.1",
         "AU": "us-east 127.0.2.1"}
NAME = "www.tf.example.test."


@dataclass
class Lab:
    up: GtmServer
    api: str
    token: str
    tf: Terraform
    variables: list[str]
    before: dict[str, Any]

    def document(self) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.api}/v1/config", headers={
            "Authorization": f"Bearer {self.token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.loads(response.read())["document"])

    def outputs(self) -> dict[str, Any]:
        values = json.loads(self.tf("output", "-json").out)
        return {k: v["value"] for k, v in values.items()}


def dns_answer(server: GtmServer, subnet: str) -> set[str]:
    network, prefix = subnet.split("/")
    query = dns.message.make_query(NAME, "A", use_edns=0,
                                   options=[dns.edns.ECSOption(network, int(prefix))])
    response = dns.query.udp(query, server.host, port=server.port, timeout=2)
    return {rd.to_text() for rrset in response.answer for rd in rrset}


def addresses(line: str) -> set[str]:
    return set(line.split(" ", 1)[1].split(","))


def wait_for_answers(lab: Lab, expected: dict[str, str]) -> None:
    """Every vantage point's DNS answer (ECS) is the simulated one. Waits: the nodes take
    a new version at once, and the new endpoints need their first health check."""
    def matched() -> bool | None:
        got = {label: dns_answer(lab.up, VANTAGE_POINTS[label]) for label in expected}
        return True if all(got[k] == addresses(v) for k, v in expected.items()) else None

    wait_until(matched, 20, "DNS answers equal to the simulated ones", lab.up.log)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory,
        cli_config: tuple[str, Path]) -> Iterator[Lab]:
    # gtm up without --region runs the example regions: their addresses are fixed.
    with example_regions_held():
        yield from _lab(tmp_path_factory, cli_config)


def _lab(tmp_path_factory: pytest.TempPathFactory,
         cli_config: tuple[str, Path]) -> Iterator[Lab]:
    root = tmp_path_factory.mktemp("example")
    factory = ServerFactory(root)
    try:
        up = factory(copy_example_zones(root / "zones"), workers=None, subcommand="up",
                     extra=["--listen", f"127.0.0.1:{free_port(('127.0.0.1',))}",
                            "--api-listen", "127.0.0.1:0"])
        match = re.search(r"control plane API on (http://\S+)", up.log())
        assert match, up.log()
        api = match.group(1)
        token = (root / "var" / "control" / "admin.token").read_text().strip()
        # The repository's terraform/ as a user has it (the example names ../../modules).
        shutil.copytree(REPO / "terraform", root / "terraform",
                        ignore=shutil.ignore_patterns(".terraform*", "terraform.tfstate*"))
        tf = make_terraform(cli_config, root / "terraform" / "examples" / "local", token)
        variables = ["-var", f"api={api}", "-var", f"install_dir={VENV}",
                     "-var", f"store=sqlite://{root / 'var' / 'control' / 'gtm.db'}"]
        probe = Lab(up, api, token, tf, variables, {})
        probe.before = probe.document()
        tf("init", "-no-color")
        applied = tf("apply", "-auto-approve", "-no-color", *variables)
        assert "Apply complete! Resources: 15 added" in applied.out, applied.text
        yield probe
    finally:
        factory.stop_all()


def rendered(lab: Lab, tmp_path: Path) -> dict[str, list[Path]]:
    outputs = lab.outputs()
    files: dict[str, list[Path]] = {"cloud_init": [], "units": [], "toml": []}
    for name, text in [*outputs["region_cloud_init"].items(),
                       ("node", outputs["node_cloud_init"])]:
        path = tmp_path / f"{name}.cloud-init.yaml"
        path.write_text(text)
        files["cloud_init"].append(path)
    for name, text in {**outputs["region_units"], **outputs["node_units"]}.items():
        path = tmp_path / name
        path.write_text(text)
        files["units"].append(path)
    for name, text in outputs["region_toml"].items():
        path = tmp_path / f"lb.{name}.toml"
        path.write_text(text)
        files["toml"].append(path)
    return files


def tool(name: str, package: str) -> str | None:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{name} is not on PATH: CI requires it (apt-get install {package})")
        warnings.warn(f"!!! {name} is missing (apt-get install {package}): not checked !!!",
                      stacklevel=1)
    return path


def test_what_the_modules_render_is_valid_for_the_tools_that_take_it(
        lab: Lab, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = rendered(lab, tmp_path)
    assert len(files["cloud_init"]) == 5 and len(files["units"]) == 6
    units = {path.name: path.read_text() for path in files["units"]}
    assert "ExecStart=" + str(VENV / "bin" / "gtm") + " lb serve --control sqlite://" \
        in units["gtm-lb-eu-west.service"]
    assert "--region eu-west" in units["gtm-lb-eu-west.service"]
    assert "--admin-token-file /etc/gtm/lb-admin.token" in units["gtm-lb-eu-west.service"]
    assert " serve --node-id local-1 " in units["gtm-dns-local-1.service"]
    assert "ExecStart=" + str(VENV / "bin" / "gtm") + " api --listen 127.0.0.1:8080 " \
        in units["gtm-api-local-1.service"]
    for path in files["cloud_init"]:  # no secret in user data
        assert lab.token not in path.read_text()

    # The modules and the example as `terraform fmt` writes them.
    formatted = lab.tf("fmt", "-check", "-recursive", "-no-color", "../..", check=False)
    assert formatted.code == 0, formatted.text

    # Each rendered table through `gtm lb serve --check` (this host's files checked too).
    capsys.readouterr()  # what came before (terraform's timings)
    for path in files["toml"]:
        assert main(["lb", "serve", "--check", "--config", str(path)]) == 0
        region = path.stem.removeprefix("lb.")
        assert capsys.readouterr().out == f"{path}: ok (region {region}: 1 listeners, " \
            "1 pools)\n"

    # cloud-init schema on each template's output (the four regions' documents differ
    # only in values), systemd-analyze verify on every unit, side by side.
    commands = []
    cloud_init = tool("cloud-init", "cloud-init")
    if cloud_init is not None:
        commands += [[cloud_init, "schema", "--config-file", str(path)] for path in
                     (tmp_path / "eu-west.cloud-init.yaml", tmp_path / "node.cloud-init.yaml")]
    analyze = tool("systemd-analyze", "systemd")
    if analyze is not None:
        commands.append([analyze, "verify", *map(str, files["units"])])

    def run(command: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, timeout=60)

    with ThreadPoolExecutor(3) as pool:
        for command, done in zip(commands, pool.map(run, commands), strict=True):
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            if command[1] == "schema":
                assert f"Valid cloud-config: {command[-1]}" in done.stdout


def test_the_example_serves_its_regions_and_a_geo_edit_plans_exactly_its_moves(
        lab: Lab) -> None:
    tf = lab.tf
    assert lab.outputs()["answers"] == FIRST
    wait_for_answers(lab, FIRST)  # what DNS answers is what the plan simulated
    # The regions' balancers (gtm up's) took their new listener: traffic flows.
    with urllib.request.urlopen("http://127.0.1.1:8081/", timeout=5) as response:
        assert re.fullmatch(r"hello from 127\.0\.1\.10[12]:9001\n", response.read().decode())
    lb = lab.document()["lb"]["eu-west"]
    assert [p["name"] for p in lb["pools"]] == ["web", "tf-web"]  # gtm up's kept, ours added

    # Send Great Britain to us-east: the plan changes that name only, and its simulated
    # answers move for GB alone (NL stays in eu-west through the continent rule).
    edit = [*lab.variables, "-var", "gb=us-east"]
    tf("plan", "-no-color", "-out", "edit.tfplan", *edit)
    plan = json.loads(tf("show", "-json", "edit.tfplan").out)
    changed = [c for c in plan["resource_changes"] if c["change"]["actions"] != ["no-op"]]
    assert [(c["address"], c["change"]["actions"]) for c in changed] == [
        ("gtm_steered_name.www", ["update"])], changed
    before = changed[0]["change"]["before"]["simulated_answers"]
    after = changed[0]["change"]["after"]["simulated_answers"]
    assert before == FIRST
    moved = {label for label in VANTAGE_POINTS if before[label] != after[label]}
    assert moved == {"GB"}
    assert after["GB"] == "us-east 127.0.2.1"

    tf("apply", "-auto-approve", "-no-color", "edit.tfplan")
    wait_for_answers(lab, after)
    assert dns_answer(lab.up, VANTAGE_POINTS["GB"]) == {"127.0.2.1"}

    tf("destroy", "-auto-approve", "-no-color", "-refresh=false", *edit)
    assert lab.document() == lab.before  # gtm up's own regions' tables as they were
