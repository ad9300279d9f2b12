"""An executor that runs a job's ready steps side by side, on threads of the run worker.

Dagster's multiprocess executor starts a fresh process per step (~3 s each on this project's
machines, see the README's Performance section); its in-process executor runs one step after
another. This one keeps the in-process executor's single process — resources initialised once per
run, compute logs captured once for the run — and runs up to ``max_workers`` ready steps at once,
each on its own thread. The GIL does not get in the way: a stage spends its time waiting on its
command (the process runner), not running Python.

Every stage stays an ordinary step with its own events, checks, live logs, metadata and failure, so
re-execution from failure (and from asset failure) works unchanged. The bookkeeping stays on the
main thread: Dagster's ``ActiveExecution`` decides what is ready, skipped, abandoned or up for retry
and holds the pool claims (``InstanceConcurrencyContext``, as the multiprocess executor does). A
worker thread only runs ``dagster_event_sequence_for_step`` and hands each event to the main thread
through a queue; the main thread yields it and updates the state.

Termination (the run worker gets SIGINT/SIGTERM, which Dagster captures): the running steps'
cancellation events are set (execution/cancellation.py), the process runner kills their commands'
process groups and each step fails as interrupted; the executor waits for the threads and raises
``DagsterExecutionInterruptedError``, as the multiprocess executor does. An unexpected error in the
loop stops the running steps the same way before it propagates.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import dagster._check as check
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.compute_logs import create_compute_log_file_key
from dagster._core.execution.context.system import (
    PlanExecutionContext,
    PlanOrchestrationContext,
    StepExecutionContext,
)
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.active import ActiveExecution
from dagster._core.execution.plan.execute_plan import _trigger_hook, dagster_event_sequence_for_step
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._core.execution.step_dependency_config import (
    StepDependencyConfig,
    get_step_dependency_config_field,
)
from dagster._core.executor.base import Executor
from dagster._utils.error import serializable_error_info_from_exc_info
from dagster._utils.timing import time_execution_scope
from dagster_shared.utils.timing import format_duration

from sevenp_pipeline.execution.cancellation import cancel_on
from sevenp_pipeline.oom import reset_own_oom_priority

MAX_WORKERS_LIMIT = 64
POLL_SECONDS = 0.1  # how often the main thread looks for a termination request, due retries, pool slots
# How long a terminated run waits for its steps to stop. The process runner kills a command within
# ~10 s (kill_grace_seconds, then SIGKILL); a step stuck elsewhere is left behind after this.
STOP_TIMEOUT_SECONDS = 120.0
_INTERRUPTS = (dg.DagsterExecutionInterruptedError, KeyboardInterrupt)


class ExecutorConfigError(dg.DagsterError):
    """The executor's config is out of range; the message names the key. A DagsterError, so a
    launch with a bad value fails the run at its start with this message."""


def check_max_workers(value: object, *, key: str = "execution.config.max_workers") -> int:
    """``value`` as a worker count, else ExecutorConfigError naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_WORKERS_LIMIT:
        raise ExecutorConfigError(f"{key}: must be a whole number from 1 to {MAX_WORKERS_LIMIT} "
                                  f"(steps run at once in the run worker), got {value!r}")
    return value


def default_max_workers() -> int:
    return min(os.cpu_count() or 1, MAX_WORKERS_LIMIT)


def _config_schema(default: int | None) -> dict[str, dg.Field]:
    return {
        "max_workers": dg.Field(
            dg.Noneable(int), default_value=default, is_required=False,
            description=f"Steps run at once, each on a thread of the run worker (1-{MAX_WORKERS_LIMIT}). "
                        "Default: the number of CPUs.",
        ),
        "retries": get_retries_config(),
        "step_dependency_config": get_step_dependency_config_field(),
    }


def _create(config: Mapping[str, Any]) -> ThreadedExecutor:
    max_workers = config.get("max_workers")
    return ThreadedExecutor(
        retries=RetryMode.from_config(check.dict_elem(config, "retries")),  # type: ignore[arg-type]
        max_workers=default_max_workers() if max_workers is None else check_max_workers(max_workers),
        step_dependency_config=StepDependencyConfig.from_config(
            check.opt_nullable_dict_elem(config, "step_dependency_config")
        ),
    )


@dg.executor(name="threaded", config_schema=_config_schema(None))
def threaded_executor(init_context: dg.InitExecutorContext) -> ThreadedExecutor:
    """Runs ready steps at once on up to ``max_workers`` threads of the run worker process.

    Run config: ``execution: {config: {max_workers: 4}}``.
    """
    return _create(init_context.executor_config)


def threaded_executor_for(max_workers: int | None) -> dg.ExecutorDefinition:
    """The threaded executor whose ``max_workers`` defaults to the given value (an app's
    ``execution.max_workers``); a launch can still set another in its run config."""
    if max_workers is None:
        return threaded_executor
    check_max_workers(max_workers, key="max_workers")
    return dg.ExecutorDefinition(
        name=threaded_executor.name,
        config_schema=_config_schema(max_workers),
        executor_creation_fn=threaded_executor.executor_creation_fn,
        description=threaded_executor.description,
    )


