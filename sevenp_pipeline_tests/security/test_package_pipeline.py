"""The package-and-secure half on the real sample app: buildah build, local registry push,
syft SBOM, OSV scans with gates, secret scan, signed provenance, promotion by tags."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from sevenp_pipeline.resource_set import build_resources
from sevenp_pipeline.resources.artifacts import sha256_file
from sevenp_pipeline.scanners import provenance as prov
from sevenp_pipeline.scanners.sarif import validate_sarif
from sevenp_pipeline_tests.conftest import SAMPLE_APP, Pipeline
from sevenp_pipeline_tests.forge.forge_api import ForgeAPI
from sevenp_pipeline_tests.gitutil import git
from sevenp_pipeline_tests.httpserver import http_server
from sevenp_pipeline_tests.results import check_verdicts, failure_text, materialized, metadata_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("buildah") or not shutil.which("docker-registry"),
                       reason="needs root, buildah and docker-registry (make system-deps installs them)"),
]

PACKAGE = ("source_checkout,node_dependencies,type_check_report,container_image,sbom,vulnerability_report,"
           "dependency_report,license_report,secret_scan,provenance,promoted_image")
# The package half is what these tests are about: of the declared stages only the install and one
# gated stage (promotion requires every declared gate to have passed) stay.
PACKAGE_CONFIG = """\
image: {dockerfile: Dockerfile}
stages:
  lint_report: null
  security_lint_report: null
  format_report: null
  unit_test_results: null
  integration_test_results: null
  api_test_results: null
  build_artifact: null
  api_docs: null
  e2e_test_results: null
  performance_report: null
