"""The threaded executor (sevenp_pipeline/execution/threads.py) on a small job of assets that
shell out through the process runner, run with ``dg.execute_job`` on a real (sqlite) instance —
``materialize``/``execute_in_process`` would swap in Dagster's in-process executor.

Overlap is proven without clocks: steps meet at a rendezvous (each waits until enough steps are
inside their bodies at once) and a counter kept under a file lock records the most steps ever
inside at once.
"""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.

import itertools
import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.execution.plan.active import ActiveExecution

from sevenp_pipeline.config import ConfigError, Settings, load_app_config
from sevenp_pipeline.definitions import build_app_definitions, build_definitions
from sevenp_pipeline.devtools.devstack import LocalDagster, terminate
from sevenp_pipeline.execution import threads as threads_module
from sevenp_pipeline.execution.threads import (
    ExecutorConfigError,
    check_max_workers,
    default_max_workers,
    threaded_executor,
    threaded_executor_for,
)
from sevenp_pipeline.locks import file_lock
from sevenp_pipeline.models import Workspace
from sevenp_pipeline.resources import tool_answers
from sevenp_pipeline.resources.processes import ExecuteRequest, Outcome, ProcessRunner
from sevenp_pipeline.resources.services import free_port
from sevenp_pipeline.resources.tool_answers import tool_versions
from sevenp_pipeline.resources.workspaces import Workspaces, read_inputs, record_inputs
from sevenp_pipeline.triggers.tags import TAG_COMMIT
from sevenp_pipeline_tests.conftest import SAMPLE_APP
from sevenp_pipeline_tests.stages.test_sample_app import SAMPLE_STAGES
from sevenp_pipeline_tests.waiting import wait_for_run, wait_until

RENDEZVOUS_TIMEOUT = 60.0  # a step waiting for partners that never come fails, naming the rendezvous
RELEASE_DEAF = threading.Event()


class Probe(dg.ConfigurableResource):
    """What each asset does (``plan.json`` under ``root``) and what it saw (``state.json``)."""

    root: str

    def plan(self, name: str) -> dict[str, Any]:
        return json.loads((Path(self.root) / "plan.json").read_text()).get(name, {})

    @contextmanager
    def _state(self) -> Iterator[dict[str, Any]]:
        path = Path(self.root) / "state.json"
        with file_lock(path.with_suffix(".lock")):
            state = json.loads(path.read_text()) if path.exists() else {
                "running": 0, "peak": 0, "entries": 0, "released": 0, "intervals": {}}
            yield state
            path.write_text(json.dumps(state))

    @contextmanager
    def inside(self, name: str, *, rendezvous: int, total: int) -> Iterator[None]:
        """The asset's body. With ``rendezvous`` N, it waits until N steps are inside at once
        (or every one of ``total`` steps has entered: no partner is left to come)."""
        with self._state() as state:
            index = state["entries"]
            state["entries"] += 1
            state["running"] += 1
            state["peak"] = max(state["peak"], state["running"])
            if state["running"] >= rendezvous:
                state["released"] = state["entries"]
            state["intervals"][name] = [time.time(), None]
        try:
            deadline = time.monotonic() + RENDEZVOUS_TIMEOUT
            while True:
                with self._state() as state:
                    if state["released"] > index or state["entries"] >= total:
                        break
                if time.monotonic() > deadline:
                    raise dg.Failure(f"{name}: no {rendezvous} steps ran at once within {RENDEZVOUS_TIMEOUT}s")
                time.sleep(0.02)
            yield
        finally:
            with self._state() as state:
                state["running"] -= 1
                state["intervals"][name][1] = time.time()

    def state(self) -> dict[str, Any]:
        with self._state() as state:
            return state


