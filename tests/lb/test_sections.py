"""A balancer's TOML table put into the control plane's document (gtm up) means the same
there: its paths relative to the file are made absolute (regional_lb.sections.anchored)."""

from __future__ import annotations

import base64
import os
from dataclasses import replace
from pathlib import Path

import pytest

from gtm.toml_input import read_toml
from regional_lb.config import LbConfig, load_config
from regional_lb.sections import anchored, region_config

CONFIG = """
[lb]
region = "x"
admin = "127.0.0.1:9900"
admin_token = "t"
admin_tls = { certificates = "admin-certs/" }

[lb.tls]
secret_key_file = "secret.key"
ticket_key_file = "tickets.key"
control_store = "sqlite://var/gtm.db"

[[lb.listeners]]
bind = "127.0.0.1:8443"
[lb.listeners.tls]
certificates = "certs/"
client_ca = "clients.pem"
client_auth = "optional"
control = true

[[lb.pools]]
name = "web"
backends = ["127.0.0.1:9001"]
tls = true
tls_ca = "backends.pem"

[lb.acme]
directory = "https://acme.test/directory"
ca_bundle = "ca.pem"
control_api = "http://127.0.0.1:8080"
control_token_file = "var/admin.token"
[[lb.acme.certificates]]
name = "www"
domains = ["*.example.test"]
challenge = "dns-01"
"""


def write_region(directory: Path) -> Path:
    for name in ("certs", "admin-certs", "var"):
        (directory / name).mkdir(parents=True)
    for name in ("clients.pem", "backends.pem", "ca.pem", "secret.key"):
        (directory / name).write_text("x")
    (directory / "tickets.key").write_text(base64.b64encode(os.urandom(80)).decode())
    path = directory / "region.toml"
    path.write_text(CONFIG)
    return path


def same(config: LbConfig) -> LbConfig:
    return replace(config, source="-")


def test_an_anchored_table_compiles_to_the_files_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_region(tmp_path / "elsewhere")
    from_file = load_config(path)
    table = read_toml(path)["lb"]
    # Compiled from another working directory, as the API and the followers do.
    monkeypatch.chdir(tmp_path)
    from_document = region_config("x", anchored(table, path), "document")
    assert same(from_document) == same(from_file)
    assert from_document.tls.control_cache == tmp_path / "elsewhere" / \
        "region.toml.certificates.json"
    assert from_document.acme is not None
    assert from_document.acme.state_dir == tmp_path / "elsewhere" / "acme"
    assert read_toml(path)["lb"] == table  # the file's table itself is left as it was


def test_a_table_without_paths_is_kept_as_it_is(tmp_path: Path) -> None:
    table = {"listeners": [{"bind": "127.0.0.1:8080"}],
             "pools": [{"name": "web", "backends": ["127.0.0.1:9001"]}]}
    assert anchored(table, tmp_path / "region.toml") == table
