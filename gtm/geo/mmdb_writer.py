"""A writer of MaxMind DB (format 2.0) files, written from the public format spec.

Why not a PyPI package: the one Python candidate (mmdb-writer) is a small one-person
project that brings netaddr along; the format is small enough that owning the writer
costs less than auditing and tracking it, and our tests pin exactly what we write
against both maxminddb readers (libmaxminddb and the pure-Python one).

A file is three parts:

* a binary search tree, one level per address bit; each node holds two records
  (left for bit 0, right for bit 1) of 24, 28 or 32 bits. A record below the node
  count is another node, equal to it means "no data", above it points into the data
  section (value - node_count - 16 = offset);
* 16 zero bytes, then the data section of typed values (maps, strings, numbers, ...);
* the metadata marker and a metadata map describing the tree.

In an IPv6 database, IPv4 networks live under ::/96 (::a.b.c.d), as in MaxMind's own
files: readers walk 96 zero bits to find the IPv4 subtree.
"""

from __future__ import annotations

import ipaddress
import struct
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TypeAlias

from gtm.atomic import write_atomic
from gtm.errors import ConfigError

SOURCE = "mmdb writer"
METADATA_MARKER = b"\xab\xcd\xefMaxMind.com"
DATA_SECTION_SEPARATOR = bytes(16)
RECORD_SIZES = (24, 28, 32)

# Type numbers from the spec; those above 7 are "extended" and cost one more byte.
_POINTER, _UTF8, _DOUBLE, _BYTES, _UINT16, _UINT32, _MAP = 1, 2, 3, 4, 5, 6, 7
_INT32, _UINT64, _UINT128, _ARRAY, _BOOLEAN = 8, 9, 10, 11, 14


class Uint16(int):
    """An int to be stored as uint16 (metadata fields must have their exact type)."""


class Uint32(int):
    """An int to be stored as uint32."""


class Uint64(int):
    """An int to be stored as uint64."""


class Int32(int):
    """An int to be stored as int32 even when it is not negative."""


MmdbValue: TypeAlias = (
    "Mapping[str, MmdbValue] | Sequence[MmdbValue] | str | bytes | bool | int | float"
)
Network: TypeAlias = "str | ipaddress.IPv4Network | ipaddress.IPv6Network"


# --- data section encoding -------------------------------------------------------


def _control(type_number: int, size: int) -> bytes:
    """The control byte(s) of a value: type in the top 3 bits, size in the low 5."""
    if size < 29:
        first, extra = size, b""
    elif size < 285:
        first, extra = 29, bytes([size - 29])
    elif size < 65_821:
        first, extra = 30, (size - 285).to_bytes(2, "big")
    elif size < 65_821 + (1 << 24):
        first, extra = 31, (size - 65_821).to_bytes(3, "big")
    else:
        raise ConfigError(f"a value of {size} items or bytes is too large for an mmdb", SOURCE)
    if type_number <= 7:
        return bytes([(type_number << 5) | first]) + extra
    # Extended types: type 0 in the control byte, the real type - 7 in the next byte.
    return bytes([first, type_number - 7]) + extra


def _encode_pointer(offset: int) -> bytes:
    """A pointer to an offset in the data section, in the shortest of its four forms."""
    if offset < 1 << 11:
        return bytes([0x20 | (offset >> 8), offset & 0xFF])
    if offset < (1 << 19) + 2048:
        value = offset - 2048
        return bytes([0x28 | (value >> 16)]) + (value & 0xFFFF).to_bytes(2, "big")
    if offset < (1 << 27) + 526_336:
        value = offset - 526_336
        return bytes([0x30 | (value >> 24)]) + (value & 0xFFFFFF).to_bytes(3, "big")
    return b"\x38" + offset.to_bytes(4, "big")


def _minimal_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _uint(type_number: int, value: int) -> bytes:
    payload = _minimal_bytes(value)
    return _control(type_number, len(payload)) + payload


_UINT_TYPES = ((Uint16, _UINT16, 16), (Uint32, _UINT32, 32), (Uint64, _UINT64, 64))


def _encode_int(value: int) -> bytes:
    """Integers take the narrowest type that holds them unless the caller chose one."""
    if isinstance(value, Int32) or value < 0:
        if not -(1 << 31) <= value < 1 << 31:
            raise ConfigError(f"integer {value} does not fit in an mmdb int32", SOURCE)
        # Readers left-pad short int32 payloads with zeros, so negatives need all 4 bytes.
        payload = value.to_bytes(4, "big", signed=True) if value < 0 else _minimal_bytes(value)
        return _control(_INT32, len(payload)) + payload
    for wrapper, type_number, bits in _UINT_TYPES:
        if isinstance(value, wrapper):
            if value >= 1 << bits:
                raise ConfigError(f"integer {value} does not fit in an mmdb uint{bits}", SOURCE)
            return _uint(type_number, value)
    for _, type_number, bits in (*_UINT_TYPES, (int, _UINT128, 128)):
        if value < 1 << bits:
            return _uint(type_number, value)
    raise ConfigError(f"integer {value} does not fit in an mmdb uint128", SOURCE)


