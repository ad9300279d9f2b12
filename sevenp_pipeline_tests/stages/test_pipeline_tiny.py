"""The CI assets end to end on a dependency-free app: real git, npm, node, postgres, redis."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest

from sevenp_pipeline.resources.git import GitClient, GitError
from sevenp_pipeline.scanners.provenance import generate_keypair
from sevenp_pipeline.stages.gates import stage_gates
from sevenp_pipeline.verdict import verdict
from sevenp_pipeline_tests.conftest import Pipeline
from sevenp_pipeline_tests.results import (
    check_status,
    check_verdicts,
    failed_stages,
    failure_text,
    materialized,
    metadata_of,
)


def test_clean_commit_passes_every_stage(pipeline: Pipeline) -> None:
    sha = pipeline.remote.push("develop")
    result = pipeline.materialize(sha)
    assert result.success
    assert metadata_of(result, "source_checkout")["commit"] == sha
    assert metadata_of(result, "lint_report")["errors"] == 0
    assert metadata_of(result, "unit_test_results")["passed"] == 3
    assert metadata_of(result, "unit_test_results")["coverage_lines_pct"] == 90.0
    assert metadata_of(result, "integration_test_results")["passed"] == 2
    assert len(metadata_of(result, "build_artifact")["sha256"]) == 64
    # The tiny app has no e2e or performance script: those optional stages are not applicable,
    # recorded as such, and their gates are neither passed nor failed: skipped, for this commit.
    for optional in ("e2e_test_results", "performance_report"):
        assert metadata_of(result, optional)["not_run"] == "not_applicable"
    checks = check_verdicts(result)
    assert len(checks) == 8 and all(checks.values()), checks
    assert not {k.split(".")[0] for k in checks} & {"e2e_test_results", "performance_report"}
    for stage, check in (("e2e_test_results", "all_tests_pass"), ("performance_report", "p95_latency_budget")):
        assert check_status(pipeline.instance, dg.AssetKey([pipeline.key, stage]), check, sha) == "SKIPPED"
    assert check_status(pipeline.instance, dg.AssetKey([pipeline.key, "lint_report"]), "no_lint_errors",
                        sha) == "SUCCEEDED"


def test_lint_error_stops_everything_downstream(pipeline: Pipeline) -> None:
    pipeline.remote.write("src/old.js", "var x = 1;\nmodule.exports = x;\n")
    sha = pipeline.remote.commit("use var")
    result = pipeline.materialize(sha)
    assert not result.success
    assert metadata_of(result, "lint_report")["errors"] == 1
    assert "no-var" in metadata_of(result, "lint_report")["problems"]
    assert check_verdicts(result)["lint_report.no_lint_errors"] is False
    assert not materialized(result) & {"unit_test_results", "integration_test_results", "build_artifact"}
    # Failed means failed: the stage did not materialize (Dagster counts the commit as failed for it),
    # its report is an observation, its check failed for this commit, and the run says why in one line.
    assert failed_stages(result) == {"lint_report"}
    assert check_status(pipeline.instance, dg.AssetKey([pipeline.key, "lint_report"]), "no_lint_errors",
                        sha) == "FAILED"
    assert "lint_report: 1 lint problems, at most 0 allowed" in failure_text(result)
    run = pipeline.instance.get_run_by_id(result.run_id)
    assert run.tags["sevenp/failure"] == "lint_report: 1 lint problems, at most 0 allowed"
    status = pipeline.instance.get_status_by_partition(
        dg.AssetKey([pipeline.key, "lint_report"]), [sha], pipeline.defs.get_assets_def(
            dg.AssetKey([pipeline.key, "lint_report"])).partitions_def)
    assert status[sha].value == "FAILED", status


def test_failing_test_and_low_coverage_gate_the_build(pipeline: Pipeline) -> None:
    pipeline.remote.write("tests/unit/broken.test.js", "exports.broken = () => { throw new Error('nope'); };\n")
    pipeline.remote.write("coverage-pct.txt", "42")
    sha = pipeline.remote.commit("break a test")
    result = pipeline.materialize(sha)
    assert not result.success
    meta = metadata_of(result, "unit_test_results")
    assert (meta["passed"], meta["failed"]) == (3, 1)
    assert [f["failure"] for f in meta["failures"]] == ["nope"], meta["failures"]
    checks = check_verdicts(result)
    assert checks["unit_test_results.all_tests_pass"] is False
    assert checks["unit_test_results.coverage_threshold"] is False
    assert checks["integration_test_results.all_tests_pass"] is True
    assert "build_artifact" not in materialized(result)


def test_missing_script_fails_naming_it_and_optional_stage_skips(make_pipeline) -> None:
    pipe = make_pipeline("stages:\n  type_check_report: {script: typecheck-strict}\n")
    pipe.remote.write("package.json", pipe.remote.clone.joinpath("package.json").read_text()
                      .replace('"build:docs": "node scripts/build.js docs"', '"docs-unused": "true"'))
    sha = pipe.remote.commit("drop build:docs")
    result = pipe.materialize(sha)
    assert not result.success
    assert "script 'typecheck-strict' is missing from package.json" in failure_text(result)
    docs = pipe.materialize(sha, "api_docs")
    assert docs.success and metadata_of(docs, "api_docs")["skipped"] is True


def test_missing_package_json_is_named(pipeline: Pipeline) -> None:
    (pipeline.remote.clone / "package.json").unlink()
    sha = pipeline.remote.commit("remove package.json")
    result = pipeline.materialize(sha, "source_checkout,node_dependencies")
    assert not result.success
    assert "package.json not found in commit" in failure_text(result)


def test_hanging_stage_is_killed_and_services_torn_down(make_pipeline) -> None:
    pipe = make_pipeline("stages:\n  integration_test_results: {timeout_seconds: 3}\n")
    pipe.remote.write("tests/integration/hang.test.js",
                      "exports.hang = () => new Promise(() => setInterval(() => {}, 1000));\n")
    sha = pipe.remote.commit("a test that never ends")
    assert pipe.materialize(sha, "source_checkout,node_dependencies").success
    before = _server_pids(pipe.settings.home)
    started = time.monotonic()
    result = pipe.materialize(sha, "integration_test_results")
    assert time.monotonic() - started < 60
    assert not result.success
    text = failure_text(result)
    assert "timed out after its 3 s limit; killed after " in text, text  # the limit, not the measured time
    assert "test services were torn down" in text
    assert _server_pids(pipe.settings.home) == before


def test_a_reports_link_out_of_the_checkout_removes_nothing_there(pipeline: Pipeline, tmp_path: Path) -> None:
    """A branch commits ``reports`` as a link to a host folder: the stale-report removal (as root) must
    not follow it, and the stage's report is refused rather than read from there."""
    outside = tmp_path / "host-folder"
    (outside / "junit").mkdir(parents=True)
    victim = outside / "junit" / "unit.xml"
    victim.write_text("the host's own file\n")
    (pipeline.remote.clone / "reports").symlink_to(outside)
    sha = pipeline.remote.commit("chore: reports is a link")
    assert pipeline.materialize(sha, "source_checkout,node_dependencies").success
    result = pipeline.materialize(sha, "unit_test_results")
    assert victim.read_text() == "the host's own file\n"
    assert not result.success
    assert "outside the checkout" in failure_text(result)


