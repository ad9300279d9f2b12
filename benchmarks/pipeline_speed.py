"""The pipeline against the same commands run by hand in parallel, and what restoring unchanged
stages saves, on the sample app through a real local Dagster (webserver, daemon, sensor, queue,
run workers: what `make dev` runs).

  .venv/bin/python benchmarks/pipeline_speed.py [--rounds 3] [--pushes 2]

After a warm-up push (dependencies installed into the cache, the Node base image bootstrapped),
it measures, rounds interleaved so machine noise hits both sides alike:

* ``ci_vs_parallel_ratio``: the CI half (checkout, install from the warm cache, every declared
  stage) as one pipeline run launched like the UI's launchpad, with the stage cache off, against
  the same commands as a plain script that runs each stage as soon as the stages it needs are done,
  all at once (what a person, or a CI workflow of parallel jobs, would do: the physical limit here).
  The pipeline figure is the run's own duration in its run worker; target <= 1.15.
* ``noop_vs_cold_ratio``: the whole pipeline (CI half, image, SBOM, scans, provenance, promotion)
  for a commit whose tree is new (``cold``: a source file changed), then for a commit with the same
  tree pushed on another branch (``noop``: every unchanged stage restored). Target <= 0.05.
* ``push_to_start_median_s`` (target <= 10) and ``push_to_finish_median_s``: from ``git push`` of
  those commits to their run starting and finishing (the cold ones; the noop ones are printed too).
* ``run_worker_peak_rss_mib``: the run worker's peak resident memory (VmHWM) over the parallel runs.

Every figure is printed as ``RESULT <name>=<value>`` too.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

import dagster as dg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sevenp_pipeline.config import AppConfig, Settings, load_app_config
from sevenp_pipeline.config.settings import PROJECT_ROOT
from sevenp_pipeline.devtools.devstack import LocalDagster, launch_run
from sevenp_pipeline.resource_set import build_resources
from sevenp_pipeline.resources.artifacts import deterministic_tarball
from sevenp_pipeline.resources.launch import LaunchOptions
from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessRunner
from sevenp_pipeline.resources.services import TestServices, free_port
from sevenp_pipeline.source.package_managers import detect
from sevenp_pipeline.stages.kinds import KINDS
from sevenp_pipeline.triggers.sensors import TAG_COMMIT
from sevenp_pipeline_tests.gitutil import Remote

SAMPLE = PROJECT_ROOT / "examples" / "7p-education-api"
SAMPLE_CONFIG = PROJECT_ROOT / "apps" / "7p-education-api.yaml"
CHANGED_FILE = "src/server.ts"  # a comment appended: every stage reads it, the build output changes


# --- the plain parallel script -------------------------------------------------------------------

def plain_parallel(settings: Settings, app: AppConfig, url: str, sha: str, runner: ProcessRunner,
                   services: TestServices) -> float:
    """The declared stages' commands, no orchestration and no records: each starts as soon as the
    stages it needs are done, with no bound on how many run at once."""
    root = Path(tempfile.mkdtemp(prefix="plain-", dir=settings.home))
    src = root / "src"
    try:
        t0 = time.perf_counter()

        def run(argv: list[str], cwd: Path = src, env: dict[str, str] | None = None, label: str = "cmd") -> None:
            out = runner.run(ExecuteRequest(argv=argv, cwd=cwd, label=label, env=env or {}, timeout_seconds=900))
            if not out.ok:
                raise RuntimeError(f"plain script: {out.describe()}\n{out.tail_text()}")

        run(["git", "clone", "--quiet", "--shared", "--no-checkout", url, str(src)], cwd=root)
        run(["git", "checkout", "--quiet", "--detach", sha])
        cache = max(Path(settings.cache_dir, "node_modules").glob("*/node_modules"), key=lambda p: p.stat().st_mtime)
        run(["cp", "-al", str(cache), str(src / "node_modules")])
        pm = detect(src)

        def stage(name: str) -> None:
            spec = app.stage(name)
            args = [a.replace("{report}", spec.report or "") for a in spec.args]
            argv = [*spec.command, *args] if spec.command else pm.run_script_argv(spec.script, args)
            env = {"CI": "true", **app.env, **spec.env}
            if KINDS[spec.kind].app_port:
                env.update(APP_HOST="127.0.0.1", APP_PORT=str(free_port()))
            if spec.services:
                with services.provide(list(spec.services)) as endpoints:
                    run(argv, env={**env, **endpoints.env}, label=name)
            else:
                run(argv, env=env, label=name)
            if spec.output_dir:
                deterministic_tarball(src / spec.output_dir, root / f"{name}.tar.gz", arcname=spec.output_dir)

        # The install (a kind with its own default command) is the warm cache above; a kind that runs no
        # command (the commit-message check) reads git only.
        def scripted(name: str) -> bool:
            schema = KINDS[app.stage(name).kind].schema
            return schema.runs_command and not schema.default_command

        todo = {n: [d for d in app.needs(n) if scripted(d)] for n in app.stage_names() if scripted(n)}
        done: set[str] = set()
        running: dict[Future[None], str] = {}
        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            while todo or running:
                for name in [n for n, needs in todo.items() if set(needs) <= done]:
                    del todo[name]
                    running[pool.submit(stage, name)] = name
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in finished:
                    future.result()
                    done.add(running.pop(future))
        return time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- the pipeline, through the local Dagster --------------------------------------------------------

class PeakRss:
    """Polls the peak resident memory (VmHWM) of the run worker of ``run_id`` while it lives."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id.encode()
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _poll(self) -> None:
        # The run worker is a multiprocessing child of the code server; what names the run is the
        # compute-log `tail` it starts (…/storage/<run id>/compute_logs/…): its parent is the worker.
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                try:
                    if not proc.name.isdigit() or self.run_id not in (proc / "cmdline").read_bytes():
                        continue
                    parent = (proc / "stat").read_text().rsplit(")", 1)[1].split()[1]
                    found = re.search(r"VmHWM:\s+(\d+) kB", Path("/proc", parent, "status").read_text())
                except OSError:
                    continue
                if found:
                    self.peak_kib = max(self.peak_kib, int(found.group(1)))
            self._stop.wait(0.2)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        return self.peak_kib / 1024


