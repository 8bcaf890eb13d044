"""Actuators: what adds and removes backends when the scaler decides.

Each takes a request ``{"pool", "region", "action": "add" | "remove", "count",
"remove": [addresses], "current": [addresses], "desired", "reason", "idempotency_key"}``
and answers ``{"added": [addresses], "removed": [addresses]}``. One call is bounded by
``timeout`` and retried ``retries`` times with exponential backoff (0.5 s, 1 s, 2 s ...,
at most 30 s); every call is audited by the scaler (an event) whatever its result.

* ``exec``: an argv (no shell), the request as JSON on stdin, the answer as JSON on
  stdout; a non-zero exit or a bad answer fails the attempt.
* ``webhook``: an HTTPS POST of the request, signed (:func:`sign`): headers
  ``X-Gtm-Timestamp`` (Unix seconds), ``X-Gtm-Signature: sha256=HEX`` of
  HMAC-SHA256(key, timestamp + "." + body), and ``Idempotency-Key`` (the same for
  every retry of one action); receivers check the signature and the timestamp's age
  (:func:`verify`, REPLAY_WINDOW). A 2xx answers with the JSON above.
* ``process``: built in; starts a local backend from a command template (``{host}``,
  ``{port}``, ``{address}``) on a free port of a range, waits until it accepts, and
  stops it by its PID (kept in a pid file with the action's idempotency key, so another
  leader on this host can stop it, and an action replayed with the same key answers
  the backends it started instead of starting more). A pid file goes with its process.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import os
import signal
import socket
import ssl
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from gtm.errors import GtmError
from regional_lb.autoscale.outbound import checked_host
from regional_lb.config_autoscale import ActuatorSpec

REPLAY_WINDOW = 300.0  # seconds a receiver accepts a signed timestamp either way
MAX_ANSWER = 1 << 20   # bytes read from an actuator's answer
BACKOFF_CAP = 30.0


class ActuatorError(GtmError):
    pass


class Actuator(Protocol):
    spec: ActuatorSpec

    async def call(self, request: dict[str, Any]) -> dict[str, list[str]]: ...


def make_actuator(spec: ActuatorSpec, state_dir: Path,
                  outbound: tuple[Any, ...]) -> Actuator:
    if spec.type == "exec":
        return ExecActuator(spec)
    if spec.type == "webhook":
        return WebhookActuator(spec, outbound)
    return ProcessActuator(spec, state_dir)


async def with_retries(actuator: Actuator, request: dict[str, Any],
                       on_attempt: Any = None) -> dict[str, list[str]]:
    """The actuator's answer, after up to ``retries`` retries with backoff; the last
    error when all attempts fail. ``on_attempt(n, error or None)`` is told of each."""
    spec = actuator.spec
    delay = 0.5
    for attempt in range(spec.retries + 1):
        try:
            answer = await asyncio.wait_for(actuator.call(request), spec.timeout)
            if on_attempt is not None:
                on_attempt(attempt + 1, None)
            return answer
        except (ActuatorError, OSError, TimeoutError, ValueError) as exc:
            error = exc if str(exc) else ActuatorError(f"timed out after {spec.timeout:g} s")
            if on_attempt is not None:
                on_attempt(attempt + 1, error)
            if attempt == spec.retries:
                raise ActuatorError(f"{spec.type} actuator failed {attempt + 1} times: "
                                    f"{error}") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, BACKOFF_CAP)
    raise AssertionError("unreachable")


def answer_of(data: Any) -> dict[str, list[str]]:
    if not isinstance(data, dict):
        raise ActuatorError("the answer must be a JSON object {\"added\": [...], "
                            "\"removed\": [...]}")
    answer = {}
    for key in ("added", "removed"):
        value = data.get(key, [])
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ActuatorError(f"{key!r} must be a list of \"HOST:PORT\" strings")
        answer[key] = value
    return answer


class ExecActuator:
    def __init__(self, spec: ActuatorSpec):
        self.spec = spec

    async def call(self, request: dict[str, Any]) -> dict[str, list[str]]:
        proc = await asyncio.create_subprocess_exec(
            *self.spec.command, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)
        try:
            out, err = await proc.communicate(json.dumps(request).encode())
        except asyncio.CancelledError:  # timed out: the process goes with the attempt
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            raise
        if proc.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise ActuatorError(f"{self.spec.command[0]} exited with {proc.returncode}: "
                                f"{tail[0][:200]}")
        if len(out) > MAX_ANSWER:
            raise ActuatorError("the answer is too long")
        try:
            return answer_of(json.loads(out))
        except ValueError as exc:
            raise ActuatorError(f"the answer is not JSON: {exc}") from exc


def sign(key: bytes, body: bytes, timestamp: int) -> str:
    return "sha256=" + hmac.new(key, str(timestamp).encode() + b"." + body,
                                hashlib.sha256).hexdigest()


def verify(key: bytes, body: bytes, timestamp: str, signature: str,
           now: float | None = None, window: float = REPLAY_WINDOW) -> bool:
    """For receivers: the signature matches and the timestamp is within the window."""
    if not timestamp.isdigit():
        return False
    if abs((time.time() if now is None else now) - int(timestamp)) > window:
        return False
    return hmac.compare_digest(sign(key, body, int(timestamp)), signature)


def read_key(path: Path) -> bytes:
    key = path.read_bytes().strip()
    if len(key) < 16:
        raise ActuatorError(f"{path}: an HMAC key needs at least 16 bytes")
    return key


async def post_signed(url: str, key: bytes, body: dict[str, Any], ca: Path | None,
                      outbound: tuple[Any, ...], timeout: float,
                      idempotency_key: str | None = None) -> Any:
    """POST JSON, signed; the host's addresses checked against ``outbound`` at call time
    (a name that resolves elsewhere later is refused then). Returns the JSON answer."""
    import aiohttp

    await checked_host(url, outbound)
    data = json.dumps(body).encode()
    stamp = int(time.time())
    headers = {"Content-Type": "application/json", "X-Gtm-Timestamp": str(stamp),
               "X-Gtm-Signature": sign(key, data, stamp)}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    context = ssl.create_default_context(cafile=str(ca) if ca else None)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session, \
            session.post(url, data=data, headers=headers, ssl=context,
                         allow_redirects=False) as response:
        text = await response.content.read(MAX_ANSWER + 1)
        if not 200 <= response.status < 300:
            raise ActuatorError(f"webhook answered {response.status}")
        if len(text) > MAX_ANSWER:
            raise ActuatorError("the answer is too long")
        return json.loads(text) if text.strip() else {}


class WebhookActuator:
    def __init__(self, spec: ActuatorSpec, outbound: tuple[Any, ...]):
        self.spec = spec
        self.outbound = outbound

    async def call(self, request: dict[str, Any]) -> dict[str, list[str]]:
        assert self.spec.secret_file is not None
        key = read_key(self.spec.secret_file)
        return answer_of(await post_signed(self.spec.url, key, request, self.spec.ca,
                                           self.outbound, self.spec.timeout,
                                           request.get("idempotency_key")))


class ProcessActuator:
    """Local backend processes, one per port of the range, stopped by PID."""

    def __init__(self, spec: ActuatorSpec, state_dir: Path):
        self.spec = spec
        self.dir = state_dir / "processes"

    def _pid_file(self, port: int) -> Path:
        return self.dir / f"{self.spec.host}_{port}.pid"

    async def call(self, request: dict[str, Any]) -> dict[str, list[str]]:
        if request["action"] == "add":
            key = str(request.get("idempotency_key") or "")
            added = await self._started_for(key) if key else []
            taken = set(request["current"]) | set(added)
            for _ in range(request["count"] - len(added)):
                address = await self._start(taken, key)
                taken.add(address)
                added.append(address)
            return {"added": added, "removed": []}
        removed = []
        for address in request["remove"]:
            await self._stop(address)
            removed.append(address)
        return {"added": [], "removed": removed}

    async def _started_for(self, key: str) -> list[str]:
        """The live backends an earlier call with this idempotency key started (a leader
        that died in the middle of it), once they accept."""
        found = []
        for path in sorted(self.dir.glob(f"{self.spec.host}_*.pid")):
            pid, owner = _read_pid_file(path)
            if owner != key or pid is None:
                continue
            port = int(path.stem.rsplit("_", 1)[1])
            address = f"{self.spec.host}:{port}"
            if not _alive(pid):
                path.unlink(missing_ok=True)
                continue
            try:
                await _accepting(self.spec.host, port, partial(_gone, pid))
            except BaseException:
                await self._stop(address)
                raise
            found.append(address)
        return found

    async def _start(self, taken: set[str], key: str) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        first, last = self.spec.ports
        for port in range(first, last + 1):
            address = f"{self.spec.host}:{port}"
            if address in taken or self._pid_file(port).exists() or not _free(self.spec.host,
                                                                               port):
                continue
            values = {"host": self.spec.host, "port": str(port), "address": address,
                      "python": sys.executable}
            argv = [part.format(**values) for part in self.spec.command]
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
            self._pid_file(port).write_text(f"{proc.pid} {key}\n")
            try:
                await _accepting(self.spec.host, port, partial(_exited, proc))
            except BaseException:
                await self._stop(address)
                raise
            return address
        raise ActuatorError(f"no free port left in {first}-{last}")

    async def _stop(self, address: str) -> None:
        port = int(address.rsplit(":", 1)[1])
        path = self._pid_file(port)
        pid, _ = _read_pid_file(path)
        if pid is None:
            return  # not one of ours (or already stopped): nothing to do
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        for _ in range(100):  # reaped by asyncio's child watcher, or gone
            if not _alive(pid):
                break
            await asyncio.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self._forget(path)

    def _forget(self, path: Path) -> None:
        """The pid file of a process that is gone, and the directory once empty."""
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):  # not empty: other backends still run
            self.dir.rmdir()

    def running(self, address: str) -> bool | None:
        """Whether the process of a backend this actuator started still runs (a pid file
        whose process is gone is removed); None: not one of its range."""
        host, _, port = address.rpartition(":")
        first, last = self.spec.ports
        if host != self.spec.host or not port.isdigit() or not first <= int(port) <= last:
            return None
        path = self._pid_file(int(port))
        pid, _ = _read_pid_file(path)
        if pid is not None and _alive(pid):
            return True
        if pid is not None:
            self._forget(path)
        return False

    def stop_all_sync(self) -> None:
        """For tests and `gtm up`'s shutdown: every process this range started."""
        for path in self.dir.glob(f"{self.spec.host}_*.pid"):
            pid, _ = _read_pid_file(path)
            if pid is not None:
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGTERM)
            self._forget(path)


def _read_pid_file(path: Path) -> tuple[int | None, str]:
    """``(pid, idempotency key)``; ``(None, "")`` when missing or unreadable."""
    try:
        fields = path.read_text().split()
        return int(fields[0]), (fields[1] if len(fields) > 1 else "")
    except (OSError, ValueError, IndexError):
        return None, ""


def _free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        # As servers bind (aiohttp, asyncio): a port with connections in TIME_WAIT is free.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with contextlib.suppress(OSError):  # a zombie is as good as gone
        status = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1]
        return not status.startswith("Z")
    return True


def _exited(proc: asyncio.subprocess.Process) -> int | None:
    return proc.returncode


def _gone(pid: int) -> int | None:
    return None if _alive(pid) else -1


async def _accepting(host: str, port: int, exited: Any) -> None:
    """Until the backend on ``port`` accepts; ``exited()`` is its exit code once it died
    (None while it runs)."""
    while True:
        code = exited()
        if code is not None:
            raise ActuatorError(f"the backend process on port {port} exited with {code}")
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
