"""`docker compose up` of the shipped docker/compose.yaml, as the README tells a team to run it from a
fresh clone (``--env-file docker/local.env --profile local-s3``), on the tests' Docker engine with the
image the session built: PostgreSQL from the project's image, the code server, webserver, daemon,
artifact server and the in-memory S3. A push to the app's remote (served over git:// on loopback,
as a forge would serve it) is seen by the push sensor in the compose daemon, which launches the run
through DockerRunLauncher; the run succeeds, its events are in the compose Postgres, its step logs and
artifacts in the bucket, its links answer on the artifact service, the webserver reports it; `down -v`
leaves no container and no volume behind. Compose is Debian's docker-compose 1.29 (the same file
works with the `docker compose` plugin)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import dagster as dg
import pytest
import yaml
from dagster._core.definitions.run_request import InstigatorType

from sevenp_pipeline.config.settings import PROJECT_ROOT
from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessRunner
from sevenp_pipeline.resources.services import free_port
from sevenp_pipeline.triggers.tags import TAG_COMMIT
from sevenp_pipeline_tests.conftest import TINY_APP, write_app_config
from sevenp_pipeline_tests.gitutil import Remote
from sevenp_pipeline_tests.scale_out.engine import DAGSTER_IMAGE, IMAGE, Engine
from sevenp_pipeline_tests.waiting import wait_for_runs, wait_until

pytestmark = pytest.mark.integration

DOCKER = PROJECT_ROOT / "docker"
PROJECT = "sevenp-compose-test"
LOCAL_ENV = dict(line.split("=", 1) for line in (DOCKER / "local.env").read_text().splitlines()
                 if line and not line.startswith("#"))


def _compose_binary() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        message = "docker-compose not found (Debian package docker-compose: scripts/install-system-deps.sh)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


@dataclass
class Stack:
    engine: Engine
    env: dict[str, str]
    remote: Remote
    ports: dict[str, int]

    def compose(self, *args: str, timeout: float = 600) -> str:
        argv = [_compose_binary(), "-p", PROJECT, "--env-file", str(DOCKER / "local.env"),
                "-f", str(DOCKER / "compose.yaml"), "--profile", "local-s3", *args]
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, check=False)
        assert proc.returncode == 0, f"docker-compose {' '.join(args)}: {proc.stdout[-2000:]}{proc.stderr[-4000:]}"
        return proc.stdout

    def url(self, service: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[service]}{path}"

    def story(self) -> str:
        """What each service said (the end of it), for a failing assertion."""
        proc = subprocess.run([_compose_binary(), "-p", PROJECT, "--env-file", str(DOCKER / "local.env"),
                               "-f", str(DOCKER / "compose.yaml"), "--profile", "local-s3", "logs", "--no-color",
                               "--tail", "60"], env=self.env, capture_output=True, text=True, timeout=60,
                              check=False)
        return proc.stdout[-12000:]


def _git_daemon(root: Path, port: int):
    """The remote over git:// on loopback (read-only), as the containers reach a forge."""
    return ProcessRunner().start(ExecuteRequest(
        argv=["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={root}", "--listen=127.0.0.1",
              f"--port={port}", str(root)], cwd=root, label="git daemon", log_path=root / "git-daemon.log",
        die_with_parent=True))


@pytest.fixture(scope="module")
def stack(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    work = tmp_path_factory.mktemp("compose")
    remote = Remote(work, TINY_APP, "tiny-app")
    git_port = free_port()
    apps = work / "apps"
    apps.mkdir()
    write_app_config(apps / "tiny-app.yaml", "tiny-app", f"git://127.0.0.1:{git_port}/tiny-app.git",
                     "trigger:\n  poll_interval_seconds: 1\n")
    ports = {name: free_port() for name in ("postgres", "code", "webserver", "artifacts", "s3")}
    # docker/local.env's values, not this machine's (an AWS key in the shell would win over the file), on free ports
    env = {key: value for key, value in engine.env.items() if key not in LOCAL_ENV}
    env |= {"SEVENP_IMAGE": IMAGE, "SEVENP_DAGSTER_IMAGE": DAGSTER_IMAGE, "SEVENP_APPS_HOST_DIR": str(apps),
           "SEVENP_DOCKER_SOCKET": engine.host.removeprefix("unix://"),
           "DAGSTER_PG_PORT": str(ports["postgres"]), "SEVENP_CODE_PORT": str(ports["code"]),
           "SEVENP_WEBSERVER_PORT": str(ports["webserver"]), "SEVENP_ARTIFACTS_PORT": str(ports["artifacts"]),
           "SEVENP_LOCAL_S3_PORT": str(ports["s3"]), "SEVENP_S3_ENDPOINT_URL": f"http://127.0.0.1:{ports['s3']}"}
    made = Stack(engine, env, remote, ports)
    daemon = _git_daemon(work, git_port)
    try:
        made.compose("up", "-d", "--no-build")
        yield made
    finally:
        try:
            left = engine.docker("ps", "-aq", "--filter", "label=dagster/run_id").split()
            if left:  # the runs' containers are the launcher's, not compose's: removed before their volumes
                engine.docker("rm", "-f", "-v", *left)
            made.compose("down", "-v", "--remove-orphans", timeout=180)
        finally:
            daemon.stop()


def _instance(stack: Stack, home: Path) -> dg.DagsterInstance:
    """An instance on the compose Postgres, as any process of the deployment reads it."""
    home.mkdir(parents=True, exist_ok=True)
    url = (f"postgresql+psycopg2://dagster:{LOCAL_ENV['DAGSTER_PG_PASSWORD']}@127.0.0.1:"
           f"{stack.ports['postgres']}/dagster")
    (home / "dagster.yaml").write_text(yaml.safe_dump({"storage": {"postgres": {"postgres_url": url}},
                                                       "telemetry": {"enabled": False}}))
    return dg.DagsterInstance.from_config(str(home))


def _push_sensor_ticked(instance: dg.DagsterInstance) -> bool:
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.name == "tiny_app_git_push_sensor":
            return bool(instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=1))
    return False


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read()
    except OSError:
        return 0, b""


