"""The git push sensor, evaluated against a real bare remote."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import dagster as dg
import pytest

from sevenp_pipeline.resources.git import GitError
from sevenp_pipeline.triggers.sensors import TAG_BRANCH, TAG_COMMIT, TAG_MESSAGE
from sevenp_pipeline_tests.conftest import Pipeline


def _tick(pipeline: Pipeline, cursor: str | None) -> dg.SensorResult:
    """One evaluation, as the daemon would run it (minus applying the partition requests)."""
    defs = pipeline.defs
    sensor = defs.resolve_sensor_def(f"{pipeline.key}_git_push_sensor")
    with dg.build_sensor_context(instance=pipeline.instance, cursor=cursor, resources=defs.resources,
                                 definitions=defs) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_first_tick_records_baseline_then_each_push_starts_one_run(pipeline: Pipeline) -> None:
    first = _tick(pipeline, None)
    assert first.run_requests == [] and "baseline" in first.skip_reason.skip_message
    assert json.loads(first.cursor)["heads"].keys() == {"main"}

    sha = pipeline.remote.commit("feat: add things")  # pushed to develop
    second = _tick(pipeline, first.cursor)
    assert [r.partition_key for r in second.run_requests] == [sha]
    request = second.run_requests[0]
    assert request.run_key == sha
    assert request.tags[TAG_BRANCH] == "develop" and request.tags[TAG_COMMIT] == sha
    assert request.tags[TAG_MESSAGE] == "feat: add things"
    assert second.dynamic_partitions_requests[0].partition_keys == [sha]

    third = _tick(pipeline, second.cursor)
    assert third.run_requests == [] and "no new commits" in third.skip_reason.skip_message


def test_branch_rules_filter_pushes(make_pipeline) -> None:
    pipe = make_pipeline("branches:\n  include: [main, 'release/*']\n  exclude: ['release/skip-*']\n")
    cursor = _tick(pipe, None).cursor
    pipe.remote.commit("one", push_to="feature/x")
    pipe.remote.commit("two", push_to="release/skip-me")
    sha = pipe.remote.commit("three", push_to="release/1.2")
    result = _tick(pipe, cursor)
    assert [(r.tags[TAG_BRANCH], r.partition_key) for r in result.run_requests] == [("release/1.2", sha)]


def test_hostile_branch_names_and_messages_are_data(pipeline: Pipeline, tmp_path: Path) -> None:
    cursor = _tick(pipeline, None).cursor
    os.chdir(tmp_path)
    names = ["feature/$(touch${IFS}pwned)", "feature/;rm${IFS}-rf${IFS}$HOME", "feature/`touch${IFS}pwned2`"]
    for name in names:
        pipeline.remote.commit(f"$(touch pwned3) on {name}", push_to=name)
    result = _tick(pipeline, cursor)
    assert sorted(r.tags[TAG_BRANCH] for r in result.run_requests) == sorted(names)
    sha = result.run_requests[-1].partition_key
    assert pipeline.materialize(sha, "source_checkout").success
    for where in (tmp_path, pipeline.settings.home, pipeline.remote.clone, Path.cwd()):
        assert not list(where.rglob("pwned*")), where


def test_unreachable_remote_fails_the_tick_and_the_next_tick_recovers(pipeline: Pipeline) -> None:
    cursor = _tick(pipeline, None).cursor
    sha = pipeline.remote.commit("while the remote is away")
    moved = Path(pipeline.remote.url + ".away")
    shutil.move(pipeline.remote.url, moved)
    with pytest.raises(Exception) as err:
        _tick(pipeline, cursor)
    assert isinstance(err.value, GitError) or isinstance(err.value.__cause__, GitError)
    assert pipeline.remote.url in str(err.value) or pipeline.remote.url in str(err.value.__cause__)
    shutil.move(moved, pipeline.remote.url)
    recovered = _tick(pipeline, cursor)  # the cursor was not advanced by the failed tick
    assert [r.partition_key for r in recovered.run_requests] == [sha]
