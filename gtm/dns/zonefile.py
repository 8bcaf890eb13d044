"""Reading RFC 1035 master files into records that remember their file and line.

dnspython's tokenizer and rdata parsers do the lexing (parentheses, comments,
quoting, every rdata type); this module owns the master-file grammar around them
($ORIGIN, $TTL, $INCLUDE, owner inheritance, TTL and class in either order) so that
every record keeps the file and line it came from, and nothing is silently dropped:
dnspython's own reader discards out-of-zone names and merges CNAME conflicts, which
a server that validates zones must report instead.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.tokenizer
import dns.ttl

from gtm.errors import ZoneError

MAX_INCLUDE_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Record:
    name: dns.name.Name
    ttl: int
    rdata: dns.rdata.Rdata
    source: str
    line: int

    @property
    def rdtype(self) -> int:
        return int(self.rdata.rdtype)


@dataclass
class _State:
    """What a master file's directives change as it is read."""

    origin: dns.name.Name
    default_ttl: int | None = None
    last_ttl: int | None = None
    last_name: dns.name.Name | None = None


def read_master_file(path: Path, origin: dns.name.Name) -> list[Record]:
    """Read a zone's master file, following $INCLUDE, into a list of records."""
    records: list[Record] = []
    _read_file(path, _State(origin=origin), records, depth=0, seen=())
    return records


def read_master_text(text: str, origin: dns.name.Name, source: str) -> list[Record]:
    """Read master-file text that has no directory of its own ($INCLUDE is refused)."""
    records: list[Record] = []
    _read_text(text, Path(source), _State(origin=origin), records, MAX_INCLUDE_DEPTH, ())
    return records


