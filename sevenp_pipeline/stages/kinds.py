"""Stage kinds: what each reads after its command ran, and the gate results it records.

A kind's ``evaluate`` gets the stage and the finished command. A tool that ran and found problems
still yields a report (the gates then fail and block what is downstream); a tool that could not run
at all (crashed, timed out, wrote no report) raises a step failure naming the command.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from sevenp_pipeline.asset_helpers import failure, md_table
from sevenp_pipeline.reports import (
    ReportError,
    coverage_summary,
    eslint_counts,
    junit_summary,
    performance_summary,
    prettier_issue_files,
    tsc_error_count,
)
from sevenp_pipeline.resources.artifacts import deterministic_tarball
from sevenp_pipeline.resources.processes import Outcome
from sevenp_pipeline.stages import gates
from sevenp_pipeline.stages.runner import Stage

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


@dataclass(frozen=True)
class Kind:
    name: str
    family: str  # the `sevenp/stage` tag: quality, testing, build, ...
    evaluate: Callable[[Stage, Outcome], Evaluation]
    skipped_by_skip_tests: bool = False  # the launch option skip_tests skips it
    app_port: bool = False  # gets APP_HOST/APP_PORT to start the built app on


def _log_lines(outcome: Outcome) -> Iterator[str]:
    """The command's output, a line at a time from its log (up to limits.output_mb, never read whole)."""
    if outcome.log_path and outcome.log_path.exists():
        with outcome.log_path.open(errors="replace") as lines:
            for line in lines:
                yield line.rstrip("\n")
    else:
        yield from outcome.tail


def _problems(stage: Stage, outcome: Outcome, count: int, figures: dict[str, int],
              header: list[str], rows: list[list[Any]]) -> Evaluation:
    if not outcome.ok and count == 0:
        raise failure(f"{stage.name}: {outcome.describe()} without reporting any problem", outcome)
    noun = gates.PROBLEM_GATES[stage.spec.kind][1]
    allowed = gates.max_problems(stage.app, stage.name)
    stage.context.log.info("%s: %d %s, gate allows %d", stage.name, count, noun, allowed)
    return Evaluation(
        metadata={**figures, "problems": dg.MetadataValue.md(stage.redact(md_table(header, rows)))},
        results=[gates.problems_result(stage.app, stage.name, count)],
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
    return _problems(stage, outcome, counted, {"errors": errors, "warnings": warnings},
                     ["file", "line", "rule", "message"], rows)


def _format(stage: Stage, outcome: Outcome) -> Evaluation:
    files = prettier_issue_files(_log_lines(outcome))
    return _problems(stage, outcome, len(files), {"unformatted_files": len(files)}, ["file"], [[f] for f in files])


def _typecheck(stage: Stage, outcome: Outcome) -> Evaluation:
    errors, shown = 0, []
    for line in _log_lines(outcome):
        if tsc_error_count([line]):
            errors += 1
        if "error TS" in line and len(shown) <= MAX_SHOWN_ROWS:  # md_table shows 50, then "…and N more"
            shown.append([line])
    return _problems(stage, outcome, errors, {"errors": errors}, ["error"], shown)


def _test(stage: Stage, outcome: Outcome) -> Evaluation:
    spec = stage.spec
    if outcome.timed_out:
        raise failure(f"{stage.name}: {outcome.describe()}; test services were torn down", outcome)
    try:
        summary = junit_summary(stage.report_file(spec.junit))
    except ReportError as exc:
        if not outcome.ok:
            raise failure(f"{stage.name}: {outcome.describe()}; {exc}", outcome) from exc
        raise failure(f"{stage.name}: {exc} (stages.{stage.name}.junit)", outcome) from exc
    meta: dict[str, Any] = {
        "tests": summary.tests,
        "passed": summary.passed,
        "failed": summary.failed + summary.errors,
        "skipped": summary.skipped,
        "test_duration_s": summary.duration,
        "junit": dg.MetadataValue.url(stage.keep(stage.report_file(spec.junit), f"reports/{stage.name}.xml")),
    }
    if summary.failures:
        meta["failures"] = dg.MetadataValue.md(stage.redact(
            md_table(["suite", "test", "message"], [[f.suite, f.name, f.message] for f in summary.failures])))
    results = [gates.tests_result(summary, outcome.ok, outcome.describe())]
    coverage_note = ""
    if spec.coverage:
        path = stage.report_file(spec.coverage)
        if not path.exists() and not results[0].passed:
            # Some runners (vitest) write no coverage when a test failed: the test gate says why.
            if spec.gates.min_coverage is not None:
                results.append(gates.no_coverage_result(f"no coverage report: {results[0].description}"))
        else:
            try:
                coverage = coverage_summary(path)
            except ReportError as exc:
                raise failure(f"{stage.name}: {outcome.describe()}; {exc} (stages.{stage.name}.coverage)",
                              outcome) from exc
            stage.keep(path, f"reports/{stage.name}-coverage-summary.json")
            meta.update({f"coverage_{m}_pct": coverage.metric(m)
                         for m in ("lines", "statements", "branches", "functions")})
            if spec.gates.min_coverage is not None:
                results.append(gates.coverage_result(stage.app, stage.name, coverage))
                metric = spec.gates.coverage_metric
                coverage_note = f", {metric} coverage {coverage.metric(metric)}%"
    if spec.artifacts:
        meta.update(_artifacts(stage, stage.report_path(spec.artifacts)))
    stage.context.log.info("%s: %d passed, %d failed, %d skipped%s", stage.name, summary.passed,
                           summary.failed + summary.errors, summary.skipped, coverage_note)
    return Evaluation(metadata=meta, results=results)


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
        results=gates.performance_results(stage.app, stage.name, perf),
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


KINDS: dict[str, Kind] = {
    "lint": Kind("lint", "quality", _lint),
    "format": Kind("format", "quality", _format),
    "typecheck": Kind("typecheck", "quality", _typecheck),
    "test": Kind("test", "testing", _test, skipped_by_skip_tests=True),
    "e2e": Kind("e2e", "testing", _test, skipped_by_skip_tests=True, app_port=True),
    "performance": Kind("performance", "testing", _performance, skipped_by_skip_tests=True, app_port=True),
    "build": Kind("build", "build", _output),
    "docs": Kind("docs", "build", _output),
    "command": Kind("command", "custom", _command),
}
