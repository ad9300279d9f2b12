"""The cockpit's branch and environment views, read from a real instance holding real runs."""

# No `from __future__ import annotations`: Dagster reads the asset's config annotation.
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from sevenp_pipeline.cockpit.pages import app_page, branch_badge
from sevenp_pipeline.cockpit.server import create_app
from sevenp_pipeline.cockpit.status import AppRef, branches, environments
from sevenp_pipeline_tests.artifact_http import serve_artifacts

APP = "shop_api"  # the app's key: asset keys and URLs
NAME = "shop-api"  # its name: run tags
REF = AppRef(NAME, APP, ("staging", "production"))
SHAS = [f"{i:040x}" for i in range(1, 5)]
PARTITIONS = dg.StaticPartitionsDefinition(SHAS)


class Deploy(dg.Config):
    health: bool = True


@dg.asset(key=[APP, "staging_deployment"], partitions_def=PARTITIONS)
def staging_deployment(context: dg.AssetExecutionContext, config: Deploy) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={
        "status": "live", "url": dg.MetadataValue.url("http://127.0.0.1:8080"), "health_passed": config.health,
        "smoke_passed": True, "since": dg.MetadataValue.timestamp(1_700_000_000.0)})


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def _run(instance: dg.DagsterInstance, branch: str, sha: str, status: dg.DagsterRunStatus, **tags: str) -> str:
    run = create_run_for_test(instance, job_name=f"{APP}_ci_job", status=status, tags={
        "sevenp/app": NAME, "sevenp/branch": branch, "sevenp/commit": sha, "sevenp/author": "Ada <ada@x>",
        "sevenp/message": f"feat: {branch} work\n\nbody", "sevenp/trigger": "push", "sevenp/origin": "push", **tags})
    return run.run_id


def _deploy(instance: dg.DagsterInstance, sha: str) -> None:
    assert dg.materialize([staging_deployment], instance=instance, partition_key=sha,
                          tags={"sevenp/app": NAME, "sevenp/deploy-env": f"{NAME}/staging"}).success


def test_each_branch_by_its_newest_run_with_the_failing_line(instance: dg.DagsterInstance) -> None:
    _run(instance, "develop", SHAS[0], dg.DagsterRunStatus.FAILURE, **{"sevenp/failure": "unit_test_results: 1 of 3"})
    fixed = _run(instance, "develop", SHAS[1], dg.DagsterRunStatus.SUCCESS)
    _run(instance, "feature/x", SHAS[2], dg.DagsterRunStatus.FAILURE,
         **{"sevenp/failure": "lint_report: 3 lint problems, at most 0 allowed"})
    _run(instance, "main", SHAS[3], dg.DagsterRunStatus.STARTED)
    _deploy(instance, SHAS[1])  # a deploy run is not a branch's CI
    rows = {r.branch: r for r in branches(instance, REF)}
    assert set(rows) == {"develop", "feature/x", "main"}
    assert (rows["develop"].status, rows["develop"].commit, rows["develop"].run_id) == ("passing", SHAS[1], fixed)
    assert rows["develop"].failure == "" and rows["develop"].title == "feat: develop work"
    assert (rows["feature/x"].status, rows["feature/x"].failure) == (
        "failing", "lint_report: 3 lint problems, at most 0 allowed")
    assert rows["main"].status == "running"
    assert branches(instance, AppRef("other-app", "other_app")) == []
    # A run by hand of an older develop commit is not develop's status; a re-execution of the head is.
    _run(instance, "develop", SHAS[0], dg.DagsterRunStatus.FAILURE, **{"sevenp/trigger": "graph",
                                                                       "sevenp/origin": "graph"})
    assert branches(instance, REF)[0].branch == "main"  # newest first: main's run is the newest at its head
    assert {r.branch: r.run_id for r in branches(instance, REF)}["develop"] == fixed
    again = _run(instance, "develop", SHAS[1], dg.DagsterRunStatus.FAILURE,
                 **{"sevenp/trigger": "reexecution", "sevenp/failure": "unit_test_results: flaky"})
    develop = {r.branch: r for r in branches(instance, REF)}["develop"]
    assert (develop.run_id, develop.status, develop.failure) == (again, "failing", "unit_test_results: flaky")


