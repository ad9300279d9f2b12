"""Test reports in the formats runners write with no extra package, and coverage in the formats
istanbul and v8 write: each read into the same :class:`TestSummary` / :class:`Coverage`.

- ``junit``: JUnit XML (jest-junit, vitest ``--reporter=junit``, node ``--test-reporter=junit``, Playwright);
- ``jest-json``: jest ``--json --outputFile``; ``vitest-json``: vitest ``--reporter=json`` (jest's
  shape: ``numTotalTests`` and ``testResults[].assertionResults[]``);
- ``mocha-json``: mocha ``--reporter json`` (``stats`` and ``tests``/``failures``/``pending``);
- ``tap``: TAP 13 and 14 (ava ``--tap``, node ``--test-reporter=tap``). Written here rather than with
  tap.py, which reads neither TAP 14's indented subtests nor YAML blocks as node writes them: the
  leaves of the subtest tree are the tests (a suite's own ``not ok`` line is not counted again);
  ``# SKIP`` is skipped, a failing ``# TODO`` is not a failure, ``Bail out!`` is one, lines that are
  not TAP are ignored (the TAP may be a stage log with other output around it).

Coverage: istanbul's ``json-summary``, its raw ``coverage-final.json`` (the totals computed the way
its summary does) and ``lcov.info`` (which has no statements: lines stand for them).
Every reader raises :class:`ReportError` naming the file and the format it expected.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from sevenp_pipeline.models import Coverage, TestCase, TestSummary
from sevenp_pipeline.reports import ReportError, coverage_summary, junit_summary, stack_location

TEST_FORMATS: tuple[str, ...] = ("junit", "jest-json", "vitest-json", "mocha-json", "tap")
COVERAGE_FORMATS: tuple[str, ...] = ("json-summary", "istanbul-json", "lcov")
_EXPECTED = {
    "junit": "JUnit XML", "jest-json": "jest's --json output", "vitest-json": "vitest's json reporter output",
    "mocha-json": "mocha's json reporter output", "tap": "TAP 13/14",
}
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_TAP_LINE = re.compile(r"^(?P<indent>\s*)(?P<ok>not ok|ok)\b\s*(?P<num>\d+)?\s*(?:-\s*)?(?P<desc>[^#]*?)\s*"
                       r"(?:#\s*(?P<directive>SKIP|TODO)\b.*)?$", re.I)
_MESSAGE_LINES = 6


def _text(path: Path, fmt: str) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        raise ReportError(f"{fmt}: {path} was not written by the test command "
                          f"(expected {_EXPECTED.get(fmt, fmt)})") from None
    except OSError as exc:
        raise ReportError(f"{fmt}: cannot read {path}: {exc}") from exc


def _json(path: Path, fmt: str) -> Any:
    try:
        return json.loads(_text(path, fmt))
    except ValueError as exc:
        raise ReportError(f"{fmt}: cannot parse {path}: {exc} (expected {_EXPECTED[fmt]})") from exc


def _message(text: str) -> str:
    """The first meaningful lines of a failure message: no colour codes, no stack frames."""
    lines = [line.rstrip() for line in _ANSI.sub("", text or "").splitlines()]
    kept = [line for line in lines if line.strip() and not line.strip().startswith("at ")]
    return "\n".join(kept[:_MESSAGE_LINES]).strip()


def sniff_test_format(path: Path) -> str:
    """Which of :data:`TEST_FORMATS` ``path`` holds, from its content."""
    text = _text(path, "report").lstrip("\ufeff \t\r\n")
    if text.startswith("<"):
        return "junit"
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ReportError(f"report: cannot parse {path} as JSON: {exc}") from exc
        if isinstance(data, dict) and "numTotalTests" in data and "testResults" in data:
            # jest also writes wasInterrupted and openHandles; vitest's reporter does not
            return "jest-json" if "wasInterrupted" in data or "openHandles" in data else "vitest-json"
        if isinstance(data, dict) and isinstance(data.get("stats"), dict) and "tests" in data:
            return "mocha-json"
    elif any(_TAP_LINE.match(line) for line in text.splitlines()):
        return "tap"
    raise ReportError(f"report: {path} is none of the test report formats read here "
                      f"({', '.join(TEST_FORMATS)}): set report_format, or point report at the runner's report")


def test_summary(path: Path, fmt: str | None = None) -> TestSummary:
    """The counts and failing tests of the report at ``path`` in ``fmt`` (None: sniffed)."""
    fmt = fmt or sniff_test_format(path)
    if fmt == "junit":
        return junit_summary(path)
    if fmt in ("jest-json", "vitest-json"):
        return _jest(path, fmt)
    if fmt == "mocha-json":
        return _mocha(path)
    if fmt == "tap":
        return tap_summary(_text(path, "tap"), str(path))
    raise ReportError(f"{path}: unknown report format '{fmt}' (known: {', '.join(TEST_FORMATS)})")


test_summary.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


def _jest(path: Path, fmt: str) -> TestSummary:
    data = _json(path, fmt)
    try:
        files = data["testResults"]
        cases = [(file, case) for file in files for case in file["assertionResults"]]
        failed = [(file, c) for file, c in cases if c["status"] == "failed"]
        skipped = sum(1 for _, c in cases if c["status"] in ("pending", "skipped", "todo", "disabled"))
        # A file that failed to run (syntax error, missing module) has no assertion results.
        broken = [file for file in files if file.get("status") == "failed" and not file["assertionResults"]]
        duration = sum(max(0, (f.get("endTime") or 0) - (f.get("startTime") or 0)) for f in files) / 1000
    except (KeyError, TypeError) as exc:
        raise ReportError(f"{fmt}: {path} lacks testResults[].assertionResults[].status ({exc!r}; "
                          f"expected {_EXPECTED[fmt]})") from exc
    failures = [TestCase(suite=" > ".join(c.get("ancestorTitles") or []) or Path(str(f.get("name", ""))).name,
                         name=str(c.get("title") or c.get("fullName") or ""),
                         message=_message("\n".join(c.get("failureMessages") or [])),
                         location=stack_location("\n".join(c.get("failureMessages") or [])))
                for f, c in failed]
    failures += [TestCase(suite=Path(str(f.get("name", ""))).name, name="(test file failed to run)",
                          message=_message(f.get("message", ""))) for f in broken]
    tests = len(cases)
    return TestSummary(tests, tests - len(failed) - skipped, len(failed), len(broken), skipped,
                       round(duration, 3), tuple(failures))


def _mocha(path: Path) -> TestSummary:
    data = _json(path, "mocha-json")
    try:
        stats = data["stats"]
        failures = [TestCase(suite=str(f.get("fullTitle", ""))[: -len(f.get("title", ""))].strip()
                             if f.get("title") else "", name=str(f.get("title", "")),
                             message=_message((f.get("err") or {}).get("message", "")),
                             location=stack_location(str((f.get("err") or {}).get("stack", ""))))
                    for f in data.get("failures", [])]
        tests, passed, pending = int(stats["tests"]), int(stats["passes"]), int(stats.get("pending", 0))
        # A hook failure ("before all" hook) is in failures but not among the tests.
        failed = int(stats["failures"])
        duration = float(stats.get("duration", 0)) / 1000
    except (KeyError, TypeError, ValueError) as exc:
        raise ReportError(f"mocha-json: {path} lacks stats.tests/passes/failures ({exc!r}; "
                          f"expected {_EXPECTED['mocha-json']})") from exc
    hooks = max(0, failed - (tests - passed - pending))
    return TestSummary(tests + hooks, passed, failed, 0, pending, round(duration, 3), tuple(failures))


def tap_summary(text: str, where: str = "TAP") -> TestSummary:
    """TAP 13/14 from ``text`` (a file's, or a stage log's with other lines around the TAP)."""
    points: list[dict[str, Any]] = []
    lines = text.splitlines()
    bailed = ""
    index = 0
    while index < len(lines):
        line = _ANSI.sub("", lines[index])
        index += 1
        if line.strip().startswith("Bail out!"):
            bailed = line.strip()[len("Bail out!"):].strip() or "bailed out"
            continue
        match = _TAP_LINE.match(line)
        if not match:
            continue
        point = {"ok": match["ok"].lower() == "ok", "desc": match["desc"].strip(), "depth": len(match["indent"]),
                 "directive": (match["directive"] or "").upper(), "yaml": []}
        if index < len(lines) and lines[index].strip() == "---":  # its YAML block, up to "..."
            index += 1
            while index < len(lines) and lines[index].strip() != "...":
                point["yaml"].append(lines[index].strip())
                index += 1
            index += 1
        points.append(point)
    if not points and not bailed:
        raise ReportError(f"tap: no test lines ('ok N' / 'not ok N') in {where} (expected TAP 13/14)")
    # A point is a leaf when the point before it is not deeper (its subtests come before it in TAP 14).
    leaves = [p for i, p in enumerate(points) if i == 0 or points[i - 1]["depth"] <= p["depth"]]
    skipped = sum(1 for p in leaves if p["directive"] == "SKIP")
    failed = [p for p in leaves if not p["ok"] and p["directive"] not in ("SKIP", "TODO")]
    failures = [TestCase(suite="", name=p["desc"], message=_yaml_message(p["yaml"]),
                         location=stack_location("\n".join(p["yaml"]))) for p in failed]
    if bailed:
        failures.append(TestCase(suite="", name="Bail out!", message=bailed))
    errors = 1 if bailed else 0
    return TestSummary(len(leaves) + errors, len(leaves) - len(failed) - skipped, len(failed), errors, skipped,
                       0.0, tuple(failures))


def _yaml_message(block: list[str]) -> str:
    """The readable part of a TAP YAML diagnostic: error/message, and expected/actual or a diff."""
    keep = [line for line in block if line.split(":", 1)[0] in
            ("error", "message", "expected", "actual", "name", "operator", "location", "at")
            or line.startswith(("-", "+"))]
    return _message("\n".join(line for line in keep if line not in ("message: ''",)))


def coverage_of(path: Path) -> Coverage:
    """Coverage totals from istanbul's json-summary, its coverage-final.json, or lcov.info."""
    text = _text(path, "coverage")
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ReportError(f"coverage: cannot parse {path}: {exc} (expected istanbul's JSON)") from exc
        if isinstance(data, dict) and "total" in data:
            return coverage_summary(path)
        return _istanbul_final(data, path)
    if re.search(r"^(SF|LF|DA):", text, re.M):
        return _lcov(text, path)
    raise ReportError(f"coverage: {path} is none of {', '.join(COVERAGE_FORMATS)} "
                      f"(istanbul's coverage-summary.json, coverage-final.json, lcov.info)")


