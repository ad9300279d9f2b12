"""Detecting a test stage's runner from package.json, and the report flags it gets."""

from __future__ import annotations

import pytest

from sevenp_pipeline.stages.test_runners import LOG_REPORT, UnknownRunner, last_command, plan_for, runner_of


def _package(script: str, **dev: str) -> dict:
    return {"scripts": {"test": script}, "devDependencies": dev}


@pytest.mark.parametrize(("script", "runner"), [
    ("jest", "jest"),
    ("jest --ci --runInBand", "jest"),
    ("NODE_ENV=test jest", "jest"),
    ("cross-env NODE_ENV=test TZ=UTC jest --coverage", "jest"),
    ("npx jest", "jest"),
    ("node_modules/.bin/jest", "jest"),
    ("tsc -p . && jest", "jest"),
    ("vitest run", "vitest"),
    ("pnpm exec vitest --run", "vitest"),
    ("yarn vitest run", "vitest"),
    ("yarn run mocha 'test/**/*.js'", "mocha"),
    ("mocha --recursive test", "mocha"),
    ("nyc --reporter=lcov mocha", "mocha"),
    ("c8 --reporter=text _mocha", "mocha"),
    ("ava", "ava"),
    ("ava --verbose test/*.js", "ava"),
    ("node --test tests/", "node"),
    ("node --test", "node"),
    ("npm run build; playwright test", "playwright"),
    ("npx playwright test --project=chromium", "playwright"),
    ("eslint . && tsc --noEmit || echo fail && mocha", "mocha"),
])
def test_detects_the_runner_of_the_last_command(script: str, runner: str) -> None:
    assert plan_for("unit", _package(script), script="test").runner == runner


@pytest.mark.parametrize("script", ["jest && eslint .", "node tests/run.js", "playwright install", "echo ok",
                                    "react-scripts test", "npm run test:unit"])
def test_a_script_whose_last_command_is_no_known_runner_is_unknown(script: str) -> None:
    with pytest.raises(UnknownRunner) as exc:
        plan_for("unit_tests", _package(script, jest="29"), script="test")
    message = str(exc.value)
    assert "stage unit_tests" in message and "'test'" in message and script in message
    assert "stages.unit_tests.report" in message and "report_format" in message and "junit" in message


def test_a_missing_script_is_named() -> None:
    with pytest.raises(UnknownRunner, match="no script 'test:unit'"):
        plan_for("unit", _package("jest"), script="test:unit")


def test_a_command_stage_is_detected_from_its_argv() -> None:
    plan = plan_for("e2e", {}, command=["npx", "playwright", "test", "--project=chromium"])
    assert plan.runner == "playwright"
    assert plan.args == ("--reporter=list,junit",)
    assert plan.env == (("PLAYWRIGHT_JUNIT_OUTPUT_NAME", ".sevenp-reports/e2e.xml"),)
    with pytest.raises(UnknownRunner, match=r"command \./run-tests\.sh"):
        plan_for("e2e", {}, command=["./run-tests.sh"])


def test_plans_per_runner() -> None:
    jest = plan_for("unit", _package("jest"), script="test")
    assert (jest.fmt, jest.report, jest.args) == (
        "jest-json", ".sevenp-reports/unit.json", ("--json", "--outputFile=.sevenp-reports/unit.json"))
    vitest = plan_for("unit", _package("vitest run"), script="test")
    assert vitest.fmt == "vitest-json"
    assert vitest.args == ("--reporter=default", "--reporter=json", "--outputFile.json=.sevenp-reports/unit.json")
    mocha = plan_for("unit", _package("mocha"), script="test")
    assert (mocha.fmt, mocha.args) == ("mocha-json", ("--reporter=json",
                                                      "--reporter-option=output=.sevenp-reports/unit.json"))
    ava = plan_for("unit", _package("ava"), script="test")
    assert (ava.fmt, ava.report, ava.args) == ("tap", LOG_REPORT, ("--tap",))
    node = plan_for("unit", _package("node --test tests/"), script="test")
    assert (node.fmt, node.args) == ("junit", ())
    assert dict(node.env)["NODE_OPTIONS"].endswith("--test-reporter-destination=.sevenp-reports/unit.xml")


def test_the_plan_is_a_deterministic_cache_key_part() -> None:
    one = plan_for("unit", _package("node --test"), script="test").key_parts()
    assert one == plan_for("unit", _package("node --test"), script="test").key_parts()
    assert one != plan_for("other", _package("node --test"), script="test").key_parts()


def test_last_command_keeps_quoted_separators() -> None:
    assert last_command("echo 'a && b' && mocha 'x;y'") == ["mocha", "x;y"]
    assert runner_of([]) is None