def test_environments_show_the_live_commit_its_branch_and_the_rollback_target(instance: dg.DagsterInstance) -> None:
    _run(instance, "develop", SHAS[0], dg.DagsterRunStatus.SUCCESS)
    _run(instance, "develop", SHAS[1], dg.DagsterRunStatus.SUCCESS)
    _deploy(instance, SHAS[0])
    _deploy(instance, SHAS[1])
    (staging, production) = environments(instance, REF)
    assert (staging.commit, staging.branch, staging.previous) == (SHAS[1], "develop", SHAS[0])
    assert (staging.url, staging.health, staging.smoke, staging.since) == (
        "http://127.0.0.1:8080", True, True, 1_700_000_000.0)
    assert production.commit == "" and production.run_id == ""
    rows = branches(instance, REF, [staging, production])
    assert rows[0].deployed_to == ("staging",)


def test_the_page_escapes_what_a_branch_wrote_and_links_runs_and_badges(instance: dg.DagsterInstance) -> None:
    run_id = _run(instance, "feature/<b>x</b>", SHAS[0], dg.DagsterRunStatus.FAILURE,
                  **{"sevenp/message": "fix: <script>alert(1)</script>", "sevenp/failure": "a & b <i>"})
    rows = branches(instance, REF)
    page = app_page(NAME, rows, environments(instance, REF), ui_url="http://127.0.0.1:3000/")
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "a &amp; b &lt;i&gt;" in page and "<b>x</b>" not in page
    assert f'href="http://127.0.0.1:3000/runs/{run_id}"' in page
    assert 'src="badge/feature%2F%3Cb%3Ex%3C%2Fb%3E.svg"' in page
    assert "nothing deployed yet" in page
    badge = branch_badge(rows, "feature/<b>x</b>")
    assert badge.startswith("<svg") and "failing" in badge and "#c62828" in badge
    assert "unknown" in branch_badge(rows, "nope")


def test_served_beside_the_artifacts_with_the_same_refusals(instance: dg.DagsterInstance, tmp_path) -> None:
    _run(instance, "feature/x", SHAS[0], dg.DagsterRunStatus.FAILURE, **{"sevenp/failure": "lint_report: 3"})
    _run(instance, "develop", SHAS[1], dg.DagsterRunStatus.SUCCESS)
    report = tmp_path / APP / SHAS[1] / "reports" / "unit.xml"
    report.parent.mkdir(parents=True)
    report.write_text("<testsuites/>")
    (tmp_path / "outside.txt").write_text("secret")
    app = create_app(tmp_path, instance=lambda: instance, apps=[REF], ui_url="http://ui")
    with serve_artifacts(tmp_path, app) as served:
        page = served.get(f"/_cockpit/{APP}/")
        assert page.status == 200 and "feature/x" in page.text and "lint_report: 3" in page.text
        assert page.headers["Content-Security-Policy"] == "sandbox"
        badge = served.get(f"/_cockpit/{APP}/badge/feature%2Fx.svg")
        assert badge.status == 200 and badge.headers["Content-Type"].startswith("image/svg+xml")
        assert ">failing<" in badge.text
        assert ">passing<" in served.get(f"/_cockpit/{APP}/badge/develop.svg").text
        assert served.get("/_cockpit/nope/").status == 404
        assert f'href="{APP}/">{NAME}<' in served.get("/_cockpit/").text
        # The artifacts behind it, with the artifact server's refusals.
        assert served.get(f"/{APP}/{SHAS[1]}/reports/unit.xml").text == "<testsuites/>"
        for path in ("/_cockpit/../outside.txt", "/_cockpit/%2e%2e/outside.txt", f"/{APP}/../outside.txt"):
            assert served.get(path).status == 404, path
