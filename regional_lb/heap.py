"""Giving memory back after a crowd of connections has gone.

Two things keep a worker's RSS at its peak once thousands of connections have closed:

- A Python set never shrinks when entries are discarded: its table stays sized for the
  peak (16 bytes a slot, up to 8 slots per entry it held) until it is rebuilt.
- uvloop's transport object (680 bytes, over the 512 that Python's small-object
  allocator takes) and its libuv handle (PyMem_RawMalloc) come from glibc's malloc,
  which keeps freed chunks in its heap for reuse. :func:`release_free_pages` asks it to hand whole
  free pages back to the system (``malloc_trim``); elsewhere (musl, macOS) it does nothing.

What neither can give back is Python's own small-object allocator: it returns a 1 MiB
arena only when every object in it is gone, and a few long-lived objects allocated
during the crowd pin their arenas. That memory is reused by the next crowd, not lost.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _find_malloc_trim() -> Callable[[int], int] | None:
    try:
        trim = ctypes.CDLL(None).malloc_trim  # glibc only
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_malloc_trim = _find_malloc_trim()


def release_free_pages() -> bool:
    """Return the C heap's free pages to the system; False where that cannot be asked."""
    if _malloc_trim is None:
        return False
    _malloc_trim(0)
    return True
