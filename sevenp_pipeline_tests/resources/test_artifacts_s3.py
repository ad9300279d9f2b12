"""S3ArtifactStore against a real moto_server process: the role's round trip, the refusals, the
artifact server (and the cockpit) serving the bucket over HTTP, and a pipeline whose reports land in S3."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import boto3
import dagster as dg
import pytest

from sevenp_pipeline.cockpit.server import create_app as cockpit_app
from sevenp_pipeline.config.settings import Settings
from sevenp_pipeline.resources.artifact_server import INLINE_LIMIT, create_app, served_store
from sevenp_pipeline.resources.artifacts import Entry
from sevenp_pipeline.resources.artifacts_s3 import S3ArtifactStore
from sevenp_pipeline_tests.artifact_http import Reply, serve_artifacts
from sevenp_pipeline_tests.conftest import Pipeline
from sevenp_pipeline_tests.motoserver import CREDS, free_port, moto_server, needs_moto
from sevenp_pipeline_tests.results import metadata_of

pytestmark = [pytest.mark.integration, needs_moto]

APP, SHA, OTHER = "web", "a" * 40, "b" * 40
SECRET = "the-secret-outside-the-prefix"
JUNIT = '<?xml version="1.0"?><testsuites tests="1"><testsuite name="unit" tests="1"/></testsuites>\n'


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture
def bucket(moto_endpoint: str, request: pytest.FixtureRequest) -> str:
    """A new bucket per test, with a secret object beside the store's prefix."""
    name = "sevenp-" + request.node.name.lower().replace("_", "-")[:40].strip("-[]")
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_endpoint, **CREDS)
    client.create_bucket(Bucket=name)
    client.put_object(Bucket=name, Key="secret.txt", Body=SECRET.encode())
    client.put_object(Bucket=name, Key=f"other/{APP}/{SHA}/secret.txt", Body=SECRET.encode())
    return name


def _store(endpoint: str, bucket: str, base_url: str = "http://artifacts.test/") -> S3ArtifactStore:
    return S3ArtifactStore(bucket=bucket, prefix="ci/artifacts", base_url=base_url, endpoint_url=endpoint,
                           region_name="us-east-1", **CREDS)


def _file(tmp_path: Path, name: str, data: str | bytes) -> Path:
    path = tmp_path / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def test_put_read_uri_round_trip(moto_endpoint: str, bucket: str, tmp_path: Path) -> None:
    store = _store(moto_endpoint, bucket)
    uri = store.put_file(app=APP, sha=SHA, name="reports/a b#1?.xml", path=_file(tmp_path, "r.xml", JUNIT), link=True)
    assert uri == f"http://artifacts.test/{APP}/{SHA}/reports/a%20b%231%3F.xml"
    assert uri == store.uri(app=APP, sha=SHA, name="reports/a b#1?.xml")
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=moto_endpoint, **CREDS)
    body = client.get_object(Bucket=bucket, Key=f"ci/artifacts/{APP}/{SHA}/reports/a b#1?.xml")["Body"].read()
    assert body.decode() == JUNIT
    assert store.read_bytes(app=APP, sha=SHA, name="reports/a b#1?.xml") == JUNIT.encode()
    assert store.exists(app=APP, sha=SHA, name="reports/a b#1?.xml")
    assert not store.exists(app=APP, sha=SHA, name="reports/missing.xml")
    assert store.read_bytes(app=APP, sha=SHA, name="reports/missing.xml") is None
    assert store.open(app=APP, sha=OTHER, name="reports/a b#1?.xml") is None
    assert store.local_path(app=APP, sha=SHA, name="reports/a b#1?.xml") is None  # nothing on this disk
    copy = store.local_copy(app=APP, sha=SHA, name="reports/a b#1?.xml", folder=tmp_path / "copies")
    assert copy == tmp_path / "copies" / "reports" / "a b#1?.xml" and copy.read_text() == JUNIT
    assert store.local_copy(app=APP, sha=SHA, name="nope.txt", folder=tmp_path / "copies") is None
    store.put_file(app=APP, sha=OTHER, name="logs/unit.log", path=_file(tmp_path, "u.log", "PASS\n"))
    assert store.apps() == [APP]  # "other/" and "secret.txt" are outside the prefix
    assert store.commits(APP) == [OTHER, SHA]  # newest first
    assert store.artifacts(APP, SHA) == [Entry("reports/a b#1?.xml", len(JUNIT))]
    assert store.artifacts(APP, "c" * 40) == []


@pytest.mark.parametrize("name", ["../x", f"../{OTHER}/x", "a/../b", "./a", "/etc/passwd", "a//b", "a/", "",
                                  "a\x00.txt", "a\\..\\b"])