"""
FAKE_AWS = ("aws_access_key_id = AKIAZ3MHQXK7T2LWJ5PA\n"
            "aws_secret_access_key = 9xQ2pL7vN4mK8rT1wZ6yB3cF5hJ0dS2aG7eU4iO1\n")


@pytest.fixture
def signing_key(monkeypatch: pytest.MonkeyPatch) -> str:
    private, public = prov.generate_keypair()
    monkeypatch.setenv("SEVENP_SIGNING_KEY", private)
    return public


@pytest.fixture
def sample(make_pipeline, signing_key: str):
    pipe: Pipeline = make_pipeline(PACKAGE_CONFIG, source=SAMPLE_APP, name="7p-education-api")
    yield pipe
    build_resources(pipe.settings)["registry"].stop()


def _npm_add(pipe: Pipeline, spec: str) -> None:
    subprocess.run(["npm", "install", "--package-lock-only", "--ignore-scripts", "--no-audit", "--no-fund",
                    "--save-exact", spec], cwd=pipe.remote.clone, check=True, capture_output=True)


def test_image_scans_gates_provenance_and_promotion(sample: Pipeline, signing_key: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    sha = sample.remote.commit("release candidate")
    result = sample.materialize(sha, PACKAGE)
    assert result.success, check_verdicts(result)
    image = metadata_of(result, "container_image")
    assert image["digest"].startswith("sha256:") and image["reused"] is False and image["layer_count"] >= 3
    assert metadata_of(result, "sbom")["component_count"] > 50
    vulns = metadata_of(result, "vulnerability_report")
    assert vulns["blocking"] == 0 and vulns["advisory_records"] > 5
    sarif = json.loads((sample.settings.home / "artifacts" / sample.key / sha / "reports" /
                        "vulnerability_report.sarif").read_text())
    validate_sarif(sarif)
    assert metadata_of(result, "license_report")["denied"] == 0
    assert metadata_of(result, "secret_scan")["secrets_in_source"] == 0
    promoted = metadata_of(result, "promoted_image")
    assert promoted["digest"] == image["digest"]
    # From the graph (not a push): the commit's own tag on its branch, never the branch's moving `develop`.
    assert promoted["tags"] == [f"develop-{sha[:7]}"] and promoted["moves_branch_tags"] is False
    stored = sample.settings.home / "artifacts" / sample.key / sha
    envelope = json.loads((stored / "provenance.intoto.json").read_text())
    statement = prov.verify(envelope, public_key_pem=signing_key, expected_subject_digest=image["digest"],
                            expected_commit=sha)
    assert statement["predicateType"] == "https://slsa.dev/provenance/v1"
    tampered = {**envelope, "payload": envelope["payload"][:-8] + "AAAAAAA="}
    with pytest.raises(prov.ProvenanceVerificationError):
        prov.verify(tampered, public_key_pem=signing_key, expected_subject_digest=image["digest"])

    # Same inputs (an empty commit): the image is found in the registry, not rebuilt; its SBOM and
    # secret scan are restored from the stage cache (same image digest, same tree), while the
    # vulnerability scan runs again (the advisories may have changed) on the restored SBOM.
    same = sample.remote.commit("no change")
    again = sample.materialize(same, "source_checkout,container_image,sbom,vulnerability_report,secret_scan")
    assert again.success, check_verdicts(again)
    assert metadata_of(again, "container_image")["reused"] is True
    assert metadata_of(again, "container_image")["digest"] == image["digest"]
    bom = metadata_of(again, "sbom")
    assert bom["restored_from"] == sha and bom["component_count"] == metadata_of(result, "sbom")["component_count"]
    assert f"/{same}/" in bom["cyclonedx_path"] and f"/{same}/" in bom["cyclonedx"]
    assert sha256_file(Path(bom["cyclonedx_path"])) == bom["cyclonedx_sha256"]
    assert "restored_from" not in metadata_of(again, "vulnerability_report")
    assert metadata_of(again, "vulnerability_report")["blocking"] == 0
    assert metadata_of(again, "secret_scan")["restored_from"] == sha
    assert check_verdicts(again)["secret_scan.no_secrets"] is True

    # Promotion needs every declared gate of the commit, not only those of its own run: without
    # the type check the image is not tagged, and the failure says which gate is missing.
    unchecked = sample.remote.commit("no type check yet")
    refused = sample.materialize(unchecked, PACKAGE.replace("type_check_report,", ""))
    assert not refused.success and "promoted_image" not in materialized(refused)
    text = failure_text(refused)
    assert "not promoted" in text and "type_check_report has not run for this commit" in text
    run = sample.instance.get_run_by_id(refused.run_id)
    assert run.tags["sevenp/promotion"] == "refused"

    # A known-vulnerable package in the image fails the gate, and the image is not promoted.
    _npm_add(sample, "lodash@4.17.15")
    bad_sha = sample.remote.commit("add lodash 4.17.15")
    bad = sample.materialize(bad_sha, PACKAGE)
    assert not bad.success
    checks = check_verdicts(bad)
    assert checks["vulnerability_report.no_blocking_vulnerabilities"] is False
    assert checks["dependency_report.no_blocking_vulnerabilities"] is False
    assert "GHSA-35jh-r3h4-6jhm" in metadata_of(bad, "vulnerability_report")["findings"]
    assert "promoted_image" not in materialized(bad)

    # An OpenVEX statement that the app is not affected turns that failure into a pass.
    sample.remote.write("security/vex.json", json.dumps({
        "@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://7p.example/vex/1", "author": "7P security",
        "timestamp": "2026-11-01T00:00:00Z", "version": 1,
        "statements": [{"vulnerability": {"name": vid}, "products": [{"@id": "pkg:npm/lodash@4.17.15"}],
                        "status": "not_affected", "justification": "vulnerable_code_not_in_execute_path"}
                       for vid in ("GHSA-35jh-r3h4-6jhm", "GHSA-p6mc-m468-83gw", "GHSA-29mw-wpgm-hmr9")],
    }))
    vex_pipe = sample
    (vex_pipe.settings.apps_dir / "7p-education-api.yaml").write_text(
        (vex_pipe.settings.apps_dir / "7p-education-api.yaml").read_text()
        + "security: {vex: [security/vex.json]}\n")
    ok = vex_pipe.materialize(sample.remote.commit("VEX: lodash template not used"), PACKAGE)
    assert ok.success, check_verdicts(ok)
    assert metadata_of(ok, "vulnerability_report")["suppressed"] >= 1

    # Without the signing key (the first commit's image and SBOM are there): found at the first stage
    # of a run, before any image is built ...
    monkeypatch.delenv("SEVENP_SIGNING_KEY")
    early = sample.materialize(sample.remote.commit("no key"), "source_checkout,node_dependencies")
    assert not early.success and "node_dependencies" not in materialized(early)
    assert "SEVENP_SIGNING_KEY is not set" in failure_text(early)
    # ... and by the signing step itself when it runs alone.
    unsigned = sample.materialize(sha, "provenance")
    assert not unsigned.success
    failure = next(e for e in unsigned.all_events if e.is_step_failure).step_failure_data
    assert "SEVENP_SIGNING_KEY" in failure.user_failure_data.description


def test_planted_aws_key_fails_the_secret_gate_and_a_later_promotion(sample: Pipeline) -> None:
    """A planted AWS key fails the secret gate (in the source and in the image). The security gates
    are in the app's gate registry: a promotion launched on its own, in a run of its own, reads the
    secret scan that failed in the commit's earlier run and refuses."""
    sample.remote.write("src/deploy-credentials.ts", f"export const creds = `\n{FAKE_AWS}`;\n")
    sha = sample.remote.commit("oops: credentials")
    first = sample.materialize(sha, PACKAGE)
    assert not first.success and "promoted_image" not in materialized(first)
    assert check_verdicts(first)["secret_scan.no_secrets"] is False
    meta = metadata_of(first, "secret_scan")
    # Found in the source and again in the image: tsc compiled the string into dist/.
    assert meta["secrets_in_source"] >= 1 and meta["secrets_in_image"] >= 1
    assert "AWS Access Key" in meta["findings"] and "AKIAZ3MHQXK7T2LWJ5PA" not in meta["findings"]
    # Every other gate ran and passed in that run: only the secret scan stands in the way.
    assert all(passed for name, passed in check_verdicts(first).items() if name != "secret_scan.no_secrets")
    alone = sample.materialize(sha, "promoted_image")
    assert not alone.success and "promoted_image" not in materialized(alone)
    text = failure_text(alone)
    assert "not promoted" in text and "secret_scan:no_secrets did not pass" in text
    assert "has not run" not in text and "type_check_report" not in text
    run = sample.instance.get_run_by_id(alone.run_id)
    assert run.tags["sevenp/promotion"] == "refused"


