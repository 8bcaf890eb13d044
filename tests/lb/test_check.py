"""`gtm lb serve --check`: the configuration compiled as serving compiles it, nothing
bound or started; an error ends the command with its path."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from gtm.cli import main

TABLE = """
[lb]
region = "eu-west"
[[lb.listeners]]
name = "web"
bind = "127.0.0.1:{port}"
pool = "web"
[[lb.pools]]
name = "web"
backends = [{backends}]
"""


def test_check_compiles_a_file_without_binding_its_listeners(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:  # serving would fail to bind this address
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        good = tmp_path / "lb.toml"
        good.write_text(TABLE.format(port=port, backends='"127.0.0.1:9001"'))
        assert main(["lb", "serve", "--check", "--config", str(good)]) == 0
        assert capsys.readouterr().out == \
            f"{good}: ok (region eu-west: 1 listeners, 1 pools)\n"

        bad = tmp_path / "bad.toml"
        bad.write_text(TABLE.format(port=port, backends='"127.0.0.1:9001", "no-port"'))
        assert main(["lb", "serve", "--check", "--config", str(bad)]) == 2
        assert capsys.readouterr().err == (
            f'gtm: {bad}:lb.pools[0].backends[1].address: needs a port ("HOST:PORT")\n')


def test_check_compiles_the_region_file_a_followed_balancer_keeps(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    args = ["lb", "serve", "--check", "--control", f"sqlite:///{tmp_path}/none.db",
            "--region", "eu-west", "--state-dir", str(state)]
    assert main(args) == 2
    assert "lb.eu-west.json: no configuration followed yet" in capsys.readouterr().err
    state.mkdir()
    table = {"listeners": [{"bind": "127.0.0.1:1", "pool": "web"}],
             "pools": [{"name": "web", "backends": ["127.0.0.1:9001"]}]}
    (state / "lb.eu-west.json").write_text(
        json.dumps({"version": 3, "region": "eu-west", "lb": table}))
    assert main(args) == 0
    assert "ok (region eu-west: 1 listeners, 1 pools)" in capsys.readouterr().out
    (state / "lb.eu-west.json").write_text(json.dumps(
        {"version": 4, "region": "eu-west", "lb": {**table, "listeners": []}}))
    assert main(args) == 2
    assert capsys.readouterr().err.endswith(
        "(lb.eu-west):lb.eu-west.listeners: needs at least one [[lb.listeners]]\n")
