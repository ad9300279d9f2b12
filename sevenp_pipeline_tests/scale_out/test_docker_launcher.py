"""Issue 19's proof on a real Docker engine: a pipeline run launched through Dagster's
DockerRunLauncher on a PostgreSQL-backed instance, in a container of the image docker/Dockerfile
builds (on a Debian base bootstrapped here), with its stages in the stage sandbox inside that
container and its artifacts in an S3 bucket (moto). The code location is served from a container
of the same image over gRPC, as in Dagster's deploy_docker example; everything uses the host network.
One first run (a module fixture) serves three tests: it succeeded on Postgres and S3; a second run
container sharing no writable disk with it restores its stages from the bucket; its step logs are in
the bucket and every link of its metadata answers over HTTP. The kill test has an instance of its own."""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import dagster as dg
import psycopg2
import pytest
import yaml
from dagster._core.storage.tags import AUTO_RETRY_RUN_ID_TAG, RETRY_NUMBER_TAG
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import GrpcServerTarget
from dagster._daemon.auto_run_reexecution.auto_run_reexecution import consume_new_runs_for_automatic_reexecution
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration
from dagster_graphql.test.utils import execute_dagster_graphql

from sevenp_pipeline.config.settings import Settings
from sevenp_pipeline.devtools.devstack import LAUNCH, LOCATION, REPOSITORY
from sevenp_pipeline.resources.artifact_server import create_app, served_store
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.services import PostgresOptions, Server, TestServices, free_port
from sevenp_pipeline.triggers.tags import TAG_COMMIT
from sevenp_pipeline_tests.artifact_http import serve_artifacts
from sevenp_pipeline_tests.conftest import TINY_APP, reachable_home, write_app_config
from sevenp_pipeline_tests.gitutil import Remote
from sevenp_pipeline_tests.motoserver import CREDS, moto_server
from sevenp_pipeline_tests.scale_out.engine import IMAGE, Engine
from sevenp_pipeline_tests.waiting import wait_for_run, wait_until

pytestmark = pytest.mark.integration

BUCKET = "sevenp-artifacts"
STAGES = ("source_checkout", "node_dependencies", "lint_report")
# What the stage sandbox needs in a run container, and nothing more (README, "Running at scale"):
# CAP_SYS_ADMIN for its mount, PID and user namespaces and for making the container's own cgroup tree
# writable (docker/entrypoint.sh); NET_ADMIN to bring up the stage's own network namespace; a private
# cgroup namespace so the stages' cgroups nest inside the container's; /dev/net/tun for slirp4netns,
# the install stage's route out of its network namespace. Docker's default seccomp profile stays on
# (it allows unshare/mount to a process holding CAP_SYS_ADMIN); no --privileged.
SANDBOX_CONTAINER_KWARGS: dict[str, Any] = {"cap_add": ["SYS_ADMIN", "NET_ADMIN"], "cgroupns": "private",
                                            "devices": ["/dev/net/tun:/dev/net/tun:rwm"]}


@pytest.fixture(scope="module")
def postgres() -> Iterator[Server]:
    with reachable_home("sevenp-pg-docker-") as home:
        services = TestServices(runner=ProcessRunner(), root_dir=str(home / "services"))
        options = PostgresOptions(user="dagster", database="docker", databases=("monitoring",))
        with services.provide(["postgresql"], postgresql=options) as endpoints:
            yield endpoints.servers[0]


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **CREDS)
        client.create_bucket(Bucket=BUCKET)
        client.meta.endpoint = endpoint
        yield client


@dataclass
class Deployment:
    """One tiny app deployed on the engine: its remote, the instance's home, the code server's port."""

    remote: Remote
    home: Path
    code_port: int
    env: dict[str, str]
    key: str = "tiny_app"


