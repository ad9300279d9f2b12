"""Conventional Commits: the rules, and the stage over the commits a push brought."""

from __future__ import annotations

import dagster as dg
import pytest

from sevenp_pipeline.stages.commits import check_commits, check_message
from sevenp_pipeline.triggers.tags import TAG_BEFORE, TAG_BRANCH
from sevenp_pipeline_tests.conftest import Pipeline


@pytest.mark.parametrize(("message", "problem"), [
    ("feat: add course search", None),
    ("fix(api)!: reject empty titles\n\nBREAKING CHANGE: titles are required", None),
    ("Merge branch 'develop' into main", None),
    ("added stuff", "header is not 'type(scope): subject'"),
    ("feature: add search", "type 'feature' is not one of"),
    ("feat: add search.", "must not end with a full stop"),
    ("feat: " + "x" * 120, "header is 126 characters, at most 100"),
    ("feat: add search\nno blank line", "body must be separated"),
    ("", "empty message"),
])
def test_message_rules(message: str, problem: str | None) -> None:
    found = check_message(message)
    assert (found is None) if problem is None else (found is not None and problem in found), found


def test_custom_types() -> None:
    assert check_commits([("a" * 40, "wip: try")], types=("wip",)) == []


def _commitlint_run(pipe: Pipeline, sha: str, before: str, *, alone: bool = False) -> dg.ExecuteInProcessResult:
    pipe.instance.add_dynamic_partitions(f"{pipe.key}_commits", [sha])
    defs = pipe.defs
    keys = [*([] if alone else [dg.AssetKey([pipe.key, "source_checkout"])]),
            dg.AssetKey([pipe.key, "commit_messages"])]
    return defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=pipe.instance, partition_key=sha, asset_selection=keys, raise_on_error=False,
        tags={TAG_BEFORE: before, TAG_BRANCH: "develop"})


def test_stage_checks_exactly_the_pushed_commits(make_pipeline) -> None:
    pipe = make_pipeline("stages:\n  commit_messages: {enabled: true}\n")
    before = pipe.remote.push("develop")  # the fixture's first commit: not part of the push below
    pipe.remote.write("a.txt", "1")
    pipe.remote.commit("feat: first change", push_to=None)
    pipe.remote.write("a.txt", "2")
    sha = pipe.remote.commit("fixed things")
    bad = _commitlint_run(pipe, sha, before)
    assert not bad.success  # blocking gate
    evaluation = next(e.asset_check_evaluation_data for e in bad.all_events
                      if e.event_type_value == "ASSET_CHECK_EVALUATION")
    assert evaluation.check_name == "conventional_commits" and not evaluation.passed
    assert "1 of 2 commit message(s)" in evaluation.description

    pipe.remote.write("a.txt", "3")
    good = pipe.remote.commit("fix(a): third change")
    result = _commitlint_run(pipe, good, sha)
    assert result.success
    meta = result.asset_materializations_for_node(f"{pipe.key}__commit_messages")[0].metadata
    assert meta["commits_checked"].value == 1 and meta["violations"].value == 0


def test_the_stage_alone_on_a_worker_without_the_mirror_fetches_it(make_pipeline) -> None:
    """A re-run of only this stage, or a fresh run container: no checkout ran here, no mirror exists."""
    pipe = make_pipeline("stages:\n  commit_messages: {enabled: true}\n")
    before = pipe.remote.push("develop")
    sha = pipe.remote.commit("feat: a change")
    assert not (pipe.settings.cache_dir / "git" / f"{pipe.key}.git").exists()
    result = _commitlint_run(pipe, sha, before, alone=True)
    assert result.success
    meta = result.asset_materializations_for_node(f"{pipe.key}__commit_messages")[0].metadata
    assert meta["commits_checked"].value == 1 and meta["violations"].value == 0
