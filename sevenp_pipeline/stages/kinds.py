"""Stage kinds: one record per kind holding everything it does. Its schema (config/kinds.py: the
report field it requires, whether it can be cached), its family, its asset builder, its gates, what
it reads after its command ran, and its one-line summary and key figures. Adding a kind is one schema
entry there, one record here (and a parser in reports.py if it reads a new format).

A kind's ``evaluate`` gets the stage and the finished command. A tool that ran and found problems
still yields a report (the gates then fail and block what is downstream); a tool that could not run
at all (crashed, timed out, wrote no report) raises a step failure naming the command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from sevenp_pipeline.asset_helpers import failure, md_table
from sevenp_pipeline.config import AppConfig, StageSpec
from sevenp_pipeline.config.kinds import KIND_SCHEMAS, KindSchema
from sevenp_pipeline.models import TestCase
from sevenp_pipeline.reports import (
    ReportError,
    eslint_counts,
    performance_summary,
    prettier_issue_files,
    tsc_error_count,
)
from sevenp_pipeline.resources.artifacts import deterministic_tarball
from sevenp_pipeline.resources.processes import Outcome
from sevenp_pipeline.stages import gate_checks
from sevenp_pipeline.stages.commitlint import build_commitlint_asset
from sevenp_pipeline.stages.gate_checks import Gate
from sevenp_pipeline.stages.install import build_install_asset
from sevenp_pipeline.stages.runner import Stage
from sevenp_pipeline.stages.tool_asset import build_tool_asset
from sevenp_pipeline.test_reports import (
    coverage_of,
    failure_detail,
    relative_location,
    sniff_test_format,
    test_summary,
)

MAX_KEPT_ARTIFACTS = 40
MAX_SHOWN_ROWS = 1000  # problem lines held for the metadata table (which shows 50 and counts the rest)


@dataclass(frozen=True)
class Evaluation:
    """What a stage records: metadata, its gate results, and (for outputs) the content digest and the
    folders later stages read (``{folder in the app: name of the kept tarball}``)."""

    metadata: dict[str, Any]
    results: list[dg.AssetCheckResult] = field(default_factory=list)
    data_version: str | None = None
    outputs: dict[str, str] = field(default_factory=dict)
    failure_metadata: dict[str, Any] = field(default_factory=dict)  # for the step failure when a gate fails


AssetBuilder = Callable[[AppConfig, dg.PartitionsDefinition, str, Sequence[dg.AssetKey], "Kind"], dg.AssetsDefinition]


@dataclass(frozen=True)
class Kind:
    """What a stage kind does, next to its schema."""

    schema: KindSchema
    family: str  # the `sevenp/stage` tag: quality, testing, build, ...
    summary: str
    build: AssetBuilder  # (app, partitions, stage, deps, this kind) -> the stage's asset
    evaluate: Callable[[Stage, Outcome], Evaluation] | None = None  # what a tool asset reads after the command
    gates: tuple[Gate, ...] = ()  # in the order they are recorded
    figures: tuple[tuple[str, str], ...] = ()  # the demo table's key figures: (metadata key, format)
    skipped_by_skip_tests: bool = False  # the launch option skip_tests skips it
    app_port: bool = False  # gets APP_HOST/APP_PORT to start the built app on

    @property
    def name(self) -> str:
        return self.schema.name

    def gate_names(self, spec: StageSpec) -> list[str]:
        """The checks of a stage of this kind, as its ``gates:`` settings turn them on."""
        return [g.name for g in self.gates if g.applies(spec.gates)]

    def check_specs(self, app: AppConfig, stage: str, key: dg.AssetKey,
                    partitions: dg.PartitionsDefinition | None = None) -> list[dg.AssetCheckSpec]:
        return [g.spec(app, stage, key, partitions) for g in self.gates if g.applies(app.stage(stage).gates)]


def _log_lines(outcome: Outcome) -> Iterator[str]:
    """The command's output, a line at a time from its log (up to limits.output_mb, never read whole)."""
    if outcome.log_path and outcome.log_path.exists():
        with outcome.log_path.open(errors="replace") as lines:
            for line in lines:
                yield line.rstrip("\n")
    else:
        yield from outcome.tail


def _problems(stage: Stage, outcome: Outcome, gate: Gate, count: int, figures: dict[str, int],
              header: list[str], rows: list[list[Any]]) -> Evaluation:
    if not outcome.ok and count == 0:
        raise failure(f"{stage.name}: {outcome.describe()} without reporting any problem", outcome)
    allowed = gate_checks.max_problems(stage.app, stage.name)
    stage.context.log.info("%s: %d %s, gate allows %d", stage.name, count, gate.noun, allowed)
    return Evaluation(
        metadata={**figures, "problems": dg.MetadataValue.md(stage.redact(md_table(header, rows)))},
        results=[gate_checks.problems_result(gate, stage.app, stage.name, count)],
    )