def _run_env(apps: Path, s3_endpoint: str, artifacts_url: str | None = None) -> dict[str, str]:
    """What the code server and every run container get (both load the definitions from it)."""
    return {"SEVENP_APPS_DIR": str(apps), "SEVENP_ARTIFACTS": "s3", "SEVENP_ARTIFACTS_BUCKET": BUCKET,
            "SEVENP_S3_ENDPOINT_URL": s3_endpoint, "AWS_ACCESS_KEY_ID": CREDS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": CREDS["aws_secret_access_key"], "AWS_DEFAULT_REGION": "us-east-1",
            **({"SEVENP_ARTIFACTS_URL": artifacts_url} if artifacts_url else {})}


def _write_instance(home: Path, url: str, env: dict[str, str], mounts: list[str], extra: dict[str, Any]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump({
        "storage": {"postgres": {"postgres_url": url}},
        # Launched at submit, in this process (Dagster's default now queues runs for a daemon).
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"},
        "run_launcher": {"module": "dagster_docker", "class": "DockerRunLauncher", "config": {
            "image": IMAGE, "network": "host",
            "env_vars": [f"{k}={v}" for k, v in env.items()],
            "container_kwargs": {**SANDBOX_CONTAINER_KWARGS, "volumes": mounts}}},
        "telemetry": {"enabled": False}, **extra}))


def _serve_code(engine: Engine, env: dict[str, str], mounts: list[str]) -> int:
    """The code location from a container of the image (its default command, on a free port)."""
    port = free_port()
    args = ["run", "-d", "--name", f"sevenp-code-{port}", "--network", "host", "-e", f"DAGSTER_CURRENT_IMAGE={IMAGE}"]
    for key, value in env.items():
        args += ["-e", f"{key}={value}"]
    for mount in mounts:
        args += ["-v", mount]
    engine.docker(*args, IMAGE, "dagster", "code-server", "start", "-h", "127.0.0.1", "-p", str(port),
                  "-m", "sevenp_pipeline.definitions", "--location-name", LOCATION)
    return port


@contextmanager
def _deploy(engine: Engine, postgres: Server, s3: Any, tmp_path: Path, database: str,
            instance_extra: dict[str, Any] | None = None, artifacts_url: str | None = None) -> Iterator[Deployment]:
    """The tiny app's bare remote and apps folder (bind-mounted read-only, same paths, into the code
    server and the run containers), an instance on ``database`` and a code server; the code server
    is removed at the end."""
    remote = Remote(tmp_path, TINY_APP, "tiny-app")
    apps = tmp_path / "apps"
    apps.mkdir()
    write_app_config(apps / "tiny-app.yaml", "tiny-app", remote.url)
    url = f"postgresql+psycopg2://{postgres.user}:{postgres.password}@127.0.0.1:{postgres.port}/{database}"
    # The locks of cross-run state: advisory locks on the instance's server (as docker/ ships), not flock.
    env = {**_run_env(apps, s3.meta.endpoint, artifacts_url), "SEVENP_DAGSTER_POSTGRES_URL": url}
    mounts = [f"{apps}:{apps}:ro", f"{remote.url}:{remote.url}:ro"]
    home = tmp_path / "dagster"
    _write_instance(home, url, env, mounts, instance_extra or {})
    port = _serve_code(engine, env, mounts)
    try:
        yield Deployment(remote=remote, home=home, code_port=port, env=env)
    finally:
        engine.docker("rm", "-f", f"sevenp-code-{port}")


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def _workspace(instance: dg.DagsterInstance, port: int) -> WorkspaceProcessContext:
    """The workspace on the code server, once it serves the location. The port is polled with plain
    sockets first: a refused gRPC connection puts the address in gRPC's reconnect backoff (shared by
    every channel of the process, up to minutes), and the proxy listens once the definitions loaded."""
    wait_until(lambda: _listening(port), timeout=180, what=f"the code server to listen on port {port}", interval=1)
    workspace = WorkspaceProcessContext(instance, GrpcServerTarget(host="127.0.0.1", port=port, socket=None,
                                                                   location_name=LOCATION))
    error = workspace.create_request_context().get_code_location_error(LOCATION)
    assert error is None, error
    return workspace


