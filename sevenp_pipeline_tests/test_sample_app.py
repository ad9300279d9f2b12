"""The whole CI pipeline on the real sample app: npm ci, ESLint, prettier, tsc, jest against
real PostgreSQL and Redis, tsc build, docs."""

from __future__ import annotations

import pytest

from sevenp_pipeline_tests.conftest import SAMPLE_APP, Pipeline
from sevenp_pipeline_tests.test_pipeline_tiny import _checks, _meta

pytestmark = pytest.mark.integration


def test_sample_app_passes_every_gate(make_pipeline) -> None:
    pipe: Pipeline = make_pipeline(source=SAMPLE_APP, name="7p-education-api")
    sha = pipe.remote.commit("release candidate")
    result = pipe.materialize(sha)
    assert result.success, _checks(result)
    assert _meta(result, "node_dependencies")["packages"] > 100
    assert _meta(result, "lint_report")["errors"] == 0
    assert _meta(result, "security_lint_report")["warnings"] == 0
    assert _meta(result, "type_check_report")["errors"] == 0
    unit = _meta(result, "unit_test_results")
    assert unit["tests"] > 50 and unit["failed"] == 0 and unit["coverage_lines_pct"] >= 80
    assert _meta(result, "integration_test_results")["passed"] > 5
    assert _meta(result, "api_test_results")["passed"] > 5
    assert _meta(result, "build_artifact")["files"] > 5
    assert all(_checks(result).values())

    # A type error in a new commit: the type gate fails and nothing is built.
    server = pipe.remote.clone / "src" / "lib" / "slug.ts"
    server.write_text(server.read_text() + "\nexport const broken: number = 'not a number';\n")
    bad = pipe.materialize(pipe.remote.commit("break the types"))
    assert not bad.success
    assert _meta(bad, "type_check_report")["errors"] == 1
    assert _checks(bad)["type_check_report.no_type_errors"] is False
    assert _meta(bad, "node_dependencies")["reused"] is True
