"""Test results parsed from JUnit XML, gated by blocking checks (all pass; unit coverage)."""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
from dataclasses import dataclass

import dagster as dg

from sevenp_pipeline.config import AppConfig, StageName
from sevenp_pipeline.models import Coverage, TestSummary
from sevenp_pipeline.reports import ReportError, coverage_summary, junit_summary
from sevenp_pipeline.resources.artifacts import ArtifactStore
from sevenp_pipeline.resources.launch import LaunchOptions
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.services import TestServices
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.stages import Stage, StageSkipped, failure, md_table, not_run, stage_asset_args


@dataclass(frozen=True)
class TestStage:
    __test__ = False

    stage: StageName
    asset: str
    description: str


TEST_STAGES = (
    TestStage(StageName.unit_tests, "unit_test_results", "Unit tests with coverage (npm run test:unit)."),
    TestStage(StageName.integration_tests, "integration_test_results",
              "Integration tests against real PostgreSQL and Redis (npm run test:integration)."),
    TestStage(StageName.api_tests, "api_test_results", "API tests over HTTP (npm run test:api)."),
)


def build_test_assets(
    app: AppConfig, partitions: dg.PartitionsDefinition, upstream: list[dg.AssetsDefinition]
) -> list[dg.AssetsDefinition]:
    return [_test_asset(app, partitions, upstream, t) for t in TEST_STAGES if app.stage(t.stage).enabled]


def _test_asset(
    app: AppConfig, partitions: dg.PartitionsDefinition, upstream: list[dg.AssetsDefinition], t: TestStage
) -> dg.AssetsDefinition:
    key = dg.AssetKey([app.key, t.asset])
    spec = app.stage(t.stage)
    checks = [dg.AssetCheckSpec("all_tests_pass", asset=key, blocking=True,
                                description="every test passed and the command exited 0")]
    if spec.coverage:
        checks.append(dg.AssetCheckSpec(
            "coverage_threshold", asset=key, blocking=True,
            description=f"{app.gates.coverage_metric} coverage ≥ {app.gates.coverage_min}% (gates.coverage_min)"))

    @dg.asset(
        **stage_asset_args(app, partitions, key, "testing", t.description),
        deps=upstream,
        check_specs=checks,
        pool=f"{app.key}_services" if spec.services else None,
    )
    def _asset(
        context: dg.AssetExecutionContext,
        process_runner: ProcessRunner,
        workspaces: Workspaces,
        artifact_store: ArtifactStore,
        test_services: TestServices,
        launch_options: LaunchOptions,
    ) -> dg.MaterializeResult:
        stage = Stage(context, app, t.stage, process_runner, workspaces, artifact_store)
        if launch_options.skip_tests:
            return not_run(context, "skip_tests was set when the run was launched", [c.name for c in checks])
        stage.require_workspace()
        try:
            argv = stage.argv()
        except StageSkipped as skipped:
            return not_run(context, str(skipped), [c.name for c in checks])
        with stage.with_services(test_services):
            outcome = stage.run(argv)
        if outcome.timed_out:
            raise failure(f"{t.asset}: {outcome.describe()}; test services were torn down", outcome)
        try:
            summary = junit_summary(stage.report_path(spec.junit)) if spec.junit else None
        except ReportError as exc:
            raise failure(f"{t.asset}: {outcome.describe()}; {exc}", outcome) from exc
        if summary is None:
            if not outcome.ok:
                raise failure(f"{t.asset}: {outcome.describe()}", outcome)
            summary = TestSummary(0, 0, 0, 0, 0, outcome.duration, ())
        coverage = _coverage(stage, outcome) if spec.coverage else None
        meta = {
            **stage.base_metadata(outcome),
            "tests": summary.tests,
            "passed": summary.passed,
            "failed": summary.failed + summary.errors,
            "skipped": summary.skipped,
            "test_duration_s": summary.duration,
        }
        if spec.junit:
            meta["junit"] = dg.MetadataValue.url(stage.keep(stage.report_path(spec.junit), f"reports/{t.asset}.xml"))
        if summary.failures:
            redact = stage.redact
            meta["failures"] = dg.MetadataValue.md(redact(
                md_table(["suite", "test", "message"], [[f.suite, f.name, f.message] for f in summary.failures])))
        results = [_tests_pass(summary, outcome.ok, outcome.describe())]
        if coverage is not None:
            meta.update({f"coverage_{m}_pct": coverage.metric(m)
                         for m in ("lines", "statements", "branches", "functions")})
            results.append(_coverage_gate(app, coverage))
        context.log.info("%s: %d passed, %d failed, %d skipped%s", t.asset, summary.passed,
                         summary.failed + summary.errors, summary.skipped,
                         f", {app.gates.coverage_metric} coverage {coverage.metric(app.gates.coverage_metric)}%"
                         if coverage else "")
        return dg.MaterializeResult(
            data_version=dg.DataVersion(stage.data_version(argv, sorted(spec.services))),
            metadata=meta,
            check_results=results,
        )

    return _asset


def _coverage(stage: Stage, outcome) -> Coverage:
    path = stage.report_path(stage.spec.coverage)
    try:
        coverage = coverage_summary(path)
    except ReportError as exc:
        raise failure(f"{stage.name.value}: {outcome.describe()}; {exc}", outcome) from exc
    stage.keep(path, f"reports/{stage.name.value}-coverage-summary.json")
    return coverage


def _tests_pass(summary: TestSummary, exited_ok: bool, describe: str) -> dg.AssetCheckResult:
    reasons = []
    if summary.failed or summary.errors:
        reasons.append(f"{summary.failed + summary.errors} of {summary.tests} tests failed")
    if summary.tests == 0 and exited_ok:
        reasons.append("no test was run")
    if not exited_ok:
        reasons.append(describe)
    return dg.AssetCheckResult(
        check_name="all_tests_pass",
        passed=not reasons,
        severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(reasons) or f"{summary.passed} passed",
        metadata={"tests": summary.tests, "failed": summary.failed + summary.errors},
    )


def _coverage_gate(app: AppConfig, coverage: Coverage) -> dg.AssetCheckResult:
    value = coverage.metric(app.gates.coverage_metric)
    return dg.AssetCheckResult(
        check_name="coverage_threshold",
        passed=value >= app.gates.coverage_min,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{app.gates.coverage_metric} coverage {value}% (minimum {app.gates.coverage_min}%)",
        metadata={"coverage_pct": value, "minimum_pct": app.gates.coverage_min},
    )

