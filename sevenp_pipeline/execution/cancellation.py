"""Stopping a step's work when its run is terminated.

The threaded executor (threads.py) runs each step on its own thread and cannot raise into it: it
sets the step's cancellation event instead. The places where a step waits — a command run by the
process runner, a file lock — check the event of their thread every ~0.1 s; on cancellation they
clean up (the command's process group is killed) and raise ``DagsterExecutionInterruptedError``,
so the step fails as interrupted, as it would under the in-process executor.

Code not running under the threaded executor has no event and is never cancelled this way.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import dagster as dg

_local = threading.local()


@contextlib.contextmanager
def cancel_on(event: threading.Event) -> Iterator[None]:
    """Work this thread does inside the block stops when ``event`` is set."""
    previous = getattr(_local, "event", None)
    _local.event = event
    try:
        yield
    finally:
        _local.event = previous


def current_event() -> threading.Event | None:
    """The calling thread's cancellation event, if it runs a step of the threaded executor."""
    return getattr(_local, "event", None)


def cancelled(event: threading.Event | None = None) -> bool:
    event = event if event is not None else current_event()
    return event is not None and event.is_set()


def raise_if_cancelled(what: str, event: threading.Event | None = None) -> None:
    if cancelled(event):
        raise dg.DagsterExecutionInterruptedError(f"{what}: stopped, the run was terminated")