def test_skip_tests_launch_option_is_recorded_not_passed(pipeline: Pipeline) -> None:
    sha = pipeline.remote.push("develop")
    result = pipeline.materialize(
        sha, run_config={"resources": {"launch_options": {"config": {"skip_tests": True}}}})
    assert result.success
    assert metadata_of(result, "unit_test_results")["skipped"] is True
    # The skipped stages' gates are neither passed nor failed: skipped, for this commit.
    assert all(check_verdicts(result).values())
    assert not {k.split(".")[0] for k in check_verdicts(result)} & {"unit_test_results", "e2e_test_results"}
    for stage, check in (("unit_test_results", "all_tests_pass"), ("unit_test_results", "coverage_threshold")):
        assert check_status(pipeline.instance, dg.AssetKey([pipeline.key, stage]), check, sha) == "SKIPPED"
    assert "build_artifact" in materialized(result)
    # The run says which stages it skipped, and the commit's gates are not met: no promotion.
    run = pipeline.instance.get_run_by_id(result.run_id)
    assert set(run.tags["sevenp/skipped_stages"].split(",")) == {
        "unit_test_results", "integration_test_results", "api_test_results", "e2e_test_results",
        "performance_report"}
    unmet = {f.gate.family: f.why for f in verdict(pipeline.instance, stage_gates(pipeline.app), sha).failures}
    assert "skip_tests" in unmet["unit_test_results"] and "lint_report" not in unmet


def test_dependencies_reused_and_data_versions_stable_for_same_inputs(pipeline: Pipeline) -> None:
    first = pipeline.materialize(pipeline.remote.push("develop"))
    sha2 = pipeline.remote.commit("empty commit: same tree")
    second = pipeline.materialize(sha2)
    assert first.success and second.success
    assert metadata_of(second, "node_dependencies")["reused"] is True

    def versions(result):
        return {e.asset_key.path[-1]: e.materialization.tags.get("dagster/data_version")
                for e in result.get_asset_materialization_events()}

    v1, v2 = versions(first), versions(second)
    assert v1["lint_report"] == v2["lint_report"] and v1["build_artifact"] == v2["build_artifact"]
    source = "function add(a, b) {\n  return b + a;\n}\n\nmodule.exports = { add, mul: (a, b) => a * b };\n"
    pipeline.remote.write("src/math.js", source)
    third = pipeline.materialize(pipeline.remote.commit("change source"))
    assert versions(third)["lint_report"] != v1["lint_report"]


