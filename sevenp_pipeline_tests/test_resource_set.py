"""One resource set per deployment, and secrets only through dg.EnvVar."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from sevenp_pipeline.config import Settings
from sevenp_pipeline.resource_set import build_resources
from sevenp_pipeline.resources.artifacts import LocalArtifactStore
from sevenp_pipeline.resources.locks import FileLocks
from sevenp_pipeline.resources.locks_postgres import PostgresLocks
from sevenp_pipeline.resources.registries.ecr import ECRRegistry
from sevenp_pipeline.resources.registries.local import LocalRegistry
from sevenp_pipeline.scanners import provenance as prov
from sevenp_pipeline.scanners.signing import SigningKey

KEYS = {"process_runner", "image_builder", "node_base_image", "git", "workspaces", "artifact_store",
        "test_services", "workspace_retention", "launch_options", "signing_key", "stage_cache", "registry",
        "deploy_targets", "notifier", "forge", "webhook_inbox", "locks"}


def _settings(tmp_path: Path, registry: str = "local", endpoint: str | None = None) -> Settings:
    return Settings(home=tmp_path / "home", apps_dir=tmp_path / "apps", registry=registry, ecr_endpoint_url=endpoint)


def test_the_registry_is_chosen_once_from_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    local = build_resources(_settings(tmp_path))
    assert set(local) == KEYS and isinstance(local["registry"], LocalRegistry)
    aws = build_resources(_settings(tmp_path, "ecr", "http://127.0.0.1:1"))
    assert set(aws) == KEYS and isinstance(aws["registry"], ECRRegistry)
    assert aws["registry"].upload_layers is False  # an emulator endpoint: manifests only
    assert isinstance(aws["registry"].aws_access_key_id, dg.EnvVar)  # not the value itself
    assert aws["registry"].aws_secret_access_key is None  # unset: boto3's default chain
    with pytest.raises(ValueError, match="SEVENP_REGISTRY='gcr'"):
        build_resources(_settings(tmp_path, "gcr"))


def test_the_artifact_store_is_chosen_from_the_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sevenp_pipeline.resources.artifacts_s3 import S3ArtifactStore  # noqa: PLC0415

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t-" + "x" * 20)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    assert isinstance(build_resources(_settings(tmp_path))["artifact_store"], LocalArtifactStore)  # the default
    for name, value in {"SEVENP_HOME": str(tmp_path / "home"), "SEVENP_APPS_DIR": str(tmp_path / "apps"),
                        "SEVENP_ARTIFACTS": "s3", "SEVENP_ARTIFACTS_BUCKET": "ci-artifacts",
                        "SEVENP_ARTIFACTS_PREFIX": "/sevenp/", "SEVENP_S3_ENDPOINT_URL": "http://127.0.0.1:1",
                        "AWS_REGION": "eu-west-1", "SEVENP_ARTIFACTS_URL": "https://ci.example/artifacts"}.items():
        monkeypatch.setenv(name, value)
    resources = build_resources(Settings.from_env())
    store = resources["artifact_store"]
    assert isinstance(store, S3ArtifactStore) and set(resources) == KEYS
    assert (store.bucket, store.prefix, store.endpoint_url, store.region_name) == (
        "ci-artifacts", "sevenp", "http://127.0.0.1:1", "eu-west-1")
    assert isinstance(store.aws_access_key_id, dg.EnvVar) and isinstance(store.aws_secret_access_key, dg.EnvVar)
    assert store.aws_session_token is None  # unset: not an EnvVar failing every launch
    assert "s3cr3t" not in repr(store)
    assert store.key(app="web", sha="abc", name="logs/unit.log") == "sevenp/web/abc/logs/unit.log"
    assert store.uri(app="web", sha="abc", name="logs/unit.log") == "https://ci.example/artifacts/web/abc/logs/unit.log"
    monkeypatch.delenv("SEVENP_ARTIFACTS_BUCKET")
    with pytest.raises(ValueError, match="SEVENP_ARTIFACTS=s3 needs SEVENP_ARTIFACTS_BUCKET"):
        Settings.from_env()
    with pytest.raises(ValueError, match="needs SEVENP_ARTIFACTS_BUCKET"):
        build_resources(Settings(home=tmp_path / "home", apps_dir=tmp_path / "apps", artifacts="s3"))
    monkeypatch.setenv("SEVENP_ARTIFACTS", "gcs")
    with pytest.raises(ValueError, match="SEVENP_ARTIFACTS='gcs': expected 'local' or 's3'"):
        Settings.from_env()


def test_signing_key_comes_from_the_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    private, public = prov.generate_keypair()
    monkeypatch.setenv("SEVENP_SIGNING_KEY", private)
    resource = build_resources(_settings(tmp_path))["signing_key"]
    assert isinstance(resource.pem, dg.EnvVar)
    with dg.build_resources({"signing_key": resource}) as resources:
        key: SigningKey = resources.signing_key
        assert key.public_pem() == public and key.key_id == prov.keyid_of(public)


def test_unset_signing_key_fails_only_the_signing_naming_the_variable(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SEVENP_SIGNING_KEY", raising=False)
    key = build_resources(_settings(tmp_path))["signing_key"]
    with pytest.raises(prov.ProvenanceError, match="SEVENP_SIGNING_KEY is not set"):
        key.public_pem()


def test_deploy_credentials_are_env_vars_held_by_the_orchestrator(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The Slack webhook and the AWS keys of the deploy targets reach the resources as dg.EnvVar, never as
    values in the run config; unset, they stay None (no webhook: no message; AWS: boto3's default chain)."""
    monkeypatch.setenv("SEVENP_SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T0/B0/abcdefabcdef")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "deploy-secret-" + "x" * 20)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    resources = build_resources(_settings(tmp_path))
    assert isinstance(resources["notifier"].webhook_url, dg.EnvVar)
    assert isinstance(resources["deploy_targets"].ecs.aws_secret_access_key, dg.EnvVar)
    assert resources["deploy_targets"].ecs.aws_access_key_id is None
    monkeypatch.delenv("SEVENP_SLACK_WEBHOOK_URL")
    assert build_resources(_settings(tmp_path))["notifier"].webhook_url is None