def _lint(stage: Stage, outcome: Outcome) -> Evaluation:
    report = stage.report_file(stage.spec.report)
    try:
        errors, warnings, problems = eslint_counts(report, include_warnings=stage.spec.gates.count_warnings)
    except ReportError as exc:
        raise failure(f"{stage.name}: {outcome.describe()}; {exc}", outcome) from exc
    stage.keep(report, f"reports/{stage.name}.json")
    rows = [[f.replace(str(stage.workspace.app_dir) + "/", ""), line, rule, msg] for f, line, rule, msg in problems]
    counted = errors + warnings if stage.spec.gates.count_warnings else errors
    return _problems(stage, outcome, gate_checks.LINT_PROBLEMS, counted, {"errors": errors, "warnings": warnings},
                     ["file", "line", "rule", "message"], rows)


def _format(stage: Stage, outcome: Outcome) -> Evaluation:
    files = prettier_issue_files(_log_lines(outcome))
    return _problems(stage, outcome, gate_checks.UNFORMATTED_FILES, len(files), {"unformatted_files": len(files)},
                     ["file"], [[f] for f in files])


def _typecheck(stage: Stage, outcome: Outcome) -> Evaluation:
    errors, shown = 0, []
    for line in _log_lines(outcome):
        if tsc_error_count([line]):
            errors += 1
        if "error TS" in line and len(shown) <= MAX_SHOWN_ROWS:  # md_table shows 50, then "…and N more"
            shown.append([line])
    return _problems(stage, outcome, gate_checks.TYPE_ERRORS, errors, {"errors": errors}, ["error"], shown)


def _extension(path: Path, default: str) -> str:
    return "".join(path.suffixes[-1:]) or default


_EXTENSIONS = {"junit": ".xml", "tap": ".tap"}


def _test_report(stage: Stage, outcome: Outcome) -> tuple[Any, dict[str, Any]]:
    """The stage's test report read in its format: 'junit', 'report' (+ 'report_format', else sniffed),
    or the detected runner's (stages/test_runners.py; ava's TAP is the stage's own log)."""
    spec = stage.spec
    plan = stage.report_plan
    if spec.junit:
        rel, fmt, key = spec.junit, "junit", "junit"
    elif spec.report:
        rel, fmt, key = spec.report, spec.report_format, "report"
    else:
        assert plan is not None
        rel, fmt, key = plan.report, plan.fmt, "report"
    path = outcome.log_path if plan and not rel else stage.report_file(rel)
    assert path is not None
    try:
        fmt = fmt or sniff_test_format(path)
        summary = test_summary(path, fmt)
    except ReportError as exc:
        where = f"stages.{stage.name}.{key}" if not plan else f"{plan.runner}'s report, flags added by detection"
        if not outcome.ok:
            raise failure(f"{stage.name}: {outcome.describe()}; {exc}", outcome) from exc
        raise failure(f"{stage.name}: {exc} ({where})", outcome) from exc
    name = f"reports/{stage.name}{_EXTENSIONS.get(fmt or '', _extension(path, '.json'))}"
    meta: dict[str, Any] = {
        "tests": summary.tests,
        "passed": summary.passed,
        "failed": summary.failed + summary.errors,
        "skipped": summary.skipped,
        "test_duration_s": summary.duration,
        "report_format": fmt,
        key: dg.MetadataValue.url(stage.keep(path, name, redacted=not rel)),
    }
    if plan:
        meta["test_runner"] = plan.runner
    return summary, meta


def _test(stage: Stage, outcome: Outcome) -> Evaluation:
    spec = stage.spec
    if outcome.timed_out:
        raise failure(f"{stage.name}: {outcome.describe()}; test services were torn down", outcome)
    summary, meta = _test_report(stage, outcome)
    roots = (str(stage.workspace.app_dir),)
    failures = _failures_table(stage, summary.failures, roots) if summary.failures else None
    if failures is not None:
        meta["failures"] = failures
    results = [gate_checks.tests_result(summary, outcome.ok, outcome.describe(), roots=roots, redact=stage.redact)]
    coverage_note = ""
    if spec.coverage:
        path = stage.report_file(spec.coverage)
        if not path.exists() and not results[0].passed:
            # Some runners (vitest) write no coverage when a test failed: the test gate says why.
            if spec.gates.min_coverage is not None:
                results.append(gate_checks.no_coverage_result(f"no coverage report: {results[0].description}"))
        else:
            try:
                coverage = coverage_of(path)
            except ReportError as exc:
                raise failure(f"{stage.name}: {outcome.describe()}; {exc} (stages.{stage.name}.coverage)",
                              outcome) from exc
            stage.keep(path, f"reports/{stage.name}-coverage{_extension(path, '.json')}")
            meta.update({f"coverage_{m}_pct": coverage.metric(m)
                         for m in ("lines", "statements", "branches", "functions")})
            if spec.gates.min_coverage is not None:
                results.append(gate_checks.coverage_result(stage.app, stage.name, coverage))
                metric = spec.gates.coverage_metric
                coverage_note = f", {metric} coverage {coverage.metric(metric)}%"
    if spec.artifacts:
        meta.update(_artifacts(stage, stage.report_path(spec.artifacts)))
    stage.context.log.info("%s: %d passed, %d failed, %d skipped%s", stage.name, summary.passed,
                           summary.failed + summary.errors, summary.skipped, coverage_note)
    return Evaluation(metadata=meta, results=results)


