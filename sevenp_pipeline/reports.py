"""Parsers for what the stages' tools write: ESLint JSON, tsc and prettier output, JUnit XML,
istanbul coverage summaries, load-test reports. Each raises ReportError naming the file when it cannot read it."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from junitparser import Error, Failure, JUnitXml, Skipped
from junitparser.junitparser import JUnitXmlError

from sevenp_pipeline.models import Coverage, PerformanceSummary, TestCase, TestSummary

_TSC_ERROR = re.compile(r"(^|\): )error TS\d+:")
_PRETTIER_ISSUE = re.compile(r"^\[warn\] (?!Code style issues)(?P<file>\S.*)$")


class ReportError(Exception):
    """A report file is missing or unreadable."""


def _load_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"{what}: {path} was not written by the command") from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"{what}: cannot parse {path}: {exc}") from exc


def eslint_counts(path: Path, *, include_warnings: bool = False) -> tuple[int, int, list[tuple[str, int, str, str]]]:
    """(errors, warnings, [(file, line, rule, message)]) from ESLint's JSON format; the list holds
    the errors, and the warnings too when ``include_warnings``."""
    data = _load_json(path, "eslint report")
    if not isinstance(data, list):
        raise ReportError(f"eslint report: {path} is not ESLint JSON output (expected a list)")
    errors = sum(int(f.get("errorCount", 0)) for f in data)
    warnings = sum(int(f.get("warningCount", 0)) for f in data)
    problems = [
        (f.get("filePath", "?"), int(m.get("line", 0)), str(m.get("ruleId")), str(m.get("message", "")))
        for f in data
        for m in f.get("messages", [])
        if m.get("severity") == 2 or (include_warnings and m.get("severity") == 1)
    ]
    return errors, warnings, problems


def tsc_error_count(lines: Iterable[str]) -> int:
    return sum(1 for line in lines if _TSC_ERROR.search(line))


def prettier_issue_files(lines: Iterable[str]) -> list[str]:
    return [m.group("file") for line in lines if (m := _PRETTIER_ISSUE.match(line))]


def junit_summary(path: Path) -> TestSummary:
    try:
        xml = JUnitXml.fromfile(str(path))
    except FileNotFoundError:
        raise ReportError(f"junit: {path} was not written by the test command") from None
    except (JUnitXmlError, OSError, SyntaxError) as exc:
        raise ReportError(f"junit: cannot parse {path}: {exc}") from exc
    suites = [xml] if xml._tag == "testsuite" else list(xml)
    tests = failed = errors = skipped = 0
    duration = 0.0
    failures: list[TestCase] = []
    for suite in suites:
        duration += float(suite.time or 0)
        for case in suite:
            tests += 1
            results = list(case.result)
            if any(isinstance(r, Failure) for r in results):
                failed += 1
            elif any(isinstance(r, Error) for r in results):
                errors += 1
            elif any(isinstance(r, Skipped) for r in results):
                skipped += 1
                continue
            else:
                continue
            message = next((r.message or r.text or "" for r in results), "")
            stack = "\n".join(r.text or "" for r in results)
            failures.append(TestCase(suite=suite.name or "", name=case.name or "", message=message.strip(),
                                     location=stack_location(stack or message)))
    passed = tests - failed - errors - skipped
    return TestSummary(tests, passed, failed, errors, skipped, round(duration, 3), tuple(failures))


# A stack frame's or a diagnostic's source position: "(/app/src/x.test.ts:19:7)", "at file:///app/x.js:3",
# "location: '/app/x.js:7:3'". Frames in node_modules or node's own modules are the runner's, not the app's.
_FRAME = re.compile(r"(?:file://)?(?P<path>(?:/|\./|[\w@-])[^\s():'\"]*\.(?:[cm]?[jt]sx?)):(?P<line>\d+)(?::\d+)?")


def stack_location(text: str) -> str:
    """``path:line`` of the first frame of ``text`` in the app's own code ("" when there is none)."""
    for match in _FRAME.finditer(text or ""):
        path = match["path"]
        if "node_modules/" in path or path.startswith(("node:", "internal/")):
            continue
        return f"{path}:{match['line']}"
    return ""


def coverage_summary(path: Path) -> Coverage:
    data = _load_json(path, "coverage summary")
    try:
        total = data["total"]
        return Coverage(**{k: float(total[k]["pct"]) for k in ("lines", "statements", "branches", "functions")})
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportError(f"coverage summary: {path} has no total.<metric>.pct ({exc})") from exc


def performance_summary(path: Path) -> PerformanceSummary:
    """The load-test report a performance stage writes (the schema in README's stage kinds):
    ``{"requests": N, "requests_per_second": x, "latency_ms": {"p50": .., "p95": .., "p99": ..},
    "errors": N, "non_2xx": N}``."""
    data = _load_json(path, "performance report")
    try:
        latency = data["latency_ms"]
        return PerformanceSummary(
            requests=int(data["requests"]),
            requests_per_second=float(data["requests_per_second"]),
            p50_ms=float(latency["p50"]),
            p95_ms=float(latency["p95"]),
            p99_ms=float(latency["p99"]),
            errors=int(data.get("errors", 0)),
            non_2xx=int(data.get("non_2xx", 0)),
            tool=str(data.get("tool", "")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportError(f"performance report: {path} lacks requests, requests_per_second or "
                          f"latency_ms.p50/p95/p99 ({exc!r})") from exc
