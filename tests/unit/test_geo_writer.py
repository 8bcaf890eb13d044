"""The mmdb writer: files it makes read back exactly through both maxminddb readers.

MODE_MMAP_EXT is libmaxminddb (C, strict about metadata types); MODE_FILE is the pure
Python reader. Passing both is the evidence that we follow the spec, not one reader.
"""

from __future__ import annotations

import ipaddress
import tempfile
from pathlib import Path
from typing import Any

import maxminddb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gtm.errors import ConfigError
from gtm.geo import mmdb_writer
from gtm.geo.mmdb_writer import Int32, MmdbWriter, Uint16, Uint32, Uint64

READERS = [maxminddb.MODE_MMAP_EXT, maxminddb.MODE_FILE]


def read_back(writer: MmdbWriter, directory: Path, mode: int) -> Any:
    path = directory / "test.mmdb"
    writer.write(path)
    return maxminddb.open_database(str(path), mode)


@pytest.fixture(params=READERS, ids=["libmaxminddb", "pure-python"])
def mode(request: pytest.FixtureRequest) -> int:
    return int(request.param)


def test_ipv4_and_ipv6_networks_in_one_ipv6_database(tmp_path: Path, mode: int) -> None:
    writer = MmdbWriter()
    writer.insert("81.2.69.0/24", {"c": "GB"})
    writer.insert(ipaddress.ip_network("2001:db8::/32"), {"c": "JP"})
    reader = read_back(writer, tmp_path, mode)
    assert reader.get_with_prefix_len("81.2.69.142") == ({"c": "GB"}, 24)
    assert reader.get_with_prefix_len("2001:db8::1") == ({"c": "JP"}, 32)
    # IPv4 lives under ::/96, as in MaxMind's files: ::81.2.69.142 is the same network.
    assert reader.get_with_prefix_len("::81.2.69.142") == ({"c": "GB"}, 120)
    assert reader.get("81.2.70.1") is None
    assert reader.metadata().ip_version == 6


def test_ipv4_only_database(tmp_path: Path, mode: int) -> None:
    writer = MmdbWriter(ip_version=4)
    writer.insert("10.0.0.0/8", "ten")
    reader = read_back(writer, tmp_path, mode)
    assert reader.get_with_prefix_len("10.9.8.7") == ("ten", 8)
    assert reader.metadata().ip_version == 4
    with pytest.raises(ConfigError, match="IPv6 network 2001:db8::/32 in an IPv4 database"):
        writer.insert("2001:db8::/32", "no")


def test_every_data_type_round_trips(tmp_path: Path, mode: int) -> None:
    record: dict[str, Any] = {
        "map": {"nested": {"deeper": "yes"}},
        "utf8": "Zürich 東京",
        "double": -12.5,
        "uint16": Uint16(7),
        "uint32": Uint32(70_000),
        "uint64": Uint64(2**40),
        "uint128": 2**100,
        "int32": Int32(5),
        "negative": -(2**31),
        "true": True,
        "false": False,
        "array": [1, "two", [3.0], {"four": 4}],
        "bytes": b"\x00\xffraw",
        "empty_map": {},
        "empty_array": [],
        "empty_string": "",
        "zero": 0,
    }
    writer = MmdbWriter()
    writer.insert("1.2.3.0/24", record)
    assert read_back(writer, tmp_path, mode).get("1.2.3.4") == record


@pytest.mark.parametrize("value", [0, 255, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1, 2**64])
def test_unsigned_integer_boundaries(tmp_path: Path, mode: int, value: int) -> None:
    writer = MmdbWriter()
    writer.insert("1.0.0.0/8", {"n": value})
    assert read_back(writer, tmp_path, mode).get("1.1.1.1") == {"n": value}


