"""The Dagster instance on PostgreSQL: the config the local stack writes when SEVENP_DAGSTER_POSTGRES_*
name a server (the project's dagster.yaml with only its storage replaced, no password in the file),
docker/dagster.yaml and docker/dagster.ecs.yaml validated by Dagster's own schemas (the instance's
and each configured class's), and all three instantiated on a real PostgreSQL server, where a
pipeline partition is materialized and its run and materializations are read back."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import yaml
from dagster._config import process_config, resolve_to_config_type
from dagster._core.instance.config import dagster_instance_config
from dagster._serdes.config_class import class_from_code_pointer
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage

from sevenp_pipeline.config.settings import PROJECT_ROOT
from sevenp_pipeline.devtools import instance_config as ic
from sevenp_pipeline.devtools.devstack import LocalDagster, launch_run
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.services import PostgresOptions, Server, TestServices, free_port
from sevenp_pipeline.triggers.tags import TAG_COMMIT
from sevenp_pipeline_tests.conftest import Pipeline, reachable_home
from sevenp_pipeline_tests.waiting import wait_for_run

DOCKER = PROJECT_ROOT / "docker"
CLASS_SECTIONS = ("storage", "run_coordinator", "run_launcher", "compute_logs")
PASSWORD = "s3cret-never-in-a-file"  # a fake, for the file checks


def _validate_classes(config: dict[str, Any]) -> dict[str, type]:
    """Each configured class's own config validated against its ``config_type()``, as Dagster does
    when it instantiates it (ConfigurableClassData.rehydrate); returns the classes by section."""
    classes = {}
    for section in CLASS_SECTIONS:
        entry = config.get(section)
        if not entry or "module" not in entry:
            continue
        klass = class_from_code_pointer(entry["module"], entry["class"])
        result = process_config(resolve_to_config_type(klass.config_type()), entry.get("config") or {})
        assert result.success, f"{section} {entry['class']}: {[e.message for e in result.errors]}"
        classes[section] = klass
    return classes


def _home_with(tmp_path: Path, name: str, source: Path) -> Path:
    home = tmp_path / name
    home.mkdir()
    shutil.copyfile(source, home / "dagster.yaml")
    return home


# -- the local stack's config ------------------------------------------------------------------

def test_no_postgres_variable_keeps_the_shipped_sqlite_file(tmp_path: Path) -> None:
    path = ic.write_instance_config(tmp_path / "dagster", {"DAGSTER_HOME": str(tmp_path)})
    assert path.read_text() == (PROJECT_ROOT / "dagster.yaml").read_text()
    assert ic.describe_storage({"DAGSTER_HOME": "/h"}) == "SQLite under /h"


def test_a_postgres_url_replaces_only_the_storage_and_writes_no_secret(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"postgresql+psycopg2://ci:{PASSWORD}@db.internal:6543/dagster"
    environ = {ic.POSTGRES_URL: url}
    path = ic.write_instance_config(tmp_path / "dagster", environ)
    text = path.read_text()
    assert PASSWORD not in text and "db.internal" not in text  # {env: ...}: read at load by Dagster
    written = yaml.safe_load(text)
    assert written["storage"] == {"postgres": {"postgres_url": {"env": ic.POSTGRES_URL}}}
    shared = ic.base_config()
    assert {k: v for k, v in written.items() if k != "storage"} == {k: v for k, v in shared.items() if k != "storage"}
    assert "QueuedRunCoordinator" in str(written["run_coordinator"]) and written["run_monitoring"]["enabled"]
    monkeypatch.setenv(ic.POSTGRES_URL, url)
    config, _ = dagster_instance_config(str(tmp_path / "dagster"))  # Dagster's schema accepts it
    assert _validate_classes(dict(config))["run_coordinator"].__name__ == "QueuedRunCoordinator"
    described = ic.describe_storage(environ)
    assert described == f"PostgreSQL at db.internal:6543/dagster ({ic.POSTGRES_URL})" and PASSWORD not in described


def test_separate_postgres_variables_make_postgres_db_and_a_missing_one_is_named() -> None:
    fields = ic.POSTGRES_FIELDS
    environ = {fields["hostname"]: "db", fields["username"]: "ci", fields["db_name"]: "dagster",
               fields["password"]: PASSWORD}
    assert ic.postgres_storage(environ) == {"postgres": {"postgres_db": {
        "hostname": {"env": fields["hostname"]}, "username": {"env": fields["username"]},
        "password": {"env": fields["password"]}, "db_name": {"env": fields["db_name"]},
        "scheme": "postgresql+psycopg2"}}}
    with pytest.raises(ic.InstanceConfigError) as raised:
        ic.postgres_storage({fields["hostname"]: "db", fields["password"]: PASSWORD})
    assert fields["username"] in str(raised.value) and fields["db_name"] in str(raised.value)
    assert PASSWORD not in str(raised.value)
    assert ic.postgres_storage({}) is None


def test_a_url_without_the_driver_gets_it_and_another_scheme_is_refused() -> None:
    """SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed: the stack rewrites
    the variable to name psycopg2 before it starts any process; a scheme of another database is refused."""
    bare = f"postgresql://ci:{PASSWORD}@db/dagster"
    assert ic.postgres_storage({ic.POSTGRES_URL: bare}) == {"postgres": {"postgres_url": {"env": ic.POSTGRES_URL}}}
    assert ic.with_driver(bare) == f"postgresql+psycopg2://ci:{PASSWORD}@db/dagster"
    assert ic.with_driver(f"postgres://ci:{PASSWORD}@db/dagster") == ic.with_driver(bare)
    assert ic.with_driver(ic.with_driver(bare)) == ic.with_driver(bare)
    environ = {ic.POSTGRES_URL: bare, "OTHER": "x"}
    ic.use_driver(environ)
    assert environ == {ic.POSTGRES_URL: ic.with_driver(bare), "OTHER": "x"}
    for wrong in (f"mysql://ci:{PASSWORD}@db/dagster", f"postgresql+asyncpg://ci:{PASSWORD}@db/x", "db/dagster"):
        with pytest.raises(ic.InstanceConfigError) as raised:
            ic.postgres_storage({ic.POSTGRES_URL: wrong})
        assert "postgresql+psycopg2://" in str(raised.value) and PASSWORD not in str(raised.value)


# -- docker/ and ECS ---------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "launcher"), [("dagster.yaml", "DockerRunLauncher"),
                                                ("dagster.ecs.yaml", "EcsRunLauncher")])
def test_at_scale_configs_validate_and_share_the_local_limits(name: str, launcher: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_HOST", "DAGSTER_PG_DB",
                "SEVENP_COMPUTE_LOGS_BUCKET", "SEVENP_ARTIFACTS_BUCKET", "SEVENP_S3_ENDPOINT_URL",
                "AWS_DEFAULT_REGION"):
        monkeypatch.setenv(var, "x")
    monkeypatch.setenv("DAGSTER_PG_PORT", "5432")
    config, _ = dagster_instance_config(str(_home_with(tmp_path, "home", DOCKER / name)))
    classes = _validate_classes(dict(config))
    assert classes["run_launcher"].__name__ == launcher
    assert classes["run_coordinator"].__name__ == "QueuedRunCoordinator"
    assert "postgres" in config["storage"]
    local = ic.base_config()
    assert (config["concurrency"]["runs"]["tag_concurrency_limits"]
            == local["concurrency"]["runs"]["tag_concurrency_limits"])
    assert config["run_retries"]["enabled"] and config["run_monitoring"]["enabled"]
    assert config["run_monitoring"]["free_slots_after_run_end_seconds"] > 0
    assert classes["compute_logs"].__name__ == "S3ComputeLogManager"  # step logs never on one machine's disk


def test_the_docker_launcher_forwards_only_what_the_compose_daemon_gets() -> None:
    """DockerRunLauncher reads each ``env_vars`` name from the daemon's environment at launch and fails
    the launch when one is missing: each must be set on compose's daemon service."""
    env_vars = yaml.safe_load((DOCKER / "dagster.yaml").read_text())["run_launcher"]["config"]["env_vars"]
    compose = yaml.safe_load((DOCKER / "compose.yaml").read_text())  # PyYAML resolves the << merges as compose does
    daemon_env = compose["services"]["daemon"]["environment"]
    assert isinstance(daemon_env, dict)
    assert [name for name in env_vars if "=" not in name and name not in daemon_env] == []
    assert {"DAGSTER_PG_PASSWORD", "SEVENP_HOME"} <= set(env_vars)