def test_a_name_leaving_its_commit_is_refused(moto_endpoint: str, bucket: str, tmp_path: Path, name: str) -> None:
    store = _store(moto_endpoint, bucket)
    source = _file(tmp_path, "x.txt", "x")
    for call in (lambda: store.put_file(app=APP, sha=SHA, name=name, path=source),
                 lambda: store.uri(app=APP, sha=SHA, name=name), lambda: store.read_bytes(app=APP, sha=SHA, name=name),
                 lambda: store.exists(app=APP, sha=SHA, name=name)):
        with pytest.raises(ValueError, match="escapes the store"):
            call()
    with pytest.raises(ValueError, match="not a plain app and commit"):
        store.put_file(app="..", sha=SHA, name="x.txt", path=source)


def test_credentials_come_from_env_vars(moto_endpoint: str, bucket: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEVENP_TEST_S3_KEY", "AKIAEXAMPLE")
    monkeypatch.setenv("SEVENP_TEST_S3_SECRET", "s3cr3t")
    resource = S3ArtifactStore(bucket=bucket, endpoint_url=moto_endpoint, region_name="us-east-1",
                               aws_access_key_id=dg.EnvVar("SEVENP_TEST_S3_KEY"),
                               aws_secret_access_key=dg.EnvVar("SEVENP_TEST_S3_SECRET"))
    with dg.build_resources({"store": resource}) as resources:
        store = resources.store
        assert store.s3_client()._request_signer._credentials.access_key == "AKIAEXAMPLE"
        store.put_file(app=APP, sha=SHA, name="x.txt", path=_file(tmp_path, "x.txt", "x"))
        assert store.read_bytes(app=APP, sha=SHA, name="x.txt") == b"x"


@pytest.fixture
def s3_served(moto_endpoint: str, bucket: str, tmp_path: Path) -> Iterator[tuple[S3ArtifactStore, object]]:
    store = _store(moto_endpoint, bucket)
    for name, data in {"reports/unit_test_results.xml": JUNIT, "logs/unit.log": "PASS\n",
                       "coverage-html/index.html": "<html><script>alert(1)</script><p>92%</p></html>",
                       "build_artifact-dist.tar.gz": b"\x1f\x8b\x08\x00fake-gzip"}.items():
        store.put_file(app=APP, sha=SHA, name=name, path=_file(tmp_path, name, data))
    with serve_artifacts(tmp_path, create_app(store)) as served:
        yield store, served


def _refused(reply: Reply) -> None:
    assert reply.status == 404, (reply.status, reply.text[:200])
    assert SECRET not in reply.text
    assert reply.headers["X-Content-Type-Options"] == "nosniff"


def test_the_artifact_server_serves_the_bucket(s3_served: tuple) -> None:
    store, served = s3_served
    report = served.get(urlsplit(store.uri(app=APP, sha=SHA, name="reports/unit_test_results.xml")).path)
    assert (report.status, report.headers["Content-Type"], report.text) == (200, "text/plain; charset=utf-8", JUNIT)
    assert report.headers["Content-Security-Policy"] == "sandbox"
    html = served.get(f"/{APP}/{SHA}/coverage-html/index.html")
    assert html.headers["Content-Type"] == "text/html; charset=utf-8" and "<p>92%</p>" in html.text
    tarball = served.get(f"/{APP}/{SHA}/build_artifact-dist.tar.gz")
    assert tarball.headers["Content-Disposition"].startswith("attachment")
    assert tarball.body == b"\x1f\x8b\x08\x00fake-gzip"
    head = served.get(f"/{APP}/{SHA}/logs/unit.log", method="HEAD")
    assert (head.status, head.body, head.headers["Content-Length"]) == (200, b"", "5")
    index = served.get(f"/{APP}/{SHA}/")
    for name in ("reports/unit_test_results.xml", "logs/unit.log", "coverage-html/index.html"):
        assert f'href="{name}"' in index.text
    assert f"{len(JUNIT)} B" in index.text
    assert 'href="web/"' in served.get("/").text and "other" not in served.get("/").text
    assert f'href="{SHA}/"' in served.get(f"/{APP}/").text
    moved = served.get(f"/{APP}/{SHA}")
    assert (moved.status, moved.headers["Location"]) == (308, f"{SHA}/")
    assert served.get(f"/{APP}/{SHA}/logs/unit.log", method="POST").status == 405


@pytest.mark.parametrize("path", [
    "/../secret.txt", "/web/../../secret.txt", f"/web/{SHA}/../../../secret.txt",
    f"/web/{SHA}/%2e%2e/%2e%2e/%2e%2e/secret.txt", f"/web/{SHA}/..%2f..%2f..%2fsecret.txt",
    f"/web/{SHA}/..%5c..%5c..%5csecret.txt", f"/web/{SHA}/reports%2funit_test_results.xml",
    f"/web/{SHA}/./reports/unit_test_results.xml", "//secret.txt", f"/web/{SHA}//secret.txt",
    f"/web/{SHA}/reports/unit_test_results.xml%00.txt", "/other/web/", f"/other/web/{SHA}/secret.txt",
    f"/web/{SHA}/reports/", f"/web/{SHA}/missing.txt", "/web/nope/", "/nope/",
])
def test_the_s3_server_refuses_traversal_and_what_is_not_stored(s3_served: tuple, path: str) -> None:
    _refused(s3_served[1].get(path))


def test_a_large_s3_text_file_downloads(moto_endpoint: str, bucket: str, tmp_path: Path) -> None:
    store = _store(moto_endpoint, bucket)
    big = _file(tmp_path, "flood.log", b"")
    with big.open("wb") as handle:
        handle.truncate(INLINE_LIMIT + 1)
    store.put_file(app=APP, sha=SHA, name="logs/flood.log", path=big)
    with serve_artifacts(tmp_path, create_app(store)) as served:
        reply = served.get(f"/{APP}/{SHA}/logs/flood.log")
    assert reply.status == 200 and reply.headers["Content-Disposition"].startswith("attachment")
    assert len(reply.body) == INLINE_LIMIT + 1


def test_the_cockpit_serves_the_bucket_from_the_settings(moto_endpoint: str, bucket: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    settings = Settings(home=tmp_path / "home", apps_dir=tmp_path / "apps", artifacts="s3", artifacts_bucket=bucket,
                        artifacts_prefix="ci/artifacts", s3_endpoint_url=moto_endpoint, aws_region="us-east-1")
    store = served_store(None, settings)
    assert isinstance(store, S3ArtifactStore) and store.aws_access_key_id == "testing"  # the EnvVar, resolved
    assert not (tmp_path / "home").exists()  # no local folder for an S3 store
    _store(moto_endpoint, bucket).put_file(app=APP, sha=SHA, name="logs/unit.log",
                                          path=_file(tmp_path, "u.log", "PASS\n"))
    app = cockpit_app(store, instance=functools.cache(dg.DagsterInstance.ephemeral), apps=[], ui_url="http://ui")
    with serve_artifacts(tmp_path, app) as served:
        assert served.get(f"/{APP}/{SHA}/logs/unit.log").text == "PASS\n"
        assert served.get("/_cockpit/").status == 200
        _refused(served.get(f"/{APP}/{SHA}/../../secret.txt"))


CONFIG = """\
stages:
  greet:
    kind: command
    command: [sh, -c, "echo hello from the stage"]
    needs: [node_dependencies]
"""


def test_a_stages_log_lands_in_s3(make_pipeline, moto_endpoint: str, bucket: str,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    pipe: Pipeline = make_pipeline(CONFIG)
    pipe.settings = dataclasses.replace(pipe.settings, artifacts="s3", artifacts_bucket=bucket,
                                        s3_endpoint_url=moto_endpoint, aws_region="us-east-1",
                                        artifacts_url="http://artifacts.test")
    sha = pipe.remote.commit("chore: a commit")
    result = pipe.materialize(sha, "source_checkout,node_dependencies,greet")
    assert result.success
    log = str(metadata_of(result, "greet")["log"])
    assert log == f"http://artifacts.test/{pipe.key}/{sha}/logs/greet.log"
    store = S3ArtifactStore(bucket=bucket, endpoint_url=moto_endpoint, region_name="us-east-1", **CREDS)
    assert store.prefix == "artifacts"  # the settings' default, as the run's store had it
    assert "hello from the stage" in (store.read_bytes(app=pipe.key, sha=sha, name="logs/greet.log") or b"").decode()
    assert not (pipe.settings.artifacts_dir / pipe.key / sha).exists()  # nothing on the local disk
    # The stage cache (still on the local disk) keeps the log fetched back from the bucket.
    cache = pipe.settings.stage_cache_dir
    assert list((cache / "manifests" / pipe.key / "greet").glob("*.json"))
    assert any(b"hello from the stage" in blob.read_bytes() for blob in (cache / "blobs" / "sha256").iterdir())


def test_an_unreachable_store_fails_the_run_naming_it(make_pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad input: a store nobody answers on fails the stage that writes to it, with the endpoint in the
    reason, and the run ends (failed, not stuck); nothing is kept on the local disk instead."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    closed = free_port()  # nothing listens there
    pipe: Pipeline = make_pipeline(CONFIG)
    pipe.settings = dataclasses.replace(pipe.settings, artifacts="s3", artifacts_bucket="nowhere",
                                        s3_endpoint_url=f"http://127.0.0.1:{closed}", aws_region="us-east-1")
    sha = pipe.remote.commit("chore: a commit")
    result = pipe.materialize(sha, "source_checkout,node_dependencies,greet")
    assert not result.success
    run = pipe.instance.get_run_by_id(result.run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
    failures = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failures, "no step failed"
    reason = str(failures[0].step_failure_data.error)
    assert f"127.0.0.1:{closed}" in reason, reason
    assert not (pipe.settings.artifacts_dir / pipe.key / sha).exists()
