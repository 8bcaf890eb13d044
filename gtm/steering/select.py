"""The final selection: which of the chain's candidates go into the answer.

``weighted`` draws in proportion to weight, ``sticky`` hashes the client's subnet so
a client keeps its endpoint while that endpoint stays healthy (weighted rendezvous
hashing: when an endpoint leaves, only its clients move), ``multivalue`` shuffles.

The DNS cache keeps several pre-rendered variants per client bucket and rotates
through them, so ``variants`` returns a sequence whose frequencies follow the
weights exactly (smooth weighted round robin) rather than a random sample.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import random
from collections.abc import Sequence

from gtm.steering.chain import Candidate, Client
from gtm.steering.model import SteeredName

MAX_VARIANTS = 32


def choose(
    name: SteeredName, candidates: Sequence[Candidate], client: Client | None, rng: random.Random
) -> list[Candidate]:
    count = min(name.answers, len(candidates))
    if name.select == "sticky" and client is not None:
        return _sticky(candidates, count, sticky_bucket(name, client))
    if name.select == "multivalue":
        return rng.sample(list(candidates), count)
    return _weighted_sample(candidates, count, rng)


def variants(
    name: SteeredName, candidates: Sequence[Candidate], client: Client | None, seed: int
) -> list[list[Candidate]]:
    """Answers to rotate through for one client bucket, in proportion to the policy."""
    if not candidates:
        return [[]]
    if name.select == "sticky" and client is not None:
        return [choose(name, candidates, client, random.Random(seed))]
    if len(candidates) == 1:
        return [list(candidates)]
    if name.select == "weighted" and name.answers == 1:
        return [[c] for c in smooth_weighted_sequence(candidates, _period(candidates))]
    rng = random.Random(seed)
    picks = [choose(name, candidates, client, rng) for _ in range(MAX_VARIANTS)]
    if name.select == "weighted":
        # Which endpoints, not their order, is what weighting decides (resolvers
        # reorder RRsets anyway); a fixed order lets equal sets share one rendering.
        rank = {c.endpoint.name: i for i, c in enumerate(candidates)}
        picks = [sorted(pick, key=lambda c: rank[c.endpoint.name]) for pick in picks]
    return picks


def _period(candidates: Sequence[Candidate]) -> int:
    """One full cycle of smooth weighted round robin when weights are small integers."""
    weights = [c.weight for c in candidates]
    if all(w == int(w) and w > 0 for w in weights):
        cycle = int(sum(weights)) // math.gcd(*(int(w) for w in weights))
        if cycle <= MAX_VARIANTS:
            return cycle
    return MAX_VARIANTS


def smooth_weighted_sequence(candidates: Sequence[Candidate], length: int) -> list[Candidate]:
    """Nginx-style smooth weighted round robin: each candidate appears in proportion
    to its weight, spread out rather than bunched. Zero weights are standby: used
    only when every weight is zero."""
    weights = [c.weight for c in candidates]
    if not any(w > 0 for w in weights):
        weights = [1.0] * len(candidates)
    total = sum(weights)
    current = [0.0] * len(candidates)
    out = []
    for _ in range(length):
        for i, w in enumerate(weights):
            current[i] += w
        best = max(range(len(candidates)), key=lambda i: (current[i], -i))
        current[best] -= total
        out.append(candidates[best])
    return out


def _weighted_sample(
    candidates: Sequence[Candidate], count: int, rng: random.Random
) -> list[Candidate]:
    """Draw without replacement, each draw in proportion to the remaining weights."""
    pool = [c for c in candidates if c.weight > 0] or list(candidates)
    if len(pool) < count:
        pool += [c for c in candidates if c not in pool]
    chosen: list[Candidate] = []
    while len(chosen) < count:
        weights = [max(c.weight, 0.0) for c in pool]
        if not any(weights):
            weights = [1.0] * len(pool)
        pick = rng.choices(range(len(pool)), weights=weights)[0]
        chosen.append(pool.pop(pick))
    return chosen


def _sticky(candidates: Sequence[Candidate], count: int, bucket: bytes) -> list[Candidate]:
    def score(candidate: Candidate) -> float:
        digest = hashlib.blake2b(bucket + candidate.endpoint.name.encode(), digest_size=8)
        unit = (int.from_bytes(digest.digest(), "big") + 1) / 2.0**64  # in (0, 1]
        weight = candidate.weight if candidate.weight > 0 else 1e-9
        return -math.log(unit) / weight

    return sorted(candidates, key=score)[:count]


def sticky_bucket(name: SteeredName, client: Client) -> bytes:
    prefix = name.sticky_prefix_v4 if client.address.version == 4 else name.sticky_prefix_v6
    prefix = min(prefix, client.source_prefix)
    network = ipaddress.ip_network((client.address, prefix), strict=False)
    return network.network_address.packed + bytes([prefix])


def sticky_scope(name: SteeredName, client: Client) -> int:
    prefix = name.sticky_prefix_v4 if client.address.version == 4 else name.sticky_prefix_v6
    return min(prefix, client.source_prefix)