def _launch(workspace: WorkspaceProcessContext, deployment: Deployment, sha: str) -> str:
    """Launches the app's CI job (STAGES) for one commit as the UI's launchpad does (devstack.LAUNCH),
    here through the instance's DockerRunLauncher in this process."""
    workspace.instance.add_dynamic_partitions(f"{deployment.key}_commits", [sha])
    params = {"selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY,
                           "jobName": f"{deployment.key}_ci_job",
                           "assetSelection": [{"path": [deployment.key, stage]} for stage in STAGES]},
              "runConfigData": {},
              "executionMetadata": {"tags": [{"key": "dagster/partition", "value": sha},
                                             {"key": TAG_COMMIT, "value": sha}]}}
    result = execute_dagster_graphql(workspace.create_request_context(), LAUNCH, {"params": params})
    assert result.errors is None, result.errors
    launched = result.data["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    return launched["run"]["runId"]


# Step logs (stdout/stderr of each step) in the bucket too: dagster-aws's manager, as docker/dagster.ecs.yaml.
COMPUTE_LOGS_PREFIX = "dagster-compute-logs"


def _compute_logs(endpoint: str) -> dict[str, Any]:
    return {"compute_logs": {"module": "dagster_aws.s3.compute_log_manager", "class": "S3ComputeLogManager",
                             "config": {"bucket": BUCKET, "prefix": COMPUTE_LOGS_PREFIX, "endpoint_url": endpoint,
                                        "region": "us-east-1", "skip_empty_files": True}}}


@dataclass
class FirstRun:
    """The module's first run of a commit, through the Docker launcher; later tests build on it."""

    deployment: Deployment
    instance: dg.DagsterInstance
    workspace: WorkspaceProcessContext
    run: dg.DagsterRun
    sha: str
    artifacts_port: int
    engine: Engine

    @property
    def run_id(self) -> str:
        return self.run.run_id


@pytest.fixture(scope="module")
def first_run(engine: Engine, postgres: Server, s3: Any,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirstRun]:
    artifacts_port = free_port()  # the artifact server the links name; started by the test that opens them
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", engine.host)  # DockerRunLauncher's client (docker.from_env()) in this process
        for key, value in CREDS.items():  # the compute log manager's S3 client in this process
            patch.setenv(key.upper(), value)
        with _deploy(engine, postgres, s3, tmp_path_factory.mktemp("first"), "docker",
                     _compute_logs(s3.meta.endpoint), f"http://127.0.0.1:{artifacts_port}") as deployment, \
                dg.DagsterInstance.from_config(str(deployment.home)) as instance, \
                _workspace(instance, deployment.code_port) as workspace:
            sha = deployment.remote.push("develop")
            started = time.monotonic()
            run = wait_for_run(instance, _launch(workspace, deployment, sha), timeout=600)
            print(f"docker-launched run: {time.monotonic() - started:.1f}s")
            yield FirstRun(deployment, instance, workspace, run, sha, artifacts_port, engine)


def test_a_run_launched_through_the_docker_launcher_succeeds_on_postgres_and_s3(first_run: FirstRun, s3: Any) -> None:
    engine, deployment, run, run_id, sha = (first_run.engine, first_run.deployment, first_run.run, first_run.run_id,
                                            first_run.sha)
    assert type(first_run.instance.run_launcher).__name__ == "DockerRunLauncher"
    container_id = run.tags.get("docker/container_id")
    assert container_id, run.tags
    assert run.status == dg.DagsterRunStatus.SUCCESS, _story(deployment.home, run_id, engine.logs(container_id))
    # The launcher's container, labelled with the run, ran the run and has exited (not left running).
    state = engine.inspect(container_id)
    assert state["Config"]["Labels"]["dagster/run_id"] == run_id
    assert state["Config"]["Image"] == IMAGE and state["HostConfig"]["NetworkMode"] == "host"
    assert wait_until(lambda: engine.inspect(container_id)["State"]["Status"] == "exited", timeout=60,
                      what="the run container to exit")
    assert engine.inspect(container_id)["State"]["ExitCode"] == 0
    # A fresh instance (any other process would do the same) reads the run and its events from Postgres.
    key = deployment.key
    with dg.DagsterInstance.from_config(str(deployment.home)) as fresh:
        assert type(fresh.run_storage).__name__ == "PostgresRunStorage"
        stored = fresh.get_run_by_id(run_id)
        assert stored is not None and stored.status == dg.DagsterRunStatus.SUCCESS
        events = fresh.all_logs(run_id)
        assert any(e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.RUN_SUCCESS for e in events)
        for stage in STAGES:
            assert [(r.run_id, r.partition_key) for r in _materializations(fresh, key, stage, sha)] == [(run_id, sha)]
    # The artifacts went to the bucket, not to the container's disk (which is gone with it).
    listed = s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])
    assert listed, "no artifact in the S3 bucket"