def _stage(name: str, deps: tuple[str, ...] = (), retry_policy: dg.RetryPolicy | None = None,
           pool: str | None = None) -> dg.AssetsDefinition:
    @dg.asset(name=name, deps=list(deps), retry_policy=retry_policy, pool=pool)
    def _asset(context: dg.AssetExecutionContext, probe: Probe, process_runner: ProcessRunner) -> dg.MaterializeResult:
        plan = probe.plan(name)
        for i in range(plan.get("log_lines", 0)):
            context.log.info(f"{name} says {i}")
        with probe.inside(name, rendezvous=plan.get("rendezvous", 1), total=plan.get("total", 1)):
            if plan.get("deaf"):  # waits in Python, never asking whether its run was terminated
                (Path(probe.root) / f"{name}.deaf").touch()
                RELEASE_DEAF.wait(300)
            outcome = process_runner.check(
                ExecuteRequest(argv=plan.get("argv", ["sleep", "0.2"]), cwd=Path(probe.root), label=name),
                log=context.log.info,
            )
        if plan.get("fail_if_exists") and Path(plan["fail_if_exists"]).exists():
            raise dg.Failure(f"{name} fails on purpose", allow_retries=False)
        if context.retry_number < plan.get("failing_attempts", 0):
            raise dg.Failure(f"{name} attempt {context.retry_number + 1} fails on purpose")
        return dg.MaterializeResult(metadata={"thread": threading.current_thread().name,
                                              "exit_code": outcome.exit_code})

    return _asset


# a b c d are independent (like the quality checks); e needs a, f needs b, g needs e and f; r retries;
# p q s share a pool (like the stages with services).
ASSETS = [_stage("a"), _stage("b"), _stage("c"), _stage("d"), _stage("e", ("a",)), _stage("f", ("b",)),
          _stage("g", ("e", "f")), _stage("r", retry_policy=dg.RetryPolicy(max_retries=2, delay=0.1)),
          *(_stage(k, pool="services") for k in "pqs")]
DEFS = dg.Definitions(
    assets=ASSETS,
    jobs=[dg.define_asset_job("threads_job", executor_def=threaded_executor),
          dg.define_asset_job("threads_job_3", executor_def=threaded_executor_for(3))],
    resources={"probe": Probe.configure_at_launch(), "process_runner": ProcessRunner(kill_grace_seconds=1)},
)


def threads_job() -> dg.JobDefinition:
    return DEFS.resolve_job_def("threads_job")


def threads_job_3() -> dg.JobDefinition:
    return DEFS.resolve_job_def("threads_job_3")


RECON = dg.reconstructable(threads_job)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as inst:
        yield inst


def _pooled_instance(limit: int) -> Any:
    return dg.instance_for_test(overrides={"concurrency": {"pools": {"default_limit": limit, "granularity": "op"}}})


@pytest.fixture
def probe_root(tmp_path: Path) -> Path:
    root = tmp_path / "probe"
    root.mkdir()
    return root


def _run(instance: dg.DagsterInstance, root: Path, plan: dict[str, dict[str, Any]], select: str | None = None,
         *, max_workers: int | None = None, job: Any = RECON, **kwargs: Any,
         ) -> dg.JobExecutionResult:
    (root / "plan.json").write_text(json.dumps(plan))
    (root / "state.json").unlink(missing_ok=True)
    run_config: dict[str, Any] = {"resources": {"probe": {"config": {"root": str(root)}}}}
    if max_workers is not None:
        run_config["execution"] = {"config": {"max_workers": max_workers}}
    keys = [dg.AssetKey(k) for k in select] if select else None
    return dg.execute_job(job, instance=instance, run_config=run_config, asset_selection=keys, **kwargs)


def _steps(instance: dg.DagsterInstance, run_id: str) -> dict[str, str]:
    return {s.step_key: s.status.value for s in instance.get_run_step_stats(run_id)}


def _state(root: Path) -> dict[str, Any]:
    return Probe(root=str(root)).state()


def _messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [r.event_log_entry.message for r in instance.get_records_for_run(run_id, limit=100_000).records]


