"""The pull request's comment against its base branch and the check of its title: the comparison and the
title rule on their own (the sensor with real runs: test_commit_statuses.py)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from sevenp_pipeline.config import load_app_config
from sevenp_pipeline.devtools.stage_table import StageRow
from sevenp_pipeline.forge.compare import BaseRun, PullInfo, comparison, title_check
from sevenp_pipeline.forge.statuses import pr_comment, run_statuses
from sevenp_pipeline_tests.forge.test_commit_statuses import REPO

_FINDINGS = "| advisory | severity | package | fixed in | summary |\n|---|---|---|---|---|\n"


def _app(tmp_path: Path, stages: str = "commit_messages: {enabled: true}"):
    path = tmp_path / "app.yaml"
    path.write_text(f"name: web\nrepository: {{url: x}}\nforge: {{kind: github, repository: {REPO}}}\n"
                    f"stages: {{{stages}}}\n")
    return load_app_config(path)


def _findings(*rows: tuple[str, str]) -> str:
    return _FINDINGS + "\n".join(f"| {i} | {s} | pkg@1.0.0 | 1.0.1 | a summary |" for i, s in rows)


def _vulns(*rows: tuple[str, str], **counts: int) -> dict:
    return {"vulnerabilities_total": len(rows), "findings": _findings(*rows),
            **{f"vulnerabilities_{k}": v for k, v in counts.items()}}


def test_coverage_vulnerabilities_and_image_size_against_the_base(tmp_path: Path) -> None:
    app = _app(tmp_path)
    head = {"unit_test_results": {"coverage_lines_pct": 91.2, "kind": "test"},
            "vulnerability_report": _vulns(("GHSA-aaaa", "HIGH"), ("CVE-2024-1", "LOW"), ("GHSA-old", "MEDIUM")),
            "container_image": {"size_bytes": 52_000_000, "digest": "sha256:1"}}
    base = BaseRun("b" * 32, "c" * 40, {
        "unit_test_results": {"coverage_lines_pct": 92.0},
        "vulnerability_report": _vulns(("GHSA-old", "MEDIUM"), ("GHSA-gone", "CRITICAL")),
        "container_image": {"size_bytes": 50_000_000}})
    lines = comparison(app, "main", head, base, "http://ui/runs/" + "b" * 32)
    assert lines[0] == f"**Against `main`** ([run bbbbbbbb](http://ui/runs/{'b' * 32}) of `{'c' * 12}`):"
    assert lines[1] == "- coverage 91.2% (\u22120.8 against main)"
    assert lines[2] == "- 2 new vulnerabilities against main: GHSA-aaaa (high), CVE-2024-1 (low), 1 fixed"
    assert lines[3] == "- image 49.6 MiB (+1.9 MiB, +4.0% against main)"
    assert len(lines) == 4

    same = comparison(app, "main", {"unit_test_results": {"coverage_lines_pct": 92.0},
                                    "vulnerability_report": _vulns(("GHSA-old", "MEDIUM"))}, base)
    assert same[1:] == ["- coverage 92% (as on main)", "- no new vulnerabilities against main (1 in all, 1 fixed)"]


def test_a_cut_findings_table_compares_counts_by_severity(tmp_path: Path) -> None:
    app = _app(tmp_path)
    cut = {"vulnerabilities_total": 60, "findings": _findings(("X", "HIGH")) + "\n\n…and 59 more",
           "vulnerabilities_high": 40, "vulnerabilities_low": 20}
    base = BaseRun("b" * 32, "c" * 40, {"vulnerability_report": {
        "vulnerabilities_total": 55, "vulnerabilities_high": 38, "vulnerabilities_low": 17}})
    assert comparison(app, "main", {"vulnerability_report": cut}, base)[1] == (
        "- vulnerabilities 60, more than main: +2 high, +3 low")


def test_no_base_run_no_base_branch_or_nothing_to_compare(tmp_path: Path) -> None:
    app = _app(tmp_path)
    head = {"unit_test_results": {"coverage_lines_pct": 80}}
    assert comparison(app, "main", head, None) == ["**Against `main`**: no run of main to compare with."]
    assert comparison(app, "", head, None) == [
        "**Against the base branch**: no base branch to compare with (the forge did not name it)."]
    assert comparison(app, "main", {"lint_report": {"problems": 0}}, None) == []  # nothing it compares
    base = BaseRun("b" * 32, "c" * 40, {"vulnerability_report": _vulns()})
    assert comparison(app, "main", head, base)[1:] == ["- coverage 80% (main recorded none)"]


def test_the_title_follows_the_commitlint_stage(tmp_path: Path) -> None:
    app = _app(tmp_path, "commit_messages: {enabled: true, gates: {commit_types: [feat, fix, chore]}}")
    assert title_check(app, "feat(api): paginate the users") == ("success", "the title is a conventional commit")
    state, text = title_check(app, "docs: the README")
    assert state == "failure" and text.endswith("type 'docs' is not one of feat, fix, chore"), text
    assert title_check(app, "Add pagination")[1].endswith("header is not 'type(scope): subject'")
    assert title_check(app, "feat: " + "x" * 100)[1].endswith("header is 106 characters, at most 100")
    assert title_check(_app(tmp_path, ""), "Add pagination") is None  # no commitlint stage: no title check


def test_the_title_counts_in_code_quality_and_the_comment(tmp_path: Path) -> None:
    app = _app(tmp_path)
    run = dg.DagsterRun(job_name="web_ci_job", run_id="r" * 32, status=dg.DagsterRunStatus.SUCCESS)
    rows = [StageRow("node_dependencies", "SUCCESS", 1.0, "installed"), StageRow("lint_report", "SUCCESS", 1.0, "")]
    plain = {s.context: s for s in run_statuses(app, run, rows, "u")}
    assert plain["code-quality"].state == "success" and "sevenp/pr-title" not in plain
    bad = title_check(app, "Add pagination")
    statuses = run_statuses(app, run, rows, "u", title=bad)
    shown = {s.context: s for s in statuses}
    assert (shown["sevenp/pr-title"].state, shown["sevenp/pr-title"].description) == bad
    assert shown["code-quality"].state == "failure"
    assert shown["code-quality"].description.startswith("1 of 3 failed: pr-title: the title is not a conventional")
    assert shown["sevenp/pipeline"].state == "success"  # the run itself passed
    body = pr_comment(app, run, "a" * 40, statuses, ["**Against `main`**: no run of main to compare with."])
    assert "| pr-title |" not in body and "· 2 stages" in body
    assert "\n**Against `main`**: no run of main to compare with.\n" in body
    assert "Title: ❌ the title is not a conventional commit: header is not 'type(scope): subject'" in body


def test_what_the_forge_says_of_a_request() -> None:
    github = {"title": "feat: x", "base": {"ref": "main"}, "head": {"ref": "f"}}
    assert PullInfo.from_answer("github", github) == PullInfo("main", "feat: x", "f")
    assert PullInfo.from_answer("gitlab", {"title": "fix: y", "target_branch": "develop"}) == PullInfo("develop",
                                                                                                       "fix: y")
    assert PullInfo.from_answer("github", {"message": "Not Found"}) is None