@pytest.mark.parametrize("missing", ["DAGSTER_PG_PASSWORD", "SEVENP_APPS_HOST_DIR", "SEVENP_ARTIFACTS_BUCKET",
                                     "SEVENP_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID"])
def test_compose_refuses_to_start_naming_a_missing_variable(missing: str, tmp_path: Path) -> None:
    """`docker compose up` (here `docker-compose config`, which interpolates the same way, no engine
    needed) stops on a variable the deployment needs, naming it."""
    compose = shutil.which("docker-compose")
    if compose is None:
        if os.environ.get("CI"):
            pytest.fail("docker-compose not found (scripts/install-system-deps.sh installs it)")
        pytest.skip("docker-compose not found")
    values = {"DAGSTER_PG_PASSWORD": "pw", "SEVENP_APPS_HOST_DIR": str(tmp_path), "SEVENP_ARTIFACTS_BUCKET": "b",
              "SEVENP_S3_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ACCESS_KEY_ID": "k",
              "AWS_SECRET_ACCESS_KEY": "s"}
    env = {key: value for key, value in os.environ.items() if key not in values} | values
    argv = [compose, "-f", str(DOCKER / "compose.yaml"), "--profile", "local-s3", "config", "-q"]
    assert subprocess.run(argv, env=env, capture_output=True, check=False).returncode == 0
    del env[missing]
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and f"set {missing}" in proc.stderr, proc.stderr


