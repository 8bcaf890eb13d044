"""The `gtm config`, `gtm token` and `gtm status` commands against a real API."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from gtm.acme.control_api import ControlApi
from gtm.control.plane import ControlSettings, start_control_plane
from tests.control.conftest import example_document
from tests.control.harness import TcpRelay


async def gtm(*args: str, token: str | None = None, api: str = "") -> tuple[int, str, str]:
    env = {**os.environ, "GTM_API": api}
    env.pop("GTM_TOKEN", None)
    if token:
        env["GTM_TOKEN"] = token
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gtm.cli", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_config_token_and_status_commands(tmp_path: Path) -> None:
    state = tmp_path / "control"
    db = state / "gtm.db"
    plane = await start_control_plane(
        ControlSettings(port=0, state_dir=state, bootstrap_admin=False))
    try:
        code, secret, err = await gtm("token", "create", "--name", "ops", "--role", "admin",
                                      "--store", f"sqlite://{db}")
        assert code == 0, err
        token = secret.strip()
        run = {"token": token, "api": plane.url}
        doc = tmp_path / "gtm.json"
        doc.write_text(json.dumps(example_document("192.0.2.1")))
        code, out, err = await gtm("config", "apply", "-f", str(doc), "--dry-run", **run)
        assert code == 0 and 'add    zones["example.test."]' in out, err
        assert await plane.store.head() == 0
        # No terminal to confirm at (stdin is /dev/null here): only --yes applies.
        code, out, err = await gtm("config", "apply", "-f", str(doc), "-m", "first", **run)
        assert code == 2 and "add --yes" in err and "nothing was changed" in err, out + err
        assert await plane.store.head() == 0
        code, out, err = await gtm("config", "apply", "-f", str(doc), "-m", "first", "--yes",
                                   **run)
        assert code == 0 and "version 1 is live" in out, err
        doc.write_text(json.dumps(example_document("192.0.2.2")))
        code, out, _ = await gtm("config", "diff", "-f", str(doc), **run)
        assert "-www  A    192.0.2.1" in out and "+www  A    192.0.2.2" in out
        await gtm("config", "apply", "-f", str(doc), "--yes", **run)
        code, out, _ = await gtm("config", "history", **run)
        assert out.splitlines()[0].split()[0] == "2" and "first" in out
        code, out, _ = await gtm("config", "rollback", "1", **run)
        assert code == 0 and "version 3 is live (equal to version 1)" in out
        code, out, _ = await gtm("config", "get", **run)
        assert json.loads(out) == example_document("192.0.2.1")
        doc.write_text(json.dumps({"zones": {"example.test.": "nonsense"}}))
        code, _, err = await gtm("config", "apply", "-f", str(doc), "--yes", **run)
        assert code == 2 and 'zones["example.test."]' in err and "HTTP 422" in err
        code, out, err = await gtm("token", "create", "--name", "dash", "--role", "viewer",
                                   **run)
        viewer = out.strip()
        code, _, err = await gtm("config", "rollback", "2", token=viewer, api=plane.url)
        assert code == 2 and "HTTP 403" in err
        code, out, _ = await gtm("token", "list", **run)
        assert "dash" in out and "ops" in out
        code, out, _ = await gtm("status", **run)
        assert code == 0 and "live version 3" in out
        code, _, err = await gtm("config", "history", token="gtm_wrong", api=plane.url)
        assert code == 2 and "HTTP 401" in err
    finally:
        await plane.stop()


CHALLENGE = "_acme-challenge.www.example.test."


async def test_writes_survive_a_lost_answer_without_being_made_twice(tmp_path: Path) -> None:
    plane = await start_control_plane(ControlSettings(port=0, state_dir=tmp_path / "control"))
    host, port = plane.url.removeprefix("http://").rsplit(":", 1)
    relay = TcpRelay((host, int(port)))
    token = plane.admin_token_path.read_text().strip()
    try:
        doc = tmp_path / "gtm.json"
        doc.write_text(json.dumps(example_document("192.0.2.1")))
        # The API stores the version, then the connection breaks before its answer.
        relay.swallow_reply_to(b"PUT /v1/config HTTP/1.1")
        code, out, err = await gtm("config", "apply", "-f", str(doc), "--yes", token=token,
                                   api=f"http://127.0.0.1:{relay.port}")
        assert relay.swallowed.is_set()
        assert code == 0 and "version 1 is live" in out, out + err
        # The ACME client's writes (DNS-01 values) likewise.
        relay.swallow_reply_to(b"PUT /v1/acme/challenges/")
        api = ControlApi(f"http://127.0.0.1:{relay.port}", token)
        status, body = await api.call("PUT", f"/v1/acme/challenges/{CHALLENGE}",
                                      json={"values": ["proof"]})
        assert relay.swallowed.is_set() and status == 201, body
        assert json.loads(body)["version"]["version"] == 2
        assert [v.number for v in await plane.store.history(None, 10)] == [2, 1]
        commits = [e for e in await plane.store.audit(None, 50) if e.action == "config.commit"]
        assert [e.target for e in commits] == ["version 2", "version 1"]
    finally:
        relay.close()
        await plane.stop()


def into_closed_pipe(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run a command whose stdout reader has gone: its exit status and stderr."""
    process = subprocess.Popen([sys.executable, "-m", "gtm.cli", *args], env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()
    err = process.stderr.read().decode()
    return process.wait(timeout=20), err


async def test_history_into_head_ends_quietly(tmp_path: Path) -> None:
    plane = await start_control_plane(ControlSettings(port=0, state_dir=tmp_path / "control"))
    try:
        for n in range(3):
            await plane.service.propose(example_document(f"192.0.2.{n + 1}", serial=n + 1), n,
                                        "t", f"change {n + 1}")
        env = {**os.environ, "GTM_API": plane.url,
               "GTM_TOKEN": plane.admin_token_path.read_text().strip()}
        gtm_cli = f"{shlex.quote(sys.executable)} -m gtm.cli"
        # As a user types it, through a real pipe: head exits after its line.
        shell = await asyncio.create_subprocess_shell(
            f"{gtm_cli} config history | head -1", env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await shell.communicate()
        assert err.decode() == "" and out.decode().split()[0] == "3"
        # Each version changed one thing: "1 change", not "1 changes".
        code, out, _ = await gtm("config", "history", token=env["GTM_TOKEN"], api=plane.url)
        assert code == 0 and out.count(" 1 change ") == 3 and "changes" not in out
        # The reader gone before a byte is written, so the write always meets a closed pipe.
        assert await asyncio.to_thread(into_closed_pipe, ["config", "history"], env) == (141, "")
    finally:
        await plane.stop()
