"""The lock role: named locks that runs take turns on when they touch state another run also writes
(a deploy queue, an image's push, a dependency cache entry).

Assets depend on :class:`Locks`. Implementations: :class:`FileLocks` (``flock`` files under the
pipeline home: one machine, the embedded default) and
:class:`~sevenp_pipeline.resources.locks_postgres.PostgresLocks` (PostgreSQL advisory locks on the
instance's server: every worker that reaches it, on any machine). Both release a lock whose holder
died (the kernel closes the file, or the server ends the dead session), wait while polling so a
terminated run stops waiting, and raise :class:`~sevenp_pipeline.locks.LockTimeout` naming what was
waited for. The resource set picks one (resource_set.py).

Locks that guard one machine's own disk (a git mirror, a workspace, the local registry's process)
stay plain :func:`~sevenp_pipeline.locks.file_lock` calls: another machine has its own.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import dagster as dg
from pydantic import Field

from sevenp_pipeline.locks import LockTimeout, file_lock

__all__ = ["FileLocks", "LockTimeout", "Locks", "LocksUnavailable", "validate_lock_name"]

# Path-like: segments of [A-Za-z0-9._:@+-] separated by "/", none of them "." or "..".
_SEGMENT = re.compile(r"^[A-Za-z0-9_:@+-][A-Za-z0-9._:@+-]*$")


class LocksUnavailable(RuntimeError):
    """Where the locks are kept could not be reached; the message names it, never a credential."""


def validate_lock_name(name: str) -> str:
    """``name`` when it is a relative, path-like name (``deploy/web/staging/queue``); else ValueError."""
    segments = name.split("/")
    if not name or len(name) > 512 or not all(_SEGMENT.match(s) for s in segments):
        raise ValueError(f"invalid lock name {name!r}: '/'-separated segments of [A-Za-z0-9._:@+-] expected, "
                         "none starting with '.'")
    return name


class Locks(dg.ConfigurableResource, ABC):
    """Named exclusive locks shared by every run of this deployment."""

    def hold(self, name: str, *, timeout: float = 600.0, what: str = "") -> AbstractContextManager[None]:
        """Holds the lock ``name`` for the ``with`` block, waiting for it at most ``timeout`` seconds.

        Args:
            name: a path-like name, the same for every run that must take turns
                (``deploy/<app>/<environment>/queue``, ``image-pushes/<repository>/<input tag>``).
            timeout: seconds to wait before raising :class:`LockTimeout`.
            what: what the lock guards, for messages (default: the name).

        Raises:
            LockTimeout: the lock was not free in time; the message names ``what``.
            LocksUnavailable: the lock server could not be reached.
            dg.DagsterExecutionInterruptedError: the run was terminated while waiting.
        """
        return self._hold(validate_lock_name(name), timeout=timeout, what=what or name)

    @abstractmethod
    def _hold(self, name: str, *, timeout: float, what: str) -> AbstractContextManager[None]: ...

    @abstractmethod
    def describe(self) -> str:
        """Where the locks are kept, for logs (never a credential)."""


class FileLocks(Locks):
    """``flock`` on ``<root>/<name>.lock``: exclusion between the processes of one machine."""

    root: str = Field(description="The folder the lock files live under (the pipeline home).")

    def path_of(self, name: str) -> Path:
        return Path(self.root).resolve() / f"{validate_lock_name(name)}.lock"

    @contextmanager
    def _hold(self, name: str, *, timeout: float, what: str) -> Iterator[None]:
        with file_lock(self.path_of(name), timeout=timeout, what=what):
            yield

    def describe(self) -> str:
        return f"lock files under {self.root}"
