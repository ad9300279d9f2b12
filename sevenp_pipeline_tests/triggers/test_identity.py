"""Every run knows what it is: the trigger from Dagster's own tags, the branch of a run launched by hand,
the tags filled on the run itself, and which runs may move a branch's image tags."""

from __future__ import annotations

import dagster as dg
import pytest

from sevenp_pipeline.config import Settings
from sevenp_pipeline.definitions import build_definitions
from sevenp_pipeline.image.tags import image_tags
from sevenp_pipeline.promotion.assets import moves_branch_tags
from sevenp_pipeline.triggers.identity import origin_of, pick_branch, trigger_of
from sevenp_pipeline.triggers.tags import (
    TAG_APP,
    TAG_AUTHOR,
    TAG_BRANCH,
    TAG_COMMIT,
    TAG_MESSAGE,
    TAG_ORIGIN,
    TAG_TRIGGER,
)
from sevenp_pipeline_tests.conftest import Pipeline
from sevenp_pipeline_tests.gitutil import git

SHA = "0123456789abcdef0123456789abcdef01234567"
OLD = "fedcba9876543210fedcba9876543210fedcba98"


@pytest.mark.parametrize(("tags", "job", "expected"), [
    ({}, "__ASSET_JOB", "graph"),
    ({}, "tiny_app_ci_job", "manual"),
    ({"dagster/sensor_name": "tiny_app_git_push_sensor", TAG_TRIGGER: "push"}, "tiny_app_ci_job", "push"),
    ({"dagster/sensor_name": "some_sensor"}, "tiny_app_ci_job", "push"),
    ({"dagster/sensor_name": "tiny_app_deploy_sensor", TAG_TRIGGER: "after ci 1234"}, "x_job", "after ci 1234"),
    ({"dagster/schedule_name": "nightly"}, "tiny_app_ci_job", "schedule"),
    # A re-execution inherits the parent's sensor and trigger tags: the parent id wins over both.
    ({"dagster/parent_run_id": "abc", "dagster/sensor_name": "s", TAG_TRIGGER: "push"}, "tiny_app_ci_job",
     "reexecution"),
    ({"dagster/parent_run_id": "abc"}, "__ASSET_JOB", "reexecution"),
])
def test_trigger_from_dagsters_tags(tags: dict[str, str], job: str, expected: str) -> None:
    assert trigger_of(tags, job) == expected
    assert trigger_of(tags, job, parent_run_id="abc") == "reexecution"  # a re-execution by the Python API


def test_origin_is_the_lineages_first_trigger() -> None:
    assert origin_of({TAG_TRIGGER: "push"}) == "push"  # a push run tagged before origins existed
    assert origin_of({TAG_TRIGGER: "reexecution", TAG_ORIGIN: "graph"}) == "graph"
    assert origin_of({TAG_TRIGGER: "reexecution"}) == ""


def test_main_and_develop_name_a_commit_first(pipeline: Pipeline) -> None:
    assert pick_branch(["feature/x", "develop", "main"], pipeline.app) == "main"
    assert pick_branch(["feature/x", "develop"], pipeline.app) == "develop"
    assert pick_branch(["zeta", "alpha"], pipeline.app) == "alpha"
    assert pick_branch([], pipeline.app) == ""


@pytest.mark.parametrize(("origin", "branch", "head", "moves"), [
    ("push", "develop", SHA, True),
    ("push", "develop", OLD, False),  # develop moved on while this run built: it must not move it back
    ("push", "develop", None, False),  # the head could not be read
    ("push", "", SHA, False),
    ("manual", "develop", SHA, False),
    ("graph", "develop", SHA, False),
    ("", "develop", SHA, False),  # a re-execution whose origin is unknown
])
def test_only_a_pushed_head_moves_the_branch_tags(origin: str, branch: str, head: str | None, moves: bool) -> None:
    moving, why = moves_branch_tags(origin=origin, branch=branch, sha=SHA, head=head)
    assert moving is moves
    assert why


def test_a_run_that_does_not_move_the_branch_gets_its_commit_tags_only() -> None:
    assert image_tags(branch="develop", sha=SHA) == ["develop", "develop-0123456"]
    assert image_tags(branch="develop", sha=SHA, moving=False) == ["develop-0123456"]
    assert image_tags(branch="main", sha=SHA, version="1.4.2") == ["main", "1.4.2", "1.4", "main-0123456"]
    assert image_tags(branch="main", sha=SHA, version="1.4.2", moving=False) == ["main-0123456"]
    # The release tag on this very commit is bound to it; its X.Y moves with later patches.
    assert image_tags(branch="main", sha=SHA, git_tag="v1.4.2", moving=False) == ["1.4.2", "main-0123456"]
    assert image_tags(branch="", sha=SHA, moving=False) == ["sha-0123456"]