def _encode_scalar(value: object) -> bytes:
    if isinstance(value, str):
        encoded = value.encode("utf-8")
        return _control(_UTF8, len(encoded)) + encoded
    if isinstance(value, bool):  # before int: bool is an int subclass
        return _control(_BOOLEAN, int(value))
    if isinstance(value, int):
        return _encode_int(value)
    if isinstance(value, float):
        return _control(_DOUBLE, 8) + struct.pack(">d", value)
    if isinstance(value, bytes | bytearray):
        return _control(_BYTES, len(value)) + bytes(value)
    raise ConfigError(f"cannot store a {type(value).__name__} in an mmdb file", SOURCE)


def encode(value: object) -> bytes:
    """The plain encoding of a value, without pointers (used for metadata and as a key)."""
    if isinstance(value, Mapping):
        parts = [_control(_MAP, len(value))]
        for key, item in value.items():
            parts += [_encode_key(key), encode(item)]
        return b"".join(parts)
    if isinstance(value, list | tuple):
        return _control(_ARRAY, len(value)) + b"".join(encode(item) for item in value)
    return _encode_scalar(value)


def _encode_key(key: object) -> bytes:
    if not isinstance(key, str):
        raise ConfigError(f"mmdb map keys must be strings, not {key!r}", SOURCE)
    return _encode_scalar(key)


class _DataSection:
    """The data section: each distinct record once, repeated strings as pointers.

    Keys such as "country" and "iso_code" repeat in every record; a 2-byte pointer to
    their first copy is what keeps GeoIP-style files small.
    """

    def __init__(self) -> None:
        self.buffer = bytearray()
        self._records: dict[bytes, int] = {}
        self._strings: dict[str, int] = {}

    def add(self, value: object) -> int:
        """Store a record (once per distinct encoding) and return its offset."""
        key = encode(value)
        offset = self._records.get(key)
        if offset is None:
            offset = len(self.buffer)
            self._records[key] = offset
            self._write(value)
        return offset

    def _write(self, value: object) -> None:
        if isinstance(value, str):
            self._write_string(value)
        elif isinstance(value, Mapping):
            self.buffer += _control(_MAP, len(value))
            for key, item in value.items():
                _encode_key(key)
                self._write_string(key)
                self._write(item)
        elif isinstance(value, list | tuple):
            self.buffer += _control(_ARRAY, len(value))
            for item in value:
                self._write(item)
        else:
            self.buffer += _encode_scalar(value)

    def _write_string(self, text: str) -> None:
        plain = _encode_scalar(text)
        offset = self._strings.get(text)
        if offset is not None:
            pointer = _encode_pointer(offset)
            if len(pointer) < len(plain):
                self.buffer += pointer
                return
        else:
            self._strings[text] = len(self.buffer)
        self.buffer += plain


# --- search tree ------------------------------------------------------------------


class _Leaf:
    """A record's data; one object is shared by every tree slot a network fills."""

    __slots__ = ("value",)

    def __init__(self, value: MmdbValue) -> None:
        self.value = value


class _Node:
    __slots__ = ("children",)

    def __init__(self, left: _Child = None, right: _Child = None) -> None:
        self.children: list[_Child] = [left, right]


_Child: TypeAlias = "_Node | _Leaf | None"


