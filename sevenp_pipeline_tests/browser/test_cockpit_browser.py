"""What a developer does in the browser after pushing a broken commit, against the real stack (code
server, webserver, daemon, artifact server) on loopback ports, with Debian's Chromium driven by
Playwright. Screenshots of every page land in ``test-artifacts/browser/`` (kept by CI):

1. push a commit whose jest test fails; the push sensor's run fails;
2. the stage's Partitions tab in the Dagster UI counts that commit under "Failed";
3. the cockpit page shows the branch failing, naming the stage and the test in one line;
4. the commit's artifact index links the jest report and istanbul's HTML coverage report, and both open;
5. Re-execute > From failure on the failed run's page re-runs only the failed stage (the commit still
   has the bug, so it fails again);
6. push the fix: the sensor's run passes and the branch turns green on the cockpit page (and badge);
7. launch "run branch develop" from the launch form in the Launchpad (no SHA) and find its run under
   the runs list's develop filter.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from playwright import sync_api as playwright_api

from sevenp_pipeline.asset_helpers import latest_failure
from sevenp_pipeline.config.settings import PROJECT_ROOT
from sevenp_pipeline.devtools.devstack import LocalDagster
from sevenp_pipeline.resources.services import free_port
from sevenp_pipeline.triggers.sensors import TAG_BRANCH, TAG_COMMIT
from sevenp_pipeline_tests.conftest import FIXTURES, reachable_home
from sevenp_pipeline_tests.gitutil import Remote
from sevenp_pipeline_tests.waiting import wait_for_runs

pytestmark = pytest.mark.integration


CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
# Root in CI (no user namespace sandbox), and nothing reaching out to Google's services.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
SCREENSHOTS = PROJECT_ROOT / "test-artifacts" / "browser"
APP, KEY, STAGE = "runners-app", "runners_app", "jest_tests"
# Only the jest stage of runners-app (a real jest 30 with istanbul coverage): a run is checkout,
# install, test; every other default stage is off.
DEFAULTS_OFF = ("lint_report", "security_lint_report", "format_report", "type_check_report", "unit_test_results",
                "integration_test_results", "api_test_results", "build_artifact", "api_docs",
                "performance_report", "e2e_test_results")
FAILED_TEST = "SAVE25 gives 25 percent"


@dataclass
class Browsed:
    stack: LocalDagster
    remote: Remote
    instance: dg.DagsterInstance


def _config(url: str) -> str:
    lines = [f"name: {APP}\nrepository:\n  url: {url}\ntrigger:\n  poll_interval_seconds: 1\nstages:"]
    lines += [f"  {name}: null" for name in DEFAULTS_OFF]
    lines += [f"  {STAGE}: {{kind: test, script: 'test:jest', coverage: coverage/coverage-summary.json, "
              "needs: [node_dependencies]}"]
    return "\n".join(lines) + "\n"


def _with_coverage(remote: Remote) -> None:
    """runners-app's jest config asks for istanbul's json-summary and lcov (HTML) reporters; this turns coverage on."""
    manifest = json.loads((remote.clone / "package.json").read_text())
    manifest["jest"]["collectCoverage"] = True
    remote.write("package.json", json.dumps(manifest, indent=2) + "\n")


@pytest.fixture
def browsed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Browsed]:
    monkeypatch.setenv("SEVENP_COREPACK_INTEGRITY_KEYS", "0")  # this machine's registry serves no signatures
    apps = tmp_path / "apps"
    apps.mkdir()
    remote = Remote(tmp_path, FIXTURES / "runners-app", APP)
    (apps / f"{APP}.yaml").write_text(_config(remote.url))
    with reachable_home() as home:
        stack = LocalDagster(home=home, port=free_port(), apps_dir=apps,
                             extra_env={"SEVENP_COREPACK_INTEGRITY_KEYS": "0"})
        monkeypatch.setenv("DAGSTER_HOME", str(stack.dagster_home))
        stack.start()
        try:
            stack.wait_for_sensor_tick(f"{KEY}_git_push_sensor")
            yield Browsed(stack, remote, dg.DagsterInstance.get())
        finally:
            stack.stop()


@pytest.fixture
def page() -> Iterator[playwright_api.Page]:
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: scripts/install-system-deps.sh installs Debian's chromium "
                    "(CHROMIUM_PATH to use another)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.set_default_timeout(30_000)
            page = context.new_page()
            yield page
            _shot(page, "last-page")  # where the test stopped: on a failure, what the browser showed
        finally:
            browser.close()


def _shot(page: playwright_api.Page, name: str) -> None:
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def _push_and_wait(browsed: Browsed, message: str) -> tuple[str, dg.DagsterRun]:
    sha = browsed.remote.commit(message)
    run = wait_for_runs(browsed.instance, tags={TAG_COMMIT: sha}, timeout=150)[-1]
    assert run.tags[TAG_BRANCH] == "develop"
    return sha, run


def _failed_stage_links(instance: dg.DagsterInstance, sha: str) -> dict[str, str]:
    """The artifact links the failed stage recorded for the commit (its failed-gate observation)."""
    record = latest_failure(instance, dg.AssetKey([KEY, STAGE]), sha)
    assert record is not None and record.asset_observation is not None, "no failed-gate observation"
    return {k: str(v.value) for k, v in record.asset_observation.metadata.items() if k in ("report", "coverage_html")}


def _reexecute_from_failure(page: playwright_api.Page, ui: str, run_id: str) -> str:
    """Clicks Re-execute > From failure on the run's page; returns the new run's id (the page it opens)."""
    page.goto(f"{ui}/runs/{run_id}")
    expect = playwright_api.expect
    expect(page.get_by_role("button", name="Re-execute all (*)")).to_be_enabled()
    # The split button's caret: the one button on the run page drawn with the drop-down arrow icon.
    page.get_by_role("button").filter(has=page.get_by_role("img", name="arrow_drop_down", exact=True)).click()
    # A menu item's accessible name starts with its icon's label: match the visible text.
    page.get_by_role("menuitem").filter(has_text=re.compile(r"^From failure$")).click()
    page.wait_for_url(lambda url: "/runs/" in url and run_id not in url)
    return page.url.rsplit("/runs/", 1)[1].split("?")[0].split("/")[0]


def _launch_run_branch(page: playwright_api.Page, ui: str, branch: str) -> str:
    """Types the branch into the launch form in the Launchpad's config editor, clicks Launch Run; returns the run id."""
    page.goto(f"{ui}/locations/sevenp_pipeline/jobs/{KEY}_run_branch_job/playground")
    # The Launchpad opens on the form's defaults (environment, skip_tests): the branch goes below them.
    page.locator(".CodeMirror").get_by_text("skip_tests: false").click()
    page.keyboard.press("End")
    page.keyboard.press("Enter")
    page.keyboard.type(f"branch: {branch}")
    page.keyboard.press("Escape")  # closes the editor's completion hints
    _shot(page, "launchpad-run-branch")
    page.get_by_role("button", name="Launch Run").click()
    page.wait_for_url(re.compile(r"/runs/[0-9a-f-]{36}"))
    return page.url.rsplit("/runs/", 1)[1].split("?")[0].split("/")[0]


