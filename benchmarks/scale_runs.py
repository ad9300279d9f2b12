"""Many small runs through Dagster's queued run coordinator: throughput, queue wait and the cost of
starting a run, with the embedded launcher and with the Docker launcher, side by side.

  .venv/bin/python benchmarks/scale_runs.py [--runs 50] [--launcher embedded|docker|both]

* embedded: the stack ``make dev`` runs (webserver, daemon, code server, SQLite; one run worker
  process per run);
* docker: Dagster's ``deploy_docker`` shape (README, "Running at scale"): a private dockerd (as the
  scale-out tests start it: sevenp_pipeline_tests/scale_out), the project's image built on a locally
  bootstrapped Debian, PostgreSQL storage, the code location served from a container, artifacts in
  S3 (moto), ``DockerRunLauncher`` starting one container per run; the webserver and the daemon on
  the host. ``SEVENP_TEST_DOCKER_DATA_ROOT`` keeps the engine's images (and the build cache) between
  invocations; without it the image is built in a temporary folder and removed with it.

Both use the project's dagster.yaml queue (``QueuedRunCoordinator``, ``max_concurrent_runs: 2``,
a 1 s dequeue interval). Per launcher, one copy of the dependency-free test app
(sevenp_pipeline_tests/fixtures/tiny-app): ``--runs`` empty commits are made on its remote, the head
is pushed (the push sensor's run of it is the warm-up), each commit registered as a partition, then
all runs are launched at once through the webserver's GraphQL API (as the UI's launchpad does), each
materializing the commit's ``source_checkout`` and ``commit_messages`` stages only (a fetch into the
git mirror and a checkout, and the commit-message check: a small run; a run container starts from
an empty pipeline home, so the message check needs the checkout's fetch in the same run). From each run's own events:

* queue wait: enqueued -> the daemon launched it (``RUN_ENQUEUED`` -> ``RUN_STARTING``);
* run start overhead: the launch -> the first step started (``RUN_STARTING`` -> first ``STEP_START``):
  what a launcher costs a run before any work, a process here, a container with the Docker launcher;
* runs per minute: runs / (first enqueue -> last run end).

The physical limit beside them: the same stages' work done bare, without Dagster, is a fetch of a
local repository, the checkout (``git worktree add``) and the message check, well under a second;
so what is printed is Dagster's and the launcher's own cost. Prints ``RESULT runs_per_min``,
``RESULT queue_wait_p95_s``, ``RESULT run_start_overhead_s`` (median), each with the launcher's name
as a suffix (``_embedded``, ``_docker``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sevenp_pipeline.devtools.devstack import (
    DAEMON,
    LOCATION,
    REPOSITORY,
    SENSOR_TICKS,
    LocalDagster,
    graphql,
    launch_run,
)
from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessRunner, RunningProcess
from sevenp_pipeline.resources.services import PostgresOptions, TestServices, free_port
from sevenp_pipeline_tests.gitutil import Remote
from sevenp_pipeline_tests.waiting import wait_for_run, wait_until

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


def wait_for_first_tick(url: str, timeout: float = 300) -> None:
    """The push sensor's first tick only records the heads: a push before it would start no run."""
    selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY,
                "sensorName": f"{KEY}_git_push_sensor"}

    def ticked() -> bool:
        state = graphql(url, SENSOR_TICKS, {"selector": selector})["sensorOrError"]
        return any(t["status"] in ("SKIPPED", "SUCCESS") for t in (state.get("sensorState") or {}).get("ticks", []))

    wait_until(ticked, timeout=timeout, what="the push sensor's first tick", interval=0.5)


