"""The one reader of JSON that clients send, for every API (control plane, balancer admin).

Strict, because what it accepts is stored and handed to every node:

- size: the body is read within the application's ``client_max_size`` (413 beyond it);
- encoding: UTF-8, as RFC 8259 requires (a Content-Type naming another charset is 400);
- depth: at most MAX_DEPTH levels of arrays and objects, checked before parsing, so a
  100,000-deep body is refused rather than crashing the parser, and a stored document
  can never be too deep for the code that copies, diffs and compiles it;
- no duplicate keys (which value would win is a guess), no NaN or Infinity (not
  JSON) and no number too large to be a finite float, each named by its JSON path;
- no NUL and no lone surrogate in any string or key: neither can be stored as text
  (PostgreSQL refuses NUL, UTF-8 has no surrogates), and neither is ever meaningful.

Every refusal is a RequestError (400, or 413 for size) whose message says what was wrong
and, where it can, where.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from typing import Any

from aiohttp import web

from gtm.errors import RequestError

MAX_DEPTH = 64  # the deepest real document (steering) is about 8
OFF_LOOP_BYTES = 1 << 20  # bodies this large are parsed in a worker thread

# Outside strings, only brackets change the depth; strings are skipped whole (escapes
# included) so brackets inside them do not count. Exact for every prefix of valid
# JSON, which is all the parser would read before failing anyway.
_DEPTH_TOKENS = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


async def read_json(request: web.Request) -> Any:
    """The request's body as JSON, strictly (above); RequestError otherwise."""
    charset = request.charset
    if charset is not None and charset.lower().replace("-", "") != "utf8":
        raise RequestError(400, f"the body must be UTF-8 JSON, not charset {charset[:40]!r}",
                           "Content-Type")
    try:
        data = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise RequestError(413, f"the body exceeds the maximum body size of "
                           f"{request.client_max_size} bytes", "body") from exc
    if len(data) < OFF_LOOP_BYTES:
        return parse(data)
    return await asyncio.to_thread(parse, data)  # a large zone must not stall the loop


def parse(data: bytes | str, max_depth: int = MAX_DEPTH) -> Any:
    """``data`` as JSON, strictly (above); RequestError(400) naming the problem otherwise."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"the body is not JSON: not UTF-8 ({exc.reason} at byte "
                           f"{exc.start})", "body") from exc
    _check_depth(text, max_depth)
    try:
        # NaN, Infinity and 1e400 parse (as non-finite floats) so that the walk below can
        # refuse them by their path; duplicate keys are refused here.
        value = json.loads(text, object_pairs_hook=_object)
    except ValueError as exc:  # JSONDecodeError, a duplicate key, an integer too long
        raise RequestError(400, f"the body is not JSON: {exc}", "body") from exc
    _check_values(value)
    return value


def _check_depth(text: str, max_depth: int) -> None:
    depth = 0
    for token in _DEPTH_TOKENS.finditer(text):
        char = token.group()
        if char in ("[", "{"):
            depth += 1
            if depth > max_depth:
                raise RequestError(
                    400, f"the body is nested too deeply: more than {max_depth} levels of "
                    f"arrays and objects (at character {token.start()})", "body")
        elif char in ("]", "}"):
            depth -= 1


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {_quoted(key)} in an object")
            seen.add(key)
    return value


def _check_values(value: Any) -> None:
    """Every key and string storable as text, every number finite; the first that is not
    is named by its JSON path. Iterative: the depth is bounded, but the width is not."""
    pending: list[tuple[Any, str]] = [(value, "")]
    while pending:
        item, path = pending.pop()
        if isinstance(item, str):
            _storable(item, path)
        elif isinstance(item, float) and not math.isfinite(item):
            raise RequestError(400, f"the number at {path or 'the top'} is not a finite JSON "
                               "number (NaN, Infinity, or too large)", path or "body")
        elif isinstance(item, dict):
            for key, child in item.items():
                child_path = _child(path, key)
                _storable(key, child_path, "key")
                pending.append((child, child_path))
        elif isinstance(item, list):
            pending.extend((child, f"{path}[{index}]") for index, child in enumerate(item))


def _storable(text: str, path: str, what: str = "string") -> None:
    if "\x00" in text:
        problem = "a NUL character"
    else:
        try:
            text.encode("utf-8")
            return
        except UnicodeEncodeError:
            problem = "a lone surrogate (not Unicode text)"
    raise RequestError(400, f"the {what} at {path or 'the top'} contains {problem}",
                       path or "body")


def _child(path: str, key: str) -> str:
    if _IDENTIFIER.match(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{_quoted(key)}]"


def _quoted(key: str) -> str:
    """A key as JSON text, ASCII only: safe to put into a message and a log."""
    return json.dumps(key[:100])
