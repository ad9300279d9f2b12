"""What Dagster adds to the CI half of the pipeline, measured side by side on the sample app.

  .venv/bin/python benchmarks/ci_overhead.py [--rounds 3] [--pushes 5]

Prints, for the same commands on the same commit with warm dependencies:
  * plain: the stage commands run one after another by a plain Python script (same process
    runner, same throwaway PostgreSQL/Redis per test stage, same artifact packing);
  * dagster: the CI job executed by Dagster (in-process executor, as the run worker runs it),
    with every asset, check, log line and data version recorded in a SQLite instance;
  * their ratio (target <= 1.25), rounds interleaved so machine noise hits both alike;
  * push -> run start latency through the real sensor + queue + run launcher (target median <= 15 s),
    and each of those runs' own duration.
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sevenp_pipeline.config import Settings, load_app_config
from sevenp_pipeline.definitions import build_definitions
from sevenp_pipeline.devtools.devstack import LocalDagster
from sevenp_pipeline.resources.artifacts import deterministic_tarball
from sevenp_pipeline.resources.deployments import build_resources
from sevenp_pipeline.resources.processes import ExecuteRequest
from sevenp_pipeline.resources.services import free_port
from sevenp_pipeline.triggers.sensors import TAG_COMMIT
from sevenp_pipeline_tests.gitutil import Remote

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "7p-education-api"


def plain_script(settings: Settings, app, url: str, sha: str, resources: dict) -> float:
    """The same work as the CI job, as a straight script: no orchestration, no records."""
    runner, services = resources["process_runner"], resources["test_services"]
    root = Path(tempfile.mkdtemp(prefix="plain-", dir=settings.home))
    src = root / "src"
    t0 = time.perf_counter()

    def run(argv, cwd=src, env=None, label="cmd", timeout=600):
        out = runner.run(ExecuteRequest(argv=argv, cwd=cwd, label=label, env=env or {}, timeout_seconds=timeout))
        if not out.ok:
            raise RuntimeError(f"plain script: {out.describe()}\n{out.tail_text()}")

    run(["git", "clone", "--quiet", "--shared", "--no-checkout", url, str(src)], cwd=root)
    run(["git", "checkout", "--quiet", "--detach", sha])
    cache = next(Path(settings.cache_dir, "node_modules").glob("*/node_modules"))
    run(["cp", "-al", str(cache), str(src / "node_modules")])
    # The declared stages in graph order, minus the install (reused from the cache, as in the job).
    for name in [n for n in app.stage_names() if app.stage(n).kind != "install"]:
        spec = app.stage(name)
        args = [a.replace("{report}", spec.report or "") for a in spec.args]
        argv = ["npm", "run", "--silent", spec.script, *(["--", *args] if args else [])]
        env = {"CI": "true", **app.env}
        if spec.kind in ("e2e", "performance"):
            env.update(APP_HOST="127.0.0.1", APP_PORT=str(free_port()))
        if spec.services:
            with services.provide(list(spec.services)) as endpoints:
                run(argv, env={**env, **endpoints.env}, label=name)
        else:
            run(argv, env=env, label=name)
        if spec.output_dir:
            deterministic_tarball(src / spec.output_dir, root / f"{spec.output_dir}.tar.gz", arcname=spec.output_dir)
    return time.perf_counter() - t0


def dagster_job(settings: Settings, instance: dg.DagsterInstance, app, sha: str) -> float:
    defs = build_definitions(settings)
    job = defs.resolve_job_def(f"{app.key}_ci_job")
    instance.add_dynamic_partitions(f"{app.key}_commits", [sha])
    t0 = time.perf_counter()
    # Every round commits the same tree: without this the stage cache would restore every stage and
    # the benchmark would time restores, not the stages the plain script runs.
    no_cache = {"resources": {"launch_options": {"config": {"use_stage_cache": False}}}}
    result = job.execute_in_process(instance=instance, partition_key=sha, raise_on_error=False, run_config=no_cache)
    elapsed = time.perf_counter() - t0
    if not result.success:
        raise RuntimeError("dagster run failed; see the log above")
    return elapsed


def push_latency(settings: Settings, remote: Remote, app, pushes: int) -> tuple[list[float], list[float]]:
    stack = LocalDagster(home=settings.home, port=free_port(), apps_dir=settings.apps_dir)
    os.environ["DAGSTER_HOME"] = str(stack.dagster_home)
    stack.start()
    latencies, durations = [], []
    try:
        stack.wait_for_sensor_tick(f"{app.key}_git_push_sensor")
        instance = dg.DagsterInstance.get()
        for i in range(pushes):
            sha = remote.commit(f"bench push {i}")
            pushed = time.time()
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                runs = instance.get_runs(filters=dg.RunsFilter(tags={TAG_COMMIT: sha}), limit=1)
                if runs and runs[0].is_finished:
                    record = instance.get_run_record_by_id(runs[0].run_id)
                    latencies.append(record.start_time - pushed)
                    durations.append(record.end_time - record.start_time)
                    break
                time.sleep(0.25)
            else:
                raise RuntimeError(f"no finished run for push {i}")
    finally:
        stack.stop()
    return latencies, durations


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pushes", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sevenp-bench-"))
    try:
        return _run(tmp, args)
    finally:  # the benchmark's remote, home and instance: nothing left in /tmp
        shutil.rmtree(tmp, ignore_errors=True)


def _run(tmp: Path, args: argparse.Namespace) -> int:
    tmp.chmod(0o711)  # the test-database user must traverse to <home>/services
    remote = Remote(tmp, SAMPLE, "7p-education-api")
    apps = tmp / "apps"
    apps.mkdir()
    (apps / "app.yaml").write_text(f"name: 7p-education-api\nrepository: {{url: {remote.url}}}\n"
                                   "trigger: {poll_interval_seconds: 2}\nenv: {NODE_ENV: test}\nstages: {}\n")
    settings = Settings(home=tmp / "home", apps_dir=apps)
    app = load_app_config(apps / "app.yaml")
    resources = build_resources(settings)
    (tmp / "instance").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp / "instance"))

    print("warming up (npm ci into the dependency cache, first run)...", flush=True)
    dagster_job(settings, instance, app, remote.commit("warm-up"))
    plain, orchestrated = [], []
    for i in range(args.rounds):
        sha = remote.commit(f"bench round {i}")  # same tree: same commands, same inputs
        plain.append(plain_script(settings, app, remote.url, sha, resources))
        sha = remote.commit(f"bench round {i}b")
        orchestrated.append(dagster_job(settings, instance, app, sha))
        print(f"round {i + 1}: plain {plain[-1]:.1f}s  dagster {orchestrated[-1]:.1f}s", flush=True)
    latencies, durations = push_latency(settings, remote, app, args.pushes)

    p, d = statistics.median(plain), statistics.median(orchestrated)
    print()
    print(f"CI half on the sample app, warm dependencies, {args.rounds} interleaved rounds (median):")
    print(f"  plain script        {p:6.1f} s")
    print(f"  dagster (in-proc)   {d:6.1f} s")
    print(f"  ratio               {d / p:6.2f}   (target <= 1.25)")
    print(f"push -> run start via sensor + queue + launcher, {len(latencies)} pushes:")
    print(f"  median {statistics.median(latencies):.1f} s, min {min(latencies):.1f} s, max {max(latencies):.1f} s"
          "   (target median <= 15 s)")
    print(f"  run duration in the launched run worker: median {statistics.median(durations):.1f} s")
    print(f"RESULT ci_plain_s={p:.2f}")
    print(f"RESULT ci_dagster_s={d:.2f}")
    print(f"RESULT ci_overhead_ratio={d / p:.3f}")
    print(f"RESULT push_to_run_start_median_s={statistics.median(latencies):.2f}")
    print(f"RESULT run_duration_median_s={statistics.median(durations):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
