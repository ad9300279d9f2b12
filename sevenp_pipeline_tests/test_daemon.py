"""A real Dagster instance (webserver + daemon): push → sensor → run; re-execute from failure
through GraphQL; a planted secret never reaches the event log, compute logs or artifacts."""

from __future__ import annotations

import os
import signal
import tempfile
import time
from pathlib import Path

import dagster as dg
import pytest

from sevenp_pipeline.config.loader import DEFAULT_STAGES
from sevenp_pipeline.devtools.devstack import LocalDagster, reexecute
from sevenp_pipeline.resources.services import free_port
from sevenp_pipeline.triggers.sensors import TAG_COMMIT

pytestmark = pytest.mark.integration

CANARY = "canary-7f3a9c1e5b2d-do-not-log"


def _wait_run(instance: dg.DagsterInstance, *, run_id: str | None = None, sha: str | None = None,
              timeout: float = 180) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if run_id:
            run = instance.get_run_by_id(run_id)
        else:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={TAG_COMMIT: sha}))
            run = runs[0] if runs else None
        if run is not None and run.is_finished:
            return run
        time.sleep(0.5)
    raise AssertionError(f"run for {run_id or sha} did not finish in {timeout}s")


def _executed_steps(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    return {s.step_key.split("__", 1)[1] for s in instance.get_run_step_stats(run_id)}


def test_push_runs_pipeline_and_reexecute_from_failure_runs_only_failed_stages(
    make_pipeline, stage_visible_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flag = stage_visible_dir / "fail-flag"
    flag.write_text("make the unit test fail")
    flag.chmod(0o644)
    pipe = make_pipeline(f"""
        secrets: [SEVENP_CANARY]
        env: {{TINY_FAIL_FLAG: "{flag}"}}
        stages:
          format_report: {{command: [node, -e, "console.log('canary value: ' + process.env.SEVENP_CANARY)"]}}
        """)
    stack = LocalDagster(home=pipe.settings.home, port=free_port(), apps_dir=pipe.settings.apps_dir,
                         extra_env={"SEVENP_CANARY": CANARY})
    monkeypatch.setenv("DAGSTER_HOME", str(stack.dagster_home))
    stack.start()
    try:
        stack.wait_for_sensor_tick(f"{pipe.key}_git_push_sensor")
        instance = dg.DagsterInstance.get()
        sha = pipe.remote.commit("feat: pushed while the daemon runs")
        pushed = time.time()
        failed = _wait_run(instance, sha=sha)
        assert failed.status == dg.DagsterRunStatus.FAILURE
        assert failed.tags["sevenp/branch"] == "develop"
        started = instance.get_run_record_by_id(failed.run_id).start_time
        assert started - pushed < 60

        stats = {s.step_key.split("__", 1)[1]: s.status.value for s in instance.get_run_step_stats(failed.run_id)}
        assert stats["unit_test_results"] == "FAILURE"
        assert stats["lint_report"] == stats["integration_test_results"] == "SUCCESS"
        assert "build_artifact" not in stats

        flag.unlink()  # "the fix"
        rerun_id = reexecute(stack.url, failed.run_id, "FROM_FAILURE")
        rerun = _wait_run(instance, run_id=rerun_id)
        assert rerun.status == dg.DagsterRunStatus.SUCCESS
        assert _executed_steps(instance, rerun_id) == {"unit_test_results", "build_artifact", "api_docs",
                                                   "e2e_test_results", "performance_report"}

        # The stage really printed the secret: it must appear only masked.
        logs = [r.event_log_entry.user_message for r in instance.get_records_for_run(failed.run_id).records]
        assert any("canary value: ***" in m for m in logs)
    finally:
        stack.stop()
    leaks = [p for root in (stack.dagster_home, pipe.settings.home / "artifacts")
             for p in root.rglob("*") if p.is_file() and CANARY.encode() in p.read_bytes()]
    assert leaks == []
    assert any(p.suffix in (".out", ".err", ".complete") or "compute_logs" in str(p)
               for p in stack.dagster_home.rglob("*")), "compute logs were not written where we looked"


def test_broken_app_file_fails_its_own_sensor_and_the_good_app_still_runs(
    make_pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    only_checkout = "stages:\n" + "".join(f"  {name}: null\n" for name in DEFAULT_STAGES)
    pipe = make_pipeline(only_checkout)
    (pipe.settings.apps_dir / "web-broken.yaml").write_text(
        "name: web\nrepository: {url: /nowhere.git}\nstages:\n  lint_report: {timout_seconds: 5}\n")
    stack = LocalDagster(home=pipe.settings.home, port=free_port(), apps_dir=pipe.settings.apps_dir)
    monkeypatch.setenv("DAGSTER_HOME", str(stack.dagster_home))
    stack.start()  # the code location loads: one broken file does not take it down
    try:
        deadline = time.monotonic() + 120
        ticks: list[dict] = []
        while time.monotonic() < deadline and not ticks:
            ticks = [t for t in stack.sensor_ticks("web_broken_config_error") if t["status"] == "FAILURE"]
            time.sleep(0.5)
        assert ticks, "the error sensor never failed a tick"
        error = ticks[0]["error"]  # the UI's tick error: the sensor's error, caused by the ConfigError
        assert "web-broken.yaml: stages.lint_report.timout_seconds: unknown key" in " ".join(
            [error["message"], *(c["message"] for c in error["causes"])])

        stack.wait_for_sensor_tick(f"{pipe.key}_git_push_sensor")
        instance = dg.DagsterInstance.get()
        sha = pipe.remote.commit("feat: pushed beside a broken app file")
        assert _wait_run(instance, sha=sha).status == dg.DagsterRunStatus.SUCCESS
    finally:
        stack.stop()


SLOW_TEST = """\
const fs = require("fs");
// Waits while the flag file exists: the test kills the run worker meanwhile.
exports.waitsForTheFlag = async () => {
  const deadline = Date.now() + 120000;
  while (fs.existsSync(process.env.TINY_SLOW_FLAG) && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
};
"""


def test_killed_run_worker_is_retried_by_itself_and_leaves_no_service_folder(
    make_pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    fd, name = tempfile.mkstemp(prefix="sevenp-slow-flag-", dir="/tmp")  # any stage user can see it
    os.close(fd)
    flag = Path(name)
    pipe = make_pipeline(f'env: {{TINY_SLOW_FLAG: "{flag}"}}\n')
    pipe.remote.write("tests/integration/slow.test.js", SLOW_TEST)
    stack = LocalDagster(home=pipe.settings.home, port=free_port(), apps_dir=pipe.settings.apps_dir)
    monkeypatch.setenv("DAGSTER_HOME", str(stack.dagster_home))
    stack.start()
    try:
        stack.wait_for_sensor_tick(f"{pipe.key}_git_push_sensor")
        instance = dg.DagsterInstance.get()
        sha = pipe.remote.commit("feat: a slow integration test")
        deadline = time.monotonic() + 180
        pid = None
        while time.monotonic() < deadline and pid is None:  # the stage holding the services pool runs
            runs = instance.get_runs(filters=dg.RunsFilter(tags={TAG_COMMIT: sha}))
            if runs and list(pipe.settings.services_dir.glob("svc-*")):
                events = [r.event_log_entry.user_message for r in instance.get_records_for_run(runs[0].run_id).records]
                pid = next((int(m.split("pid: ")[1].rstrip(").")) for m in events
                            if m.startswith("Executing steps in process (pid:")), None)  # the run worker
            time.sleep(0.2)
        assert pid is not None, "the run never reached its services stage"
        (killed_run,) = runs
        os.kill(pid, signal.SIGKILL)  # the run worker, mid-stage, holding its pool slot
        killed = time.monotonic()
        assert _wait_run(instance, run_id=killed_run.run_id, timeout=60).status == dg.DagsterRunStatus.FAILURE
        flag.unlink()  # the retry's slow test passes at once
        deadline = time.monotonic() + 120
        retries: list[dg.DagsterRun] = []
        while time.monotonic() < deadline and not retries:
            retries = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": killed_run.run_id}))
            time.sleep(0.5)
        assert retries, "run_retries made no retry"
        retry = _wait_run(instance, run_id=retries[0].run_id, timeout=300)
        assert retry.status == dg.DagsterRunStatus.SUCCESS
        started = instance.get_run_record_by_id(retry.run_id).start_time
        # Not stuck behind the dead run's slot (5.5 minutes before run_monitoring freed it).
        assert started is not None and started - (time.time() - (time.monotonic() - killed)) < 90
        assert list(pipe.settings.services_dir.glob("svc-*")) == []  # the janitor took the dead run's
    finally:
        stack.stop()
        flag.unlink(missing_ok=True)