class ThreadedExecutor(Executor):
    def __init__(
        self,
        retries: RetryMode,
        max_workers: int,
        step_dependency_config: StepDependencyConfig | None = None,
        stop_timeout_seconds: float | None = None,
    ) -> None:
        self._retries = check.inst_param(retries, "retries", RetryMode)
        self._max_workers = check_max_workers(max_workers)
        self._step_dependency_config = step_dependency_config or StepDependencyConfig.default()
        self._stop_timeout_seconds = STOP_TIMEOUT_SECONDS if stop_timeout_seconds is None else stop_timeout_seconds

    @property
    def retries(self) -> RetryMode:
        return self._retries

    @property
    def step_dependency_config(self) -> StepDependencyConfig:
        return self._step_dependency_config

    @property
    def max_workers(self) -> int:
        return self._max_workers

    def execute(self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan) -> Iterator[DagsterEvent]:
        check.inst_param(plan_context, "plan_context", PlanOrchestrationContext)
        step_keys = execution_plan.step_keys_to_execute
        pid = os.getpid()
        # A run worker is a child of the code server, whose OOM protection (-900, devtools/supervisor.py)
        # it inherited: it holds the run's memory, so it goes back to the default priority.
        reset_own_oom_priority()
        yield DagsterEvent.engine_event(
            plan_context,
            f"Executing steps on up to {self._max_workers} threads in process (pid: {pid})",
            event_specific_data=EngineEventData.in_process(pid, step_keys),
        )

        def iterator(job_context: PlanExecutionContext, execution_plan: ExecutionPlan) -> Iterator[DagsterEvent]:
            yield from _threaded_plan_iterator(job_context, execution_plan, self._max_workers,
                                               self._stop_timeout_seconds)

        with time_execution_scope() as timer:
            yield from iter(ExecuteRunWithPlanIterable(
                execution_plan=plan_context.execution_plan,
                iterator=iterator,
                execution_context_manager=PlanExecutionContextManager(
                    job=plan_context.job,
                    retry_mode=plan_context.retry_mode,
                    execution_plan=plan_context.execution_plan,
                    run_config=plan_context.run_config,
                    dagster_run=plan_context.dagster_run,
                    instance=plan_context.instance,
                    raise_on_error=plan_context.raise_on_error,
                    output_capture=plan_context.output_capture,
                    step_dependency_config=self.step_dependency_config,
                ),
            ))
        yield DagsterEvent.engine_event(
            plan_context,
            f"Finished steps in process (pid: {pid}) in {format_duration(timer.millis)}",
            event_specific_data=EngineEventData.in_process(pid, step_keys),
        )


@dataclass(frozen=True)
class _Event:
    step_key: str
    event: DagsterEvent


@dataclass(frozen=True)
class _Done:
    step_key: str
    error: BaseException | None = None


@dataclass
class _Running:
    context: StepExecutionContext
    thread: threading.Thread
    cancel: threading.Event
    events: list[DagsterEvent] = field(default_factory=list)


def _run_step(context: StepExecutionContext, cancel: threading.Event, out: queue.Queue[_Event | _Done]) -> None:
    """A worker thread: the step's events go to the main thread, then whether it raised."""
    key = context.step.key
    error: BaseException | None = None
    try:
        with cancel_on(cancel):
            for event in dagster_event_sequence_for_step(context):
                out.put(_Event(key, check.inst(event, DagsterEvent)))
    except BaseException as exc:  # handed to the main thread, which decides
        error = exc
    finally:
        out.put(_Done(key, error))


class _StepThreads:
    """The running steps, one thread each, and the queue their events arrive on."""

    def __init__(self) -> None:
        self.inbox: queue.Queue[_Event | _Done] = queue.Queue()
        self.running: dict[str, _Running] = {}

    def start(self, context: StepExecutionContext) -> None:
        key = context.step.key
        cancel = threading.Event()
        thread = threading.Thread(target=_run_step, args=(context, cancel, self.inbox), name=f"step:{key}",
                                  daemon=True)  # a step that ignores cancellation cannot keep the process alive
        thread.start()
        self.running[key] = _Running(context, thread, cancel)

    def receive(self, timeout: float) -> list[_Event | _Done]:
        """What arrived within ``timeout``; a thread that ended without reporting counts as done."""
        ended = [key for key, r in self.running.items() if not r.thread.is_alive()]
        items: list[_Event | _Done] = []
        try:
            items.append(self.inbox.get(timeout=timeout))
            while True:
                items.append(self.inbox.get_nowait())
        except queue.Empty:
            pass
        reported = {i.step_key for i in items if isinstance(i, _Done)}
        items += [_Done(key, RuntimeError(f"the thread of step {key} ended without reporting"))
                  for key in ended if key not in reported]
        return items

    def cancel_all(self) -> None:
        for running in self.running.values():
            running.cancel.set()

    def stop(self, timeout: float) -> list[str]:
        """Cancels every running step and waits for their threads; returns the steps still running."""
        self.cancel_all()
        deadline = time.monotonic() + timeout
        for running in self.running.values():
            running.thread.join(max(0.0, deadline - time.monotonic()))
        return [key for key, r in self.running.items() if r.thread.is_alive()]