def _pct(covered: int, total: int) -> float:
    return 100.0 if total == 0 else round(100.0 * covered / total, 2)


def _istanbul_final(data: Any, path: Path) -> Coverage:
    totals = {"lines": [0, 0], "statements": [0, 0], "branches": [0, 0], "functions": [0, 0]}
    try:
        for entry in data.values():
            statements = entry["s"]
            totals["statements"][0] += sum(1 for n in statements.values() if n > 0)
            totals["statements"][1] += len(statements)
            functions = entry["f"]
            totals["functions"][0] += sum(1 for n in functions.values() if n > 0)
            totals["functions"][1] += len(functions)
            arms = [n for counts in entry["b"].values() for n in counts]
            totals["branches"][0] += sum(1 for n in arms if n > 0)
            totals["branches"][1] += len(arms)
            lines: dict[int, int] = {}  # istanbul's line coverage: a line's statements' highest count
            for key, count in statements.items():
                line = int(entry["statementMap"][key]["start"]["line"])
                lines[line] = max(lines.get(line, 0), count)
            totals["lines"][0] += sum(1 for n in lines.values() if n > 0)
            totals["lines"][1] += len(lines)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise ReportError(f"coverage: {path} is not istanbul's coverage-final.json (per file s, f, b, "
                          f"statementMap: {exc!r})") from exc
    return Coverage(**{name: _pct(*counts) for name, counts in totals.items()})


