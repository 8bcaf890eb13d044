"""The pickers as pure functions: distribution and behaviour, without sockets."""

from __future__ import annotations

from collections import Counter

import pytest

from gtm.config.settings import Listen
from regional_lb.balancing import BackendState, PoolState, build_pool_state, pick
from regional_lb.balancing.maglev import build_table
from regional_lb.config import BackendSpec, PoolSpec


def pool(algorithm: str, weights: list[int], seed: int = 7, slow_start: float = 0.0,
         previous: dict[str, BackendState] | None = None, now: float = 0.0,
         first: bool = True, states: list[str] | None = None) -> PoolState:
    backends = tuple(
        BackendSpec(Listen("127.0.0.1", 9000 + i), w, (states or [])[i] if states else "enabled")
        for i, w in enumerate(weights))
    spec = PoolSpec("p", backends, algorithm=algorithm, slow_start=slow_start)
    state = build_pool_state(spec, previous or {}, first=first, seed=seed)
    state.go_live(now)  # what a worker's swap does
    return state


def counts(state: PoolState, n: int, key: bytes = b"", now: float = 0.0) -> Counter[int]:
    result: Counter[int] = Counter()
    for i in range(n):
        backend = pick(state, key or str(i).encode(), now)
        assert backend is not None
        result[backend.port - 9000] += 1
    return result


def ports(state: PoolState, n: int) -> list[int]:
    picked = [pick(state) for _ in range(n)]
    return [b.port for b in picked if b is not None]


def test_round_robin_cycles_and_skips_unavailable() -> None:
    state = pool("round_robin", [1, 1, 1])
    assert ports(state, 6) == [9000, 9001, 9002] * 2
    state.backends[1].admin = "drain"
    assert ports(state, 4) == [9000, 9002] * 2


def test_smooth_weighted_round_robin_is_exact_and_spread() -> None:
    state = pool("weighted_round_robin", [5, 1, 1])
    sequence = [pick(state).port - 9000 for _ in range(7)]  # type: ignore[union-attr]
    assert sequence == [0, 0, 1, 0, 2, 0, 0]  # nginx's example: a a b a c a a
    assert counts(state, 700) == {0: 500, 1: 100, 2: 100}


def test_least_connections_prefers_fewest_in_flight_per_weight() -> None:
    state = pool("least_connections", [1, 2])
    state.backends[0].active = 2
    state.backends[1].active = 3  # 4/2 = 2 < 3/1 = 3
    assert pick(state) is state.backends[1]
    state.backends[1].active = 10
    assert pick(state) is state.backends[0]


def test_least_connections_spreads_ties() -> None:
    assert counts(pool("least_connections", [1, 1, 1]), 300) == {0: 100, 1: 100, 2: 100}


def test_power_of_two_choices_avoids_the_loaded_backend() -> None:
    state = pool("least_request", [1, 1, 1, 1])
    state.backends[0].active = 100
    result = counts(state, 3000)
    assert result[0] == 0 and min(result[i] for i in (1, 2, 3)) > 800


def test_peak_ewma_prefers_fast_backends_and_reacts_to_peaks() -> None:
    state = pool("peak_ewma", [1, 1])
    fast, slow = state.backends
    fast.observe(0.001, 1.0)
    slow.observe(0.050, 1.0)
    result = counts(state, 200, now=1.0)
    assert result[0] == 200
    fast.observe(0.500, 1.1)  # a peak counts at once
    assert counts(state, 200, now=1.1)[1] == 200


def test_peak_ewma_decays() -> None:
    backend = BackendState("127.0.0.1", 1)
    backend.observe(1.0, 0.0)
    backend.observe(0.01, 30.0)  # 3 decay periods later, the peak is mostly forgotten
    assert backend.ewma < 0.1


def test_random_is_uniform() -> None:
    result = counts(pool("random", [1, 1, 1, 1]), 8000)
    assert all(1700 < result[i] < 2300 for i in range(4))


