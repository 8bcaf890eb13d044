"""Every TOML reader reports a broken file the same way: a ConfigError naming it."""

from __future__ import annotations

from pathlib import Path

import pytest

from gtm.errors import ConfigError
from gtm.toml_input import read_toml
from regional_lb.config import load_config


@pytest.mark.parametrize("content", [b"[lb\n", b"name = \"\xff\xfe\"\n"],
                         ids=["broken", "not-utf8"])
def test_a_balancer_config_that_is_not_toml_is_named(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "lb.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}: not valid TOML: ")


def test_a_missing_file_says_it_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read: No such file or directory"):
        read_toml(tmp_path / "absent.toml")