# -- (1) independent steps overlap, bounded by max_workers ------------------------------------------
def test_independent_steps_run_at_once(instance: dg.DagsterInstance, probe_root: Path) -> None:
    plan = {k: {"rendezvous": 4, "total": 4} for k in "abcd"}
    result = _run(instance, probe_root, plan, "abcd", max_workers=4)
    assert result.success
    state = _state(probe_root)
    assert state["peak"] == 4
    intervals = [state["intervals"][k] for k in "abcd"]
    assert max(start for start, _ in intervals) < min(end for _, end in intervals)  # all four intersect
    assert f"Executing steps on up to 4 threads in process (pid: {os.getpid()})" in _messages(instance, result.run_id)
    threads = {e.asset_key.path[-1]: e.materialization.metadata["thread"].value
               for e in result.get_asset_materialization_events()}
    assert threads == {k: f"step:{k}" for k in "abcd"}


def test_max_workers_bounds_the_steps_at_once(instance: dg.DagsterInstance, probe_root: Path) -> None:
    # Every step waits for a partner: only the bound keeps a third one out.
    plan = {k: {"rendezvous": 2, "total": 4} for k in "abcd"}
    assert _run(instance, probe_root, plan, "abcd", max_workers=2).success
    assert _state(probe_root)["peak"] == 2

    assert _run(instance, probe_root, {}, "abcd", max_workers=1).success
    state = _state(probe_root)
    assert state["peak"] == 1
    spans = sorted(state["intervals"].values())
    assert all(end <= following for (_, end), (following, _) in itertools.pairwise(spans))


def test_a_step_waits_for_what_it_needs(instance: dg.DagsterInstance, probe_root: Path) -> None:
    assert _run(instance, probe_root, {}, max_workers=4).success
    spans = _state(probe_root)["intervals"]
    for child, parents in {"e": "a", "f": "b", "g": "ef"}.items():
        assert all(spans[p][1] <= spans[child][0] for p in parents), child


@pytest.mark.parametrize("limit", [1, 2])
def test_pool_slots_bound_the_pooled_steps(probe_root: Path, limit: int) -> None:
    """Op-granularity pools (dagster.yaml) are claimed per step, as under the multiprocess executor."""
    plan = {k: {"rendezvous": limit, "total": 3} for k in "pqs"}
    with _pooled_instance(limit) as instance:
        result = _run(instance, probe_root, plan, "pqs", max_workers=4)
        assert result.success
        assert _state(probe_root)["peak"] == limit
        blocked = [m for m in _messages(instance, result.run_id) if "blocked by limit for pool services" in m]
        assert len(blocked) >= 3 - limit
        assert instance.event_log_storage.get_concurrency_info("services").active_slot_count == 0


# -- (2) a failing step fails alone; (3) re-execution from failure ----------------------------------
def test_failing_step_fails_alone_and_reexecution_runs_only_it_and_downstream(
    instance: dg.DagsterInstance, probe_root: Path
) -> None:
    flag = probe_root / "a-fails"
    flag.touch()
    plan = {"a": {"fail_if_exists": str(flag)}}
    failed = _run(instance, probe_root, plan, "abcdefg", max_workers=4)
    assert not failed.success
    # e and g need a: not run. The independent b, c, d and b's child f ran to the end.
    assert _steps(instance, failed.run_id) == {"a": "FAILURE", "b": "SUCCESS", "c": "SUCCESS", "d": "SUCCESS",
                                               "f": "SUCCESS"}
    messages = _messages(instance, failed.run_id)
    assert any("Dependencies for step e failed: ['a']. Not executing." in m for m in messages)
    materialized = {e.asset_key.path[-1] for e in failed.get_asset_materialization_events()}
    assert materialized == {"b", "c", "d", "f"}
    assert instance.get_run_by_id(failed.run_id).status == dg.DagsterRunStatus.FAILURE

    flag.unlink()  # "the fix"
    (probe_root / "state.json").unlink()
    rerun = dg.execute_job(RECON, instance=instance,
                           reexecution_options=dg.ReexecutionOptions.from_failure(failed.run_id, instance))
    assert rerun.success
    assert set(_steps(instance, rerun.run_id)) == {"a", "e", "g"}
    assert set(_state(probe_root)["intervals"]) == {"a", "e", "g"}


