"""The gates a stage kind can bring: each gate's check name, when a stage's ``gates:`` settings turn it
on, its description, and the result it records. Which kind brings which gates is the kind's record
(stages/kinds.py); stages/gates.py reads them for a declared stage.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.config.models import StageGates
from sevenp_pipeline.models import Coverage, PerformanceSummary, TestSummary
from sevenp_pipeline.stages.commits import DEFAULT_TYPES, Violation
from sevenp_pipeline.test_reports import failure_line

NO_LINT_ERRORS = "no_lint_errors"
CODE_FORMATTED = "code_formatted"
NO_TYPE_ERRORS = "no_type_errors"
ALL_TESTS_PASS = "all_tests_pass"  # noqa: S105 (a check name)
COVERAGE_THRESHOLD = "coverage_threshold"
P95_LATENCY_BUDGET = "p95_latency_budget"
THROUGHPUT_FLOOR = "throughput_floor"
CONVENTIONAL_COMMITS = "conventional_commits"
SHOWN_FAILURES = 3  # failed tests named in the gate's one line (the failures table has them all)


def _always(_gates: StageGates) -> bool:
    return True


@dataclass(frozen=True)
class Gate:
    """One blocking check: its name, its description for a declared stage (``(app, stage)``), whether
    the stage's gate settings turn it on, and for a gate that counts problems, what it counts."""

    name: str
    describe: Callable[[AppConfig, str], str]
    applies: Callable[[StageGates], bool] = _always
    noun: str = ""

    def spec(self, app: AppConfig, stage: str, key: dg.AssetKey,
             partitions: dg.PartitionsDefinition | None = None) -> dg.AssetCheckSpec:
        """The blocking check; with ``partitions`` (the commits), evaluated per commit, so the asset's
        check badges and history say which commit passed or failed, not whichever ran last."""
        return dg.AssetCheckSpec(self.name, asset=key, blocking=True, description=self.describe(app, stage),
                                 partitions_def=partitions)


def _where(stage: str) -> str:
    return f"stages.{stage}.gates"


def max_problems(app: AppConfig, stage: str) -> int:
    value = app.stage(stage).gates.max_problems
    return 0 if value is None else value


def problem_gate(name: str, noun: str) -> Gate:
    """The gate of a kind that counts problems (``gates.max_problems`` allowed, default 0)."""
    return Gate(name, lambda app, stage: f"at most {max_problems(app, stage)} {noun} ({_where(stage)}.max_problems)",
                noun=noun)


def _coverage(app: AppConfig, stage: str) -> str:
    gates = app.stage(stage).gates
    return f"{gates.coverage_metric} coverage ≥ {gates.min_coverage}% ({_where(stage)}.min_coverage)"


def _p95(app: AppConfig, stage: str) -> str:
    return f"p95 latency ≤ {app.stage(stage).gates.p95_ms} ms and no failed request ({_where(stage)}.p95_ms)"


def _throughput(app: AppConfig, stage: str) -> str:
    floor = app.stage(stage).gates.min_requests_per_second
    return f"≥ {floor} requests/s ({_where(stage)}.min_requests_per_second)"


LINT_PROBLEMS = problem_gate(NO_LINT_ERRORS, "lint problems")
UNFORMATTED_FILES = problem_gate(CODE_FORMATTED, "unformatted files")
TYPE_ERRORS = problem_gate(NO_TYPE_ERRORS, "type errors")
TESTS_PASS = Gate(ALL_TESTS_PASS, lambda _app, _stage: "every test passed and the command exited 0")
COVERAGE = Gate(COVERAGE_THRESHOLD, _coverage, applies=lambda gates: gates.min_coverage is not None)
LATENCY = Gate(P95_LATENCY_BUDGET, _p95, applies=lambda gates: gates.p95_ms is not None)
THROUGHPUT = Gate(THROUGHPUT_FLOOR, _throughput, applies=lambda gates: gates.min_requests_per_second is not None)
COMMITS = Gate(CONVENTIONAL_COMMITS, lambda _app, _stage: "every pushed commit message follows Conventional Commits")


def problems_result(gate: Gate, app: AppConfig, stage: str, found: int) -> dg.AssetCheckResult:
    allowed = max_problems(app, stage)
    return dg.AssetCheckResult(
        check_name=gate.name, passed=found <= allowed, severity=dg.AssetCheckSeverity.ERROR,
        description=f"{found} {gate.noun}, at most {allowed} allowed", metadata={"found": found, "allowed": allowed})


