"""A reload compiles without touching what serves, then swaps in one step: a compile that
fails part way leaves the running snapshot and its backends exactly as they were."""

from __future__ import annotations

from typing import Any

import pytest

from regional_lb.balancing import state as balancing_state
from regional_lb.config import build_config
from tests.lb.conftest import Env, connect, read_response


def config(backends: list[Any], max_connections: int) -> dict[str, Any]:
    return {"listeners": [{"name": "web", "bind": "127.0.0.1:0"}],
            "pools": [{"name": "app", "backends": backends,
                       "max_connections": max_connections}],
            "timeouts": {"shutdown_grace": 0.0}}


def fetch(address: tuple[str, int]) -> tuple[int, str]:
    with connect(address) as client:
        client.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = read_response(client)
        return status, headers.get("x-backend", "")


class InjectedFailure(Exception):
    pass


class FailingRecord:
    """Stands in for BackendState: making the record of a new backend fails."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise InjectedFailure("no record for a new backend")


def test_a_compile_that_fails_part_way_changes_no_live_backend(
        env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    a = env.recorder("a")
    address = env.balancer(**config([a.address], max_connections=100))
    handle = env.handle
    assert handle is not None
    before = handle.snapshot
    record = before.pools["app"].backends[0]
    assert fetch(address) == (200, "a")

    # The first backend (known: its record carries over) is drained and reweighted, the
    # second is new, and making its record fails: the compile stops half way through.
    monkeypatch.setattr(balancing_state, "BackendState", FailingRecord)
    changed = build_config(config([{"address": a.address, "weight": 5, "state": "drain"},
                                   "127.0.0.1:9"], max_connections=7), "test")
    with pytest.raises(InjectedFailure):
        env.loop.run(handle.reload(changed))
    monkeypatch.undo()

    assert handle.snapshot is before
    assert (record.admin, record.weight, record.max_connections, record.since) == \
        ("enabled", 1, 100, None)
    assert record.up
    assert fetch(address) == (200, "a")  # still served, not drained


def test_a_reload_applies_the_settings_as_it_swaps(env: Env) -> None:
    a = env.recorder("a")
    address = env.balancer(**config([a.address], max_connections=100))
    handle = env.handle
    assert handle is not None
    record = handle.snapshot.pools["app"].backends[0]
    changed = build_config(config([{"address": a.address, "weight": 5, "state": "drain"}],
                                  max_connections=7), "test")
    env.loop.run(handle.reload(changed))
    assert handle.snapshot.pools["app"].backends[0] is record  # its counters carry over
    assert (record.admin, record.weight, record.max_connections) == ("drain", 5, 7)
    assert fetch(address)[0] == 503  # the only backend is drained