def wait_for_run(instance: dg.DagsterInstance, run_id: str, timeout: float = 1800) -> dg.RunRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = instance.get_run_record_by_id(run_id)
        if record and record.dagster_run.is_finished:
            if record.dagster_run.status != dg.DagsterRunStatus.SUCCESS:
                raise RuntimeError(f"run {run_id} ended {record.dagster_run.status.value}; see the UI's run page")
            return record
        time.sleep(0.25)
    raise RuntimeError(f"run {run_id} did not finish within {timeout:.0f}s")


def ci_half_run(stack: LocalDagster, instance: dg.DagsterInstance, app: AppConfig, sha: str) -> tuple[float, float]:
    """The CI half for one commit, launched like the launchpad does; its duration and the run
    worker's peak memory."""
    instance.add_dynamic_partitions(f"{app.key}_commits", [sha])
    assets = [[app.key, "source_checkout"], *([app.key, n] for n in app.stage_names())]
    # The stage cache would restore every stage of an unchanged tree: this measures running them.
    config = {"resources": {"launch_options": {"config": {"use_stage_cache": False}}}} \
        if "use_stage_cache" in LaunchOptions.model_fields else {}
    run_id = launch_run(stack.url, f"{app.key}_ci_job", partition=sha, assets=assets, run_config=config,
                        tags={TAG_COMMIT: sha})
    rss = PeakRss(run_id)
    try:
        record = wait_for_run(instance, run_id)
    finally:
        peak = rss.stop()
    return record.end_time - record.start_time, peak


def pushed_run(instance: dg.DagsterInstance, remote: Remote, branch: str) -> tuple[float, float, float, str]:
    """Pushes the clone's HEAD to ``branch``; the push sensor's run: (push->start, push->finish, run, id)."""
    pushed = time.time()
    sha = remote.push(branch)
    deadline = time.monotonic() + 1800
    while time.monotonic() < deadline:
        runs = instance.get_runs(filters=dg.RunsFilter(tags={TAG_COMMIT: sha}), limit=1)
        if runs:
            record = wait_for_run(instance, runs[0].run_id)
            return (record.start_time - pushed, record.end_time - pushed, record.end_time - record.start_time,
                    record.dagster_run.run_id)
        time.sleep(0.25)
    raise RuntimeError(f"no run was started for the push of {sha[:12]} to {branch}")


# --- the benchmark ------------------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3, help="CI-half rounds: plain parallel vs pipeline")
    parser.add_argument("--pushes", type=int, default=2, help="cold/noop push pairs")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sevenp-bench-speed-"))
    try:
        return _run(tmp, args)
    finally:  # the benchmark's remote, home and instance: nothing left in /tmp
        shutil.rmtree(tmp, ignore_errors=True)


