"""The CI assets end to end on a dependency-free app: real git, npm, node, postgres, redis."""

from __future__ import annotations

import dagster as dg

from sevenp_pipeline_tests.conftest import Pipeline


def _meta(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        if event.asset_key.path[-1] == asset:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise AssertionError(f"{asset} was not materialized")


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {
        f"{e.asset_check_evaluation_data.asset_key.path[-1]}.{e.asset_check_evaluation_data.check_name}":
            e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_clean_commit_passes_every_stage(pipeline: Pipeline) -> None:
    sha = pipeline.remote.push("develop")
    result = pipeline.materialize(sha)
    assert result.success
    assert _meta(result, "source_checkout")["commit"] == sha
    assert _meta(result, "lint_report")["errors"] == 0
    assert _meta(result, "unit_test_results")["passed"] == 3
    assert _meta(result, "unit_test_results")["coverage_lines_pct"] == 90.0
    assert _meta(result, "integration_test_results")["passed"] == 2
    assert len(_meta(result, "build_artifact")["sha256"]) == 64
    checks = _checks(result)
    assert checks and all(checks.values()), checks
