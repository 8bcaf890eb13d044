"""The product's log format: one record, one line, whatever the message or exception holds."""

from __future__ import annotations

import io
import logging

from gtm import log


def logged(emit: object) -> list[str]:
    stream = io.StringIO()
    logger = logging.getLogger("gtm.test.format")
    handler = log.handler(stream)
    logger.addHandler(handler)
    logger.propagate = False
    try:
        emit(logger)  # type: ignore[operator]
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    return stream.getvalue().splitlines()


def test_controls_in_messages_and_arguments_are_escaped() -> None:
    hostile = "a\nb\rc\x1b[31md\x00e\x85f\u2028g\ud800h\ti"
    [line] = logged(lambda logger: logger.warning("got %s and " + hostile, hostile))
    escaped = "a\\nb\\rc\\x1b[31md\\x00e\\x85f\\u2028g\\ud800h\\ti"
    assert line.endswith(f"got {escaped} and {escaped}")


def test_a_traceback_stays_under_its_record() -> None:
    def fail(logger: logging.Logger) -> None:
        try:
            raise ValueError("bad\n2030-01-01 00:00:00,000 INFO gtm.control.audit forged")
        except ValueError:
            logger.exception("it failed")

    lines = logged(fail)
    assert lines[0].endswith("it failed")
    # A newline inside the exception's message cannot be told from the traceback's own,
    # but the line it starts is indented like the rest: it cannot pass for a record.
    assert all(line.startswith("    ") for line in lines[1:])
    assert lines[-2:] == ["    ValueError: bad",
                          "    2030-01-01 00:00:00,000 INFO gtm.control.audit forged"]
