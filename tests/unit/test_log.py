"""The one logging setup: its handler writes to whatever sys.stderr is when a line is logged."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import Iterator

import pytest

from gtm import log


@pytest.fixture
def root_handlers() -> Iterator[None]:
    root = logging.getLogger()
    saved, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = saved
        root.setLevel(level)


def test_a_replaced_and_closed_stderr_is_not_written_to(
        root_handlers: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # What an in-process `gtm.cli.main` does under pytest's capsys: set up logging while
    # sys.stderr is a capture stream that is closed (and replaced) after the test.
    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    log.setup("INFO")
    first.close()
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    log.zones.info("after the first stream closed")
    written = second.getvalue()
    assert "Logging error" not in written and "I/O operation on closed file" not in written
    assert "after the first stream closed" in written


def test_setup_twice_keeps_one_handler(root_handlers: None) -> None:
    log.setup("INFO")
    log.setup("WARNING")
    assert len(logging.getLogger().handlers) == 1
    assert logging.getLogger().level == logging.WARNING
