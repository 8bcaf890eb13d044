"""Writing a file so that readers see the old content or the new, never half of it.

The one way the product replaces a file: a temporary file in the same directory (so the
rename stays on one file system), written in full, fsynced, renamed over the target,
then the directory fsynced so the rename itself survives a crash.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

PRIVATE = 0o600  # secrets, snapshots and state: the owner only, from the first byte on
SHARED = 0o666   # what the umask allows, as open() would make it


def write_atomic(path: Path, data: bytes | str, mode: int = PRIVATE,
                 durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically.

    ``durable=False`` skips both fsyncs, for files rewritten every second whose loss
    in a crash costs nothing (the workers' share files); the rename is atomic either way.
    """
    content = data.encode() if isinstance(data, str) else data
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd, view):]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
    if durable:
        fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