def _push_sensor_tick(pipe: Pipeline, cursor: str | None) -> dg.SensorResult:
    """A tick after the poll interval: an app with a forge reads webhooks every 2 s and polls git only
    every poll_interval_seconds, so the cursor's last poll is moved back."""
    if cursor:
        cursor = json.dumps({**json.loads(cursor), "polled_at": 0})
    defs = pipe.defs
    sensor = defs.resolve_sensor_def(f"{pipe.key}_git_push_sensor")
    with dg.build_sensor_context(instance=pipe.instance, cursor=cursor, resources=defs.resources,
                                 definitions=defs) as context:
        return sensor(context)


def _as_started_by(pipe: Pipeline, request: dg.RunRequest) -> dict[str, str]:
    """The tags the daemon gives a run it starts for the push sensor's request."""
    return {**request.tags, "dagster/sensor_name": f"{pipe.key}_git_push_sensor"}


@pytest.fixture
def forge_sample(make_pipeline, signing_key: str,
                 monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Pipeline, ForgeAPI]]:
    """The sample app with GitHub as its forge (the status endpoints served over HTTP: forge_api)."""
    api = ForgeAPI(repository="acme/7p-education-api", token="ghp_" + "5" * 36)
    monkeypatch.setenv("SEVENP_GITHUB_TOKEN", api.token)
    with http_server(api) as server:
        pipe: Pipeline = make_pipeline(
            PACKAGE_CONFIG + f"forge: {{kind: github, api_url: '{server.url}', repository: {api.repository}}}\n",
            source=SAMPLE_APP, name="7p-education-api")
        yield pipe, api
        build_resources(pipe.settings)["registry"].stop()


