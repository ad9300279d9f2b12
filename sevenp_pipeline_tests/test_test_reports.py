"""The test-report and coverage readers (sevenp_pipeline/test_reports.py) on real reports: written by
jest, vitest, mocha, ava and node's test runner on fixtures/runners-app (fixtures/reports/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sevenp_pipeline.models import TestCase
from sevenp_pipeline.reports import ReportError, stack_location
from sevenp_pipeline.test_reports import coverage_of, failure_line, sniff_test_format, tap_summary, test_summary
from sevenp_pipeline_tests.conftest import FIXTURES

REPORTS = FIXTURES / "reports"
# file -> (format, failing test's name, a phrase of its message)
SAMPLES = {
    "jest.json": ("jest-json", "SAVE25 gives 25 percent", "Received: 20"),
    "vitest.json": ("vitest-json", "SAVE25 gives a quarter off", "expected 80 to be 75"),
    "mocha.json": ("mocha-json", "SAVE25 is worth 25", "20 !== 25"),
    "ava.tap": ("tap", "ava SAVE25 is worth 25", "- 20"),
    "node.tap": ("tap", "SAVE25 equals 25", "actual: 20"),
    "node-junit.xml": ("junit", "SAVE25 equals 25", "20 !== 25"),
}


@pytest.mark.parametrize("name", list(SAMPLES))
def test_each_runners_report_gives_counts_and_the_failing_test(name: str) -> None:
    fmt, failing, phrase = SAMPLES[name]
    assert sniff_test_format(REPORTS / name) == fmt
    for given in (fmt, None):
        summary = test_summary(REPORTS / name, given)
        assert (summary.tests, summary.passed, summary.failed, summary.skipped) == (3, 2, 1, 0)
        (case,) = summary.failures
        assert case.name == failing and phrase in case.message, case
        assert "node_modules" not in case.message  # no stack frames


@pytest.mark.parametrize("name", list(SAMPLES))
def test_a_truncated_report_is_refused_naming_the_file_and_format(name: str, tmp_path: Path) -> None:
    fmt = SAMPLES[name][0]
    cut = tmp_path / name
    text = (REPORTS / name).read_text()
    cut.write_text(text[: len(text) // 3] if fmt != "tap" else "TAP version 13\n1..3\n")
    with pytest.raises(ReportError) as raised:
        test_summary(cut, fmt)
    assert str(cut) in str(raised.value) and fmt in str(raised.value)


def test_an_unknown_report_is_refused_listing_the_formats(tmp_path: Path) -> None:
    other = tmp_path / "results.json"
    other.write_text('{"passed": 3}')
    with pytest.raises(ReportError, match=r"none of the test report formats.*jest-json, vitest-json"):
        sniff_test_format(other)
    with pytest.raises(ReportError, match="was not written"):
        test_summary(tmp_path / "missing.json", "jest-json")


def test_tap_skip_todo_bail_out_and_lines_around_it() -> None:
    log = "\n".join(["> npm run test", "TAP version 14", "ok 1 - a", "ok 2 - b # SKIP not here",
                     "not ok 3 - c # TODO later", "not ok 4 - d", "  ---", "  message: 'boom'", "  ...",
                     "npm ERR! something", "1..4"])
    summary = tap_summary(log)
    assert (summary.tests, summary.passed, summary.failed, summary.skipped) == (4, 2, 1, 1)
    assert summary.failures[0].name == "d" and "boom" in summary.failures[0].message
    bailed = tap_summary("TAP version 13\nok 1 - a\nBail out! database gone\n")
    assert bailed.errors == 1 and not bailed.ok and "database gone" in bailed.failures[-1].message
    with pytest.raises(ReportError, match="no test lines"):
        tap_summary("npm ERR! missing script: test\n", "the stage log")


def test_coverage_from_summary_raw_istanbul_and_lcov_agree() -> None:
    """One jest --coverage run wrote all three: the totals read from each are the same."""
    summary = coverage_of(REPORTS / "coverage-summary.json")
    assert coverage_of(REPORTS / "coverage-final.json") == summary
    lcov = coverage_of(REPORTS / "lcov.info")
    assert (lcov.lines, lcov.branches, lcov.functions) == (summary.lines, summary.branches, summary.functions)


def test_partial_coverage_is_computed_like_istanbul(tmp_path: Path) -> None:
    raw = tmp_path / "coverage-final.json"
    raw.write_text('{"/a.js": {"statementMap": {"0": {"start": {"line": 1}}, "1": {"start": {"line": 1}}, '
                   '"2": {"start": {"line": 2}}, "3": {"start": {"line": 3}}}, "s": {"0": 1, "1": 0, "2": 0, '
                   '"3": 2}, "f": {"0": 1, "1": 0}, "b": {"0": [1, 0, 0]}}}')
    got = coverage_of(raw)
    assert (got.statements, got.lines, got.functions, got.branches) == (50.0, 66.67, 50.0, 33.33)
    lcov = tmp_path / "lcov.info"
    lcov.write_text("SF:a.js\nLF:4\nLH:3\nFNF:2\nFNH:1\nBRF:0\nBRH:0\nend_of_record\n")
    assert coverage_of(lcov).lines == 75.0 and coverage_of(lcov).branches == 100.0
    bad = tmp_path / "cov.json"
    bad.write_text('{"/a.js": {"s": 1}}')
    with pytest.raises(ReportError, match=r"coverage-final\.json"):
        coverage_of(bad)


# file -> the failing test as the gate's one line names it (the reports were written in /src/runners-app)
ONE_LINE = {
    "jest.json": "pricing (jest) > SAVE25 gives 25 percent (expected 25, received 20) at tests/jest/pricing.test.js:5",
    "vitest.json": "pricing (vitest) > SAVE25 gives a quarter off (expected 75, received 80) "
                   "at tests/vitest/pricing.test.mjs:6",
    "mocha.json": "pricing (mocha) > SAVE25 is worth 25 (expected 25, received 20) at tests/mocha/pricing.spec.js:6",
    "ava.tap": "ava SAVE25 is worth 25 (expected 25, received 20)",  # ava's TAP has no file position
    "node.tap": "SAVE25 equals 25 (expected 25, received 20) at tests/node/pricing.test.js:7",
    "node-junit.xml": "pricing (node:test) > SAVE25 equals 25 (expected 25, received 20) "
                      "at tests/node/pricing.test.js:7",
}


@pytest.mark.parametrize("name", list(ONE_LINE))
def test_each_failure_reads_as_one_line_with_what_it_compared_and_where(name: str) -> None:
    (case,) = test_summary(REPORTS / name).failures
    assert failure_line(case, ("/src/runners-app",)) == ONE_LINE[name]


def test_a_failure_that_compares_nothing_gives_its_first_line_and_no_runner_frame() -> None:
    case = TestCase("api", "starts", "TypeError: cannot read 'port' of undefined\nsecond line",
                    stack_location("    at node:internal/x.js:3:1\n    at Object.<anonymous> "
                                   "(/app/node_modules/jest/x.js:9:2)\n    at start (/app/src/server.ts:12:5)"))
    assert failure_line(case, ("/app",)) == \
        "api > starts (TypeError: cannot read 'port' of undefined) at src/server.ts:12"
    assert failure_line(TestCase("", "x", "")) == "x"