def _lcov(text: str, path: Path) -> Coverage:
    sums = dict.fromkeys(("LF", "LH", "FNF", "FNH", "BRF", "BRH"), 0)
    try:
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key in sums:
                sums[key] += int(value)
    except ValueError as exc:
        raise ReportError(f"coverage: {path}: a bad lcov total ({exc})") from exc
    lines = _pct(sums["LH"], sums["LF"])
    return Coverage(lines=lines, statements=lines, branches=_pct(sums["BRH"], sums["BRF"]),
                    functions=_pct(sums["FNH"], sums["FNF"]))


# What a failed assertion compared, as runners write it: jest ("Expected: 25" / "Received: 20"), node's
# assert and mocha ("20 !== 25", actual first), chai and vitest ("expected 80 to be 75"), node's TAP
# diagnostics ("expected: 25" / "actual: 20") and ava's diff ("- 20" / "+ 25": actual, then expected).
_JEST_EXPECTED = re.compile(r"^\s*Expected(?: value)?:\s*(.+?)\s*$", re.M)
_JEST_RECEIVED = re.compile(r"^\s*Received(?: value)?:\s*(.+?)\s*$", re.M)
_TAP_EXPECTED = re.compile(r"^\s*expected:\s*(.+?)\s*$", re.M)
_TAP_ACTUAL = re.compile(r"^\s*actual:\s*(.+?)\s*$", re.M)
_STRICT = re.compile(r"(?:^|:)\s*([^:\n]+?) !==? ([^\n]+?)\s*$", re.M)
_CHAI = re.compile(r"expected (.+?) to (?:deeply |strictly )?(?:equal|be|eql)\s+(.+?)(?:\s*//.*)?$", re.M)
_AVA = re.compile(r"^\s*-\s+(.+?)\s*\n\s*\+\s+(.+?)\s*$", re.M)
MAX_DETAIL = 120


