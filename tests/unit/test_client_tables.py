"""The per-client tables (regional_lb.client_tables): token buckets as GCRA, bounded
memory under a flood of keys, counts that never drift, and sharing across a fork."""

from __future__ import annotations

import os

import pytest

from regional_lb.client_limits import client_network
from regional_lb.client_tables import COUNT_WAYS, RATE_WAYS, ClientTables, CountTable, RateTable


def test_a_bucket_gives_its_burst_then_one_request_per_interval() -> None:
    table = RateTable(64)
    interval, tolerance = 0.5, 2 * 0.5  # 2 a second, burst 3
    assert [table.take(42, 100.0, interval, tolerance) for _ in range(3)] == [0.0] * 3
    wait = table.take(42, 100.0, interval, tolerance)
    assert wait == pytest.approx(0.5)  # the next token, half a second away
    assert table.take(42, 100.49, interval, tolerance) > 0
    assert table.take(42, 100.5, interval, tolerance) == 0.0
    assert table.take(42, 100.5, interval, tolerance) > 0
    # Idle long enough, the bucket is full again, and no fuller.
    assert [table.take(42, 200.0, interval, tolerance) for _ in range(4)][-1] > 0


def test_keys_have_buckets_of_their_own() -> None:
    table = RateTable(64)
    assert table.take(1, 10.0, 1.0, 0.0) == 0.0
    assert table.take(1, 10.0, 1.0, 0.0) > 0
    assert table.take(2, 10.0, 1.0, 0.0) == 0.0


def test_a_flood_of_keys_stays_in_the_table_and_keeps_the_key_that_spent_most() -> None:
    table = RateTable(64)
    now, interval, tolerance = 1000.0, 1.0, 9.0  # 1 a second, burst 10
    heavy = 7 * 64  # lands in set 0, as every key below
    for _ in range(10):
        assert table.take(heavy, now, interval, tolerance) == 0.0
    assert table.take(heavy, now, interval, tolerance) > 0  # its burst is spent
    for n in range(8, 10_008):  # 10,000 other keys, each asking once
        assert table.take(n * 64, now, interval, tolerance) == 0.0
    assert table.used() <= RATE_WAYS  # one set's worth of slots, whatever came
    assert len(table.memory) == 64 * 16   # fixed size
    # The buckets nearest full were evicted, not the one that spent its burst.
    assert table.take(heavy, now, interval, tolerance) > 0
    assert table.evictions > 0


def test_expired_buckets_are_reused_without_counting_an_eviction() -> None:
    table = RateTable(64)
    for n in range(RATE_WAYS):
        table.take(n * 64, 0.0, 1.0, 0.0)
    table.take(999 * 64, 10.0, 1.0, 0.0)  # every bucket of the set is full again by now
    assert table.evictions == 0


def test_counts_are_capped_and_released_exactly() -> None:
    table = CountTable(64, workers=1)
    cells = [table.acquire(table.connections, 5, 0, 3) for _ in range(3)]
    assert all(cell > 0 for cell in cells)
    assert table.acquire(table.connections, 5, 0, 3) == -1
    assert table.acquire(table.connections, 6, 0, 3) > 0  # another key
    table.release(table.connections, cells[0])
    assert table.total(table.connections, 5) == 2
    assert table.acquire(table.connections, 5, 0, 3) > 0


def test_a_full_set_counts_nothing_rather_than_evicting_live_counts() -> None:
    table = CountTable(64, workers=1)
    held = [table.acquire(table.requests, n * 64, 0, 1) for n in range(1, COUNT_WAYS + 1)]
    assert all(cell > 0 for cell in held)
    assert table.acquire(table.requests, 999 * 64, 0, 1) == 0  # not counted
    assert table.full == 1
    table.release(table.requests, held[0])  # a slot of the set is unused again
    assert table.acquire(table.requests, 999 * 64, 0, 1) > 0


def test_workers_write_their_own_columns_and_the_cap_is_their_sum() -> None:
    tables = ClientTables(64, workers=2)
    counts = tables.counts
    first = counts.acquire(counts.connections, 9, 0, 2)
    second = counts.acquire(counts.connections, 9, 1, 2)
    assert first > 0 and second > 0 and first != second
    assert counts.acquire(counts.connections, 9, 0, 2) == -1
    counts.clear_column(1)  # worker 1 crashed; its replacement forgets what it held
    assert counts.total(counts.connections, 9) == 1


def test_a_forked_worker_shares_the_tables() -> None:
    tables = ClientTables(64, workers=2)
    pid = os.fork()
    if pid == 0:  # the child charges the bucket and holds a count, as worker 1
        code = 1
        try:
            tables.rate.take(77, 50.0, 1.0, 0.0)
            tables.counts.acquire(tables.counts.connections, 77, 1, 5)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert tables.rate.take(77, 50.0, 1.0, 0.0) > 0  # the child's token is spent here too
    assert tables.counts.total(tables.counts.connections, 77) == 1


@pytest.mark.parametrize(("address", "v4", "v6", "expected"), [
    (b"10.1.2.3", 32, 128, bytes([10, 1, 2, 3])),
    (b"10.1.2.3", 24, 128, bytes([10, 1, 2, 0, 24])),
    (b"10.1.2.200", 24, 128, bytes([10, 1, 2, 0, 24])),
    (b"::ffff:10.1.2.3", 24, 128, bytes([10, 1, 2, 0, 24])),  # mapped: counted as IPv4
    (b"2001:db8:1:200::4", 32, 56, bytes.fromhex("20010db8000102000000000000000000") + b"\x38"),
    (b"2001:db8:1:2ff:3::4", 32, 56, bytes.fromhex("20010db8000102000000000000000000") + b"\x38"),
    (b"2001:db8:1:300::4", 32, 56, bytes.fromhex("20010db8000103000000000000000000") + b"\x38"),
    (b"fe80::1%eth0", 32, 128, bytes.fromhex("fe800000000000000000000000000001")),
])
def test_client_networks(address: bytes, v4: int, v6: int, expected: bytes) -> None:
    assert client_network(address, v4, v6, ()) == expected


def test_allowed_clients_have_no_network_key() -> None:
    import ipaddress

    allow = (ipaddress.ip_network("10.0.0.0/8"),)
    assert client_network(b"10.9.9.9", 32, 128, allow) is None
    assert client_network(b"::ffff:10.9.9.9", 32, 128, allow) is None
    assert client_network(b"11.9.9.9", 32, 128, allow) == bytes([11, 9, 9, 9])