def _graphql(stack: Stack, query: str, variables: dict) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(stack.url("webserver", "/graphql"), data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def test_compose_up_runs_a_pushed_commit_through_the_docker_launcher(stack: Stack, tmp_path: Path) -> None:
    engine = stack.engine
    services = set(stack.compose("ps", "--services", "--filter", "status=running").split())
    assert {"postgres", "code", "webserver", "daemon", "artifacts", "s3"} <= services, stack.story()
    assert "webhooks" not in services  # its profile (forge) was not asked for
    # The webserver and the daemon run from the dagster image: no stage tool in it.
    daemon = stack.compose("ps", "-q", "daemon").strip()
    assert engine.inspect(daemon)["Config"]["Image"] == DAGSTER_IMAGE
    assert "node" not in engine.docker("exec", daemon, "sh", "-c", "command -v node git || echo none")
    wait_until(lambda: _get(stack.url("webserver", "/server_info"))[0] == 200, timeout=240,
               what=f"the compose webserver on port {stack.ports['webserver']}\n{stack.story()}", interval=1)
    with _instance(stack, tmp_path / "home") as instance:
        # The sensor's first tick records the heads and starts nothing: push after it.
        wait_until(lambda: _push_sensor_ticked(instance), timeout=300, interval=1,
                   what=f"the push sensor's first tick in the compose daemon\n{stack.story()}")
        sha = stack.remote.commit("feat: a change compose runs")
        runs = wait_for_runs(instance, tags={TAG_COMMIT: sha}, timeout=900)
        run = runs[-1]
        container = run.tags.get("docker/container_id")
        assert container, (run.tags, stack.story())
        logs = engine.logs(container)
        assert run.status == dg.DagsterRunStatus.SUCCESS, f"{logs[-6000:]}\n{stack.story()}"
        state = engine.inspect(container)
        assert state["HostConfig"]["NetworkMode"] == "host" and state["Config"]["Image"] == IMAGE
        assert sorted(m.get("Name") for m in state["Mounts"] if m["Type"] == "volume") == ["sevenp-apps", "sevenp-home"]
        materialized = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(["tiny_app", "lint_report"]), asset_partitions=[sha]),
            limit=1).records
        assert [r.run_id for r in materialized] == [run.run_id]
        links = [value.value for value in materialized[0].asset_materialization.metadata.values()
                 if isinstance(value.value, str) and value.value.startswith(stack.url("artifacts"))]
    assert links, materialized[0].asset_materialization.metadata
    for link in links:  # served by compose's artifact service, from the bucket
        status, _ = _get(link)
        assert status == 200, (link, urlsplit(link).path)
    s3 = boto3.client("s3", endpoint_url=stack.url("s3"), region_name="us-east-1",
                      aws_access_key_id=LOCAL_ENV["AWS_ACCESS_KEY_ID"],
                      aws_secret_access_key=LOCAL_ENV["AWS_SECRET_ACCESS_KEY"])
    bucket = LOCAL_ENV["SEVENP_ARTIFACTS_BUCKET"]
    step_logs = s3.list_objects_v2(Bucket=bucket, Prefix=f"dagster-compute-logs/storage/{run.run_id}/")
    assert step_logs.get("KeyCount", 0) > 0, stack.story()
    # The webserver (the UI's API) reads the same run from the compose Postgres.
    answer = _graphql(stack, "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }",
                      {"id": run.run_id})
    assert answer["data"]["runOrError"]["status"] == "SUCCESS", answer


def test_compose_down_leaves_nothing(stack: Stack) -> None:
    """Runs last in the module: `down -v` (after the launcher's run containers) removes every container,
    volume and the data of the compose Postgres; a second `up` would start from nothing."""
    engine = stack.engine
    left = engine.docker("ps", "-aq", "--filter", "label=dagster/run_id").split()
    if left:
        engine.docker("rm", "-f", "-v", *left)
    stack.compose("down", "-v", "--remove-orphans", timeout=180)
    assert engine.docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={PROJECT}") == ""
    volumes = engine.docker("volume", "ls", "-q").split()
    assert not {"sevenp-home", "sevenp-apps"} & set(volumes) and not [v for v in volumes if PROJECT in v], volumes
