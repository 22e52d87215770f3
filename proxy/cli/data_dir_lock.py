"""One `ere-proxy run` (or `proxy`) per data directory: an exclusive flock on `<data_dir>/run.lock`.

The proxy keeps per-worker state under its data directory (spill logs, the verifier key, the
embedded server), so a second instance started on the same directory would have its workers
refused one after another. The first process of an instance (the supervisor, or a lone proxy
process) takes this lock before it starts anything and holds it while it runs; its children do
not take it. The file holds the holder's pid, for the message a second instance gets. The kernel
drops a flock when its process dies, so a crash never leaves the directory locked.

Errors: `DataDirInUse` when another process holds the lock; OSError when the directory cannot be
made or the file opened. Blocking, but only for a moment (no waiting on the lock).
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_FILE = "run.lock"


class DataDirInUse(Exception):
    """Another running ere-proxy holds the data directory."""


@contextmanager
def hold_data_dir(data_dir: str | Path) -> Iterator[None]:
    """Hold `data_dir` for this process until the block ends; `DataDirInUse` if another does."""
    directory = Path(data_dir).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            who = f"another ere-proxy (pid {holder})" if holder.isdigit() else "another ere-proxy"
            raise DataDirInUse(
                f"{who} is already running on data directory {directory}; stop it first, "
                "or give this one a [database] data_dir of its own"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # also releases the lock