# -- on a real PostgreSQL server ----------------------------------------------------------------

@pytest.fixture(scope="module")
def postgres() -> Iterator[Server]:
    """A throwaway PostgreSQL (the stages' helper: run as its unprivileged user when root) with a
    database per instance under test."""
    with reachable_home("sevenp-pg-instance-") as home:
        services = TestServices(runner=ProcessRunner(), root_dir=str(home / "services"))
        options = PostgresOptions(user="dagster", database="local", databases=("docker", "ecs", "stack"))
        with services.provide(["postgresql"], postgresql=options) as endpoints:
            yield endpoints.servers[0]


def _url(server: Server, database: str) -> str:
    return f"postgresql+psycopg2://{server.user}:{server.password}@127.0.0.1:{server.port}/{database}"


@pytest.mark.integration
def test_a_pipeline_runs_on_the_postgres_instance_the_stack_writes(postgres: Server, make_pipeline, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ic.POSTGRES_URL, _url(postgres, "local"))
    home = tmp_path / "dagster"
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    ic.write_instance_config(home)
    assert postgres.password not in (home / "dagster.yaml").read_text()
    pipe: Pipeline = make_pipeline()
    sha = pipe.remote.commit("a commit")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert instance.event_log_storage.supports_global_concurrency_limits  # the pools of dagster.yaml
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        result = dataclasses.replace(pipe, instance=instance).materialize(sha, "source_checkout")
        assert result.success
        run_id = result.run_id
    # A new instance (another process would do the same) reads it back from the server.
    key = dg.AssetKey([pipe.key, "source_checkout"])
    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == dg.DagsterRunStatus.SUCCESS
        assert run.tags.get("dagster/partition") == sha
        records = instance.fetch_materializations(key, limit=10).records
        assert [r.run_id for r in records] == [run_id]
        assert records[0].partition_key == sha
        assert sha in instance.get_dynamic_partitions(f"{pipe.key}_commits")


