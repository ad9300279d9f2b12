"""Inter-process file locks: two runs touching one mirror or cache entry take turns."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path

from sevenp_pipeline.execution.cancellation import raise_if_cancelled


class LockTimeout(TimeoutError):
    pass


@contextlib.contextmanager
def file_lock(path: Path, *, timeout: float = 600.0, what: str = "") -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``path``. The kernel releases it if the holder dies,
    so a crashed run never leaves a stale lock behind. Each call opens the file anew, so two
    threads of one process exclude each other too. A terminated run stops waiting."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                raise_if_cancelled(f"waiting for the lock on {what or path}")
                if time.monotonic() > deadline:
                    raise LockTimeout(f"waited {timeout:.0f}s for the lock on {what or path}") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