_FAILURE_COLUMNS = dg.TableSchema(columns=[
    dg.TableColumn("test", "string", description="suite > test"),
    dg.TableColumn("failure", "string", description="what the assertion compared, or the first line of the error"),
    dg.TableColumn("at", "string", description="the first frame in the app's own code"),
    dg.TableColumn("message", "string", description="the runner's message, without colour codes or stack"),
])


def _failures_table(stage: Stage, cases: Sequence[TestCase], roots: tuple[str, ...]) -> dg.TableMetadataValue:
    """Every failed test as a table with a schema: the UI shows its cells as text, never as markdown
    (``__tests__`` stays ``__tests__``, ``Object.<anonymous>`` stays whole), and never cuts a path."""
    redact = stage.redact
    records = []
    for case in cases[:MAX_SHOWN_ROWS]:
        records.append(dg.TableRecord(data={
            "test": redact(" > ".join(p for p in (case.suite, case.name) if p)),
            "failure": redact(failure_detail(case.message)),
            "at": relative_location(case.location, roots),
            "message": redact(case.message)}))
    return dg.MetadataValue.table(records=records, schema=_FAILURE_COLUMNS)


def _artifacts(stage: Stage, folder: Path) -> dict[str, Any]:
    """Screenshots, traces and videos of failed tests, kept with the commit's other artifacts."""
    # Dotfiles are the runner's bookkeeping (Playwright's .last-run.json), not artifacts.
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")) \
        if folder.is_dir() else []
    kept = []
    for path in files[:MAX_KEPT_ARTIFACTS]:
        rel = path.relative_to(folder).as_posix()
        kept.append([rel, stage.keep(path, f"{stage.name}/{rel}")])
    meta: dict[str, Any] = {"failure_artifacts": len(files)}
    if kept:
        meta["failure_artifact_files"] = dg.MetadataValue.md(md_table(["file", "stored at"], kept))
        stage.context.log.info("%s: kept %d failure artifact(s) from %s", stage.name, len(kept), folder)
    return meta


def _performance(stage: Stage, outcome: Outcome) -> Evaluation:
    report = stage.report_file(stage.spec.report)
    try:
        perf = performance_summary(report)
    except ReportError as exc:
        raise failure(f"{stage.name}: {outcome.describe()}; {exc}", outcome) from exc
    if not outcome.ok:
        raise failure(f"{stage.name}: {outcome.describe()} (the load test could not measure)", outcome)
    stage.keep(report, f"reports/{stage.name}.json")
    stage.context.log.info("%s: %d requests, %.1f req/s, p95 %.1f ms, %d errors", stage.name, perf.requests,
                           perf.requests_per_second, perf.p95_ms, perf.errors + perf.non_2xx)
    return Evaluation(
        metadata={"requests": perf.requests, "requests_per_second": perf.requests_per_second,
                  "p50_ms": perf.p50_ms, "p95_ms": perf.p95_ms, "p99_ms": perf.p99_ms, "errors": perf.errors,
                  "non_2xx": perf.non_2xx, "tool": perf.tool},
        results=gate_checks.performance_results(stage.app, stage.name, perf),
    )