def _materializations(instance: dg.DagsterInstance, key: str, stage: str, sha: str) -> list[Any]:
    """The stage's materializations of the commit's partition, read from the instance's event storage."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey([key, stage]), asset_partitions=[sha]), limit=5).records
    return list(records)


def _volumes(state: dict[str, Any]) -> tuple[set[str], set[tuple[str, bool]]]:
    """A container's volumes (named or anonymous: by name) and its bind mounts (source, writable)."""
    volumes = {m["Name"] for m in state["Mounts"] if m["Type"] == "volume"}
    binds = {(m["Source"], bool(m["RW"])) for m in state["Mounts"] if m["Type"] == "bind"}
    return volumes, binds


def test_a_second_worker_sharing_no_disk_restores_every_stage_from_the_bucket(first_run: FirstRun) -> None:
    """A new commit of the same tree, run in another run container: its own disposable SEVENP_HOME
    volume, nothing writable in common with the first; the stages come back from the S3 tier."""
    engine, deployment, instance = first_run.engine, first_run.deployment, first_run.instance
    assert first_run.run.status == dg.DagsterRunStatus.SUCCESS
    sha = deployment.remote.commit("the same tree again")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DOCKER_HOST", engine.host)
        run = wait_for_run(instance, _launch(first_run.workspace, deployment, sha), timeout=600)
    first, second = (engine.inspect(r.tags["docker/container_id"]) for r in (first_run.run, run))
    assert run.status == dg.DagsterRunStatus.SUCCESS, _story(deployment.home, run.run_id, engine.logs(second["Id"]))
    assert first["Id"] != second["Id"]
    (first_volumes, first_binds), (second_volumes, second_binds) = _volumes(first), _volumes(second)
    assert first_volumes and second_volumes and not first_volumes & second_volumes, (first_volumes, second_volumes)
    # In common: only the read-only binds of the apps folder and the bare remote (the "forge").
    assert first_binds == second_binds and not any(writable for _, writable in second_binds), second_binds
    key = deployment.key
    install = _materializations(instance, key, "node_dependencies", sha)[0].asset_materialization.metadata
    assert "fetched_from" in install, install  # the node_modules tree came from the bucket: npm did not run
    for stage in STAGES:
        if stage in ("source_checkout", "node_dependencies"):  # not results: the checkout, the installed tree
            continue
        meta = _materializations(instance, key, stage, sha)[0].asset_materialization.metadata
        assert meta["restored_from"].value == first_run.sha, (stage, meta)
        assert meta["restored_run_id"].value == first_run.run_id, (stage, meta)


