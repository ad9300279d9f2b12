"""One pipeline run of runners-app (npm; jest without jest-junit, vitest, mocha, ava, node:test), five
test stages configured with only a script: each runner is detected, writes its own report, and the
stage shows the counts and names its one failing test in all_tests_pass."""

from __future__ import annotations

import os
from collections.abc import Iterator

import dagster as dg
import pytest

from sevenp_pipeline.config import Settings
from sevenp_pipeline.definitions import build_definitions
from sevenp_pipeline_tests.conftest import FIXTURES, reachable_home
from sevenp_pipeline_tests.gitutil import Remote
from sevenp_pipeline_tests.results import check_verdicts, failed_stages, failure_text, materialized, metadata_of

pytestmark = pytest.mark.integration

RUNNERS = {"jest": "jest-json", "vitest": "vitest-json", "mocha": "mocha-json", "ava": "tap", "node": "junit"}
DEFAULTS_OFF = ("lint_report", "security_lint_report", "format_report", "type_check_report", "unit_test_results",
                "integration_test_results", "api_test_results", "build_artifact", "api_docs",
                "performance_report", "e2e_test_results")


def _config(url: str) -> str:
    lines = [f"name: runners-app\nrepository:\n  url: {url}\nstages:"]
    lines += [f"  {name}: null" for name in DEFAULTS_OFF]
    lines += [f"  {runner}_tests: {{kind: test, script: 'test:{runner}', needs: [node_dependencies]}}"
              for runner in RUNNERS]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.ExecuteInProcessResult]:
    os.environ.setdefault("SEVENP_COREPACK_INTEGRITY_KEYS", "0")  # this machine's registry serves no signatures
    root = tmp_path_factory.mktemp("runners")
    apps = root / "apps"
    apps.mkdir()
    remote = Remote(root, FIXTURES / "runners-app", "runners-app")
    (apps / "runners-app.yaml").write_text(_config(remote.url))
    sha = remote.push("develop")
    with reachable_home() as home:
        instance = dg.DagsterInstance.ephemeral(tempdir=str(root / "dagster"))
        instance.add_dynamic_partitions("runners_app_commits", [sha])
        defs = build_definitions(Settings(home=home, apps_dir=apps))
        yield defs.resolve_job_def("runners_app_ci_job").execute_in_process(
            instance=instance, partition_key=sha, raise_on_error=False)


def _fixture_sources() -> str:
    app = FIXTURES / "runners-app"
    return "\n".join(p.read_text(errors="replace") for p in sorted(app.rglob("*.*js"))
                     if p.is_file() and "node_modules" not in p.parts)


@pytest.mark.parametrize(("runner", "fmt"), list(RUNNERS.items()))
def test_each_runner_is_detected_counted_and_names_its_failure(run: dg.ExecuteInProcessResult, runner: str,
                                                                fmt: str) -> None:
    stage = f"{runner}_tests"
    meta = metadata_of(run, stage)
    assert (meta["test_runner"], meta["report_format"]) == (runner, fmt)
    assert meta["failed"] == 1 and meta["passed"] >= 1 and meta["tests"] == meta["passed"] + meta["failed"] + \
        meta["skipped"], meta
    assert check_verdicts(run)[f"{stage}.all_tests_pass"] is False
    description = next(e.asset_check_evaluation_data.description for e in run.all_events
                       if e.event_type_value == "ASSET_CHECK_EVALUATION"
                       and e.asset_check_evaluation_data.asset_key.path[-1] == stage)
    # "1 of N tests failed: <suite> > <test> (expected 25, received 20) at tests/<runner>/x.js:N": the
    # named test is one the fixture's sources define, with what it compared and where (SAVE25 gives 20).
    assert description and "1 of " in description and "tests failed: " in description, description
    assert "exited with code" not in description  # the failed test is why: the exit code adds nothing
    line = description.split("tests failed: ", 1)[1].split("; ")[0]
    named = line.split(" (expected ")[0].split(" > ")[-1].strip()
    assert named and f'"{named}"' in _fixture_sources(), description
    assert ("(expected 75, received 80)" if runner == "vitest" else "(expected 25, received 20)") in line, line
    if runner != "ava":  # ava's TAP carries no file position
        assert f" at tests/{runner}/pricing." in line and ":" in line.rsplit(" at ", 1)[1], line
    # The failures table: one row per failed test, with a schema, the location relative to the app.
    assert [row["test"].split(" > ")[-1] for row in meta["failures"]] == [named], meta["failures"]
    # The stage did not materialize, and its step failed with that one line, no stack trace needed.
    assert stage in failed_stages(run) and stage not in materialized(run)
    assert f"{stage}: 1 of " in failure_text(run)
    assert f"reports/{stage}." in str(meta["report"])  # the runner's own report, kept


