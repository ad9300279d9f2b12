"""The whole CI pipeline on the real sample app, configured as apps/7p-education-api.yaml does:
npm ci, ESLint, prettier, tsc, jest against real PostgreSQL and Redis, tsc build, docs, Playwright
E2E in headless Chromium and an autocannon load test against the built app."""

from __future__ import annotations

import pytest

from sevenp_pipeline_tests.conftest import SAMPLE_APP, Pipeline
from sevenp_pipeline_tests.results import check_verdicts, materialized, metadata_of

pytestmark = pytest.mark.integration

# The sample's stage settings (apps/7p-education-api.yaml) plus one custom stage after the E2E
# tests, to see that a failed E2E gate blocks what follows it.
SAMPLE_STAGES = """\
stages:
  e2e_test_results: {optional: false}
  performance_report: {optional: false, gates: {p95_ms: 2000}}
  release_gate: {kind: command, command: [node, -e, "console.log('after e2e')"], needs: [e2e_test_results]}
"""


def test_sample_app_passes_every_gate(make_pipeline) -> None:
    pipe: Pipeline = make_pipeline(SAMPLE_STAGES, source=SAMPLE_APP, name="7p-education-api")
    sha = pipe.remote.commit("release candidate")
    result = pipe.materialize(sha)
    assert result.success, check_verdicts(result)
    assert metadata_of(result, "node_dependencies")["packages"] > 100
    assert metadata_of(result, "node_dependencies")["package_manager"].startswith("npm")
    assert metadata_of(result, "lint_report")["errors"] == 0
    assert metadata_of(result, "security_lint_report")["warnings"] == 0
    assert metadata_of(result, "type_check_report")["errors"] == 0
    unit = metadata_of(result, "unit_test_results")
    assert unit["tests"] > 50 and unit["failed"] == 0 and unit["coverage_lines_pct"] >= 80
    assert metadata_of(result, "integration_test_results")["passed"] > 5
    assert metadata_of(result, "api_test_results")["passed"] > 5
    assert metadata_of(result, "build_artifact")["files"] > 5
    e2e = metadata_of(result, "e2e_test_results")
    assert e2e["passed"] >= 5 and e2e["failed"] == 0 and e2e["failure_artifacts"] == 0
    perf = metadata_of(result, "performance_report")
    assert perf["requests"] > 100 and perf["requests_per_second"] > 0 and 0 < perf["p95_ms"] <= 2000
    assert "release_gate" in materialized(result)
    assert all(check_verdicts(result).values())

    # A broken page: the E2E gate fails, a screenshot of the failure is kept, and the stage after
    # it does not run.
    page = pipe.remote.clone / "public" / "index.html"
    page.write_text(page.read_text().replace("course catalogue</h1>", "catalog</h1>"))
    bad = pipe.materialize(pipe.remote.commit("change the heading"))
    assert not bad.success
    assert check_verdicts(bad)["e2e_test_results.all_tests_pass"] is False
    broken = metadata_of(bad, "e2e_test_results")
    assert broken["failed"] >= 1 and broken["failure_artifacts"] >= 1
    assert ".png" in broken["failure_artifact_files"]
    assert "release_gate" not in materialized(bad)

    # A type error in a new commit: the type gate fails and nothing is built.
    page.write_text(page.read_text().replace("catalog</h1>", "course catalogue</h1>"))
    server = pipe.remote.clone / "src" / "lib" / "slug.ts"
    server.write_text(server.read_text() + "\nexport const broken: number = 'not a number';\n")
    bad = pipe.materialize(pipe.remote.commit("break the types"))
    assert not bad.success
    assert metadata_of(bad, "type_check_report")["errors"] == 1
    assert check_verdicts(bad)["type_check_report.no_type_errors"] is False
    assert metadata_of(bad, "node_dependencies")["reused"] is True
    assert "build_artifact" not in materialized(bad)