def tests_result(summary: TestSummary, exited_ok: bool, describe: str, *, roots: tuple[str, ...] = (),
                 redact: Callable[[str], str] = str) -> dg.AssetCheckResult:
    """``all_tests_pass``; when it fails, its description is the line a developer acts on: "1 of 95
    tests failed: suite > test (expected 25, received 20) at src/x.test.ts:19" (the first three)."""
    reasons = []
    if summary.failed or summary.errors:
        named = redact("; ".join(failure_line(f, roots) for f in summary.failures[:SHOWN_FAILURES]))
        extra = len(summary.failures) - SHOWN_FAILURES
        more = f" (+{extra} more)" if extra > 0 else ""
        reasons.append(f"{summary.failed + summary.errors} of {summary.tests} tests failed"
                       + (f": {named}{more}" if named else ""))
    if summary.tests == 0 and exited_ok:
        reasons.append("no test was run")
    if not exited_ok and not (summary.failed or summary.errors):  # failed tests already say why it exited non-zero
        reasons.append(describe)
    return dg.AssetCheckResult(
        check_name=ALL_TESTS_PASS, passed=not reasons, severity=dg.AssetCheckSeverity.ERROR,
        description="; ".join(reasons) or f"{summary.passed} passed",
        metadata={"tests": summary.tests, "failed": summary.failed + summary.errors})


def coverage_result(app: AppConfig, stage: str, coverage: Coverage) -> dg.AssetCheckResult:
    gates = app.stage(stage).gates
    assert gates.min_coverage is not None
    value = coverage.metric(gates.coverage_metric)
    return dg.AssetCheckResult(
        check_name=COVERAGE_THRESHOLD, passed=value >= gates.min_coverage, severity=dg.AssetCheckSeverity.ERROR,
        description=f"{gates.coverage_metric} coverage {value}% (minimum {gates.min_coverage}%)",
        metadata={"coverage_pct": value, "minimum_pct": gates.min_coverage})


def no_coverage_result(reason: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(check_name=COVERAGE_THRESHOLD, passed=False, severity=dg.AssetCheckSeverity.ERROR,
                               description=reason)


def performance_results(app: AppConfig, stage: str, perf: PerformanceSummary) -> list[dg.AssetCheckResult]:
    gates = app.stage(stage).gates
    results = []
    if gates.p95_ms is not None:
        failed = perf.errors + perf.non_2xx
        problems = [f"p95 {perf.p95_ms} ms over the {gates.p95_ms} ms budget"] if perf.p95_ms > gates.p95_ms else []
        if failed:
            problems.append(f"{failed} of {perf.requests} requests failed (errors or non-2xx)")
        results.append(dg.AssetCheckResult(
            check_name=P95_LATENCY_BUDGET, passed=not problems, severity=dg.AssetCheckSeverity.ERROR,
            description="; ".join(problems) or f"p95 {perf.p95_ms} ms within {gates.p95_ms} ms",
            metadata={"p95_ms": perf.p95_ms, "budget_ms": gates.p95_ms, "failed_requests": failed}))
    if gates.min_requests_per_second is not None:
        ok = perf.requests_per_second >= gates.min_requests_per_second
        results.append(dg.AssetCheckResult(
            check_name=THROUGHPUT_FLOOR, passed=ok, severity=dg.AssetCheckSeverity.ERROR,
            description=f"{perf.requests_per_second} requests/s (floor {gates.min_requests_per_second})",
            metadata={"requests_per_second": perf.requests_per_second,
                      "floor": gates.min_requests_per_second}))
    return results


def commits_result(checked: int, violations: Sequence[Violation]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=CONVENTIONAL_COMMITS, passed=not violations, severity=dg.AssetCheckSeverity.ERROR,
        description=(f"{len(violations)} of {checked} commit message(s) do not follow Conventional Commits: "
                     + "; ".join(f"{v.sha[:8]} {v.problem}" for v in violations[:5])) if violations
        else f"{checked} commit message(s) follow Conventional Commits",
        metadata={"checked": checked, "violations": len(violations)})


def commit_types(app: AppConfig, stage: str) -> tuple[str, ...]:
    return tuple(app.stage(stage).gates.commit_types or DEFAULT_TYPES)