def test_the_resource_set_reads_the_environment_through_the_settings(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"SEVENP_HOME": str(tmp_path / "home"), "SEVENP_APPS_DIR": str(tmp_path / "apps"),
                        "SEVENP_STAGE_USER": "builder", "DAGSTER_HOME": str(tmp_path / "dagster"),
                        "SEVENP_SANDBOX": "off", "AWS_REGION": "eu-west-1",
                        "SEVENP_ECS_ENDPOINT_URL": "http://127.0.0.1:1", "SEVENP_UI_URL": "http://ui:3000",
                        "SEVENP_KEEP_COMMITS_PER_BRANCH": "3", "SEVENP_STAGE_CACHE_DAYS": "2",
                        "SEVENP_HOME_BUDGET_GB": "0", "SEVENP_ARTIFACTS_URL": "https://ci.example/artifacts/"}.items():
        monkeypatch.setenv(name, value)
    resources = build_resources(Settings.from_env())
    workspaces, retention = resources["workspaces"], resources["workspace_retention"]
    assert workspaces.stage_user == "builder" and workspaces.sandbox is False
    assert str(tmp_path / "dagster") in workspaces.private_paths
    assert (retention.keep_per_branch, retention.stage_cache_days, retention.budget_gb) == (3, 2.0, 0.0)
    assert resources["deploy_targets"].ecs.region_name == "eu-west-1"
    assert resources["deploy_targets"].ecs.endpoint_url == "http://127.0.0.1:1"
    assert resources["notifier"].ui_url == "http://ui:3000"
    store = resources["artifact_store"]
    assert store.base_url == "https://ci.example/artifacts"
    assert store.uri(app="web", sha="abc", name="logs/unit.log") == "https://ci.example/artifacts/web/abc/logs/unit.log"
    monkeypatch.setenv("SEVENP_ARTIFACTS_URL", "/srv/artifacts")
    with pytest.raises(ValueError, match="SEVENP_ARTIFACTS_URL='/srv/artifacts': expected an http"):
        Settings.from_env()
    monkeypatch.setenv("SEVENP_ARTIFACTS_URL", "")
    assert Settings.from_env().artifacts_url == "http://127.0.0.1:3001"
    monkeypatch.setenv("SEVENP_STAGE_CACHE_DAYS", "0")
    with pytest.raises(ValueError, match="SEVENP_STAGE_CACHE_DAYS='0': expected more than 0 days"):
        Settings.from_env()
    monkeypatch.setenv("SEVENP_STAGE_CACHE_DAYS", "")
    monkeypatch.setenv("SEVENP_KEEP_COMMITS_PER_BRANCH", "many")
    with pytest.raises(ValueError, match="SEVENP_KEEP_COMMITS_PER_BRANCH='many': expected a whole number"):
        Settings.from_env()