def _output(stage: Stage, outcome: Outcome) -> Evaluation:
    """build and docs: the output folder packed as a reproducible tarball; its digest is the data
    version, so a rebuild with identical output changes nothing downstream."""
    if not outcome.ok:
        raise failure(f"{stage.name}: {outcome.describe()}", outcome)
    if stage.spec.output_dir is None:
        return Evaluation(metadata={})
    out_dir = stage.report_path(stage.spec.output_dir)
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        raise failure(f"{stage.name}: {outcome.command} succeeded but wrote nothing to "
                      f"{stage.spec.output_dir}/ (stages.{stage.name}.output_dir)", outcome)
    tarball = stage.workspace.root / "artifacts" / f"{stage.name}-{out_dir.name}.tar.gz"
    digest = deterministic_tarball(out_dir, tarball, arcname=out_dir.name)
    files = sum(1 for p in out_dir.rglob("*") if p.is_file())
    uri = stage.keep(tarball, tarball.name)
    stage.context.log.info("%s: %s (%d files, %d bytes) sha256:%s", stage.name, tarball.name, files,
                           tarball.stat().st_size, digest)
    return Evaluation(
        metadata={"sha256": digest, "files": files, "size_bytes": tarball.stat().st_size,
                  "artifact": dg.MetadataValue.url(uri)},
        data_version=digest,
        outputs={stage.spec.output_dir: tarball.name},
    )


def _command(stage: Stage, outcome: Outcome) -> Evaluation:
    if not outcome.ok:
        raise failure(f"{stage.name}: {outcome.describe()}", outcome)
    return Evaluation(metadata={})


_TESTS = (("passed", "{} passed"), ("failed", "{} failed"))

RECORDS: tuple[Kind, ...] = (
    Kind(KIND_SCHEMAS["install"], family="source", build=build_install_asset,
         summary="The package manager's frozen-lockfile install, cached by lockfile.",
         figures=(("package_manager", "{}"), ("reused", "cache reused: {}"), ("packages", "{} packages"))),
    Kind(KIND_SCHEMAS["lint"], family="quality", build=build_tool_asset, evaluate=_lint,
         summary="ESLint's JSON report: errors (and warnings, if counted) against gates.max_problems.",
         gates=(gate_checks.LINT_PROBLEMS,), figures=(("errors", "{} errors"), ("warnings", "{} warnings"))),
    Kind(KIND_SCHEMAS["format"], family="quality", build=build_tool_asset, evaluate=_format,
         summary="Prettier's check output: unformatted files against gates.max_problems.",
         gates=(gate_checks.UNFORMATTED_FILES,), figures=(("unformatted_files", "{} unformatted files"),)),
    Kind(KIND_SCHEMAS["typecheck"], family="quality", build=build_tool_asset, evaluate=_typecheck,
         summary="tsc's output: type errors against gates.max_problems.",
         gates=(gate_checks.TYPE_ERRORS,), figures=(("errors", "{} type errors"),)),
    Kind(KIND_SCHEMAS["test"], family="testing", build=build_tool_asset, evaluate=_test,
         summary="JUnit XML and an optional coverage summary: every test passes, coverage over gates.min_coverage.",
         gates=(gate_checks.TESTS_PASS, gate_checks.COVERAGE),
         figures=(*_TESTS, ("coverage_lines_pct", "coverage {}%")), skipped_by_skip_tests=True),
    Kind(KIND_SCHEMAS["build"], family="build", build=build_tool_asset, evaluate=_output,
         summary="The output folder packed as a reproducible tarball; its digest is the data version.",
         figures=(("files", "{} files"), ("sha256", "sha256 {:.12}"))),
    Kind(KIND_SCHEMAS["docs"], family="build", build=build_tool_asset, evaluate=_output,
         summary="Like build: a documentation folder packed as a reproducible tarball.",
         figures=(("files", "{} files"),)),
    Kind(KIND_SCHEMAS["e2e"], family="testing", build=build_tool_asset, evaluate=_test,
         summary="JUnit XML of tests against the built app; failure artifacts kept.",
         gates=(gate_checks.TESTS_PASS, gate_checks.COVERAGE),
         figures=(*_TESTS, ("failure_artifacts", "{} failure artifacts")), skipped_by_skip_tests=True, app_port=True),
    Kind(KIND_SCHEMAS["performance"], family="testing", build=build_tool_asset, evaluate=_performance,
         summary="A load test against the built app: p95 latency budget and throughput floor.",
         gates=(gate_checks.LATENCY, gate_checks.THROUGHPUT),
         figures=(("p95_ms", "p95 {} ms"), ("requests_per_second", "{} req/s"), ("requests", "{} requests")),
         skipped_by_skip_tests=True, app_port=True),
    Kind(KIND_SCHEMAS["command"], family="custom", build=build_tool_asset, evaluate=_command,
         summary="A team's own command: its exit code only.", figures=(("exit_code", "exit {}"),)),
    Kind(KIND_SCHEMAS["commitlint"], family="quality", build=build_commitlint_asset,
         summary="Every pushed commit message follows Conventional Commits.", gates=(gate_checks.COMMITS,),
         figures=(("commits_checked", "{} commits checked"), ("violations", "{} not conventional"))),
)
"""One record per schema of config/kinds.py (test_kinds.py holds them to it)."""

KINDS: dict[str, Kind] = {kind.name: kind for kind in RECORDS}