# -- (4) retries -------------------------------------------------------------------------------------
def test_retry_policy_retries_beside_running_siblings(instance: dg.DagsterInstance, probe_root: Path) -> None:
    plan = {"r": {"failing_attempts": 2}, "a": {"argv": ["sleep", "1"]}}
    result = _run(instance, probe_root, plan, "ar", max_workers=2)
    assert result.success
    (stats,) = [s for s in instance.get_run_step_stats(result.run_id) if s.step_key == "r"]
    assert stats.attempts == 3 and stats.status.value == "SUCCESS"


def test_retries_exhausted_fail_the_step(instance: dg.DagsterInstance, probe_root: Path) -> None:
    result = _run(instance, probe_root, {"r": {"failing_attempts": 5}}, "r", max_workers=2)
    assert not result.success
    assert _steps(instance, result.run_id) == {"r": "FAILURE"}


# -- (5) termination and loop errors leave nothing running ----------------------------------------------
def _sleepers(marker: str) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"^sleep {marker}$"], capture_output=True, text=True, check=False)
    return [int(p) for p in out.stdout.split()]


def _when_running(marker: str, count: int, then: Callable[[], None]) -> threading.Thread:
    def watch() -> None:
        try:
            wait_until(lambda: len(_sleepers(marker)) >= count, timeout=120, interval=0.05,
                       what=f"{count} `sleep {marker}` command(s) running")
        finally:
            then()  # as before, also after the timeout: the run is not left hanging on its commands

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def test_terminated_run_kills_running_commands(instance: dg.DagsterInstance, probe_root: Path) -> None:
    """A run terminated from the UI: it is marked CANCELING and its run worker gets SIGINT (sent by
    Dagster's termination thread in the worker). Both running stages' commands die; nothing
    downstream starts; the run ends CANCELED."""
    marker = f"300.{secrets.randbelow(10**6):06d}"
    plan = {"a": {"argv": ["sleep", marker]}, "b": {"argv": ["sleep", marker]}}

    def terminate() -> None:  # what DefaultRunLauncher.terminate and the run worker's termination thread do
        (run,) = instance.get_runs()
        instance.report_run_canceling(run)
        os.kill(os.getpid(), signal.SIGINT)

    watcher = _when_running(marker, 2, terminate)
    result = _run(instance, probe_root, plan, "abefg", max_workers=2)
    watcher.join()
    assert not result.success
    assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.CANCELED
    assert _sleepers(marker) == []
    assert _steps(instance, result.run_id) == {"a": "FAILURE", "b": "FAILURE"}
    messages = _messages(instance, result.run_id)
    assert any("received termination signal - stopping running steps" in m for m in messages)
    assert sum("was killed: the run was terminated" in m for m in messages) == 2