def _forge_tick(pipe: Pipeline) -> dg.SensorResult:
    defs = pipe.defs
    sensor = defs.resolve_sensor_def(f"{pipe.key}_forge_status_sensor")
    with dg.build_sensor_context(instance=pipe.instance, cursor=None, resources=defs.resources,
                                 definitions=defs) as context:
        return sensor(context)


def test_a_pull_request_gets_pr_n_and_a_release_tag_its_semver_tags(forge_sample: tuple[Pipeline, ForgeAPI]) -> None:
    sample, api = forge_sample
    cursor = _push_sensor_tick(sample, None).cursor
    clone = sample.remote.clone
    sha = sample.remote.commit("feat: proposed in pull request 7", push_to=None)
    git("push", "--quiet", "origin", f"{sha}:refs/pull/7/head", cwd=clone)
    opened = _push_sensor_tick(sample, cursor)
    (request,) = opened.run_requests
    result = sample.materialize(sha, PACKAGE, tags=_as_started_by(sample, request))
    assert result.success, failure_text(result)
    promoted = metadata_of(result, "promoted_image")
    assert promoted["tags"] == ["pr-7", f"sha-{sha[:7]}"] and promoted["moves_branch_tags"] is True
    assert any(ref.endswith(":pr-7") for ref in promoted["refs"]), promoted["refs"]
    # On the forge: the statuses, the vulnerability report in code scanning for the PR, the PR's comment.
    _forge_tick(sample)
    assert api.latest(sha)["security-scan"]["state"] == "success"
    (uploaded,) = api.sarifs
    assert (uploaded["commit_sha"], uploaded["ref"]) == (sha, "refs/pull/7/head")
    validate_sarif(uploaded["sarif"])
    (comment,) = api.comments.values()
    assert comment["pr"] == 7 and "| vulnerability_report | ✅ success |" in str(comment["body"])
    assert "| promoted_image | ✅ success | tags ['pr-7'" in str(comment["body"]), comment["body"]

    # Merged to main and tagged: the tag's run gets the semver tags (a release branch holds the commit).
    sample.remote.push("main")
    git("tag", "-a", "v1.4.0", "-m", "release 1.4.0", sha, cwd=clone)
    git("push", "--quiet", "origin", "refs/tags/v1.4.0", cwd=clone)
    pushed = _push_sensor_tick(sample, opened.cursor)
    keys = {r.run_key: r for r in pushed.run_requests}
    assert set(keys) == {f"main@{sha}", f"tag-v1.4.0@{sha}"}
    tagged = sample.materialize(sha, "promoted_image", tags=_as_started_by(sample, keys[f"tag-v1.4.0@{sha}"]))
    assert tagged.success, failure_text(tagged)
    assert metadata_of(tagged, "promoted_image")["tags"] == ["1.4.0", "1.4", f"sha-{sha[:7]}"]

    # A tag on a commit no release branch holds (anyone who can push a branch can push a tag) gets none.
    loose = sample.remote.commit("chore: on a feature branch", push_to="feature/loose")
    git("tag", "v9.9.9", loose, cwd=clone)
    git("push", "--quiet", "origin", "refs/tags/v9.9.9", cwd=clone)
    later = {r.run_key: r for r in _push_sensor_tick(sample, pushed.cursor).run_requests}
    refused = sample.materialize(loose, PACKAGE, tags=_as_started_by(sample, later[f"tag-v9.9.9@{loose}"]))
    assert refused.success, failure_text(refused)
    meta = metadata_of(refused, "promoted_image")
    assert meta["tags"] == [f"sha-{loose[:7]}"] and "no release branch" in meta["why_these_tags"]
