"""Every gate of the declared stages, by name: the blocking asset checks a stage's kind brings, the
results they record, and the stage graph's entries in the app's gate registry (``verdict.py``).

A gate is a blocking check: when it fails, nothing downstream runs in that run. A later run (a
re-execution, a promotion launched by hand) reads the commit's result through
:func:`sevenp_pipeline.verdict.verdict`.
"""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.models import Coverage, PerformanceSummary, TestSummary
from sevenp_pipeline.stages.commits import DEFAULT_TYPES, Violation
from sevenp_pipeline.verdict import Gates

NO_LINT_ERRORS = "no_lint_errors"
CODE_FORMATTED = "code_formatted"
NO_TYPE_ERRORS = "no_type_errors"
ALL_TESTS_PASS = "all_tests_pass"  # noqa: S105 (a check name)
COVERAGE_THRESHOLD = "coverage_threshold"
P95_LATENCY_BUDGET = "p95_latency_budget"
THROUGHPUT_FLOOR = "throughput_floor"
CONVENTIONAL_COMMITS = "conventional_commits"

# The check that counts problems, per kind, and the noun for what it counts.
PROBLEM_GATES: dict[str, tuple[str, str]] = {
    "lint": (NO_LINT_ERRORS, "lint problems"),
    "format": (CODE_FORMATTED, "unformatted files"),
    "typecheck": (NO_TYPE_ERRORS, "type errors"),
}


def gate_names(app: AppConfig, stage: str) -> list[str]:
    """The checks of one declared stage, in the order they are recorded."""
    spec = app.stage(stage)
    gates = spec.gates
    if spec.kind in PROBLEM_GATES:
        return [PROBLEM_GATES[spec.kind][0]]
    if spec.kind in ("test", "e2e"):
        return [ALL_TESTS_PASS, *([COVERAGE_THRESHOLD] if gates.min_coverage is not None else [])]
    if spec.kind == "performance":
        return [*([P95_LATENCY_BUDGET] if gates.p95_ms is not None else []),
                *([THROUGHPUT_FLOOR] if gates.min_requests_per_second is not None else [])]
    if spec.kind == "commitlint":
        return [CONVENTIONAL_COMMITS]
    return []


def check_specs(app: AppConfig, stage: str, key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    spec = app.stage(stage)
    gates = spec.gates
    where = f"stages.{stage}.gates"
    described = {
        ALL_TESTS_PASS: "every test passed and the command exited 0",
        COVERAGE_THRESHOLD: f"{gates.coverage_metric} coverage ≥ {gates.min_coverage}% ({where}.min_coverage)",
        P95_LATENCY_BUDGET: f"p95 latency ≤ {gates.p95_ms} ms and no failed request ({where}.p95_ms)",
        THROUGHPUT_FLOOR: f"≥ {gates.min_requests_per_second} requests/s ({where}.min_requests_per_second)",
        CONVENTIONAL_COMMITS: "every pushed commit message follows Conventional Commits",
    }
    if spec.kind in PROBLEM_GATES:
        described[PROBLEM_GATES[spec.kind][0]] = (f"at most {max_problems(app, stage)} {PROBLEM_GATES[spec.kind][1]}"
                                                  f" ({where}.max_problems)")
    return [dg.AssetCheckSpec(name, asset=key, blocking=True, description=described[name])
            for name in gate_names(app, stage)]


def max_problems(app: AppConfig, stage: str) -> int:
    value = app.stage(stage).gates.max_problems
    return 0 if value is None else value


def problems_result(app: AppConfig, stage: str, found: int) -> dg.AssetCheckResult:
    kind = app.stage(stage).kind
    check, noun = PROBLEM_GATES[kind]
    allowed = max_problems(app, stage)
    return dg.AssetCheckResult(
        check_name=check, passed=found <= allowed, severity=dg.AssetCheckSeverity.ERROR,
        description=f"{found} {noun}, at most {allowed} allowed", metadata={"found": found, "allowed": allowed})


def tests_result(summary: TestSummary, exited_ok: bool, describe: str) -> dg.AssetCheckResult:
    reasons = []
    if summary.failed or summary.errors:
        reasons.append(f"{summary.failed + summary.errors} of {summary.tests} tests failed")
    if summary.tests == 0 and exited_ok:
        reasons.append("no test was run")
    if not exited_ok:
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


def stage_gates(app: AppConfig) -> Gates:
    """The gates of the declared stages, in the stage graph's order, for the app's registry."""
    gates = Gates()
    for stage in app.stage_names():
        gates += Gates.of(check_specs(app, stage, dg.AssetKey([app.key, stage])), family=stage)
    return gates