class MmdbWriter:
    """Collects networks and their records, then writes one MaxMind DB file.

    Inserting a network replaces whatever the tree held for that whole network, so
    insert wide networks before the narrower ones that should override them.
    """

    def __init__(
        self,
        *,
        ip_version: int = 6,
        database_type: str = "GTM",
        languages: Sequence[str] = (),
        description: Mapping[str, str] | None = None,
        record_size: int | None = None,
        build_epoch: int | None = None,
    ) -> None:
        if ip_version not in (4, 6):
            raise ConfigError(f"ip_version must be 4 or 6, not {ip_version}", SOURCE)
        if record_size is not None and record_size not in RECORD_SIZES:
            raise ConfigError(f"record_size must be 24, 28 or 32, not {record_size}", SOURCE)
        self.ip_version = ip_version
        self.database_type = database_type
        self.languages = list(languages)
        self.description = dict(description or {})
        self.record_size = record_size
        self.build_epoch = int(time.time()) if build_epoch is None else build_epoch
        self._root = _Node()
        self._bits = 128 if ip_version == 6 else 32

    def insert(self, network: Network, value: MmdbValue) -> None:
        """Map every address of `network` (CIDR text or an ipaddress network) to `value`."""
        address, prefix_len = self._tree_position(network)
        encode(value)  # reject unstorable values now, where the caller can say which row
        leaf = _Leaf(value)
        if prefix_len == 0:
            self._root.children = [leaf, leaf]
            return
        node = self._root
        for depth in range(prefix_len - 1):
            bit = (address >> (self._bits - 1 - depth)) & 1
            child = node.children[bit]
            if not isinstance(child, _Node):
                # A wider network (or nothing) covers this spot: push it one level down.
                child = _Node(child, child)
                node.children[bit] = child
            node = child
        node.children[(address >> (self._bits - prefix_len)) & 1] = leaf

    def _tree_position(self, network: Network) -> tuple[int, int]:
        try:
            parsed = ipaddress.ip_network(network)
        except ValueError as exc:
            raise ConfigError(f"not a network: {exc}", SOURCE) from None
        if parsed.version == 6 and self.ip_version == 4:
            raise ConfigError(f"IPv6 network {parsed} in an IPv4 database", SOURCE)
        extra = self._bits - parsed.max_prefixlen  # 96 for IPv4 in an IPv6 tree (::/96)
        return int(parsed.network_address), parsed.prefixlen + extra

    def to_bytes(self) -> bytes:
        """The whole file: search tree, separator, data section, marker, metadata."""
        nodes = self._numbered_nodes()
        data = _DataSection()
        offsets = {id(leaf): data.add(leaf.value) for leaf in _leaves(nodes)}
        node_count = len(nodes)
        record_size = self._choose_record_size(node_count + 16 + len(data.buffer))
        index = {id(node): number for number, node in enumerate(nodes)}

        def record(child: _Child) -> int:
            if child is None:
                return node_count
            if isinstance(child, _Node):
                return index[id(child)]
            return node_count + 16 + offsets[id(child)]

        tree = b"".join(
            _pack_node(record(node.children[0]), record(node.children[1]), record_size)
            for node in nodes
        )
        metadata = encode(self._metadata(node_count, record_size))
        return tree + DATA_SECTION_SEPARATOR + bytes(data.buffer) + METADATA_MARKER + metadata

    def write(self, path: str | Path) -> None:
        """Write the file atomically: readers see the old file or the new, never half."""
        write_atomic(Path(path), self.to_bytes())

    def _numbered_nodes(self) -> list[_Node]:
        """Nodes in breadth-first order; the root must be node 0."""
        nodes = [self._root]
        for node in nodes:  # the list grows while we walk it
            nodes.extend(child for child in node.children if isinstance(child, _Node))
        return nodes

    def _choose_record_size(self, largest_record: int) -> int:
        sizes = (self.record_size,) if self.record_size else RECORD_SIZES
        for size in sizes:
            if largest_record < 1 << size:
                return size
        raise ConfigError(f"the tree and data need more than {sizes[-1]}-bit records", SOURCE)

    def _metadata(self, node_count: int, record_size: int) -> dict[str, MmdbValue]:
        # libmaxminddb checks these types exactly, hence the explicit integer widths.
        return {
            "binary_format_major_version": Uint16(2),
            "binary_format_minor_version": Uint16(0),
            "build_epoch": Uint64(self.build_epoch),
            "database_type": self.database_type,
            "description": self.description,
            "ip_version": Uint16(self.ip_version),
            "languages": self.languages,
            "node_count": Uint32(node_count),
            "record_size": Uint16(record_size),
        }


def _leaves(nodes: list[_Node]) -> list[_Leaf]:
    """Each distinct leaf once, in tree order (so the data section is deterministic)."""
    seen: dict[int, _Leaf] = {}
    for node in nodes:
        for child in node.children:
            if isinstance(child, _Leaf):
                seen.setdefault(id(child), child)
    return list(seen.values())


def _pack_node(left: int, right: int, record_size: int) -> bytes:
    if record_size == 24:
        return left.to_bytes(3, "big") + right.to_bytes(3, "big")
    if record_size == 28:
        # The middle byte holds the top 4 bits of the left record, then of the right.
        middle = ((left >> 24) << 4) | (right >> 24)
        return (
            (left & 0xFFFFFF).to_bytes(3, "big")
            + bytes([middle])
            + (right & 0xFFFFFF).to_bytes(3, "big")
        )
    return left.to_bytes(4, "big") + right.to_bytes(4, "big")