def test_consistent_hash_is_sticky_and_balanced() -> None:
    state = pool("consistent_hash", [1, 1, 1, 1])
    keys = [b"10.0.%d.%d" % (i // 256, i % 256) for i in range(4000)]
    first = [pick(state, k).port for k in keys]  # type: ignore[union-attr]
    assert first == [pick(state, k).port for k in keys]  # type: ignore[union-attr]
    spread = Counter(first)
    assert all(800 < c < 1200 for c in spread.values())


def test_consistent_hash_moves_few_keys_when_a_backend_leaves() -> None:
    keys = [b"user-%d" % i for i in range(5000)]
    before = pool("consistent_hash", [1] * 5)
    after = pool("consistent_hash", [1] * 4)  # the fifth (port 9004) removed
    def port(state: PoolState, key: bytes) -> int:
        backend = pick(state, key)
        assert backend is not None
        return backend.port
    moved = sum(1 for k in keys if port(before, k) != port(after, k))
    owned_by_removed = sum(1 for k in keys if port(before, k) == 9004)
    assert moved <= owned_by_removed * 1.1 + 50  # only (about) the removed backend's keys


def test_consistent_hash_drained_backend_keys_go_elsewhere_others_stay() -> None:
    state = pool("consistent_hash", [1, 1, 1])
    keys = [b"k%d" % i for i in range(2000)]
    before = {k: pick(state, k) for k in keys}
    state.backends[0].admin = "drain"
    for k in keys:
        now = pick(state, k)
        assert now is not state.backends[0]
        if before[k] is not state.backends[0]:
            assert now is before[k]


def test_maglev_weights_are_proportional() -> None:
    table = build_table([("a", 1), ("b", 3)])
    share = Counter(table)
    assert 0.2 < share[0] / len(table) < 0.3


def test_slow_start_ramps_a_new_backend() -> None:
    first = pool("weighted_round_robin", [1, 1], slow_start=10.0)
    previous = {b.key: b for b in first.backends}
    # A reload adds a third backend at t=100: it starts at 10% and ramps to full weight.
    state = pool("weighted_round_robin", [1, 1, 1], slow_start=10.0, previous=previous,
                 now=100.0, first=False)
    early = counts(state, 2100, now=101.0)
    assert early[2] < 200
    late = counts(state, 3000, now=111.0)
    assert late[2] == 1000


def test_no_backend_available_returns_none() -> None:
    for algorithm in ("round_robin", "weighted_round_robin", "least_connections",
                      "least_request", "peak_ewma", "consistent_hash", "random"):
        state = pool(algorithm, [1, 1], states=["drain", "maintenance"])
        assert pick(state, b"k") is None


@pytest.mark.parametrize("algorithm", ["round_robin", "weighted_round_robin",
                                       "least_connections", "least_request", "peak_ewma",
                                       "consistent_hash", "random"])
def test_exclude_sends_retries_elsewhere_and_health_hook(algorithm: str) -> None:
    state = pool(algorithm, [1, 1, 1])
    first = pick(state, b"key")
    assert first is not None
    second = pick(state, b"key", 0.0, [first])
    assert second is not None and second is not first
    for backend in state.backends:
        if backend is not first:
            backend.set_healthy(False, 0.0)
    assert pick(state, b"key", 0.0, [first]) is None


def test_connection_limit_makes_a_backend_unavailable() -> None:
    state = pool("round_robin", [1, 1])
    state.backends[0].max_connections = 1
    state.backends[0].active = 1
    assert {pick(state).port for _ in range(4)} == {9001}  # type: ignore[union-attr]


def test_retry_budget_limits_retries_to_a_share_of_requests() -> None:
    state = pool("round_robin", [1, 1])  # retry_budget 0.2, reserve of 10
    granted = sum(state.take_retry() for _ in range(100))
    assert granted == 10  # the reserve, then nothing without requests
    for _ in range(100):
        state.admit_request()
    assert 19 <= sum(state.take_retry() for _ in range(100)) <= 20
