"""Bounded waits for the tests: poll until something happens, or fail naming what did not happen."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import dagster as dg

if TYPE_CHECKING:
    from sevenp_pipeline.devtools.devstack import LocalDagster

T = TypeVar("T")

DONE_TICKS = ("SKIPPED", "SUCCESS")  # a sensor tick that ran the sensor to its end


def wait_until(predicate: Callable[[], T], *, timeout: float, what: str, interval: float = 0.1) -> T:
    """The first truthy value of ``predicate()``; AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            seen = "" if value is None or isinstance(value, bool) else f"; last seen: {value!r}"
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{seen}")
        time.sleep(interval)


def wait_while(probe: Callable[[], object], *, timeout: float, what: str, interval: float = 0.1) -> None:
    """Waits until ``probe()`` is falsy (e.g. no process left); AssertionError with its last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    while value := probe():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; still: {value!r}")
        time.sleep(interval)


def wait_for_runs(instance: dg.DagsterInstance, *, filters: dg.RunsFilter | None = None,
                  tags: Mapping[str, str] | None = None, count: int = 1, timeout: float = 300,
                  finished: bool = True, interval: float = 0.5) -> list[dg.DagsterRun]:
    """Runs matching ``filters`` (or ``tags``), oldest first, once ``count`` exist (all finished if ``finished``)."""
    if (filters is None) == (tags is None):
        raise TypeError("wait_for_runs takes one of filters and tags")
    runs_filter = filters if filters is not None else dg.RunsFilter(tags=dict(tags or {}))
    seen: list[dg.DagsterRun] = []

    def ready() -> list[dg.DagsterRun] | None:
        records = sorted(instance.get_run_records(filters=runs_filter), key=lambda r: r.create_timestamp)
        seen[:] = [r.dagster_run for r in records]
        if len(seen) >= count and (not finished or all(r.is_finished for r in seen)):
            return list(seen)
        return None

    what = f"{count} {'finished ' if finished else ''}run(s) with {_describe(runs_filter)}"
    try:
        return wait_until(ready, timeout=timeout, what=what, interval=interval)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; seen: {[(r.run_id, r.status.value) for r in seen]}") from None


def wait_for_run(instance: dg.DagsterInstance, run_id: str, *,
                 statuses: Collection[dg.DagsterRunStatus] | None = None, timeout: float = 300,
                 interval: float = 0.2) -> dg.DagsterRun:
    """Run ``run_id`` once its status is one of ``statuses`` (by default: once it has finished)."""
    last: list[str] = ["(no such run)"]

    def reached() -> dg.DagsterRun | None:
        run = instance.get_run_by_id(run_id)
        if run is None:
            return None
        last[0] = run.status.value
        return run if (run.status in statuses if statuses is not None else run.is_finished) else None

    wanted = sorted(s.value for s in statuses) if statuses is not None else "a finished status"
    try:
        return wait_until(reached, timeout=timeout, what=f"run {run_id} to reach {wanted}", interval=interval)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its status: {last[0]}") from None


def wait_for_message(instance: dg.DagsterInstance, run_id: str, text: str, *, timeout: float = 120,
                     interval: float = 0.2) -> str:
    """The first message of run ``run_id``'s event log that contains ``text``."""
    def found() -> str | None:
        records = instance.get_records_for_run(run_id, limit=100000).records
        return next((r.event_log_entry.user_message for r in records if text in r.event_log_entry.user_message), None)

    return wait_until(found, timeout=timeout, what=f"a log line with {text!r} in run {run_id}", interval=interval)


def wait_for_sensor_ticks(stack: LocalDagster, sensor: str, *, after: float, count: int = 2,
                          timeout: float = 120) -> list[dict[str, Any]]:
    """``count`` ticks of ``sensor`` that started after ``after`` (epoch seconds) and ran it to its end."""
    seen: list[dict[str, Any]] = []

    def ticks() -> list[dict[str, Any]] | None:
        seen[:] = stack.sensor_ticks(sensor)
        done = [t for t in seen if t["status"] in DONE_TICKS and t["timestamp"] > after]
        return done if len(done) >= count else None

    what = f"{count} completed tick(s) of {sensor} that started after {after:.1f}"
    try:
        return wait_until(ticks, timeout=timeout, what=what, interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; its latest ticks: {[(t['status'], t['timestamp']) for t in seen]}") from None


def _describe(runs_filter: dg.RunsFilter) -> str:
    parts = [f"job {runs_filter.job_name}"] if runs_filter.job_name else []
    if runs_filter.tags:
        parts.append(f"tags {dict(runs_filter.tags)}")
    return ", ".join(parts) if parts else repr(runs_filter)
