"""Many small runs through Dagster's queued run coordinator: throughput, queue wait and the cost of
starting a run, on the stack ``make dev`` runs (webserver, daemon, QueuedRunCoordinator with the
project's dagster.yaml limits, the embedded run launcher: one run worker process per run).

  .venv/bin/python benchmarks/scale_runs.py [--runs 50]

One copy of the dependency-free test app (sevenp_pipeline_tests/fixtures/tiny-app). ``--runs`` empty
commits are made on its remote, each registered as a commit partition, then all runs are launched at
once through the webserver's GraphQL API (as the UI's launchpad does), each materializing the commit's
``commit_messages`` stage only (a checkout and the commit-message check: a small run). The queue lets
``max_concurrent_runs`` (2 in dagster.yaml) run at a time. From each run's own events:

* queue wait: enqueued -> the daemon launched it (``RUN_ENQUEUED`` -> ``RUN_STARTING``);
* run start overhead: the launch -> the first step started (``RUN_STARTING`` -> first ``STEP_START``):
  what a launcher costs a run before any work, a process here, a container with the Docker launcher;
* runs per minute: runs / (first enqueue -> last run end).

The physical limit beside them: the same stage's work done bare, without Dagster, is the checkout
(``git worktree add``) and the message check, well under a second; so what is printed is Dagster's
and the launcher's own cost. Prints ``RESULT runs_per_min``, ``RESULT queue_wait_p95_s``,
``RESULT run_start_overhead_s`` (median), each with the launcher's name as a suffix (``_embedded``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sevenp_pipeline.devtools.devstack import LocalDagster, launch_run
from sevenp_pipeline.resources.services import free_port
from sevenp_pipeline_tests.gitutil import Remote
from sevenp_pipeline_tests.waiting import wait_for_run

TINY_APP = Path(__file__).resolve().parents[1] / "sevenp_pipeline_tests" / "fixtures" / "tiny-app"
APP = "bench-scale"
KEY = APP.replace("-", "_")
BRANCH = "develop"
STAGE = "commit_messages"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_figures(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float, float, float]:
    """(enqueued, dequeued, first step started, ended) of one run, from its event log."""
    times: dict[str, float] = {}
    for record in instance.get_records_for_run(run_id, limit=10_000).records:
        entry = record.event_log_entry
        kind = entry.dagster_event.event_type.name if entry.dagster_event else None
        if kind in ("RUN_ENQUEUED", "RUN_STARTING", "STEP_START", "RUN_SUCCESS", "RUN_FAILURE", "RUN_CANCELED"):
            times.setdefault(kind, entry.timestamp)
    ended = times.get("RUN_SUCCESS") or times.get("RUN_FAILURE") or times.get("RUN_CANCELED")
    missing = [k for k in ("RUN_ENQUEUED", "RUN_STARTING", "STEP_START") if k not in times] + ([] if ended else ["end"])
    if missing:
        raise RuntimeError(f"run {run_id} has no {', '.join(missing)} event")
    return times["RUN_ENQUEUED"], times["RUN_STARTING"], times["STEP_START"], ended


def measure(stack: LocalDagster, remote: Remote, runs: int) -> dict[str, float]:
    instance = dg.DagsterInstance.get()
    shas = [remote.commit(f"chore: bench scale {i}", push_to=None) for i in range(runs)]
    remote.push(BRANCH)  # one push of the newest: the sensor's run of it is the warm-up
    deadline = time.monotonic() + 600
    while not (pushed := instance.get_runs(filters=dg.RunsFilter(tags={"sevenp/commit": shas[-1]}), limit=1)):
        if time.monotonic() > deadline:
            raise RuntimeError("the push sensor started no run of the pushed commit")
        time.sleep(0.5)
    warm = wait_for_run(instance, pushed[0].run_id)
    print(f"warm-up (the sensor's run of the head, the install included): {warm.status.value}",
          flush=True)
    instance.add_dynamic_partitions(f"{KEY}_commits", shas)
    launched = [launch_run(stack.url, f"{KEY}_ci_job", partition=sha, assets=[[KEY, STAGE]]) for sha in shas]
    print(f"launched {len(launched)} runs", flush=True)
    finished = [wait_for_run(instance, run_id, timeout=1800) for run_id in launched]
    failed = [run.run_id for run in finished if run.status != dg.DagsterRunStatus.SUCCESS]
    if failed:
        raise RuntimeError(f"{len(failed)} runs did not succeed, e.g. {failed[0]} (see the UI on {stack.url})")
    figures = [run_figures(instance, run_id) for run_id in launched]
    waits = [dequeued - enqueued for enqueued, dequeued, _, _ in figures]
    starts = [step - dequeued for _, dequeued, step, _ in figures]
    span = max(f[3] for f in figures) - min(f[0] for f in figures)
    return {"runs_per_min": len(figures) / span * 60, "queue_wait_p95_s": percentile(waits, 0.95),
            "queue_wait_median_s": statistics.median(waits), "run_start_overhead_s": statistics.median(starts),
            "run_start_overhead_p95_s": percentile(starts, 0.95), "span_s": span}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="small runs launched at once")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sevenp-bench-scale-"))
    try:
        apps = tmp / "apps"
        apps.mkdir()
        remote = Remote(tmp, TINY_APP, APP)
        config = {"name": APP, "repository": {"url": remote.url}, "branches": {"include": [BRANCH]},
                  "stages": {name: None for name in (
                      "security_lint_report", "format_report", "type_check_report", "unit_test_results",
                      "integration_test_results", "api_test_results", "build_artifact", "api_docs",
                      "e2e_test_results", "performance_report")}}
        # The small run's stage: off by default, on here (a checkout and a message check).
        config["stages"][STAGE] = {"enabled": True}
        (apps / f"{APP}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        stack = LocalDagster(home=tmp / "home", port=free_port(), apps_dir=apps)
        os.environ["DAGSTER_HOME"] = str(stack.dagster_home)
        stack.start()
        try:
            embedded = measure(stack, remote, args.runs)
        finally:
            stack.stop()
    finally:  # the remote, the home and the instance: nothing left in /tmp
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"{args.runs} small runs launched at once, queue limit 2 (dagster.yaml):")
    print(f"  {'launcher':10s} {'runs/min':>9s} {'queue wait p95':>15s} {'median':>8s} "
          f"{'launch -> first step':>21s} {'p95':>6s}")
    print(f"  {'embedded':10s} {embedded['runs_per_min']:9.1f} {embedded['queue_wait_p95_s']:13.1f} s "
          f"{embedded['queue_wait_median_s']:6.1f} s {embedded['run_start_overhead_s']:19.2f} s "
          f"{embedded['run_start_overhead_p95_s']:5.2f} s")
    for name in ("runs_per_min", "queue_wait_p95_s", "run_start_overhead_s"):
        print(f"RESULT {name}_embedded={embedded[name]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
