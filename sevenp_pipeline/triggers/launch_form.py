"""``<app>_run_branch_job``: the launch form for "run branch X" — a branch name, the environment as a
choice, skip tests — that needs no commit SHA and no resource YAML.

A step cannot soundly start a run of another job itself: creating a launchable run needs the code
location's handle (the job's snapshot and origin) that the daemon and the webserver hold, not a run
worker. So the form's run resolves the branch's head, adds its commit partition and records the
request on its own run (``sevenp/run-branch``); ``<app>_run_branch_sensor`` turns each successful form
run into one run of ``<app>_ci_job`` for that commit, with the run's full tags (``sevenp/trigger=manual``)
and the chosen launch options — the path the push sensor takes (a sensor's RunRequest, queued and
launched by the daemon). A branch that does not exist fails the form's run naming the remote's branches.
"""

# No `from __future__ import annotations`: Dagster reads the op's config and resource annotations.
import enum
import json
from typing import Any

import dagster as dg
from pydantic import Field

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.resources.git import GitClient, GitError
from sevenp_pipeline.text import printable
from sevenp_pipeline.triggers.identity import MANUAL
from sevenp_pipeline.triggers.tags import (
    TAG_APP,
    TAG_AUTHOR,
    TAG_BRANCH,
    TAG_COMMIT,
    TAG_MESSAGE,
    TAG_ORIGIN,
    TAG_TRIGGER,
)

TAG_RUN_BRANCH = "sevenp/run-branch"  # on a form run: the request its sensor turns into a pipeline run
TAG_FORM_RUN = "sevenp/form-run"  # on the pipeline run: the form run that asked for it
NO_DEPLOY = "none"
_MAX_TAG = 200


def form_job_name(app: AppConfig) -> str:
    return f"{app.key}_run_branch_job"


def launch_form(app: AppConfig) -> type[dg.Config]:
    """The form's config class: ``environment`` offers ``none`` and the app's environments only."""
    choices = enum.Enum(f"{app.key}_environment", {name: name for name in (NO_DEPLOY, *app.deploy_environments)})
    return type(f"RunBranch_{app.key}", (dg.Config,), {
        "__module__": __name__,
        "__doc__": f"Run {app.name}'s pipeline for the head of a branch.",
        "__annotations__": {"branch": str, "environment": choices, "skip_tests": bool},
        "branch": Field(description="the branch to run (its head commit now), e.g. develop"),
        "environment": Field(default=choices[NO_DEPLOY], description="where to deploy when the pipeline passes "
                             "(an environment and those it comes after; launching is the approval a manual one "
                             "needs), or none"),
        "skip_tests": Field(default=False, description="skip the test stages: their gates are not evaluated (never "
                            "a pass), and the image is not promoted"),
    })


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_TAG else text[: _MAX_TAG - 1] + "…"


def build_launch_form(app: AppConfig, partitions: dg.DynamicPartitionsDefinition) -> dg.JobDefinition:
    form = launch_form(app)

    @dg.op(name=f"{app.key}_resolve_branch",
           description="Finds the branch's head on the remote and records the run to start for it.")
    def resolve_branch(context: dg.OpExecutionContext, config: form, git: GitClient) -> None:  # type: ignore[valid-type]
        url = app.repository.url
        try:
            heads = git.ls_remote_heads(url, timeout=app.trigger.ls_remote_timeout_seconds)
        except GitError as exc:
            raise dg.Failure(f"run branch: {exc}") from exc
        sha = heads.get(config.branch)
        if sha is None:
            known = ", ".join(printable(b) for b in sorted(heads)[:30]) or "none"
            raise dg.Failure(f"run branch: {app.name} has no branch {printable(config.branch)!r} on its remote "
                             f"(its branches: {known})")
        try:
            git.fetch(app.key, url, log=context.log.info)
            info = git.commit_info(app.key, sha)
        except GitError as exc:
            raise dg.Failure(f"run branch: {exc}") from exc
        context.instance.add_dynamic_partitions(partitions.name, [sha])
        request = {"commit": sha, "branch": config.branch, "message": info.subject, "author": info.author,
                   "environment": config.environment.value, "skip_tests": config.skip_tests}
        context.instance.add_run_tags(context.run_id, {TAG_RUN_BRANCH: json.dumps(request, sort_keys=True)})
        context.log.info("%s is at %s (%s): %s_run_branch_sensor starts %s_ci_job for it", printable(config.branch),
                         sha[:12], info.subject, app.key, app.key)

    @dg.job(name=form_job_name(app), executor_def=dg.in_process_executor,
            description=f"Run {app.name}'s pipeline for a branch: pick the branch, where to deploy and whether "
                        "to skip tests; no commit SHA, no resource YAML. The run it starts is tagged trigger=manual.")
    def run_branch_job() -> None:
        resolve_branch()

    return run_branch_job


def pipeline_request(app: AppConfig, run: dg.DagsterRun) -> dg.RunRequest | dg.SkipReason:
    """The pipeline run a successful form run asked for (one per form run: its run id is the run key)."""
    try:
        request: dict[str, Any] = json.loads(run.tags.get(TAG_RUN_BRANCH) or "{}")
    except ValueError:
        request = {}
    if not request.get("commit"):
        return dg.SkipReason(f"form run {run.run_id[:8]} recorded no commit")
    sha = str(request["commit"])
    options = {"environment": str(request.get("environment") or NO_DEPLOY),
               "skip_tests": bool(request.get("skip_tests"))}
    return dg.RunRequest(
        run_key=f"run-branch:{run.run_id}", partition_key=sha,
        run_config={"resources": {"launch_options": {"config": options}}},
        tags={TAG_APP: app.name, TAG_COMMIT: sha, TAG_BRANCH: _clip(str(request.get("branch", ""))),
              TAG_MESSAGE: _clip(str(request.get("message", ""))), TAG_AUTHOR: _clip(str(request.get("author", ""))),
              TAG_TRIGGER: MANUAL, TAG_ORIGIN: MANUAL, TAG_FORM_RUN: run.run_id})


def build_launch_form_sensor(app: AppConfig, form_job: dg.JobDefinition, ci_job: Any) -> dg.SensorDefinition:
    @dg.run_status_sensor(
        name=f"{app.key}_run_branch_sensor", run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[form_job],
        request_job=ci_job, minimum_interval_seconds=2, default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Starts {app.name}'s pipeline for the branch head each {form_job.name} run resolved.")
    def run_branch_sensor(context: dg.RunStatusSensorContext):
        return pipeline_request(app, context.dagster_run)

    return run_branch_sensor