@pytest.mark.integration
def test_the_docker_and_ecs_instances_load_on_postgres(postgres: Server, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Dagster instantiates every configured class of both files (storage on the real server, the run
    launcher, the S3 compute logs) and the storage takes a run."""
    for var, value in {"DAGSTER_PG_USER": postgres.user, "DAGSTER_PG_PASSWORD": postgres.password,
                       "DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(postgres.port),
                       "SEVENP_COMPUTE_LOGS_BUCKET": "logs", "AWS_DEFAULT_REGION": "eu-west-1"}.items():
        monkeypatch.setenv(var, value)
    for name, database, launcher in (("dagster.yaml", "docker", "DockerRunLauncher"),
                                     ("dagster.ecs.yaml", "ecs", "EcsRunLauncher")):
        monkeypatch.setenv("DAGSTER_PG_DB", database)
        home = _home_with(tmp_path, database, DOCKER / name)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_launcher).__name__ == launcher
            assert isinstance(instance.run_storage, PostgresRunStorage)
            if launcher == "EcsRunLauncher":
                assert type(instance.compute_log_manager).__name__ == "S3ComputeLogManager"
            run = instance.add_run(dg.DagsterRun(job_name="web_ci_job", run_id=str(uuid.uuid4()),
                                                 tags={"sevenp/commit": "abc"}))
            assert instance.get_run_by_id(run.run_id).tags["sevenp/commit"] == "abc"


@pytest.mark.integration
def test_the_stack_on_postgres_queues_and_runs_a_launched_job(postgres: Server, make_pipeline,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """make dev with SEVENP_DAGSTER_POSTGRES_URL: the webserver takes a launch, the daemon dequeues it
    (QueuedRunCoordinator) and the run worker materializes the commit, all on the server; nothing of
    it is in SQLite under DAGSTER_HOME."""
    pipe: Pipeline = make_pipeline()
    sha = pipe.remote.commit("a commit")  # before the stack: the push sensor's baseline, no run of its own
    url = _url(postgres, "stack")
    # Given without the driver: serve names it for every process it starts (webserver, daemon, runs).
    stack = LocalDagster(home=pipe.settings.home, port=free_port(), apps_dir=pipe.settings.apps_dir,
                         extra_env={ic.POSTGRES_URL: url.replace("postgresql+psycopg2://", "postgresql://")})
    monkeypatch.setenv(ic.POSTGRES_URL, url)
    stack.start()
    try:
        assert "storage: PostgreSQL at 127.0.0.1" in stack.log_path.read_text()
        assert postgres.password not in stack.log_path.read_text()
        with dg.DagsterInstance.from_config(str(stack.dagster_home)) as instance:
            instance.add_dynamic_partitions(f"{pipe.key}_commits", [sha])
            run_id = launch_run(stack.url, f"{pipe.key}_ci_job", partition=sha,
                                assets=[[pipe.key, "source_checkout"]], tags={TAG_COMMIT: sha})
            run = wait_for_run(instance, run_id, timeout=120)
            assert run.status == dg.DagsterRunStatus.SUCCESS, stack.log_path.read_text()[-3000:]
            # Queued by the webserver's QueuedRunCoordinator, then launched by the daemon's run queue.
            queued = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED).records
            assert len(queued) == 1
            records = instance.fetch_materializations(dg.AssetKey([pipe.key, "source_checkout"]), limit=5).records
            assert [(r.run_id, r.partition_key) for r in records] == [(run_id, sha)]
    finally:
        stack.stop()
    assert not list(stack.dagster_home.rglob("*.db"))  # runs, events, schedules: all on the server


def test_serve_refuses_a_url_of_another_database_before_starting_anything(tmp_path: Path) -> None:
    env = {**os.environ, "SEVENP_HOME": str(tmp_path / "home"), "DAGSTER_HOME": str(tmp_path / "home" / "dagster"),
           "PYTHONPATH": str(PROJECT_ROOT), ic.POSTGRES_URL: f"mysql://ci:{PASSWORD}@127.0.0.1:1/dagster"}
    argv = [sys.executable, "-m", "sevenp_pipeline.devtools.devstack", "serve", "--port", str(free_port())]
    proc = subprocess.run(argv, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 2, proc.stderr
    assert "must start with postgresql+psycopg2:// or postgresql://" in proc.stderr
    assert PASSWORD not in proc.stdout + proc.stderr
    assert not (tmp_path / "home" / "dagster" / "dagster.yaml").exists()
