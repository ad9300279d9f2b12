"""A real Dagster instance (webserver + daemon): push → sensor → run; re-execute from failure
through GraphQL; a planted secret never reaches the event log, compute logs or artifacts."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg
import pytest

from sevenp_pipeline.devtools.devstack import LocalDagster, reexecute
from sevenp_pipeline.resources.services import free_port
from sevenp_pipeline.triggers.sensors import TAG_COMMIT
from sevenp_pipeline_tests.waiting import wait_for_run, wait_for_runs

pytestmark = pytest.mark.integration

CANARY = "canary-7f3a9c1e5b2d-do-not-log"


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
        failed = wait_for_runs(instance, tags={TAG_COMMIT: sha}, timeout=180)[-1]
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
        rerun = wait_for_run(instance, rerun_id, timeout=180)
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
