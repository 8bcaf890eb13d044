"""Where a balancer keeps its scaling files, and that it leaves none behind: the SQLite
store of a balancer with no other sits in its state directory (by default the config
file's), never in /tmp; the process actuator's pid files go with their processes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest

from regional_lb.autoscale.actuators import ProcessActuator
from regional_lb.autoscale.files import state_dir
from regional_lb.autoscale.start import scale_store_url, with_scale_store
from regional_lb.config import load_config
from regional_lb.config_autoscale import ActuatorSpec
from tests.lb.test_autoscale import BACKEND, free_range

POOL = """
[[lb.listeners]]
bind = "127.0.0.1:0"
[[lb.pools]]
name = "app"
backends = []
[lb.pools.autoscale]
min = 1
max = 2
metric = "in_flight_per_backend"
target = 5
"""


def config_file(tmp_path: Path, top: str = "") -> Path:
    path = tmp_path / "etc" / "lb.toml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(f'[lb]\nregion = "eu"\n{top}\n{POOL}')
    return path


def test_the_scale_store_is_found_where_the_balancer_lives(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path))
    assert scale_store_url(config) == (f"sqlite://{tmp_path / 'etc' / 'eu.scale.db'}", "gtm")
    assert state_dir(config) == tmp_path / "etc"
    # The control plane's store, when the balancer names one (PostgreSQL: several hosts).
    pg = "postgresql://scaler@db.example:5432/gtm"
    config = load_config(config_file(tmp_path, f'[lb.tls]\ncontrol_store = "{pg}"\n'
                                               'control_namespace = "prod"'))
    assert scale_store_url(config) == (pg, "prod")
    # Redis beats it; the scaler's own store beats both.
    config = load_config(config_file(tmp_path, 'redis_url = "redis://r:6379/0"\n'
                                               f'[lb.tls]\ncontrol_store = "{pg}"'))
    assert scale_store_url(config)[0] == "redis://r:6379/0"
    config = load_config(config_file(tmp_path, '[lb.autoscale]\nstore = "postgresql://x/y"\n'
                                               'namespace = "ns"\nstate_dir = "var"'))
    assert scale_store_url(config) == ("postgresql://x/y", "ns")
    assert state_dir(config) == tmp_path / "etc" / "var"
    # A followed balancer (gtm lb serve --control, gtm up): its control plane's store,
    # files in its region file's directory.
    followed = with_scale_store(load_config(config_file(tmp_path)), pg, "prod", tmp_path / "st")
    assert scale_store_url(followed) == (pg, "prod")
    assert state_dir(followed) == tmp_path / "st"


def test_a_bad_store_url_is_refused_with_its_key(tmp_path: Path) -> None:
    from gtm.errors import ConfigError

    with pytest.raises(ConfigError, match=r"lb\.autoscale\.store: must be a redis://"):
        load_config(config_file(tmp_path, '[lb.autoscale]\nstore = "mysql://x"'))


def test_pid_files_go_with_their_processes(tmp_path: Path) -> None:
    ports = free_range(4)
    spec = ActuatorSpec("process", (sys.executable, BACKEND, "--listen", "{address}"),
                        host="127.0.0.1", ports=ports, timeout=20)
    actuator = ProcessActuator(spec, tmp_path)
    pids = tmp_path / "processes"

    async def scenario() -> None:
        answer = await actuator.call({"action": "add", "count": 2, "current": [],
                                      "idempotency_key": "k1"})
        first, second = answer["added"]
        assert len(list(pids.glob("*.pid"))) == 2
        # A replay of the same action answers the same backends and starts nothing.
        again = await actuator.call({"action": "add", "count": 2, "current": [],
                                     "idempotency_key": "k1"})
        assert again["added"] == [first, second] and len(list(pids.glob("*.pid"))) == 2
        # A backend that dies on its own: its pid file goes when the scaler looks.
        pid = int((pids / f"{first.replace(':', '_')}.pid").read_text().split()[0])
        os.killpg(pid, signal.SIGKILL)
        while actuator.running(first) is not False:
            await asyncio.sleep(0.05)
        assert [p.name for p in pids.glob("*.pid")] == [f"{second.replace(':', '_')}.pid"]
        # Stopped by the actuator: its pid file and the emptied directory go.
        await actuator.call({"action": "remove", "remove": [second], "current": []})
        assert not pids.exists()

    try:
        asyncio.run(scenario())
    finally:
        actuator.stop_all_sync()
    assert not pids.exists()