def _tags(pipe: Pipeline, result: dg.ExecuteInProcessResult | dg.ExecutionResult) -> dict[str, str]:
    run = pipe.instance.get_run_by_id(result.run_id) if isinstance(result, dg.ExecuteInProcessResult) else None
    assert run is not None
    return dict(run.tags)


def test_a_graph_materialize_without_tags_gets_branch_commit_message_and_trigger(pipeline: Pipeline) -> None:
    older = pipeline.remote.commit("feat: the older one")
    head = pipeline.remote.commit("fix: the head of develop")
    result = pipeline.materialize(head, "source_checkout")  # the implicit asset job, no sevenp tags
    assert result.success
    tags = _tags(pipeline, result)
    assert (tags[TAG_APP], tags[TAG_COMMIT], tags[TAG_BRANCH]) == ("tiny-app", head, "develop")
    assert (tags[TAG_MESSAGE], tags[TAG_AUTHOR], tags[TAG_TRIGGER]) == ("fix: the head of develop", "Ada Tester",
                                                                       "graph")
    assert tags[TAG_ORIGIN] == "graph"
    # Visible to the runs list's tag filter (the run_tags rows), not only on the run's body.
    found = pipeline.instance.get_runs(filters=dg.RunsFilter(tags={TAG_BRANCH: "develop", TAG_TRIGGER: "graph"}))
    assert [r.run_id for r in found] == [result.run_id]

    # An older commit of develop: no branch has it as head, develop holds it.
    tags = _tags(pipeline, pipeline.materialize(older, "source_checkout"))
    assert (tags[TAG_BRANCH], tags[TAG_MESSAGE]) == ("develop", "feat: the older one")

    # The head of both main and develop is named by main.
    pipeline.remote.push("main")
    tags = _tags(pipeline, pipeline.materialize(head, "source_checkout"))
    assert tags[TAG_BRANCH] == "main"


def test_a_commit_on_no_watched_branch_gets_no_branch_and_says_so(make_pipeline) -> None:
    pipe = make_pipeline("branches: {include: [main, develop]}\n")
    git("checkout", "--quiet", "-b", "scratch", cwd=pipe.remote.clone)
    sha = pipe.remote.commit("wip: not on a watched branch", push_to="scratch")
    git("push", "--quiet", "origin", f"{sha}:refs/tags/keep-it", cwd=pipe.remote.clone)
    pipe.remote.commit("wip: scratch moves on", push_to="scratch")  # sha is the head of nothing now
    result = pipe.materialize(sha, "source_checkout")
    assert result.success
    tags = _tags(pipe, result)
    assert tags[TAG_BRANCH] == "" and tags[TAG_TRIGGER] == "graph"
    logs = [r.user_message for r in pipe.instance.all_logs(result.run_id)]
    assert any("on no watched branch of the remote: the run has no branch" in m for m in logs), logs


def test_a_stage_of_a_graph_run_without_the_checkout_takes_the_checkouts_identity(pipeline: Pipeline) -> None:
    """A later stage alone (no git resource): message and branch as the commit's checkout recorded them."""
    sha = pipeline.remote.commit("feat: checked out first")
    assert pipeline.materialize(sha, "source_checkout").success
    result = pipeline.materialize(sha, "api_docs")  # a Stage; whether it then runs does not matter here
    tags = _tags(pipeline, result)
    assert (tags[TAG_BRANCH], tags[TAG_MESSAGE], tags[TAG_TRIGGER]) == ("develop", "feat: checked out first", "graph")


def tiny_ci_job() -> dg.JobDefinition:
    return build_definitions(Settings.from_env()).resolve_job_def("tiny_app_ci_job")


