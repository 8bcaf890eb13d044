"""gtm.atomic.write_atomic: the one way the product replaces a file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from gtm.atomic import PRIVATE, SHARED, write_atomic


def test_replaces_content_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    target.write_text("old")
    write_atomic(target, '{"new": true}\n')
    assert target.read_text() == '{"new": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_private_files_are_the_owners_only(tmp_path: Path) -> None:
    target = tmp_path / "key.pem"
    write_atomic(target, b"secret", PRIVATE)
    assert stat.S_IMODE(target.stat().st_mode) == 0o600


def test_shared_files_follow_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "overrides.json", "{}", SHARED, durable=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "overrides.json").stat().st_mode) == 0o644


def test_a_failed_rename_keeps_the_old_file_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()  # a directory cannot be replaced by a file
    (target / "inside").write_text("kept")
    with pytest.raises(OSError):
        write_atomic(target, "new")
    assert (target / "inside").read_text() == "kept"
    assert [p.name for p in tmp_path.iterdir()] == ["busy"]
