"""Code quality reports, each gated by a blocking asset check.

A stage whose tool ran and found problems still materializes its report (so the UI shows the
counts and the problems); its blocking check then fails and nothing downstream runs. A stage
whose tool could not run at all (missing script, crash, timeout) fails the step itself.
"""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg

from sevenp_pipeline.config import AppConfig, StageName
from sevenp_pipeline.reports import ReportError, eslint_counts, prettier_issue_files, tsc_error_count
from sevenp_pipeline.resources.artifacts import ArtifactStore
from sevenp_pipeline.resources.processes import Outcome, ProcessRunner
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.stages import Stage, StageSkipped, failure, md_table, not_run, stage_asset_args


@dataclass(frozen=True)
class Findings:
    """What a quality tool found: the gated count, extra figures and a table of problems."""

    count: int
    figures: dict[str, int]
    problems: list[list[str | int]]
    header: list[str]


def _eslint(stage: Stage, outcome: Outcome, *, gate_warnings: bool = False) -> Findings:
    errors, warnings, problems = eslint_counts(stage.report_path(stage.spec.report),
                                               include_warnings=gate_warnings)
    stage.keep(stage.report_path(stage.spec.report), f"reports/{stage.name.value}.json")
    rows = [[f.replace(str(stage.workspace.app_dir) + "/", ""), line, rule, msg] for f, line, rule, msg in problems]
    gated = errors + warnings if gate_warnings else errors
    return Findings(gated, {"errors": errors, "warnings": warnings}, rows, ["file", "line", "rule", "message"])


def _eslint_security(stage: Stage, outcome: Outcome) -> Findings:
    # eslint-plugin-security reports every finding as a warning: all of them count against the gate.
    return _eslint(stage, outcome, gate_warnings=True)


def _prettier(stage: Stage, outcome: Outcome) -> Findings:
    files = prettier_issue_files(_log_lines(outcome))
    return Findings(len(files), {"unformatted_files": len(files)}, [[f] for f in files], ["file"])


def _tsc(stage: Stage, outcome: Outcome) -> Findings:
    lines = _log_lines(outcome)
    errors = tsc_error_count(lines)
    rows = [[line] for line in lines if "error TS" in line]
    return Findings(errors, {"errors": errors}, rows, ["error"])


def _log_lines(outcome: Outcome) -> list[str]:
    if outcome.log_path and outcome.log_path.exists():
        return outcome.log_path.read_text(errors="replace").splitlines()
    return list(outcome.tail)


@dataclass(frozen=True)
class QualityStage:
    stage: StageName
    asset: str
    check: str
    gate: str  # the Gates field holding the allowed maximum
    parse: Callable[[Stage, Outcome], Findings]
    description: str


QUALITY_STAGES = (
    QualityStage(StageName.lint, "lint_report", "no_lint_errors", "max_lint_errors", _eslint,
                 "ESLint problems (npm run lint)."),
    QualityStage(StageName.lint_security, "security_lint_report", "no_security_lint_errors",
                 "max_security_lint_errors", _eslint_security,
                 "Security lint findings, warnings included (npm run lint:security)."),
    QualityStage(StageName.format, "format_report", "code_formatted", "max_format_issues", _prettier,
                 "Files not formatted as the formatter wants (npm run format:check)."),
    QualityStage(StageName.type_check, "type_check_report", "no_type_errors", "max_type_errors", _tsc,
                 "TypeScript compiler errors (npm run type-check)."),
)


def build_quality_assets(
    app: AppConfig, partitions: dg.PartitionsDefinition, upstream: dg.AssetsDefinition
) -> list[dg.AssetsDefinition]:
    return [_quality_asset(app, partitions, upstream, q) for q in QUALITY_STAGES if app.stage(q.stage).enabled]


def _quality_asset(
    app: AppConfig, partitions: dg.PartitionsDefinition, upstream: dg.AssetsDefinition, q: QualityStage
) -> dg.AssetsDefinition:
    key = dg.AssetKey([app.key, q.asset])
    limit = getattr(app.gates, q.gate)

    @dg.asset(
        **stage_asset_args(app, partitions, key, "quality", q.description),
        deps=[upstream],
        check_specs=[dg.AssetCheckSpec(q.check, asset=key, blocking=True,
                                       description=f"at most {limit} (gates.{q.gate})")],
    )
    def _asset(
        context: dg.AssetExecutionContext,
        process_runner: ProcessRunner,
        workspaces: Workspaces,
        artifact_store: ArtifactStore,
    ) -> dg.MaterializeResult:
        stage = Stage(context, app, q.stage, process_runner, workspaces, artifact_store)
        stage.require_workspace()
        try:
            argv = stage.argv()
        except StageSkipped as skipped:
            return not_run(context, str(skipped), [q.check])
        outcome = stage.run(argv)
        try:
            found = q.parse(stage, outcome)
        except ReportError as exc:
            raise failure(f"{q.asset}: {outcome.describe()}; {exc}", outcome) from exc
        if not outcome.ok and found.count == 0:
            raise failure(f"{q.asset}: {outcome.describe()} without reporting any problem", outcome)
        passed = found.count <= limit
        context.log.info("%s: %d problem(s), gate allows %d: %s", q.asset, found.count, limit,
                         "pass" if passed else "FAIL")
        return dg.MaterializeResult(
            data_version=dg.DataVersion(stage.data_version(argv)),
            metadata={
                **stage.base_metadata(outcome),
                **found.figures,
                "problems": dg.MetadataValue.md(stage.redact(md_table(found.header, found.problems))),
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=q.check,
                    passed=passed,
                    severity=dg.AssetCheckSeverity.ERROR,
                    description=f"{found.count} found, at most {limit} allowed",
                    metadata={"found": found.count, "allowed": limit},
                )
            ],
        )

    return _asset
