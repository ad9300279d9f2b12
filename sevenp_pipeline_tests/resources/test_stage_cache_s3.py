"""The stage and dependency caches with their second tier in S3 (a real moto_server): two workers that
share nothing but the bucket restore each other's results, and a corrupt object is never restored."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import dagster as dg
import pytest

from sevenp_pipeline.config import Settings
from sevenp_pipeline.resource_set import build_resources
from sevenp_pipeline.resources.stage_cache import CachedFile, CacheError, Manifest, StageResultCache
from sevenp_pipeline.resources.stage_cache_s3 import S3StageResultCache
from sevenp_pipeline_tests.conftest import Pipeline, reachable_home
from sevenp_pipeline_tests.motoserver import CREDS, moto_server, needs_moto
from sevenp_pipeline_tests.results import metadata_of

pytestmark = [pytest.mark.integration, needs_moto]

KEY = "0123456789abcdef0123456789abcdef"
DEPS_KEY = "fedcba9876543210" * 4


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture
def bucket(moto_endpoint: str, request: pytest.FixtureRequest) -> str:
    name = "sevenp-cache-" + request.node.name.lower().replace("_", "-")[:40].strip("-[]")
    _client(moto_endpoint).create_bucket(Bucket=name)
    return name


def _client(endpoint: str) -> Any:  # a boto3 S3 client
    return boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint, **CREDS)


def _cache(endpoint: str, bucket: str, root: Path) -> S3StageResultCache:
    return S3StageResultCache(root=str(root), bucket=bucket, endpoint_url=endpoint, region_name="us-east-1", **CREDS)


def _stored(cache: StageResultCache, tmp_path: Path, text: str) -> Manifest:
    kept = tmp_path / "kept" / "lint.log"
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(text)
    digest = cache.put_blob(kept)
    manifest = Manifest(app="web", stage="lint_report", input_key=KEY, commit="c" * 40, run_id="r1", created=1.0,
                        data_version="v1", metadata={"errors": {"type": "int", "value": 0}}, checks=[],
                        files=(CachedFile("logs/lint.log", digest, "http://a/web/c/logs/lint.log"),))
    cache.save(manifest)
    return manifest


# -- the role against the bucket -------------------------------------------------------------------
def test_a_second_worker_loads_what_the_first_saved(moto_endpoint: str, bucket: str, tmp_path: Path) -> None:
    first = _cache(moto_endpoint, bucket, tmp_path / "one")
    manifest = _stored(first, tmp_path, "lint: 0 problems\n")
    digest = manifest.files[0].sha256
    keys = {o["Key"] for o in _client(moto_endpoint).list_objects_v2(Bucket=bucket)["Contents"]}
    assert keys == {f"cache/blobs/sha256/{digest}", f"cache/manifests/web/lint_report/{KEY}.json"}
    second = _cache(moto_endpoint, bucket, tmp_path / "two")
    assert second.load(app="web", stage="lint_report", key="f" * 32) is None  # in neither tier
    loaded = second.load(app="web", stage="lint_report", key=KEY)
    assert loaded == manifest
    assert second.verified_blobs(loaded)["logs/lint.log"].read_text() == "lint: 0 problems\n"
    # Fetched to this worker's disk: the local tier answers from now on.
    assert loaded.path == second.manifest_path(app="web", stage="lint_report", key=KEY) and loaded.path.is_file()
    assert StageResultCache(root=str(tmp_path / "two")).load(app="web", stage="lint_report", key=KEY) == manifest


def test_a_corrupt_blob_in_the_bucket_is_an_error_naming_it(moto_endpoint: str, bucket: str, tmp_path: Path) -> None:
    manifest = _stored(_cache(moto_endpoint, bucket, tmp_path / "one"), tmp_path, "lint: 0 problems\n")
    digest = manifest.files[0].sha256
    _client(moto_endpoint).put_object(Bucket=bucket, Key=f"cache/blobs/sha256/{digest}", Body=b"lint: 0 prob")
    second = _cache(moto_endpoint, bucket, tmp_path / "two")
    with pytest.raises(CacheError, match=rf"s3://{bucket}/cache/blobs/sha256/{digest} of logs/lint.log is corrupt"):
        second.load(app="web", stage="lint_report", key=KEY)
    assert not second.blob_path(digest).exists()  # the bad bytes never reach the blob folder
    assert not second.manifest_path(app="web", stage="lint_report", key=KEY).exists()
    assert list(second.blob_path(digest).parent.iterdir()) == []  # no temp file left


def test_a_dependency_tree_round_trips_and_a_corrupt_one_is_refused(moto_endpoint: str, bucket: str,
                                                                     tmp_path: Path) -> None:
    tree = tmp_path / "installed" / "node_modules"
    (tree / "left-pad" / "bin").mkdir(parents=True)
    (tree / "left-pad" / "package.json").write_text('{"name": "left-pad"}')
    (tree / "left-pad" / "bin" / "pad.js").write_text("#!/usr/bin/env node\n")
    (tree / "left-pad" / "bin" / "pad.js").chmod(0o755)
    (tree / ".bin").mkdir()
    (tree / ".bin" / "pad").symlink_to("../left-pad/bin/pad.js")
    first = _cache(moto_endpoint, bucket, tmp_path / "one")
    assert first.put_dependencies(key=DEPS_KEY, tree=tree) == f"s3://{bucket}/cache/deps/{DEPS_KEY}.tar.gz"
    second = _cache(moto_endpoint, bucket, tmp_path / "two")
    assert second.fetch_dependencies(key="0" * 64, folder=tmp_path / "none") is None
    folder = tmp_path / "fetched"
    assert second.fetch_dependencies(key=DEPS_KEY, folder=folder) == f"s3://{bucket}/cache/deps/{DEPS_KEY}.tar.gz"
    fetched = folder / "node_modules"
    assert (fetched / "left-pad" / "package.json").read_text() == '{"name": "left-pad"}'
    assert (fetched / "left-pad" / "bin" / "pad.js").stat().st_mode & 0o111
    assert (fetched / ".bin" / "pad").readlink() == Path("../left-pad/bin/pad.js")
    record = json.loads(_client(moto_endpoint).get_object(Bucket=bucket, Key=f"cache/deps/{DEPS_KEY}.json")
                        ["Body"].read())
    first.put_dependencies(key=DEPS_KEY, tree=tree)  # the same tree packs to the same bytes
    again = json.loads(_client(moto_endpoint).get_object(Bucket=bucket, Key=f"cache/deps/{DEPS_KEY}.json")
                       ["Body"].read())
    assert again["sha256"] == record["sha256"]
    _client(moto_endpoint).put_object(Bucket=bucket, Key=f"cache/deps/{DEPS_KEY}.tar.gz", Body=b"\x1f\x8b partial")
    with pytest.raises(CacheError, match=rf"s3://{bucket}/cache/deps/{DEPS_KEY}.tar.gz is corrupt or partial"):
        second.fetch_dependencies(key=DEPS_KEY, folder=tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_the_s3_artifact_store_picks_the_s3_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    settings = Settings(home=tmp_path / "home", apps_dir=tmp_path / "apps")
    local = build_resources(settings)["stage_cache"]
    assert type(local) is StageResultCache and local.root == str(settings.stage_cache_dir)
    s3 = build_resources(dataclasses.replace(settings, artifacts="s3", artifacts_bucket="ci",
                                             s3_endpoint_url="http://127.0.0.1:1"))["stage_cache"]
    assert isinstance(s3, S3StageResultCache) and (s3.bucket, s3.prefix, s3.endpoint_url) == (
        "ci", "cache", "http://127.0.0.1:1")
    assert isinstance(s3.aws_access_key_id, dg.EnvVar) and s3.aws_secret_access_key is None
    assert s3.root == str(settings.stage_cache_dir)


# -- two workers, no shared disk -------------------------------------------------------------------
QUALITY = "source_checkout,node_dependencies,lint_report,security_lint_report,format_report,type_check_report"


@pytest.fixture
def workers(make_pipeline, moto_endpoint: str, bucket: str, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Pipeline, Pipeline]]:
    """Two workers on the tiny app: their own home (workspaces, caches) and instance each; only the
    bucket (and the app's git remote) in common."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    first: Pipeline = make_pipeline()

    def on_s3(settings: Settings) -> Settings:
        return dataclasses.replace(settings, artifacts="s3", artifacts_bucket=bucket, s3_endpoint_url=moto_endpoint,
                                   aws_region="us-east-1", artifacts_url="http://artifacts.test")

    first.settings = on_s3(first.settings)
    with reachable_home("sevenp-test-worker2-") as home:
        second = Pipeline(first.remote, on_s3(dataclasses.replace(first.settings, home=home)),
                          dg.DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster-2")), first.app)
        assert not {second.settings.home, second.settings.cache_dir} & {first.settings.home, first.settings.cache_dir}
        yield first, second


def _materializations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetMaterialization]:
    return {e.asset_key.path[-1]: e.materialization for e in result.get_asset_materialization_events()}


def _ran(pipe: Pipeline, sha: str, stage: str) -> bool:
    """Whether the stage's command ran on this worker: the runner writes its log in the workspace."""
    return (pipe.settings.workspaces_dir / pipe.key / sha / "logs" / f"{stage}.log").exists()


def _warnings(pipe: Pipeline, result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(e.user_message for e in pipe.instance.all_logs(result.run_id)
                     if e.level >= logging.WARNING and not e.is_dagster_event)


def test_two_workers_without_a_shared_disk_restore_from_the_bucket(workers: tuple[Pipeline, Pipeline]) -> None:
    first, second = workers
    sha = first.remote.push("develop")
    one = first.materialize(sha)
    assert one.success
    cacheable = sorted(n for n, m in _materializations(one).items() if "input_key" in m.metadata)
    assert {"lint_report", "unit_test_results", "build_artifact"} <= set(cacheable)
    assert not (second.settings.stage_cache_dir.exists() or second.settings.cache_dir.exists())

    two = second.materialize(sha)
    assert two.success, _warnings(second, two)
    materialized = _materializations(two)
    restored = sorted(n for n, m in materialized.items() if "restored_from" in m.metadata)
    assert restored == cacheable
    for stage in cacheable:
        assert materialized[stage].metadata["restored_run_id"].value == one.run_id
        assert not _ran(second, sha, stage), f"{stage} ran on the second worker"
    # The install fetched the first worker's tree: the package manager never ran here.
    install = metadata_of(two, "node_dependencies")
    assert install["reused"] is True and install["fetched_from"].startswith(f"s3://{second.settings.artifacts_bucket}/")
    assert "exit_code" not in install and not _ran(second, sha, "node_dependencies")
    assert metadata_of(one, "node_dependencies")["reused"] is False
    assert install["cache_key"] == metadata_of(one, "node_dependencies")["cache_key"]
    assert (second.settings.cache_dir / "node_modules" / install["cache_key"] / "complete").is_file()
    assert _warnings(second, two) == _warnings(first, one)  # the optional stages' notes, nothing about caches
    versions = {n: m.tags["dagster/data_version"] for n, m in materialized.items()}
    assert versions == {n: m.tags["dagster/data_version"] for n, m in _materializations(one).items()}


def test_a_corrupt_object_in_the_bucket_runs_the_stage_with_a_warning(workers: tuple[Pipeline, Pipeline]) -> None:
    first, second = workers
    sha = first.remote.push("develop")
    one = first.materialize(sha, QUALITY)
    assert one.success
    (lint,) = (first.settings.stage_cache_dir / "manifests" / first.key / "lint_report").glob("*.json")
    blob = json.loads(lint.read_text())["files"][0]
    deps = metadata_of(one, "node_dependencies")["cache_key"]
    bucket = second.settings.artifacts_bucket
    client = _client(str(second.settings.s3_endpoint_url))
    client.put_object(Bucket=bucket, Key=f"cache/blobs/sha256/{blob['sha256']}", Body=b"other bytes")
    client.put_object(Bucket=bucket, Key=f"cache/deps/{deps}.tar.gz", Body=b"not the tree")

    two = second.materialize(sha, QUALITY)
    assert two.success
    warnings = _warnings(second, two)
    assert f"s3://{bucket}/cache/blobs/sha256/{blob['sha256']} of {blob['name']} is corrupt or partial" in warnings
    assert f"s3://{bucket}/cache/deps/{deps}.tar.gz is corrupt or partial" in warnings
    assert _ran(second, sha, "lint_report") and "restored_from" not in metadata_of(two, "lint_report")
    assert _ran(second, sha, "node_dependencies") and "fetched_from" not in metadata_of(two, "node_dependencies")
    restored = {n for n, m in _materializations(two).items() if "restored_from" in m.metadata}
    assert restored == {"security_lint_report", "format_report", "type_check_report"}
    assert not list((second.settings.stage_cache_dir / "blobs" / "sha256").glob(".tmp-*"))
    # Running them put whole objects back over the bad ones.
    assert client.get_object(Bucket=bucket, Key=f"cache/blobs/sha256/{blob['sha256']}")["Body"].read() != b"other bytes"
    assert client.get_object(Bucket=bucket, Key=f"cache/deps/{deps}.tar.gz")["Body"].read() != b"not the tree"


def test_a_stage_on_a_fresh_worker_brings_back_the_commits_node_modules_from_the_bucket(
        workers: tuple[Pipeline, Pipeline]) -> None:
    """A manual re-execution from failure on a new run container: the same instance, another disk. Lint
    there gets the checkout (made again) and the install's node_modules (its recorded cache key, fetched
    from the bucket and checked against the lockfile), so it runs without re-running the install."""
    first, second = workers
    sha = first.remote.push("develop")
    one = first.materialize(sha, "source_checkout,node_dependencies")
    assert one.success
    fresh = Pipeline(first.remote, second.settings, first.instance, first.app)  # the first's instance, no disk
    again = fresh.materialize(sha, "lint_report")
    assert again.success, _warnings(fresh, again)
    assert _ran(fresh, sha, "lint_report") and not _ran(fresh, sha, "node_dependencies")
    told = [e.user_message for e in fresh.instance.all_logs(again.run_id)]
    key = metadata_of(one, "node_dependencies")["cache_key"]
    brought = [m for m in told if "node_modules of node_dependencies" in m]
    assert len(brought) == 1 and key[:12] in brought[0], told
    assert f"s3://{second.settings.artifacts_bucket}/" in brought[0], brought
    assert any("recreated the checkout" in m for m in told), told