@pytest.mark.parametrize("length", [0, 28, 29, 284, 285, 65_820, 65_821, 70_000])
def test_every_size_encoding_of_a_string(tmp_path: Path, mode: int, length: int) -> None:
    # Sizes switch from 5 bits to 1, 2 and 3 extra bytes at 29, 285 and 65,821.
    text = ("abcdefghij" * (length // 10 + 1))[:length]
    writer = MmdbWriter()
    writer.insert("1.0.0.0/8", {"s": text, "a": list(range(length % 300))})
    assert read_back(writer, tmp_path, mode).get("1.1.1.1") == {
        "s": text,
        "a": list(range(length % 300)),
    }


@pytest.mark.parametrize("record_size", [24, 28, 32])
def test_each_record_size(tmp_path: Path, mode: int, record_size: int) -> None:
    writer = MmdbWriter(record_size=record_size)
    for index in range(50):
        writer.insert(f"10.{index}.0.0/16", {"i": index})
    reader = read_back(writer, tmp_path, mode)
    assert reader.metadata().record_size == record_size
    assert [reader.get(f"10.{index}.1.1") for index in range(50)] == [
        {"i": index} for index in range(50)
    ]


def test_28_bit_records_above_2_to_the_24(tmp_path: Path) -> None:
    # A data section past 16 MiB makes record values use the shared middle nibble.
    writer = MmdbWriter(record_size=28)
    writer.insert("0.0.0.0/1", b"x" * (1 << 24))
    writer.insert("128.0.0.0/1", "after the big one")
    for mode in READERS:
        assert read_back(writer, tmp_path, mode).get("200.1.1.1") == "after the big one"
    writer.record_size = 24
    with pytest.raises(ConfigError, match="more than 24-bit records"):
        writer.to_bytes()


def test_repeated_strings_become_pointers_at_every_distance(
    tmp_path: Path, mode: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Keys first seen beyond 2,048 and beyond 526,336 bytes need the longer pointer forms.
    forms: set[int] = set()
    encode_pointer = mmdb_writer._encode_pointer

    def spy(offset: int) -> bytes:
        encoded = encode_pointer(offset)
        forms.add(len(encoded))
        return encoded

    monkeypatch.setattr(mmdb_writer, "_encode_pointer", spy)
    writer = MmdbWriter()
    records = []
    for index in range(700):
        record = {"payload": f"{index:04d}" + "p" * 1000, "shared-key-name": "shared-value"}
        record[f"late-key-{index // 3}"] = "late-value-long-enough"
        records.append(record)
        writer.insert(f"10.{index // 256}.{index % 256}.0/24", record)
    reader = read_back(writer, tmp_path, mode)
    for index in (0, 1, 2, 3, 350, 520, 521, 522, 523, 699):
        assert reader.get(f"10.{index // 256}.{index % 256}.1") == records[index]
    assert forms == {2, 3, 4}, "pointers of 11, 19 and 27 bits were all written"
    plain_size = sum(len(str(r)) for r in records)
    assert (tmp_path / "test.mmdb").stat().st_size < plain_size


def test_pointer_forms_at_their_boundaries() -> None:
    # The spec's biases: 0, 2,048 and 526,336 for the 11-, 19- and 27-bit forms.
    encode_pointer = mmdb_writer._encode_pointer
    assert encode_pointer(2047) == b"\x27\xff"
    assert encode_pointer(2048) == b"\x28\x00\x00"
    assert encode_pointer(526_335) == b"\x2f\xff\xff"
    assert encode_pointer(526_336) == b"\x30\x00\x00\x00"
    assert encode_pointer(134_744_063) == b"\x37\xff\xff\xff"
    assert encode_pointer(134_744_064) == b"\x38" + (134_744_064).to_bytes(4, "big")


def test_identical_records_are_stored_once() -> None:
    one, many = MmdbWriter(), MmdbWriter()
    one.insert("10.0.0.0/24", {"country": {"iso_code": "US"}})
    for index in range(100):
        many.insert(f"10.0.{index}.0/24", {"country": {"iso_code": "US"}})
    tree_growth = 8 * 100 * 6  # generous: every extra network adds at most a few nodes
    assert len(many.to_bytes()) - len(one.to_bytes()) < tree_growth


def test_metadata(tmp_path: Path, mode: int) -> None:
    writer = MmdbWriter(
        database_type="GTM-Test",
        languages=["en", "de"],
        description={"en": "a test"},
        build_epoch=1_700_000_000,
    )
    writer.insert("1.0.0.0/8", "x")
    meta = read_back(writer, tmp_path, mode).metadata()
    assert (meta.database_type, meta.languages, meta.description) == (
        "GTM-Test",
        ["en", "de"],
        {"en": "a test"},
    )
    assert (meta.binary_format_major_version, meta.binary_format_minor_version) == (2, 0)
    assert meta.build_epoch == 1_700_000_000
    assert meta.node_count > 0 and meta.record_size == 24


def test_later_insert_replaces_what_it_covers(tmp_path: Path, mode: int) -> None:
    writer = MmdbWriter()
    writer.insert("10.1.0.0/16", "narrow")
    writer.insert("10.0.0.0/8", "wide")
    writer.insert("10.2.0.0/16", "narrow again")
    reader = read_back(writer, tmp_path, mode)
    assert reader.get_with_prefix_len("10.1.1.1") == ("wide", 15)
    assert reader.get_with_prefix_len("10.2.1.1") == ("narrow again", 16)


def test_whole_address_space(tmp_path: Path, mode: int) -> None:
    writer = MmdbWriter(ip_version=4)
    writer.insert("0.0.0.0/0", "everywhere")
    assert read_back(writer, tmp_path, mode).get_with_prefix_len("9.9.9.9") == ("everywhere", 1)


def test_empty_database(tmp_path: Path, mode: int) -> None:
    reader = read_back(MmdbWriter(), tmp_path, mode)
    assert reader.get_with_prefix_len("8.8.8.8") == (None, 0)
    assert reader.get_with_prefix_len("2001:db8::1") == (None, 1)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"n": -(2**31) - 1}, "does not fit in an mmdb int32"),
        ({"n": 2**128}, "does not fit in an mmdb uint128"),
        ({"n": Uint16(70_000)}, "does not fit in an mmdb uint16"),
        ({"s": {1, 2}}, "cannot store a set"),
        ({"n": None}, "cannot store a NoneType"),
        ({1: "x"}, "map keys must be strings"),
    ],
)
def test_unstorable_values_are_refused_at_insert(value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        MmdbWriter().insert("1.0.0.0/8", value)


@pytest.mark.parametrize("network", ["10.0.0.1/8", "10.0.0.0/33", "junk", "2001:db8::/129"])
def test_bad_networks_are_refused(network: str) -> None:
    with pytest.raises(ConfigError, match="not a network"):
        MmdbWriter().insert(network, "x")


def test_bad_options_are_refused() -> None:
    with pytest.raises(ConfigError, match="ip_version"):
        MmdbWriter(ip_version=5)
    with pytest.raises(ConfigError, match="record_size"):
        MmdbWriter(record_size=26)


def test_write_is_atomic_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "db.mmdb"
    target.write_bytes(b"old")
    writer = MmdbWriter()
    writer.insert("1.0.0.0/8", "new")
    writer.write(target)
    assert [p.name for p in tmp_path.iterdir()] == ["db.mmdb"]
    assert maxminddb.open_database(str(target)).get("1.1.1.1") == "new"


# --- random networks, written then read back, agree with a reference lookup ---------


def _network(version: int) -> st.SearchStrategy[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    width = 32 if version == 4 else 128
    cls = ipaddress.IPv4Network if version == 4 else ipaddress.IPv6Network

    def make(value: int, prefix_len: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        mask = ((1 << prefix_len) - 1) << (width - prefix_len)
        return cls((value & mask, prefix_len))

    return st.builds(make, st.integers(0, 2**width - 1), st.integers(0, width))


def _tree_place(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[int, int]:
    extra = 96 if network.version == 4 else 0
    return int(network.network_address), network.prefixlen + extra


def _expected(places: dict[tuple[int, int], int], address: int) -> tuple[int | None, int]:
    """Longest-prefix match, and the depth where a walk of the (unmerged) tree stops.

    A node exists at depth d on the address's path when some network longer than d
    shares the address's first d bits, so the walk stops one bit past the longest
    shared prefix with any network, or at the matched network's own length.
    """
    best: tuple[int, int] | None = None
    depth = 1
    for (base, prefix_len), value in places.items():
        shared = 128 - (base ^ address).bit_length()
        if shared >= prefix_len:
            depth = max(depth, prefix_len)
            if best is None or prefix_len > best[0]:
                best = (prefix_len, value)
        else:
            depth = max(depth, shared + 1)
    return (best[1] if best else None), depth


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    networks=st.lists(st.one_of(_network(4), _network(6)), max_size=25),
    probes=st.lists(st.one_of(_network(4), _network(6)), max_size=10),
    record_size=st.sampled_from([24, 28, 32]),
)
@pytest.mark.parametrize("reader_mode", READERS, ids=["libmaxminddb", "pure-python"])
def test_random_networks_read_back(
    reader_mode: int,
    networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    probes: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
    record_size: int,
) -> None:
    places = {_tree_place(network): index for index, network in enumerate(networks)}
    writer = MmdbWriter(record_size=record_size)
    # Wide first: then "last insert wins" and "longest prefix wins" are the same rule.
    for (base, prefix_len), index in sorted(places.items(), key=lambda item: item[0][1]):
        writer.insert(ipaddress.IPv6Network((base, prefix_len)), {"i": index})
    with tempfile.TemporaryDirectory() as directory:
        reader = read_back(writer, Path(directory), reader_mode)
        for probe in [*networks, *probes]:
            for address in (probe.network_address, probe.broadcast_address):
                _check_one(reader, places, address)
        reader.close()


def _check_one(
    reader: Any,
    places: dict[tuple[int, int], int],
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    in_tree = int(address)  # IPv4 a.b.c.d sits at ::a.b.c.d
    value, depth = _expected(places, in_tree)
    if address.version == 4:
        depth = max(0, depth - 96)  # readers count IPv4 depth from the ::/96 node
    record, prefix_len = reader.get_with_prefix_len(address)
    assert (record, prefix_len) == (None if value is None else {"i": value}, depth), address