def _compared(message: str) -> tuple[str, str] | None:
    """(expected, received) of a failed comparison, or None when the message is something else."""
    expected, received = _JEST_EXPECTED.search(message), _JEST_RECEIVED.search(message)
    if expected and received:
        return expected[1], received[1]
    expected, actual = _TAP_EXPECTED.search(message), _TAP_ACTUAL.search(message)
    if expected and actual:
        return expected[1], actual[1]
    for pattern in (_STRICT, _CHAI, _AVA):  # each writes the actual value first
        match = pattern.search(message)
        if match:
            return match[2], match[1]
    return None


def failure_detail(message: str) -> str:
    """"expected 25, received 20" for a failed comparison, else the message's first line (cut short)."""
    compared = _compared(message)
    if compared:
        detail = f"expected {compared[0]}, received {compared[1]}"
    else:
        lines = [line.strip() for line in message.splitlines() if line.strip()]
        detail = lines[0] if lines else ""
    return detail if len(detail) <= MAX_DETAIL else detail[: MAX_DETAIL - 1] + "…"


def relative_location(location: str, roots: tuple[str, ...] = ()) -> str:
    """``location`` without the first of ``roots`` (folder prefixes: the app folder) it starts with."""
    for root in roots:
        prefix = root.rstrip("/") + "/"
        if location.startswith(prefix):
            return location[len(prefix):]
    return location


def failure_line(case: TestCase, roots: tuple[str, ...] = ()) -> str:
    """One failed test as a developer acts on it: ``suite > test (expected 25, received 20) at
    src/x.test.ts:19``. ``roots``: folder prefixes to cut from the location (the app folder)."""
    title = " > ".join(part for part in (case.suite, case.name) if part) or "(unnamed test)"
    detail = failure_detail(case.message)
    location = relative_location(case.location, roots)
    return title + (f" ({detail})" if detail else "") + (f" at {location}" if location else "")