def measure(url: str, instance: dg.DagsterInstance, remote: Remote, runs: int) -> dict[str, float]:
    shas = [remote.commit(f"chore: bench scale {i}", push_to=None) for i in range(runs)]
    wait_for_first_tick(url)
    remote.push(BRANCH)  # one push of the newest: the sensor's run of it is the warm-up
    deadline = time.monotonic() + 600
    while not (pushed := instance.get_runs(filters=dg.RunsFilter(tags={"sevenp/commit": shas[-1]}), limit=1)):
        if time.monotonic() > deadline:
            raise RuntimeError("the push sensor started no run of the pushed commit")
        time.sleep(0.5)
    warm = wait_for_run(instance, pushed[0].run_id, timeout=900)
    print(f"warm-up (the sensor's run of the head, the install included): {warm.status.value}",
          flush=True)
    instance.add_dynamic_partitions(f"{KEY}_commits", shas)
    # The checkout too: a run container starts from an empty SEVENP_HOME (no git mirror), where the
    # message check alone would find no repository; the embedded side runs the same two stages.
    assets = [[KEY, "source_checkout"], [KEY, STAGE]]
    launched = [launch_run(url, f"{KEY}_ci_job", partition=sha, assets=assets) for sha in shas]
    print(f"launched {len(launched)} runs", flush=True)
    finished = [wait_for_run(instance, run_id, timeout=3600) for run_id in launched]
    failed = [run.run_id for run in finished if run.status != dg.DagsterRunStatus.SUCCESS]
    if failed:
        told = [f"{e.message} {e.dagster_event.event_specific_data if e.dagster_event else ''}"
                for e in instance.all_logs(failed[0]) if e.level >= logging.WARNING]
        raise RuntimeError(f"{len(failed)} runs did not succeed, e.g. {failed[0]}: " + "\n".join(told)[-4000:])
    figures = [run_figures(instance, run_id) for run_id in launched]
    waits = [dequeued - enqueued for enqueued, dequeued, _, _ in figures]
    starts = [step - dequeued for _, dequeued, step, _ in figures]
    span = max(f[3] for f in figures) - min(f[0] for f in figures)
    return {"runs_per_min": len(figures) / span * 60, "queue_wait_p95_s": percentile(waits, 0.95),
            "queue_wait_median_s": statistics.median(waits), "run_start_overhead_s": statistics.median(starts),
            "run_start_overhead_p95_s": percentile(starts, 0.95), "span_s": span}


