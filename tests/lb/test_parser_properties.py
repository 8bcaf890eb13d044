"""Properties of the parser and the chunked decoder (hypothesis), without sockets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from regional_lb.errors import HttpError
from regional_lb.l7.parser import ChunkedDecoder, parse_request, parse_response

HEAD_BYTES = st.binary(max_size=300)
TOKEN = st.text("abcdefghijklmnopqrstuvwxyz-0123456789", min_size=1, max_size=12)


@settings(max_examples=400, deadline=None)
@given(HEAD_BYTES)
def test_any_bytes_parse_or_fail_cleanly(head: bytes) -> None:
    for parse in (parse_request, parse_response):
        try:
            parse(head)
        except HttpError as exc:
            assert 400 <= exc.status <= 505


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(TOKEN, st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=20)), max_size=8))
def test_well_formed_heads_parse(headers: list[tuple[str, str]]) -> None:
    lines = [f"{name}: {value}" for name, value in headers
             if name not in ("host", "content-length", "transfer-encoding", "expect",
                             "connection", "upgrade")]
    head = "\r\n".join(["GET /x HTTP/1.1", "Host: h", *lines]).encode()
    request = parse_request(head)
    assert request.host == b"h" and request.method == b"GET" and not request.body


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=50), max_size=10),
       st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=30))
def test_chunked_decoding_survives_any_split(pieces: list[bytes], cuts: list[int]) -> None:
    encoded = b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in pieces) + b"0\r\n\r\nNEXT"
    decoder = ChunkedDecoder()
    out: list[bytes] = []
    position, index = 0, 0
    while not decoder.done:
        size = cuts[index % len(cuts)]
        index += 1
        segment = encoded[position : position + size]
        used = decoder.feed(segment, out)
        position += used
        if decoder.done:
            break
        assert used == len(segment)
    assert b"".join(out) == b"".join(pieces)
    assert encoded[position:] == b"NEXT"  # the next message starts exactly there