def _server_pids(home: Path) -> set[int]:
    """PostgreSQL and Redis servers whose folders are under ``home``'s services (not another test's)."""
    markers = {str(h / "services" / "svc-").encode() for h in (home, home.resolve())}
    pids = set()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and (cmd[0].endswith(b"/postgres") or b"redis-server" in cmd[0]) and \
                    any(marker in part for part in cmd for marker in markers):
                pids.add(int(proc.name))
    return pids


def test_no_leftover_servers_after_runs(pipeline: Pipeline) -> None:
    home = pipeline.settings.home
    assert pipeline.materialize(pipeline.remote.push("develop")).success
    started = _server_pids(home)
    assert started == set(), started


def test_one_failed_partition_can_be_materialized_alone(make_pipeline, stage_visible_dir: Path) -> None:
    flag = stage_visible_dir / "flag"
    flag.write_text("fail")
    flag.chmod(0o644)
    pipe = make_pipeline(f'env: {{TINY_FAIL_FLAG: "{flag}"}}\n')
    sha = pipe.remote.push("develop")
    first = pipe.materialize(sha)
    assert not first.success and check_verdicts(first)["unit_test_results.all_tests_pass"] is False
    flag.unlink()
    again = pipe.materialize(sha, "unit_test_results")
    assert again.success and materialized(again) == {"unit_test_results"}
    assert metadata_of(again, "unit_test_results")["failed"] == 0


def test_checkout_retries_a_remote_that_comes_back(pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """The remote is away for the first fetch and back before the retry: the step is retried, not failed.
    It comes back when that fetch has failed, not after a fixed delay a loaded machine may outlast."""
    sha = pipeline.remote.push("develop")
    away = Path(pipeline.remote.url + ".away")
    shutil.move(pipeline.remote.url, away)
    fetch = GitClient.fetch
    failed: list[str] = []

    def fetch_then_come_back(self: GitClient, *args, **kwargs) -> Path:
        try:
            return fetch(self, *args, **kwargs)
        except GitError as exc:
            if not failed:
                failed.append(str(exc))
                shutil.move(away, pipeline.remote.url)
            raise

    monkeypatch.setattr(GitClient, "fetch", fetch_then_come_back)
    result = pipeline.materialize(sha, "source_checkout")
    assert failed, "the first fetch did not fail: the remote was not away"
    assert result.success
    assert any(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)
    assert metadata_of(result, "source_checkout")["commit"] == sha


def test_missing_dockerfile_is_named(make_pipeline, monkeypatch) -> None:
    monkeypatch.setenv("SEVENP_SIGNING_KEY", generate_keypair()[0])  # an image app needs one from its first stage
    pipe = make_pipeline("image: {dockerfile: docker/Dockerfile.prod}\n")
    sha = pipe.remote.push("develop")
    result = pipe.materialize(sha, "source_checkout,container_image")
    assert not result.success
    assert "docker/Dockerfile.prod not found in tiny-app" in failure_text(result)
    assert "sbom" not in materialized(result)


def _failure_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    messages = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            data = event.step_failure_data
            messages.append((data.user_failure_data.description if data.user_failure_data else "") or
                            (data.error.message if data.error else ""))
    return messages


def test_a_report_linked_out_of_the_checkout_is_never_read(make_pipeline) -> None:
    """A stage is a branch's code: its report may be a link to a file only the orchestrator can read."""
    pipe = make_pipeline("""
        stages:
          lint_report: {command: [sh, -c, "mkdir -p reports && ln -sf /etc/shadow reports/lint.json"]}
        """)
    result = pipe.materialize(pipe.remote.push("develop"))
    assert not result.success
    assert any("reports/lint.json resolves to /etc/shadow, outside the checkout" in m
               for m in _failure_messages(result)), _failure_messages(result)


def test_the_apps_own_install_scripts_key_the_dependency_cache_by_tree(pipeline: Pipeline) -> None:
    """A postinstall may read any file of the commit: its tree is then shared only with equal trees."""
    manifest = json.loads((pipeline.remote.clone / "package.json").read_text())
    manifest["scripts"]["postinstall"] = "node -e \"require('fs').mkdirSync('node_modules/.made', {recursive: true})\""
    pipeline.remote.write("package.json", json.dumps(manifest, indent=2))
    first = pipeline.materialize(pipeline.remote.commit("feat: postinstall"), "source_checkout,node_dependencies")
    same_tree = pipeline.materialize(pipeline.remote.commit("chore: empty"), "source_checkout,node_dependencies")
    pipeline.remote.write("src/extra.js", "module.exports = 1;\n")
    other_tree = pipeline.materialize(pipeline.remote.commit("feat: another file"), "source_checkout,node_dependencies")
    assert first.success and same_tree.success and other_tree.success
    assert metadata_of(first, "node_dependencies")["reused"] is False
    assert metadata_of(same_tree, "node_dependencies")["reused"] is True
    assert metadata_of(other_tree, "node_dependencies")["reused"] is False