def test_a_step_deaf_to_cancellation_is_left_behind_after_the_stop_timeout(
    instance: dg.DagsterInstance, probe_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(threads_module, "STOP_TIMEOUT_SECONDS", 1.0)
    marker = f"300.{secrets.randbelow(10**6):06d}"
    plan = {"a": {"argv": ["sleep", marker]}, "b": {"deaf": True}}

    def terminate() -> None:
        wait_until((probe_root / "b.deaf").exists, timeout=120, interval=0.05, what="step b to be deaf")
        (run,) = instance.get_runs()
        instance.report_run_canceling(run)
        os.kill(os.getpid(), signal.SIGINT)

    watcher = _when_running(marker, 1, terminate)
    try:
        result = _run(instance, probe_root, plan, "ab", max_workers=2)
        watcher.join()
        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.CANCELED
        assert _sleepers(marker) == []
        assert any("Steps ['b'] did not stop within 1s of being cancelled" in m
                   for m in _messages(instance, result.run_id))
    finally:
        RELEASE_DEAF.set()


def test_error_in_the_executor_loop_stops_running_commands(
    instance: dg.DagsterInstance, probe_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = f"300.{secrets.randbelow(10**6):06d}"
    broken = threading.Event()

    def check_for_interrupts(self: ActiveExecution) -> bool:
        if broken.is_set():
            raise RuntimeError("bookkeeping broke")
        return False

    monkeypatch.setattr(ActiveExecution, "check_for_interrupts", check_for_interrupts)
    plan = {"a": {"argv": ["sleep", marker]}, "b": {"argv": ["sleep", marker]}}
    watcher = _when_running(marker, 2, broken.set)
    result = _run(instance, probe_root, plan, "ab", max_workers=2)
    watcher.join()
    assert not result.success
    assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.FAILURE
    assert _sleepers(marker) == []
    assert any("Unexpected exception while steps were running - stopping them" in m
               for m in _messages(instance, result.run_id))


# -- concurrent writes to the sqlite event log ----------------------------------------------------------
def test_parallel_steps_lose_no_log_line(instance: dg.DagsterInstance, probe_root: Path) -> None:
    lines = 400
    plan = {k: {"rendezvous": 4, "total": 4, "log_lines": lines,
                "argv": ["python3", "-c", f"for i in range({lines}): print('{k} prints', i, flush=True)"]}
            for k in "abcd"}
    result = _run(instance, probe_root, plan, "abcd", max_workers=4)
    assert result.success
    assert _state(probe_root)["peak"] == 4
    records = instance.get_records_for_run(result.run_id, limit=100_000).records
    text = "\n".join(r.event_log_entry.user_message for r in records)
    assert "database is locked" not in text
    for k in "abcd":
        said = [r for r in records if r.event_log_entry.user_message.startswith(f"{k} says ")]
        assert len(said) == lines and all(r.event_log_entry.step_key == k for r in said)
        assert {f"[{k}] {k} prints {i}" for i in range(lines)} <= set(text.splitlines())


# -- (6) configuration ----------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, 65, -1, True, "4"])
def test_max_workers_out_of_range_names_the_key(value: object) -> None:
    with pytest.raises(ExecutorConfigError, match=r"^execution\.config\.max_workers: must be a whole number from 1 to"):
        check_max_workers(value)
    if isinstance(value, int) and not isinstance(value, bool):
        with pytest.raises(ExecutorConfigError, match=r"^max_workers: "):
            threaded_executor_for(value)


@pytest.mark.parametrize("value", [0, 65])
def test_launch_with_max_workers_out_of_range_fails_naming_the_key(
    instance: dg.DagsterInstance, probe_root: Path, value: int
) -> None:
    result = _run(instance, probe_root, {}, "a", max_workers=value)
    assert not result.success
    assert _steps(instance, result.run_id) == {}
    failures = [r.event_log_entry.dagster_event for r in instance.get_records_for_run(
        result.run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records]
    assert any("execution.config.max_workers: must be a whole number from 1 to 64" in str(f.event_specific_data)
               for f in failures)


def test_default_is_the_cpu_count_and_an_app_default_can_be_overridden_at_launch(
    instance: dg.DagsterInstance, probe_root: Path
) -> None:
    def workers(result: dg.JobExecutionResult) -> str:
        (line,) = [m for m in _messages(instance, result.run_id) if m.startswith("Executing steps on up to")]
        return line.split()[5]

    assert workers(_run(instance, probe_root, {}, "a")) == str(default_max_workers()) == str(os.cpu_count())
    app_default = dg.reconstructable(threads_job_3)
    assert workers(_run(instance, probe_root, {}, "a", job=app_default)) == "3"
    assert workers(_run(instance, probe_root, {}, "a", job=app_default, max_workers=1)) == "1"
    assert threaded_executor_for(None) is threaded_executor


@pytest.mark.parametrize("value", [0, 65])
def test_app_config_execution_max_workers_is_checked_at_load(tmp_path: Path, value: int) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(f"name: web\nrepository: {{url: /srv/web.git}}\nexecution: {{max_workers: {value}}}\n"
                    "stages: {}\n")
    with pytest.raises(ConfigError, match=r"web\.yaml: execution\.max_workers: Input should be "):
        load_app_config(path)


def _ci_job(defs: dg.Definitions) -> dg.JobDefinition:
    """The app's CI job (beside it: the run-branch form's job, which runs no stage)."""
    (job,) = [j for j in defs.jobs if j.name.endswith("_ci_job")]  # type: ignore[union-attr]
    return job  # type: ignore[return-value]


def test_app_job_runs_on_the_threaded_executor_with_the_apps_max_workers(tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text("name: web\nrepository: {url: /srv/web.git}\nexecution: {max_workers: 3}\nstages: {}\n")
    job = _ci_job(build_app_definitions(load_app_config(path)))
    executor = job.executor_def  # type: ignore[union-attr]
    assert executor.name == "threaded"
    assert executor.config_schema.as_field().config_type.fields["max_workers"].default_value == 3

    path.write_text("name: web\nrepository: {url: /srv/web.git}\nstages: {}\n")
    job = _ci_job(build_app_definitions(load_app_config(path)))
    assert job.executor_def is threaded_executor  # type: ignore[union-attr]


# -- what stages share, used by several at once ------------------------------------------------------------
def _at_once(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """``fn(0..n-1)`` on n threads released together; their results (an exception is re-raised)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def work(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except BaseException as exc:  # re-raised below, in the test's thread
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def test_free_ports_handed_to_stages_at_once_are_distinct() -> None:
    ports = [p for batch in _at_once(8, lambda _: [free_port() for _ in range(25)]) for p in batch]
    assert len(ports) == len(set(ports)) == 200


def test_inputs_recorded_at_once_are_all_kept(tmp_path: Path) -> None:
    workspace = Workspace(root=tmp_path / "ws")
    workspace.root.mkdir()
    _at_once(8, lambda i: [record_inputs(workspace, **{f"stage{i}_{j}": j}) for j in range(10)])
    assert read_inputs(workspace) == {f"stage{i}_{j}": j for i in range(8) for j in range(10)}
    assert sorted(p.name for p in workspace.root.iterdir()) == [".inputs.lock", "inputs.json"]


def test_tool_versions_are_asked_once_for_stages_asking_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, ...]] = []

    class SlowNode(ProcessRunner):
        def run(self, request: ExecuteRequest, *, log: Any = None) -> Outcome:
            asked.append(tuple(request.argv))
            time.sleep(0.2)
            return Outcome(label="node", command="node --version", exit_code=0, started=0, ended=0, tail=(),
                           output=("v20.0.0",))

    monkeypatch.setattr(tool_answers, "_TOOL_VERSIONS", {})
    assert _at_once(4, lambda _: tool_versions(SlowNode())) == [{"node": "v20.0.0"}] * 4
    assert asked == [("node", "--version")]


def test_stages_of_one_commit_prepare_their_sandboxes_at_once(tmp_path: Path) -> None:
    workspaces = Workspaces(root=str(tmp_path / "ws"), cache_root=str(tmp_path / "cache"), sandbox=False)
    workspace = workspaces.for_commit(app="web", sha="a" * 40)
    workspace.app_dir.mkdir(parents=True)

    def prepare(i: int) -> dict[str, str]:
        room = workspaces.stage_room(workspace, f"stage{i}")
        return workspaces.stage_sandbox(workspace, room, cwd=workspace.app_dir, node_modules=None)[1]

    envs = _at_once(8, prepare)
    assert len({env["HOME"] for env in envs}) == 8
    assert (workspace.root / "corepack").is_dir()


# -- (5) through a real deployment: the UI's Terminate ------------------------------------------------------
@pytest.mark.integration
def test_run_terminated_through_graphql_leaves_no_command_or_server(make_pipeline, monkeypatch) -> None:
    """The local stack (daemon, queued run, run worker launched by the code server) runs an app whose
    stage hangs with its PostgreSQL and Redis up; terminateRun ends the run CANCELED, and the stage's
    command, its servers and their folder are gone."""
    marker = f"300.{secrets.randbelow(10**6):06d}"
    pipe = make_pipeline(f"""
        trigger: {{poll_interval_seconds: 1}}
        stages:
          hang:
            kind: command
            command: [sleep, "{marker}"]
            services: [postgresql, redis]
            needs: [node_dependencies]
        """)
    stack = LocalDagster(home=pipe.settings.home, port=free_port(), apps_dir=pipe.settings.apps_dir)
    monkeypatch.setenv("DAGSTER_HOME", str(stack.dagster_home))
    services = pipe.settings.services_dir
    stack.start()
    try:
        stack.wait_for_sensor_tick(f"{pipe.key}_git_push_sensor")
        instance = dg.DagsterInstance.get()
        sha = pipe.remote.commit("feat: a stage that hangs")
        wait_until(lambda: _sleepers(marker), timeout=180, interval=0.2, what="the hanging stage to start")
        assert list(services.glob("svc-*")), "the stage's servers should be up"
        (run,) = instance.get_runs(filters=dg.RunsFilter(tags={TAG_COMMIT: sha}))
        terminate(stack.url, run.run_id)
        run = wait_for_run(instance, run.run_id, timeout=120)
        assert run.status == dg.DagsterRunStatus.CANCELED
        messages = _messages(instance, run.run_id)
        assert any(m.startswith("Executing steps on up to") for m in messages)
        assert any("received termination signal - stopping running steps" in m for m in messages)
        steps = {s.step_key.split("__", 1)[1]: s.status.value for s in instance.get_run_step_stats(run.run_id)}
        assert steps["hang"] == "FAILURE"
        assert "build_artifact" not in steps
        assert _sleepers(marker) == []
        assert subprocess.run(["pgrep", "-f", str(services)], check=False).returncode == 1
        assert list(services.glob("svc-*")) == []
    finally:
        stack.stop()


# -- (7) the sample app's CI job, as a run worker executes it ----------------------------------------------
def sample_ci_job() -> dg.JobDefinition:
    return build_definitions(Settings.from_env()).resolve_job_def("7p_education_api_ci_job")


@pytest.mark.integration
def test_sample_app_ci_job_on_threads_passes_every_gate(make_pipeline, monkeypatch) -> None:
    """The whole stage graph of the sample app (real PostgreSQL/Redis per test suite, Chromium E2E,
    load test) through the job's own executor: the test suites run side by side, each with its own
    servers, and every gate passes as it does one step after another."""
    pipe = make_pipeline(SAMPLE_STAGES + "execution: {max_workers: 3}\n", source=SAMPLE_APP, name="7p-education-api")
    monkeypatch.setenv("SEVENP_HOME", str(pipe.settings.home))
    monkeypatch.setenv("SEVENP_APPS_DIR", str(pipe.settings.apps_dir))
    sha = pipe.remote.commit("release candidate")
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(f"{pipe.key}_commits", [sha])
        result = dg.execute_job(dg.reconstructable(sample_ci_job), instance=instance,
                                tags={"dagster/partition": sha})
        checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
                  for e in result.all_events if e.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION}
        assert result.success, checks
        assert checks and all(checks.values()), checks
        assert "Executing steps on up to 3 threads" in " ".join(_messages(instance, result.run_id))
        spans = {s.step_key.split("__", 1)[1]: (s.start_time, s.end_time)
                 for s in instance.get_run_step_stats(result.run_id)}
    suites = [spans[k] for k in ("unit_test_results", "integration_test_results", "api_test_results")]
    assert any(a[0] < b[1] and b[0] < a[1] for a, b in itertools.combinations(suites, 2)), suites
    assert "release_gate" in spans
    assert list(pipe.settings.services_dir.glob("svc-*")) == []
