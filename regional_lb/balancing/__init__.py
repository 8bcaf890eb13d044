"""Backend selection: ``pick(pool, key, now)`` does no I/O; tested without sockets."""

from regional_lb.balancing.algorithms import pick
from regional_lb.balancing.state import BackendSettings, BackendState, PoolState, build_pool_state

__all__ = ["BackendSettings", "BackendState", "PoolState", "build_pool_state", "pick"]