def _run(tmp: Path, args: argparse.Namespace) -> int:
    tmp.chmod(0o711)  # the test-database user must traverse to <home>/services
    remote = Remote(tmp, SAMPLE, "7p-education-api")
    apps = tmp / "apps"
    apps.mkdir()
    # The sample app's own config (its stages, inputs, image), pointed at this benchmark's remote.
    text = SAMPLE_CONFIG.read_text().replace("${SEVENP_HOME}/remotes/7p-education-api.git", remote.url)
    # No deploys: the pushes to develop would start staging deploys beside the runs measured here
    # (benchmarks/deploy_switch.py measures deploys).
    config = yaml.safe_load(text)
    config["environments"] = {}
    (apps / "7p-education-api.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    settings = Settings(home=tmp / "home", apps_dir=apps)
    app = load_app_config(apps / "7p-education-api.yaml")
    resources = build_resources(settings)
    stack = LocalDagster(home=settings.home, port=free_port(), apps_dir=apps)
    os.environ["DAGSTER_HOME"] = str(stack.dagster_home)
    stack.start()
    try:
        stack.wait_for_sensor_tick(f"{app.key}_git_push_sensor")
        instance = dg.DagsterInstance.get()
        print("warming up (npm install into the dependency cache, base image, first full run)...", flush=True)
        remote.commit("chore: warm up", push_to=None)
        pushed_run(instance, remote, "develop")

        plain, piped, rss = [], [], []
        for i in range(args.rounds):
            # Branches the push sensor does not watch: only the runs launched here run.
            sha = remote.commit(f"chore: bench round {i}", push_to=f"bench/plain-{i}")
            plain.append(plain_parallel(settings, app, remote.url, sha, resources["process_runner"],
                                        resources["test_services"]))
            sha = remote.commit(f"chore: bench round {i}b", push_to=f"bench/pipeline-{i}")
            duration, peak = ci_half_run(stack, instance, app, sha)
            piped.append(duration)
            rss.append(peak)
            print(f"round {i + 1}: plain parallel {plain[-1]:.1f}s  pipeline {piped[-1]:.1f}s  "
                  f"(run worker peak {peak:.0f} MiB)", flush=True)

        cold, noop = [], []
        for i in range(args.pushes):
            path = remote.clone / CHANGED_FILE
            path.write_text(path.read_text() + f"// bench change {i}\n")
            remote.commit(f"chore: change {i}", push_to=None)
            cold.append(pushed_run(instance, remote, f"feature/bench-{i}"))
            remote.commit(f"chore: same tree {i}", push_to=None)
            noop.append(pushed_run(instance, remote, f"feature/bench-{i}-again"))
            print(f"push {i + 1}: cold run {cold[-1][2]:.1f}s (push->start {cold[-1][0]:.1f}s)  "
                  f"same tree {noop[-1][2]:.1f}s (push->start {noop[-1][0]:.1f}s)", flush=True)
            steps = sorted(instance.get_run_step_stats(noop[-1][3]), key=lambda s: s.start_time or 0)
            print("  same-tree run, its steps (start after run start, duration):", ", ".join(
                f"{s.step_key.split('__')[-1]} +{(s.start_time or 0) - steps[0].start_time:.1f} "
                f"{(s.end_time or 0) - (s.start_time or 0):.2f}s" for s in steps), flush=True)
    finally:
        stack.stop()
        resources["registry"].stop()

    p, d = statistics.median(plain), statistics.median(piped)
    c, n = statistics.median(r[2] for r in cold), statistics.median(r[2] for r in noop)
    starts = [r[0] for r in cold + noop]
    finish, finish_noop = statistics.median(r[1] for r in cold), statistics.median(r[1] for r in noop)
    print()
    print(f"CI half on the sample app, warm dependencies, {args.rounds} interleaved rounds (median):")
    print(f"  plain parallel script   {p:6.1f} s")
    print(f"  pipeline run            {d:6.1f} s")
    print(f"  ratio                   {d / p:6.2f}   (target <= 1.15)")
    print(f"  run worker peak RSS     {max(rss):6.0f} MiB (target < 1024)")
    print(f"whole pipeline, {args.pushes} pushes each (median run duration):")
    print(f"  new tree (cold)         {c:6.1f} s")
    print(f"  same tree, other branch {n:6.1f} s")
    print(f"  ratio                   {n / c:6.3f}  (target <= 0.05)")
    print(f"push -> run start: median {statistics.median(starts):.1f} s, max {max(starts):.1f} s (target <= 10 s)")
    print(f"push -> run finished: median {finish:.1f} s (new tree), {finish_noop:.1f} s (same tree)")
    print(f"RESULT ci_plain_parallel_s={p:.2f}")
    print(f"RESULT ci_pipeline_s={d:.2f}")
    print(f"RESULT ci_vs_parallel_ratio={d / p:.3f}")
    print(f"RESULT cold_run_s={c:.2f}")
    print(f"RESULT noop_run_s={n:.2f}")
    print(f"RESULT noop_vs_cold_ratio={n / c:.4f}")
    print(f"RESULT push_to_start_median_s={statistics.median(starts):.2f}")
    print(f"RESULT push_to_finish_median_s={finish:.2f}")
    print(f"RESULT push_to_finish_noop_median_s={finish_noop:.2f}")
    print(f"RESULT run_worker_peak_rss_mib={max(rss):.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