def test_a_reexecution_of_a_push_run_says_reexecution_and_keeps_push_as_its_origin(
        pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEVENP_HOME", str(pipeline.settings.home))
    monkeypatch.setenv("SEVENP_APPS_DIR", str(pipeline.settings.apps_dir))
    sha = pipeline.remote.commit("feat: pushed")
    pushed = {TAG_APP: "tiny-app", TAG_BRANCH: "develop", TAG_COMMIT: sha, TAG_TRIGGER: "push",
              TAG_AUTHOR: "Ada Tester", TAG_MESSAGE: "feat: pushed", "dagster/sensor_name": "tiny_app_git_push_sensor",
              "dagster/partition": sha}
    recon = dg.reconstructable(tiny_ci_job)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("tiny_app_commits", [sha])
        checkout = [dg.AssetKey(["tiny_app", "source_checkout"])]
        with dg.execute_job(recon, instance=instance, tags=pushed, asset_selection=checkout) as parent:
            assert parent.success
        parent_tags = instance.get_run_by_id(parent.run_id).tags
        assert parent_tags[TAG_TRIGGER] == "push"  # a push run is left as the sensor tagged it
        options = dg.ReexecutionOptions(parent_run_id=parent.run_id, step_selection=["tiny_app__source_checkout"])
        # With the parent's tags, as the UI's re-execution and the daemon's retries launch it.
        with dg.execute_job(recon, instance=instance, reexecution_options=options, tags=parent_tags) as child:
            assert child.success
        child_run = instance.get_run_by_id(child.run_id)
    assert child_run.parent_run_id == parent.run_id
    tags = child_run.tags
    assert tags["dagster/sensor_name"] == "tiny_app_git_push_sensor"  # inherited, and no longer believed
    assert (tags[TAG_TRIGGER], tags[TAG_ORIGIN]) == ("reexecution", "push")
    assert (tags[TAG_BRANCH], tags[TAG_COMMIT], tags[TAG_MESSAGE]) == ("develop", sha, "feat: pushed")


def _form(pipe: Pipeline, branch: str, **extra: object) -> dg.ExecuteInProcessResult:
    job = pipe.defs.resolve_job_def("tiny_app_run_branch_job")
    return job.execute_in_process(instance=pipe.instance, raise_on_error=False, run_config={
        "ops": {"tiny_app_resolve_branch": {"config": {"branch": branch, **extra}}}})


def test_the_run_branch_form_starts_the_pipeline_for_the_head_with_full_tags(pipeline: Pipeline) -> None:
    pipeline.remote.commit("feat: older")
    head = pipeline.remote.commit("fix: develop's head")
    form = _form(pipeline, "develop", skip_tests=True)
    assert form.success
    assert head in pipeline.instance.get_dynamic_partitions("tiny_app_commits")
    sensor = pipeline.defs.resolve_sensor_def("tiny_app_run_branch_sensor")
    run = pipeline.instance.get_run_by_id(form.run_id)
    context = dg.build_run_status_sensor_context(
        sensor_name=sensor.name, dagster_instance=pipeline.instance, dagster_run=run,
        dagster_event=dg.DagsterEvent(event_type_value="PIPELINE_SUCCESS", job_name=run.job_name))
    request = sensor(context)
    assert isinstance(request, dg.RunRequest)
    assert request.partition_key == head and request.run_key == f"run-branch:{form.run_id}"
    assert request.run_config == {"resources": {"launch_options": {"config": {"environment": "none",
                                                                              "skip_tests": True}}}}
    assert {k: request.tags[k] for k in (TAG_BRANCH, TAG_COMMIT, TAG_MESSAGE, TAG_TRIGGER)} == {
        TAG_BRANCH: "develop", TAG_COMMIT: head, TAG_MESSAGE: "fix: develop's head", TAG_TRIGGER: "manual"}

    # The run the daemon starts from it: its first step leaves the form's tags as they are.
    ci = pipeline.defs.resolve_job_def("tiny_app_ci_job")
    result = ci.execute_in_process(
        instance=pipeline.instance, partition_key=head, asset_selection=[dg.AssetKey(["tiny_app", "source_checkout"])],
        run_config=request.run_config, tags={**request.tags, "dagster/sensor_name": sensor.name})
    assert result.success
    found = pipeline.instance.get_runs(filters=dg.RunsFilter(tags={TAG_BRANCH: "develop"}))
    assert [r.run_id for r in found] == [result.run_id]
    assert (found[0].tags[TAG_TRIGGER], found[0].tags[TAG_ORIGIN]) == ("manual", "manual")


def test_the_run_branch_form_names_the_branches_when_the_branch_does_not_exist(pipeline: Pipeline) -> None:
    pipeline.remote.commit("feat: on develop")
    form = _form(pipeline, "no-such-branch")
    assert not form.success
    (failure,) = [e for e in form.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    message = failure.step_failure_data.user_failure_data.description
    assert "has no branch 'no-such-branch'" in message and "develop, main" in message