POSTGRES_VARS = ("SEVENP_DAGSTER_POSTGRES_URL", "SEVENP_DAGSTER_POSTGRES_HOST", "SEVENP_DAGSTER_POSTGRES_USER",
                 "SEVENP_DAGSTER_POSTGRES_DB", "SEVENP_DAGSTER_POSTGRES_PASSWORD", "SEVENP_DAGSTER_POSTGRES_PORT",
                 "SEVENP_LOCKS", "DAGSTER_PG_HOST", "DAGSTER_PG_USER", "DAGSTER_PG_DB", "DAGSTER_PG_PASSWORD",
                 "DAGSTER_PG_PORT")


def test_the_locks_follow_the_instance_to_postgres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """flock under the home by default; advisory locks on the instance's server once SEVENP_DAGSTER_POSTGRES_*
    name one, its connection as dg.EnvVar (no password in run config); SEVENP_LOCKS overrides the choice."""
    for name in POSTGRES_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SEVENP_HOME", str(tmp_path / "home"))
    locks = build_resources(Settings.from_env())["locks"]
    assert isinstance(locks, FileLocks) and locks.root == str(tmp_path / "home")

    password = "pg-s3cret-" + "x" * 12
    monkeypatch.setenv("SEVENP_DAGSTER_POSTGRES_URL", f"postgresql://ci:{password}@db.internal:5432/dagster")
    locks = build_resources(Settings.from_env())["locks"]
    assert isinstance(locks, PostgresLocks) and isinstance(locks.url, dg.EnvVar)
    assert password not in repr(locks)
    with dg.build_resources({"locks": locks}) as resources:  # resolved in the run worker, from its environment
        assert resources.locks.describe() == "PostgreSQL advisory locks at db.internal:5432/dagster"
    monkeypatch.setenv("SEVENP_LOCKS", "file")
    assert isinstance(build_resources(Settings.from_env())["locks"], FileLocks)

    monkeypatch.delenv("SEVENP_LOCKS")
    monkeypatch.delenv("SEVENP_DAGSTER_POSTGRES_URL")
    for name, value in {"HOST": "db.internal", "USER": "ci", "DB": "dagster", "PASSWORD": password}.items():
        monkeypatch.setenv(f"SEVENP_DAGSTER_POSTGRES_{name}", value)
    locks = build_resources(Settings.from_env())["locks"]
    assert isinstance(locks, PostgresLocks) and isinstance(locks.password, dg.EnvVar) and locks.port is None
    assert password not in repr(locks)

    monkeypatch.delenv("SEVENP_DAGSTER_POSTGRES_HOST")
    # docker/'s run containers: the instance's DAGSTER_PG_* (docker/dagster.yaml's run_launcher.env_vars)
    for name, value in {"HOST": "postgres", "USER": "dagster", "DB": "dagster", "PASSWORD": password,
                        "PORT": "5432"}.items():
        monkeypatch.setenv(f"DAGSTER_PG_{name}", value)
    locks = build_resources(Settings.from_env())["locks"]
    assert isinstance(locks, PostgresLocks) and locks.password == dg.EnvVar("DAGSTER_PG_PASSWORD")
    with dg.build_resources({"locks": locks}) as resources:
        assert resources.locks.describe() == "PostgreSQL advisory locks at postgres:5432/dagster"
    monkeypatch.delenv("DAGSTER_PG_HOST")

    monkeypatch.setenv("SEVENP_LOCKS", "postgres")  # asked for, but no server named
    with pytest.raises(ValueError, match="SEVENP_LOCKS=postgres needs SEVENP_DAGSTER_POSTGRES_URL"):
        build_resources(Settings.from_env())
    monkeypatch.setenv("SEVENP_LOCKS", "redis")
    with pytest.raises(ValueError, match="SEVENP_LOCKS='redis': expected 'file' or 'postgres'"):
        Settings.from_env()