def test_step_logs_are_in_s3_and_every_metadata_link_answers_over_http(first_run: FirstRun, s3: Any) -> None:
    """The run's step logs went to the bucket (S3ComputeLogManager); the artifact server, serving the
    bucket at the URL the run container linked with, answers every link of the run's materializations."""
    run_id, deployment = first_run.run_id, first_run.deployment
    assert first_run.run.status == dg.DagsterRunStatus.SUCCESS
    logs = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{COMPUTE_LOGS_PREFIX}/storage/{run_id}/").get("Contents", [])
    assert logs, s3.list_objects_v2(Bucket=BUCKET, Prefix=COMPUTE_LOGS_PREFIX).get("Contents", [])
    base = f"http://127.0.0.1:{first_run.artifacts_port}"
    links = []
    for stage in STAGES:
        for record in _materializations(first_run.instance, deployment.key, stage, first_run.sha):
            links += [(stage, name, value.value) for name, value in record.asset_materialization.metadata.items()
                      if isinstance(value.value, str) and value.value.startswith(f"{base}/")]
    assert any(name == "log" for _, name, _ in links), links
    with pytest.MonkeyPatch.context() as patch:
        for key, value in deployment.env.items():
            patch.setenv(key, value)
        store = served_store(None, Settings.from_env())
    with serve_artifacts(deployment.home, create_app(store), port=first_run.artifacts_port) as served:
        for stage, name, url in links:
            reply = served.get(urlsplit(url).path)
            assert reply.status == 200, (stage, name, url, reply.status, reply.text[:300])


