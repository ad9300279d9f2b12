"""The git push sensor, evaluated against a real bare remote."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import dagster as dg
from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.test_utils import create_run_for_test
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from sevenp_pipeline.resources.git import GitClient
from sevenp_pipeline.resources.processes import ExecuteRequest, Outcome, ProcessRunner
from sevenp_pipeline.triggers.sensors import TAG_BRANCH, TAG_COMMIT, TAG_MESSAGE, backoff_seconds
from sevenp_pipeline.triggers.tags import TAG_PR, TAG_REF, TAG_TRIGGER
from sevenp_pipeline_tests.conftest import Pipeline
from sevenp_pipeline_tests.gitutil import git


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
    assert request.run_key == f"develop@{sha}"
    assert request.tags[TAG_BRANCH] == "develop" and request.tags[TAG_COMMIT] == sha
    assert request.tags[TAG_MESSAGE] == "feat: add things"
    assert second.dynamic_partitions_requests[0].partition_keys == [sha]

    third = _tick(pipeline, second.cursor)
    assert third.run_requests == [] and "no new commits" in third.skip_reason.skip_message


def test_a_fast_forward_to_a_commit_built_on_another_branch_runs_for_that_branch(pipeline: Pipeline) -> None:
    """main moving to develop's head (merge --ff-only, "rebase and merge") gets main's own run."""
    cursor = _tick(pipeline, None).cursor
    sha = pipeline.remote.commit("feat: built on develop")
    on_develop = _tick(pipeline, cursor)
    assert [r.run_key for r in on_develop.run_requests] == [f"develop@{sha}"]

    pipeline.remote.push("main")  # the fast-forward: main now points at the commit develop ran
    on_main = _tick(pipeline, on_develop.cursor)
    assert [(r.run_key, r.partition_key, r.tags[TAG_BRANCH]) for r in on_main.run_requests] == [
        (f"main@{sha}", sha, "main")]

    newer = pipeline.remote.commit("fix: on develop")
    moved_on = _tick(pipeline, on_main.cursor)
    assert [r.run_key for r in moved_on.run_requests] == [f"develop@{newer}"]
    git("push", "--quiet", "--force", "origin", f"{sha}:refs/heads/develop", cwd=pipeline.remote.clone)
    rewound = _tick(pipeline, moved_on.cursor)
    # develop back at a commit it already ran: the key of its first run, which the daemon never launches twice
    assert [r.run_key for r in rewound.run_requests] == on_develop.run_requests[0].run_key.split()


def test_pull_requests_and_release_tags_start_their_own_runs(pipeline: Pipeline) -> None:
    cursor = _tick(pipeline, None).cursor
    clone = pipeline.remote.clone
    sha = pipeline.remote.commit("feat: proposed in a pull request", push_to=None)
    git("push", "--quiet", "origin", f"{sha}:refs/pull/7/head", cwd=clone)  # what GitHub keeps per PR
    git("push", "--quiet", "origin", f"{sha}:refs/merge-requests/3/head", cwd=clone)  # GitLab's
    opened = _tick(pipeline, cursor)
    assert [(r.run_key, r.partition_key, r.tags[TAG_PR], r.tags[TAG_REF], r.tags[TAG_BRANCH], r.tags[TAG_TRIGGER])
            for r in opened.run_requests] == [
        (f"pr-3@{sha}", sha, "3", "refs/merge-requests/3/head", "", "pull_request"),
        (f"pr-7@{sha}", sha, "7", "refs/pull/7/head", "", "pull_request")]
    assert opened.run_requests[1].tags[TAG_MESSAGE] == "feat: proposed in a pull request"

    newer = pipeline.remote.commit("fix: review comments", push_to=None)
    git("push", "--quiet", "--force", "origin", f"{newer}:refs/pull/7/head", cwd=clone)
    git("tag", "-a", "v1.4.0", "-m", "release 1.4.0", sha, cwd=clone)  # annotated: the run is of its commit
    git("tag", "scratch", sha, cwd=clone)  # not matching trigger.tags (v*)
    git("push", "--quiet", "origin", "refs/tags/v1.4.0", "refs/tags/scratch", cwd=clone)
    moved = _tick(pipeline, opened.cursor)
    assert [(r.run_key, r.tags[TAG_TRIGGER], r.tags.get(TAG_REF), r.tags["sevenp/before"])
            for r in moved.run_requests] == [
        (f"pr-7@{newer}", "pull_request", "refs/pull/7/head", sha),
        (f"tag-v1.4.0@{sha}", "tag", "refs/tags/v1.4.0", "")]
    assert _tick(pipeline, moved.cursor).run_requests == []


def test_pull_requests_can_be_switched_off_or_built_as_merge_results(make_pipeline) -> None:
    off = make_pipeline("trigger: {pull_requests: 'off', tags: []}\n")
    cursor = _tick(off, None).cursor
    sha = off.remote.commit("feat: x", push_to=None)
    git("push", "--quiet", "origin", f"{sha}:refs/pull/9/head", f"{sha}:refs/pull/9/merge", cwd=off.remote.clone)
    git("tag", "v2.0.0", sha, cwd=off.remote.clone)
    git("push", "--quiet", "origin", "refs/tags/v2.0.0", cwd=off.remote.clone)
    assert _tick(off, cursor).run_requests == []


def _queued_instance() -> dg.DagsterInstance:
    return dg.instance_for_test(overrides={"run_coordinator": {
        "module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}})


def test_a_newer_push_cancels_the_branchs_queued_run_and_a_deleted_branch_its_queue(make_pipeline) -> None:
    pipe = make_pipeline("trigger: {cancel_superseded: true}\n")
    sensor_name = f"{pipe.key}_git_push_sensor"
    with _queued_instance() as instance:
        def tick(cursor: str | None) -> dg.SensorResult:
            defs = pipe.defs
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources,
                                         definitions=defs) as context:
                return defs.resolve_sensor_def(sensor_name)(context)

        def queued(sha: str, branch: str, **tags: str) -> str:
            job = f"{pipe.key}_ci_job"
            origin = RemoteJobOrigin(repository_origin=RemoteRepositoryOrigin(
                code_location_origin=InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=__file__)),
                repository_name="__repository__"), job_name=job)
            return create_run_for_test(instance, job_name=job, status=dg.DagsterRunStatus.QUEUED,
                                       remote_job_origin=origin,
                                       tags={"sevenp/app": pipe.app.name, TAG_BRANCH: branch, TAG_COMMIT: sha,
                                             "dagster/sensor_name": sensor_name, **tags}).run_id

        cursor = tick(None).cursor
        old = pipe.remote.commit("feat: one")
        cursor = tick(cursor).cursor
        superseded = queued(old, "develop")
        by_hand = queued(old, "develop", **{"dagster/sensor_name": ""})  # a person's run is never canceled
        other = queued(old, "feature/y")
        new = pipe.remote.commit("feat: two")
        result = tick(cursor)
        assert [r.run_key for r in result.run_requests] == [f"develop@{new}"]
        status = {run_id: instance.get_run_by_id(run_id).status for run_id in (superseded, by_hand, other)}
        assert status == {superseded: dg.DagsterRunStatus.CANCELED, by_hand: dg.DagsterRunStatus.QUEUED,
                          other: dg.DagsterRunStatus.QUEUED}

        pipe.remote.push("feature/y")
        cursor = tick(result.cursor).cursor
        waiting = queued(new, "feature/y")
        git("push", "--quiet", "origin", "--delete", "feature/y", cwd=pipe.remote.clone)
        tick(cursor)
        assert instance.get_run_by_id(waiting).status == dg.DagsterRunStatus.CANCELED


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


GIT_CALLS: list[str] = []  # what _CountingRunner ran (resources are copied: not a field)


class _CountingRunner(ProcessRunner):
    """The real runner, counting the git commands it is asked to run."""

    def run(self, request: ExecuteRequest, *, log=None) -> Outcome:
        GIT_CALLS.append(" ".join(request.argv[:2]))
        return super().run(request, log=log)


def _tick_counting(pipeline: Pipeline, cursor: str | None, tmp_path: Path) -> tuple[dg.SensorResult, list[str]]:
    GIT_CALLS.clear()
    defs = pipeline.defs
    git = GitClient(runner=_CountingRunner(), cache_dir=str(tmp_path / "git-cache"))
    sensor = defs.resolve_sensor_def(f"{pipeline.key}_git_push_sensor")
    with dg.build_sensor_context(instance=pipeline.instance, cursor=cursor, resources={**defs.resources, "git": git},
                                 definitions=defs) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result, list(GIT_CALLS)


def _expire_backoff(cursor: str) -> str:
    return json.dumps({**json.loads(cursor), "retry_after": time.time() - 1})


def test_unreachable_remote_skips_with_one_line_backs_off_and_recovers(pipeline: Pipeline, tmp_path: Path) -> None:
    cursor = _tick(pipeline, None).cursor
    heads = json.loads(cursor)["heads"]
    sha = pipeline.remote.commit("while the remote is away")
    moved = Path(pipeline.remote.url + ".away")
    shutil.move(pipeline.remote.url, moved)

    failed, calls = _tick_counting(pipeline, cursor, tmp_path)
    assert calls == ["git ls-remote"] and failed.run_requests == []
    line = failed.skip_reason.skip_message
    assert "\n" not in line and pipeline.remote.url in line and "does not appear to be a git repository" in line
    assert "1 failure(s) in a row, next try in 5s" in line  # the poll interval, then doubled
    state = json.loads(failed.cursor)
    assert state["heads"] == heads and state["failures"] == 1  # the heads are kept
    assert 3 < state["retry_after"] - time.time() <= 5

    waiting, calls = _tick_counting(pipeline, failed.cursor, tmp_path)  # inside the backoff: git is not called
    assert calls == [] and waiting.cursor == failed.cursor
    assert "unreachable (1 failure(s) in a row); next try in" in waiting.skip_reason.skip_message

    again, _ = _tick_counting(pipeline, _expire_backoff(failed.cursor), tmp_path)
    state = json.loads(again.cursor)
    assert state["failures"] == 2 and 8 < state["retry_after"] - time.time() <= 10
    assert "2 failure(s) in a row, next try in 10s" in again.skip_reason.skip_message

    shutil.move(moved, pipeline.remote.url)
    recovered = _tick(pipeline, _expire_backoff(again.cursor))  # the cursor's heads were not advanced
    assert [r.partition_key for r in recovered.run_requests] == [sha]
    assert not {"failures", "retry_after"} & set(json.loads(recovered.cursor))  # a success clears the backoff


def test_first_tick_failing_still_records_the_baseline_later(pipeline: Pipeline) -> None:
    moved = Path(pipeline.remote.url + ".away")
    shutil.move(pipeline.remote.url, moved)
    failed = _tick(pipeline, None)
    assert "cannot reach remote" in failed.skip_reason.skip_message and "heads" not in json.loads(failed.cursor)
    shutil.move(moved, pipeline.remote.url)
    baseline = _tick(pipeline, _expire_backoff(failed.cursor))
    assert baseline.run_requests == [] and "baseline" in baseline.skip_reason.skip_message


def test_backoff_doubles_up_to_five_minutes() -> None:
    assert [backoff_seconds(n, 5) for n in (1, 2, 3, 4, 5, 6, 7, 20)] == [5, 10, 20, 40, 80, 160, 300, 300]
    assert backoff_seconds(1, 0.5) == 1  # never a busy loop


def test_token_in_remote_url_stays_out_of_the_skip_line(make_pipeline, tmp_path: Path) -> None:
    pipe = make_pipeline()
    url = "https://ci:s3cr3t-t0ken-value@127.0.0.1:9/app.git"  # port 9: nothing listens
    (pipe.settings.apps_dir / "tiny-app.yaml").write_text(
        f"name: tiny-app\nrepository:\n  url: '{url}'\ntrigger: {{ls_remote_timeout_seconds: 10}}\nstages: {{}}\n")
    result = _tick(pipe, None)
    assert "cannot reach remote https://ci:***@127.0.0.1:9/app.git" in result.skip_reason.skip_message
    assert "s3cr3t-t0ken-value" not in result.skip_reason.skip_message + result.cursor


def test_good_app_triggers_beside_a_broken_app_file(pipeline: Pipeline) -> None:
    (pipeline.settings.apps_dir / "broken.yaml").write_text("name: broken\nrepository: {url: x}\nstagez: {}\n")
    cursor = _tick(pipeline, None).cursor
    sha = pipeline.remote.commit("pushed beside a broken app file")
    assert [r.partition_key for r in _tick(pipeline, cursor).run_requests] == [sha]
    assert "broken_config_error" in {s.name for s in pipeline.defs.sensors}


def test_merge_mode_builds_gitlabs_merge_ref_where_it_exists_else_the_head() -> None:
    from sevenp_pipeline.triggers.sensors import pull_requests  # noqa: PLC0415

    refs = {"refs/merge-requests/3/head": "a" * 40, "refs/merge-requests/3/merge": "b" * 40,
            "refs/merge-requests/4/head": "c" * 40, "refs/pull/5/head": "d" * 40, "refs/pull/5/merge": "e" * 40}
    assert pull_requests(refs, "merge") == {"3": ["refs/merge-requests/3/merge", "b" * 40],
                                            "4": ["refs/merge-requests/4/head", "c" * 40],
                                            "5": ["refs/pull/5/merge", "e" * 40]}
    assert pull_requests(refs, "head") == {"3": ["refs/merge-requests/3/head", "a" * 40],
                                           "4": ["refs/merge-requests/4/head", "c" * 40],
                                           "5": ["refs/pull/5/head", "d" * 40]}
    assert pull_requests(refs, "off") == {}