def _threaded_plan_iterator(
    job_context: PlanExecutionContext, execution_plan: ExecutionPlan, max_workers: int, stop_timeout: float,
) -> Iterator[DagsterEvent]:
    """``inner_plan_execution_iterator`` of Dagster's in-process executor, with the serial loop
    replaced by one that keeps up to ``max_workers`` steps running on threads."""
    check.inst_param(job_context, "job_context", PlanExecutionContext)
    compute_log_manager = job_context.instance.compute_log_manager
    step_keys = [step.key for step in execution_plan.get_steps_to_execute_in_topo_order()]
    with ExitStack() as stack:
        concurrency = stack.enter_context(InstanceConcurrencyContext(job_context.instance, job_context.dagster_run))
        active = stack.enter_context(ActiveExecution(
            execution_plan,
            retry_mode=job_context.retry_mode,
            max_concurrent=max_workers,
            instance_concurrency_context=concurrency,
            step_dependency_config=job_context.step_dependency_config,
        ))
        capture = stack.enter_context(ExitStack())
        log_key = compute_log_manager.build_log_key_for_run(job_context.run_id, create_compute_log_file_key())
        try:
            log_context = capture.enter_context(compute_log_manager.capture_logs(log_key))
            yield DagsterEvent.capture_logs(job_context, step_keys, log_key, log_context)
        except Exception:
            yield DagsterEvent.engine_event(
                job_context, "Exception while setting up compute log capture",
                EngineEventData(error=serializable_error_info_from_exc_info(sys.exc_info())))

        threads = _StepThreads()
        stopping = False
        stop_deadline = float("inf")
        raised: BaseException | None = None
        try:
            while threads.running or not (stopping or active.is_complete):
                if not stopping and active.check_for_interrupts():
                    stopping = True
                    active.mark_interrupted()
                    yield DagsterEvent.engine_event(
                        job_context, "Threaded executor: received termination signal - stopping running steps",
                        EngineEventData.interrupted(list(threads.running)))
                    threads.cancel_all()
                if stopping and stop_deadline == float("inf"):
                    stop_deadline = time.monotonic() + stop_timeout
                if time.monotonic() > stop_deadline:
                    break  # a step that ignores its cancellation: left behind in finally below

                free = max_workers - len(threads.running)
                if not stopping and free > 0 and not active.is_complete:
                    steps = active.get_steps_to_execute(limit=free)
                    yield from active.concurrency_event_iterator(job_context)
                    for step in steps:
                        step_context = job_context.for_step(step, active.get_known_state())
                        missing = [k for k in step_context.required_resource_keys
                                   if not hasattr(step_context.resources, k)]
                        check.invariant(not missing, f"Expected step context for {step_context.op.name} to have "
                                                     f"all required resources, but missing {missing}.")
                        threads.start(step_context)

                finished: list[_Running] = []
                for item in threads.receive(POLL_SECONDS):
                    running = threads.running[item.step_key]
                    if isinstance(item, _Event):
                        running.events.append(item.event)
                        yield item.event
                        active.handle_event(item.event)
                        continue
                    del threads.running[item.step_key]
                    active.verify_complete(job_context, item.step_key)
                    finished.append(running)
                    if item.error is not None and raised is None and not (
                            stopping and isinstance(item.error, _INTERRUPTS)):
                        # A step raised (an interrupt of its own, or an error under raise_on_error):
                        # as under the in-process executor, that ends the run.
                        raised = item.error
                        if not stopping:
                            stopping = True
                            if isinstance(item.error, _INTERRUPTS):
                                active.mark_interrupted()
                            threads.cancel_all()

                yield from active.plan_events_iterator(job_context)
                for running in finished:
                    yield from _trigger_hook(running.context, running.events)
        except Exception:
            if threads.running:
                yield DagsterEvent.engine_event(
                    job_context, "Unexpected exception while steps were running - stopping them",
                    EngineEventData(metadata={"steps_interrupted": dg.MetadataValue.text(str(list(threads.running)))},
                                    error=serializable_error_info_from_exc_info(sys.exc_info())))
            raise
        finally:
            # Whatever ends the loop, no step's command outlives it.
            if threads.running:
                left = threads.stop(stop_timeout if stop_deadline == float("inf")
                                    else max(0.0, stop_deadline - time.monotonic()))
                if left:
                    job_context.log.error(f"Steps {left} did not stop within {stop_timeout:.0f}s of being "
                                          "cancelled; leaving them behind")

        if raised is not None and not isinstance(raised, _INTERRUPTS):
            raise raised
        if stopping:
            yield DagsterEvent.engine_event(job_context, "Threaded executor: stopped all running steps",
                                            EngineEventData())
            raise dg.DagsterExecutionInterruptedError()

        try:
            capture.close()
        except Exception:
            yield DagsterEvent.engine_event(
                job_context, "Exception while cleaning up compute log capture",
                EngineEventData(error=serializable_error_info_from_exc_info(sys.exc_info())))