def app(work: Path) -> tuple[Remote, Path]:
    """The tiny app's remote and an apps folder with its config: only the small run's stage on."""
    work.mkdir(parents=True, exist_ok=True)
    apps = work / "apps"
    apps.mkdir()
    remote = Remote(work, TINY_APP, APP)
    config = {"name": APP, "repository": {"url": remote.url}, "branches": {"include": [BRANCH]},
              "stages": {name: None for name in (
                  "security_lint_report", "format_report", "type_check_report", "unit_test_results",
                  "integration_test_results", "api_test_results", "build_artifact", "api_docs",
                  "e2e_test_results", "performance_report")}}
    # The small run's stage: off by default, on here (a checkout and a message check).
    config["stages"][STAGE] = {"enabled": True}
    (apps / f"{APP}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return remote, apps


def embedded(work: Path, runs: int) -> dict[str, float]:
    """``make dev``'s stack (LocalDagster): webserver, daemon, code server, one process per run."""
    remote, apps = app(work)
    stack = LocalDagster(home=work / "home", port=free_port(), apps_dir=apps)
    os.environ["DAGSTER_HOME"] = str(stack.dagster_home)
    stack.start()
    try:
        return measure(stack.url, dg.DagsterInstance.get(), remote, runs)
    finally:
        stack.stop()
        os.environ.pop("DAGSTER_HOME", None)


@contextmanager
def docker_services(work: Path) -> Iterator[tuple[object, str, str]]:
    """A private dockerd with the project's image built, PostgreSQL and an S3 bucket (moto):
    (the engine, the Postgres URL, the S3 endpoint); all stopped and removed at the end."""
    import boto3  # noqa: PLC0415 (the docker side's own dependencies, as the scale-out tests')

    from sevenp_pipeline_tests.motoserver import CREDS, moto_server  # noqa: PLC0415
    from sevenp_pipeline_tests.scale_out.engine import build_images, docker_engine  # noqa: PLC0415
    from sevenp_pipeline_tests.scale_out.test_docker_launcher import BUCKET  # noqa: PLC0415

    missing = [tool for tool in ("dockerd", "docker", "debootstrap") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"{', '.join(missing)} not found: the Docker side starts its own engine "
                         "(scripts/install-system-deps.sh as root), or run with --launcher embedded")
    (work / "dockerd").mkdir(parents=True)
    (work / "moto").mkdir()
    with docker_engine(work / "dockerd") as engine:
        timings = build_images(engine, work / "dockerd")
        print(f"docker: base image {timings['base']:.0f}s, project image {timings['image']:.0f}s", flush=True)
        services = TestServices(runner=ProcessRunner(), root_dir=str(work / "services"))
        options = PostgresOptions(user="dagster", database="bench")
        with services.provide(["postgresql"], postgresql=options) as endpoints, \
                moto_server(work / "moto") as s3:
            pg = endpoints.servers[0]
            boto3.client("s3", endpoint_url=s3, region_name="us-east-1", **CREDS).create_bucket(Bucket=BUCKET)
            yield engine, f"postgresql+psycopg2://{pg.user}:{pg.password}@127.0.0.1:{pg.port}/bench", s3


def docker(work: Path, runs: int) -> dict[str, float]:
    """The same runs through DockerRunLauncher (one container of the project's image per run), on a
    PostgreSQL instance with the same queue, the code location served from a container, artifacts
    in S3; the webserver and the daemon run on the host, as ``make dev`` runs them."""
    from sevenp_pipeline_tests.scale_out.test_docker_launcher import (  # noqa: PLC0415
        _run_env,
        _serve_code,
        _write_instance,
    )

    remote, apps = app(work)
    project = yaml.safe_load((Path(__file__).resolve().parents[1] / "dagster.yaml").read_text())
    queue = {key: project[key] for key in ("run_coordinator", "concurrency")}  # the embedded side's limits
    with docker_services(work) as (engine, postgres_url, s3):
        env = _run_env(apps, s3)
        mounts = [f"{apps}:{apps}:ro", f"{remote.url}:{remote.url}:ro"]
        home = work / "dagster"
        _write_instance(home, postgres_url, env, mounts, queue)
        port = _serve_code(engine, env, mounts)
        wait_until(lambda: _listening(port), timeout=180, what="the code server container", interval=1)
        workspace = home / "workspace.yaml"
        workspace.write_text(yaml.safe_dump({"load_from": [{"grpc_server": {
            "host": "127.0.0.1", "port": port, "location_name": LOCATION}}]}))
        web_port = free_port()
        url = f"http://127.0.0.1:{web_port}"
        host_env = {"DAGSTER_HOME": str(home), "DOCKER_HOST": engine.host}
        bindir = Path(sys.executable).parent
        with dg.DagsterInstance.from_config(str(home)) as instance:  # the tables, made once before the others
            processes: list[RunningProcess] = []
            try:
                for label, argv in (("webserver", [str(bindir / "dagster-webserver"), "-w", str(workspace),
                                                   "-h", "127.0.0.1", "-p", str(web_port)]),
                                    ("daemon", [sys.executable, "-m", DAEMON, "run", "-w", str(workspace)])):
                    processes.append(ProcessRunner().start(ExecuteRequest(
                        argv=argv, cwd=work, label=label, env=host_env, log_path=work / f"{label}.log",
                        die_with_parent=True, timeout_seconds=float("inf"))))
                wait_until(lambda: _loaded(url), timeout=180, what=f"the webserver on {url} (log: {work})",
                           interval=1)
                return measure(url, instance, remote, runs)
            finally:
                for process in reversed(processes):
                    process.stop()


def _listening(port: int) -> bool:
    import socket  # noqa: PLC0415

    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _loaded(url: str) -> bool:
    try:
        data = graphql(url, "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus } } } }")
    except OSError:
        return False
    entries = data["workspaceOrError"]["locationEntries"]
    return any(e["name"] == LOCATION and e["loadStatus"] == "LOADED" for e in entries)


LAUNCHERS = {"embedded": embedded, "docker": docker}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="small runs launched at once")
    parser.add_argument("--launcher", choices=("embedded", "docker", "both"), default="both")
    args = parser.parse_args()
    names = list(LAUNCHERS) if args.launcher == "both" else [args.launcher]
    results: dict[str, dict[str, float]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="sevenp-bench-scale-"))
    try:
        for name in names:
            print(f"--- {name} launcher", flush=True)
            results[name] = LAUNCHERS[name](tmp / name, args.runs)
    finally:  # the remotes, the homes, the instances, the engine's folders: nothing left in /tmp
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(f"{args.runs} small runs launched at once, queue limit 2 (dagster.yaml):")
    print(f"  {'launcher':10s} {'runs/min':>9s} {'queue wait p95':>15s} {'median':>8s} "
          f"{'launch -> first step':>21s} {'p95':>6s}")
    for name, fig in results.items():
        print(f"  {name:10s} {fig['runs_per_min']:9.1f} {fig['queue_wait_p95_s']:13.1f} s "
              f"{fig['queue_wait_median_s']:6.1f} s {fig['run_start_overhead_s']:19.2f} s "
              f"{fig['run_start_overhead_p95_s']:5.2f} s")
    for name, fig in results.items():
        for key in ("runs_per_min", "queue_wait_p95_s", "run_start_overhead_s"):
            print(f"RESULT {key}_{name}={fig[key]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
