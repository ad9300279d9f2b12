"""Issue 19, bad input: a Docker engine the daemon cannot reach. The instance is docker/dagster.yaml's
shape (QueuedRunCoordinator, DockerRunLauncher), its engine a socket nobody listens on; a run launched
as the UI launches it is queued, and the coordinator's pass (the daemon's own iteration, run here) tries
to launch it: the run fails saying why, and nothing stays in the queue to be tried forever."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
from dagster_graphql.test.utils import execute_dagster_graphql

from sevenp_pipeline.devtools.devstack import LAUNCH, LOCATION, REPOSITORY
from sevenp_pipeline_tests.conftest import TINY_APP, write_app_config
from sevenp_pipeline_tests.gitutil import Remote

pytestmark = pytest.mark.integration


def test_a_run_the_engine_cannot_take_fails_naming_the_engine_and_leaves_the_queue(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    socket = tmp_path / "nobody" / "docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket}")
    remote = Remote(tmp_path, TINY_APP, "tiny-app")
    apps = tmp_path / "apps"
    apps.mkdir()
    write_app_config(apps / "tiny-app.yaml", "tiny-app", remote.url)
    monkeypatch.setenv("SEVENP_APPS_DIR", str(apps))
    monkeypatch.setenv("SEVENP_HOME", str(tmp_path / "sevenp"))
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump({
        "run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator",
                            "config": {"dequeue_interval_seconds": 1}},
        "run_launcher": {"module": "dagster_docker", "class": "DockerRunLauncher",
                         "config": {"image": "sevenp-pipeline:latest", "network": "host"}},
        "telemetry": {"enabled": False}}))
    sha = remote.push("develop")
    with dg.DagsterInstance.from_config(str(home)) as instance, \
            WorkspaceProcessContext(instance, ModuleTarget(
                module_name="sevenp_pipeline.definitions", attribute=None, working_directory=None,
                location_name=LOCATION)) as workspace:
        error = workspace.create_request_context().get_code_location_error(LOCATION)
        assert error is None, error
        instance.add_dynamic_partitions("tiny_app_commits", [sha])
        params = {"selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY,
                               "jobName": "tiny_app_ci_job"},
                  "runConfigData": {}, "executionMetadata": {"tags": [{"key": "dagster/partition", "value": sha}]}}
        result = execute_dagster_graphql(workspace.create_request_context(), LAUNCH, {"params": params})
        assert result.errors is None, result.errors
        run_id = result.data["launchRun"]["run"]["runId"]
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.QUEUED
        list(QueuedRunCoordinatorDaemon(interval_seconds=1).run_iteration(workspace))
        run = instance.get_run_by_id(run_id)
        assert run.status == dg.DagsterRunStatus.FAILURE, run.status
        # The run's page shows the launch failure with its cause: the engine's client error.
        errors = [e for e in instance.all_logs(run_id) if e.level >= logging.ERROR and e.dagster_event]
        causes = [getattr(e.dagster_event.event_specific_data, "error", None) for e in errors]
        told = "\n".join(f"{e.message}\n{c.to_string() if c else ''}" for e, c in zip(errors, causes, strict=True))
        assert "unrecoverable error while dequeuing" in told and "DockerException" in told, told
        assert "Error while fetching server API version" in told, told
        assert instance.get_runs(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED])) == []