MONITORING = {"run_monitoring": {"enabled": True, "start_timeout_seconds": 120, "poll_interval_seconds": 1,
                                 "max_resume_run_attempts": 0},
              # As docker/dagster.yaml: a dead run worker is retried once, a failing stage is not.
              "run_retries": {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": False}}
SLOW_LINT = "setInterval(() => console.log('linting'), 500);\n"  # a lint stage that runs until killed


def _kill_mid_lint(engine: Engine, deployment: Deployment, instance: dg.DagsterInstance, run_id: str) -> str:
    """Waits for the run's lint stage to run in its container (checking it runs as the sandbox's user
    in a cgroup of its own), then ``docker kill``s the container; its id."""
    container_id = wait_until(lambda: instance.get_run_by_id(run_id).tags.get("docker/container_id"),
                              timeout=60, what="the launcher's container id tag")

    def linting() -> bool:  # the stage's node process, inside the run container (in the sandbox)
        status = engine.inspect(container_id)["State"]["Status"]
        assert status == "running", _story(deployment.home, run_id, engine.logs(container_id))
        return "scripts/lint.js" in engine.docker("top", container_id, "-eo", "pid,user,args")

    wait_until(linting, timeout=300, what="the lint stage to run in the run container", interval=1)
    top = engine.docker("top", container_id, "-eo", "pid,user,args")
    lint_user = next(line.split()[1] for line in top.splitlines() if "scripts/lint.js" in line)
    assert lint_user != "root", top  # the stage runs as the sandbox's user, not as the container's root
    # ... in a cgroup of its own (its limits), nested in the run container's (cgroupns private).
    cgroups = engine.docker("exec", container_id, "sh", "-c", "for p in /proc/[0-9]*; do "
                            "grep -qs scripts/lint.js $p/cmdline && cat $p/cgroup; done; true")
    assert re.search(r"^\d+:memory:/sevenp/\S+$", cgroups, re.MULTILINE), cgroups
    engine.docker("kill", container_id)
    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED  # nobody told Dagster yet
    return container_id


def _monitor(workspace: WorkspaceProcessContext, run_id: str) -> dg.DagsterRun:
    """The run monitoring daemon's iteration, until it has finished the run."""
    instance = workspace.instance

    def monitored() -> dg.DagsterRun | None:
        list(execute_run_monitoring_iteration(workspace, logging.getLogger("run_monitoring")))
        run = instance.get_run_by_id(run_id)
        return run if run is not None and run.is_finished else None

    return wait_until(monitored, timeout=60, what="run monitoring to finish the killed run", interval=1)


def _retry(workspace: WorkspaceProcessContext, run_id: str) -> None:
    """The auto run re-execution daemon's iteration on the run (the daemon feeds it failed runs' records)."""
    records = workspace.instance.get_run_records(dg.RunsFilter(run_ids=[run_id]))
    list(consume_new_runs_for_automatic_reexecution(workspace, records, logging.getLogger("run_retries")))


def _advisory_locks(postgres: Server) -> list[tuple]:
    with psycopg2.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, password=postgres.password,
                          dbname="postgres") as conn, conn.cursor() as cursor:
        cursor.execute("SELECT database, objid, pid FROM pg_locks WHERE locktype = 'advisory'")
        return cursor.fetchall()


def test_a_run_container_killed_mid_stage_is_marked_failed_by_run_monitoring_and_retried_once(
        engine: Engine, postgres: Server, s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``docker kill`` of the run container while its lint stage runs: Dagster's run monitoring (the
    daemon's own iteration, run here in the test rather than by a daemon process, whose sensors would
    start runs of their own) asks DockerRunLauncher for the worker's health and marks the run failed;
    run retries (the daemon's re-execution iteration) launch it once more, in a new container. The
    commit's lint never ends, so the retry is killed too, and is not retried again (max_retries 1)."""
    monkeypatch.setenv("DOCKER_HOST", engine.host)
    with _deploy(engine, postgres, s3, tmp_path, "monitoring", MONITORING) as deployment, \
            dg.DagsterInstance.from_config(str(deployment.home)) as instance, \
            _workspace(instance, deployment.code_port) as workspace:
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        deployment.remote.write("scripts/lint.js", SLOW_LINT)
        sha = deployment.remote.commit("a lint that never ends")
        run_id = _launch(workspace, deployment, sha)
        container_id = _kill_mid_lint(engine, deployment, instance, run_id)
        run = _monitor(workspace, run_id)
        assert run.status == dg.DagsterRunStatus.FAILURE
        failure = instance_failure_message(deployment.home, run_id)
        assert "Detected run worker status" in failure and "exited" in failure, failure
        state = engine.inspect(container_id)["State"]
        assert state["Status"] == "exited" and state["ExitCode"] == 137, state  # SIGKILL, nothing left running
        _retry(workspace, run_id)
        retry_id = instance.get_run_by_id(run_id).tags.get(AUTO_RETRY_RUN_ID_TAG)
        assert retry_id, instance.get_run_by_id(run_id).tags
        retry = instance.get_run_by_id(retry_id)
        assert retry.parent_run_id == run_id and retry.tags.get(RETRY_NUMBER_TAG) == "1", retry.tags
        assert retry.tags.get(TAG_COMMIT) == sha
        retry_container = _kill_mid_lint(engine, deployment, instance, retry_id)  # launched, in a new container
        assert retry_container != container_id
        assert _monitor(workspace, retry_id).status == dg.DagsterRunStatus.FAILURE
        _retry(workspace, retry_id)
        assert AUTO_RETRY_RUN_ID_TAG not in instance.get_run_by_id(retry_id).tags  # retried once, not twice
        assert len(instance.get_runs(dg.RunsFilter(tags={TAG_COMMIT: sha}))) == 2
    # Nothing left: no run container running, no advisory lock held on the server.
    assert engine.docker("ps", "-q", "--filter", "label=dagster/run_id") == ""
    assert _advisory_locks(postgres) == []


def _story(home: Path, run_id: str, container_logs: str) -> str:
    """Why a run went wrong: its log (INFO and up) from Postgres and the end of its container's output."""
    with dg.DagsterInstance.from_config(str(home)) as fresh:
        told = [e.message for e in fresh.all_logs(run_id) if e.message and e.level >= logging.INFO]
    return "\n".join(told)[-8000:] + "\n--- run container ---\n" + container_logs[-4000:]


def instance_failure_message(home: Path, run_id: str) -> str:
    """The RUN_FAILURE event's message, read back from Postgres by a fresh instance."""
    with dg.DagsterInstance.from_config(str(home)) as fresh:
        records = fresh.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_FAILURE).records
        assert len(records) == 1, records
        return records[0].event_log_entry.message or ""