def _read_file(
    path: Path, state: _State, out: list[Record], depth: int, seen: tuple[Path, ...]
) -> None:
    resolved = path.resolve()
    if resolved in seen:
        raise ZoneError("$INCLUDE loop", str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ZoneError(f"cannot read: {exc}", str(path)) from exc
    _read_text(text, path, state, out, depth, (*seen, resolved))


def _read_text(
    text: str, path: Path, state: _State, out: list[Record], depth: int, seen: tuple[Path, ...]
) -> None:
    tok = dns.tokenizer.Tokenizer(text, filename=str(path))
    while True:
        line = tok.line_number
        try:
            if not _read_entry(tok, path, state, out, depth, seen):
                return
        except ZoneError:
            raise
        except (dns.exception.DNSException, ValueError) as exc:
            raise ZoneError(_reason(exc), str(path), line) from exc


def _reason(exc: Exception) -> str:
    text = str(exc) or type(exc).__name__
    # dnspython prefixes "file:line: " itself on some errors; keep one prefix only.
    return text.split(": ", 2)[-1] if text.count(":") >= 2 and "line" not in text else text


def _read_entry(
    tok: dns.tokenizer.Tokenizer,
    path: Path,
    state: _State,
    out: list[Record],
    depth: int,
    seen: tuple[Path, ...],
) -> bool:
    """Read one directive or record; return False at the end of the file."""
    token = tok.get(want_leading=True)
    if token.is_eof():
        return False
    if token.is_eol():
        return True
    if token.is_whitespace():
        following = tok.get()
        if following.is_eol_or_eof():
            return not following.is_eof()
        tok.unget(following)
        if state.last_name is None:
            raise ZoneError("record without an owner name", str(path), tok.line_number)
        _read_record(tok, path, state, state.last_name, out)
        return True
    if token.is_identifier() and token.value.startswith("$"):
        _read_directive(token.value.upper(), tok, path, state, out, depth, seen)
        return True
    state.last_name = tok.as_name(token, state.origin)
    _read_record(tok, path, state, state.last_name, out)
    return True


def _read_directive(
    directive: str,
    tok: dns.tokenizer.Tokenizer,
    path: Path,
    state: _State,
    out: list[Record],
    depth: int,
    seen: tuple[Path, ...],
) -> None:
    line = tok.line_number
    if directive == "$ORIGIN":
        state.origin = tok.get_name(state.origin)
        tok.get_eol()
    elif directive == "$TTL":
        state.default_ttl = dns.ttl.from_text(tok.get_identifier())
        tok.get_eol()
    elif directive == "$INCLUDE":
        _include(tok, path, state, out, depth, seen, line)
    else:
        raise ZoneError(f"unsupported directive {directive}", str(path), line)


def _include(
    tok: dns.tokenizer.Tokenizer,
    path: Path,
    state: _State,
    out: list[Record],
    depth: int,
    seen: tuple[Path, ...],
    line: int,
) -> None:
    target = Path(tok.get_string())
    following = tok.get()
    origin = state.origin
    if not following.is_eol_or_eof():
        origin = tok.as_name(following, state.origin)
        tok.get_eol()
    if depth + 1 > MAX_INCLUDE_DEPTH:
        raise ZoneError("$INCLUDE nested too deeply, or not allowed here", str(path), line)
    if not target.is_absolute():
        target = path.parent / target
    # Name the $INCLUDE line itself when the file it names cannot be read.
    if target.resolve() in seen:
        raise ZoneError(f"$INCLUDE loop: {target} is already being read", str(path), line)
    if not target.is_file():
        raise ZoneError(f"cannot read included file {target}", str(path), line)
    # The included file gets its own origin and owner; the parent's resume after it
    # (RFC 1035 section 5.1). The default TTL carries across, as BIND does.
    inner = _State(origin=origin, default_ttl=state.default_ttl, last_ttl=state.last_ttl)
    _read_file(target, inner, out, depth + 1, seen)


def _read_record(
    tok: dns.tokenizer.Tokenizer,
    path: Path,
    state: _State,
    owner: dns.name.Name,
    out: list[Record],
) -> None:
    line = tok.line_number
    ttl, rdclass, type_token = _ttl_and_class(tok)
    if rdclass != dns.rdataclass.IN:
        raise ZoneError(f"class {dns.rdataclass.to_text(rdclass)} is not served", str(path), line)
    try:
        rdtype = dns.rdatatype.from_text(type_token)
    except dns.rdatatype.UnknownRdatatype as exc:
        raise ZoneError(f"unknown record type {type_token!r}", str(path), line) from exc
    rdata = _read_rdata(tok, path, line, rdclass, rdtype, state.origin)
    if ttl is None:
        ttl = _implicit_ttl(state, rdata)
        if ttl is None:
            raise ZoneError("no TTL given and no $TTL in force", str(path), line)
    state.last_ttl = ttl
    out.append(Record(owner, ttl, rdata, str(path), line))


ADDRESS_KINDS = {dns.rdatatype.A: ("IPv4", ipaddress.IPv4Address),
                 dns.rdatatype.AAAA: ("IPv6", ipaddress.IPv6Address)}


def _read_rdata(
    tok: dns.tokenizer.Tokenizer,
    path: Path,
    line: int,
    rdclass: dns.rdataclass.RdataClass,
    rdtype: dns.rdatatype.RdataType,
    origin: dns.name.Name,
) -> dns.rdata.Rdata:
    """dnspython's rdata parsers, with a reason that says what was expected: their own
    ("Text input is malformed.") names neither the field nor the value."""
    type_text = dns.rdatatype.to_text(rdtype)
    if rdtype in ADDRESS_KINDS:
        kind, parse = ADDRESS_KINDS[rdtype]
        token = tok.get()
        try:
            parse(token.value)
        except ValueError:
            shown = token.value if token.is_identifier() else "nothing"
            raise ZoneError(f"not an {kind} address: {shown}", str(path), line) from None
        tok.unget(token)
    try:
        return dns.rdata.from_text(rdclass, rdtype, tok, origin, relativize=False)
    except dns.exception.DNSException as exc:
        fields = " ".join(getattr(dns.rdata.get_rdata_class(rdclass, rdtype), "__slots__", ()))
        expected = f" (expected: {fields})" if fields else ""
        raise ZoneError(f"bad {type_text} record: {_reason(exc)}{expected}",
                        str(path), line) from exc


def _ttl_and_class(
    tok: dns.tokenizer.Tokenizer,
) -> tuple[int | None, dns.rdataclass.RdataClass, str]:
    """TTL and class may come in either order before the type (RFC 1035 section 5.1)."""
    ttl: int | None = None
    rdclass = dns.rdataclass.IN
    for _ in range(3):
        word = tok.get_identifier()
        if ttl is None and word[:1].isdigit():
            ttl = dns.ttl.from_text(word)
            continue
        if word.upper() in ("IN", "CH", "HS", "CS", "NONE", "ANY") or word.upper().startswith(
            "CLASS"
        ):
            rdclass = dns.rdataclass.from_text(word)
            continue
        return ttl, rdclass, word
    raise dns.exception.SyntaxError("expected a record type")


def _implicit_ttl(state: _State, rdata: dns.rdata.Rdata) -> int | None:
    """$TTL wins; else the last stated TTL; else an SOA's own minimum (RFC 2308 section 4)."""
    if state.default_ttl is not None:
        return state.default_ttl
    if state.last_ttl is not None:
        return state.last_ttl
    if rdata.rdtype == dns.rdatatype.SOA:
        return int(rdata.minimum)  # type: ignore[attr-defined]
    return None