@pytest.mark.timeout(300)
def test_a_failed_commit_in_the_browser(browsed: Browsed, page: playwright_api.Page) -> None:
    stack, instance, expect = browsed.stack, browsed.instance, playwright_api.expect
    cockpit = f"{stack.artifacts_url}/_cockpit/{KEY}/"

    # 1. A push whose jest test fails (runners-app's coupon table has SAVE25 at 20 percent).
    _with_coverage(browsed.remote)
    sha, failed = _push_and_wait(browsed, "feat: coverage on")
    assert failed.status == dg.DagsterRunStatus.FAILURE, failed.status
    line = failed.tags["sevenp/failure"]
    assert line.startswith(f"{STAGE}: 1 of 3 tests failed: ") and FAILED_TEST in line, line
    assert "(expected 25, received 20) at tests/jest/pricing.test.js:" in line, line

    # 2. The stage's Partitions tab counts the commit under "Failed" (the status filters' counts), none
    # materialized, and lists the commit.
    page.goto(f"{stack.url}/assets/{KEY}/{STAGE}?view=partitions")
    expect(page.get_by_text("Failed (1)", exact=True)).to_be_visible()
    expect(page.get_by_text("Materialized (0)", exact=True)).to_be_visible()
    # Its row in the list. Dagster truncates the key in the middle to the column's width (12 leading
    # characters in CI's Chromium, 13 here), so the row is found by the first 8.
    expect(page.get_by_text(re.compile(re.escape(sha[:8]))).filter(visible=True).first).to_be_visible()
    _shot(page, "1-partitions-failed")

    # 3. The cockpit: develop is failing, with the stage and the test in one line.
    page.goto(cockpit)
    row = page.locator("tr", has=page.locator("code", has_text=re.compile("^develop$")))
    expect(row.locator("span.failing")).to_have_text("failing")
    expect(row.locator(".failure")).to_contain_text(f"{STAGE}: 1 of 3 tests failed: ")
    expect(row.locator(".failure")).to_contain_text(f"{FAILED_TEST} (expected 25, received 20)")
    expect(row).to_contain_text(sha[:12])
    _shot(page, "2-cockpit-failing")

    # 4. The commit's artifact index, then the jest report and istanbul's HTML report by their links
    # (the same URLs the stage's metadata links to).
    links = _failed_stage_links(instance, sha)
    assert set(links) == {"report", "coverage_html"}, links
    index = f"{stack.artifacts_url}/{KEY}/{sha}/"
    page.goto(index)
    expect(page.locator("h1")).to_have_text(f"Artifacts of commit {sha}")
    _shot(page, "3-artifact-index")
    for key, name, expected in (("report", f"reports/{STAGE}.json", FAILED_TEST),
                                ("coverage_html", f"coverage-html/{STAGE}/index.html", "All files")):
        assert links[key] == index + name, (key, links[key])
        page.goto(index)
        with page.expect_response(links[key]) as answered:
            page.get_by_role("link", name=name, exact=True).click()
        assert answered.value.status == 200, (name, answered.value.status)
        expect(page.get_by_text(expected).first).to_be_visible()
        _shot(page, f"4-{key}")
    expect(page.get_by_text("pricing.js", exact=True)).to_be_visible()  # istanbul's per-file row

    # 5. Re-execute from failure through the run page's menu: only the failed stage runs again, on
    # the same commit, which still has the bug.
    rerun_id = _reexecute_from_failure(page, stack.url, failed.run_id)
    rerun = wait_for_runs(instance, filters=dg.RunsFilter(run_ids=[rerun_id]), timeout=120)[0]
    _shot(page, "5-reexecution")
    assert rerun.parent_run_id == failed.run_id and rerun.status == dg.DagsterRunStatus.FAILURE, rerun.status
    assert {s.step_key for s in instance.get_run_step_stats(rerun_id)} == {f"{KEY}__{STAGE}"}
    assert FAILED_TEST in rerun.tags.get("sevenp/failure", ""), rerun.tags

    # 6. The fix, pushed: the sensor's run passes and develop turns green.
    browsed.remote.write("src/pricing.js", (browsed.remote.clone / "src/pricing.js").read_text()
                         .replace("SAVE25: 20", "SAVE25: 25"))
    fixed_sha, fixed = _push_and_wait(browsed, "fix: SAVE25 gives 25 percent")
    assert fixed.status == dg.DagsterRunStatus.SUCCESS, fixed.tags.get("sevenp/failure")
    page.goto(cockpit)
    row = page.locator("tr", has=page.locator("code", has_text=re.compile("^develop$")))
    expect(row.locator("span.passing")).to_have_text("passing")
    expect(row.locator(".failure")).to_have_count(0)
    expect(row).to_contain_text(f"{fixed_sha[:12]} fix: SAVE25 gives 25 percent")
    badge = page.request.get(f"{cockpit}badge/develop.svg")
    assert badge.ok and "ci: passing" in badge.text(), badge.text()[:300]
    _shot(page, "6-cockpit-passing")
    page.goto(f"{stack.url}/assets/{KEY}/{STAGE}?view=partitions")
    expect(page.get_by_text("Failed (1)", exact=True)).to_be_visible()  # the broken commit stays failed
    expect(page.get_by_text("Materialized (1)", exact=True)).to_be_visible()
    _shot(page, "7-partitions-after-fix")

    # 7. "Run branch develop" from the launch form (the Launchpad of <app>_run_branch_job, no SHA):
    # the run its sensor starts is found under the develop filter of the runs list.
    form_run_id = _launch_run_branch(page, stack.url, "develop")
    manual = wait_for_runs(instance, tags={"sevenp/form-run": form_run_id}, timeout=120)[-1]
    assert manual.status == dg.DagsterRunStatus.SUCCESS, manual.tags.get("sevenp/failure")
    assert manual.tags[TAG_COMMIT] == fixed_sha and manual.tags["sevenp/trigger"] == "manual", manual.tags
    page.goto(f"{stack.url}/runs?q[]=tag:{TAG_BRANCH}%3Ddevelop")
    expect(page.get_by_role("link", name=f"run {manual.run_id[:8]}", exact=True)).to_be_visible()
    expect(page.get_by_text(f"sevenp/form-run: {form_run_id}")).to_be_visible()  # the manual run's tag
    expect(page.get_by_role("link", name=f"run {failed.run_id[:8]}", exact=True)).to_be_visible()
    _shot(page, "8-runs-develop-filter")
