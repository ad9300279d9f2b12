"""What starts deploys, and who hears about failures.

- ``<app>_deploy_<env>_job``: one job per environment, selecting its deployment asset (and the release
  notes after the last one). Runs carry ``sevenp/deploy-env``, limited to one at a time per value in
  dagster.yaml. A person deploys (or approves, or rolls back) by launching it for a commit partition.
- ``<app>_deploy_sensor``: when a commit's pipeline succeeds, starts the deploys its branch calls for
  (``environments.<env>.branches``, ``approval: auto``) — or the environment a person picked at launch
  (``launch_options.environment``); when a deploy goes live, starts the environments that come ``after``
  it, unless they need a person's approval that the launch did not give.
- ``<app>_failure_notifier``: a Slack message for every failed run of the app that did not send its own.
"""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.config.models import Branches
from sevenp_pipeline.deploy import history
from sevenp_pipeline.resources.notify import Notification, SlackNotifier
from sevenp_pipeline.triggers.identity import GRAPH, MANUAL, SCHEDULE, origin_of
from sevenp_pipeline.triggers.sensors import branch_matches
from sevenp_pipeline.triggers.tags import (
    TAG_APP,
    TAG_APPROVED,
    TAG_BRANCH,
    TAG_COMMIT,
    TAG_DEPLOY,
    TAG_DEPLOY_ENV,
    TAG_NOTIFIED,
    TAG_ORIGIN,
    TAG_PR,
    TAG_TRIGGER,
)

NO_DEPLOY = "none"
# Runs that have a branch only because triggers/identity.py named one: no branch rules for them.
BY_HAND = (MANUAL, GRAPH, SCHEDULE)


def deploy_job_name(app: AppConfig, environment: str) -> str:
    return f"{app.key}_deploy_{environment}_job"


def chosen_environment(run_config: Mapping[str, Any]) -> str:
    """``resources.launch_options.config.environment`` of a run ("" = by branch)."""
    resources = run_config.get("resources") or {}
    options = (resources.get("launch_options") or {}).get("config") or {}
    return str(options.get("environment") or "")


def chain_to(app: AppConfig, environment: str) -> list[str]:
    """``environment`` and every environment it comes after, first one first."""
    envs = app.deploy_environments
    chain = [environment]
    while envs[chain[0]].after:
        chain.insert(0, envs[chain[0]].after)  # type: ignore[arg-type]
    return chain


def next_deploys(app: AppConfig, *, finished_env: str | None, branch: str | None,
                 approved: set[str]) -> tuple[list[str], list[str]]:
    """Environments to deploy next, and those waiting for a person: after a pipeline (``finished_env``
    None) the first ones, after a deploy the ones that come after it."""
    start, waiting = [], []
    for name, env in app.deploy_environments.items():
        if env.after != finished_env:
            continue
        if name in approved:
            start.append(name)
        elif branch is not None and env.branches and branch_matches(branch, Branches(include=env.branches)):
            (waiting if env.approval == "manual" else start).append(name)
    return start, waiting


def rule_branch(run: dg.DagsterRun) -> str | None:
    """The branch whose ``environments.<env>.branches`` rules apply after ``run``: a pushed commit's (a
    push run, a re-execution of one, the deploys after it). A run launched by hand, from the graph or
    by a schedule has a branch too (triggers/identity.py names it) but deploys only where the person
    asked (launch options), as before such runs were named."""
    return None if origin_of(run.tags) in BY_HAND else run.tags.get(TAG_BRANCH)


def deploy_tags(app: AppConfig, environment: str, sha: str, run: dg.DagsterRun, approved: set[str]) -> dict[str, str]:
    tags = {TAG_APP: app.name, TAG_COMMIT: sha, TAG_DEPLOY_ENV: history.deploy_env_tag(app.name, environment),
            TAG_TRIGGER: f"after {run.job_name} {run.run_id[:8]}"}
    if run.tags.get(TAG_BRANCH):
        tags[TAG_BRANCH] = run.tags[TAG_BRANCH]
    if origin_of(run.tags):
        tags[TAG_ORIGIN] = origin_of(run.tags)
    if approved:
        tags[TAG_APPROVED] = ",".join(sorted(approved))
    return tags


def build_deploy_triggers(app: AppConfig, ci_job: Any, deploy_jobs: Mapping[str, Any]) -> list[dg.SensorDefinition]:
    jobs = list(deploy_jobs.values())
    env_of_job = {deploy_job_name(app, env): env for env in deploy_jobs}

    @dg.run_status_sensor(
        name=f"{app.key}_deploy_sensor", run_status=dg.DagsterRunStatus.SUCCESS,
        monitored_jobs=[ci_job, *jobs], request_jobs=jobs, minimum_interval_seconds=2,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Starts {app.name}'s deploys after a successful pipeline or deploy (branch rules, "
                    "approvals, the environment picked at launch).")
    def deploy_sensor(context: dg.RunStatusSensorContext):  # noqa: PLR0911 (one return per refusal, each named)
        run = context.dagster_run
        sha = history.run_partition(run) or run.tags.get(TAG_COMMIT)
        if not sha:
            return dg.SkipReason(f"run {run.run_id[:8]} has no commit partition")
        if run.tags.get(TAG_PR):  # whatever its launch options say: its code is not on a branch yet
            return dg.SkipReason(f"run {run.run_id[:8]} is of pull request {run.tags[TAG_PR]}: "
                                 "a pull-request run never deploys")
        branch = rule_branch(run)
        approved = {a for a in run.tags.get(TAG_APPROVED, "").split(",") if a}
        finished_env = env_of_job.get(run.job_name)
        if finished_env is None:  # the pipeline: the environment picked at launch, or the branch's
            chosen = chosen_environment(run.run_config)
            if chosen == NO_DEPLOY:
                return dg.SkipReason(f"run {run.run_id[:8]} was launched with environment: none")
            if chosen:
                if chosen not in app.deploy_environments:
                    return dg.SkipReason(f"run {run.run_id[:8]}: no environment '{chosen}'")
                approved |= set(chain_to(app, chosen))
                branch = None  # a person's choice replaces the branch rules
        elif run.tags.get(TAG_DEPLOY) != "live":
            return dg.SkipReason(f"deploy run {run.run_id[:8]} did not go live ({run.tags.get(TAG_DEPLOY)})")
        start, waiting = next_deploys(app, finished_env=finished_env, branch=branch, approved=approved)
        for name in waiting:
            context.log.info(f"{sha[:12]} waits for a person to deploy it to {name} (approval: manual): "
                             f"launch {deploy_job_name(app, name)} for this commit")
        if not start:
            return dg.SkipReason(f"{sha[:12]}: nothing to deploy automatically"
                                 + (f" ({', '.join(waiting)} need approval)" if waiting else ""))
        return [dg.RunRequest(run_key=f"{name}:{run.run_id}", job_name=deploy_job_name(app, name),
                              partition_key=sha, tags=deploy_tags(app, name, sha, run, approved))
                for name in start]

    @dg.run_failure_sensor(
        name=f"{app.key}_failure_notifier", monitored_jobs=[ci_job, *jobs], minimum_interval_seconds=2,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"A Slack message for each failed run of {app.name} (deploys send their own).")
    def failure_notifier(context: dg.RunFailureSensorContext, notifier: SlackNotifier):
        run = context.dagster_run
        if run.tags.get(TAG_NOTIFIED):
            return
        sha = history.run_partition(run) or run.tags.get(TAG_COMMIT, "")
        reason = context.failure_event.message if context.failure_event else "the run failed"
        steps = [e.step_key for e in context.get_step_failure_events() if e.step_key]
        notifier.notify(Notification(
            kind="run_failed", app=app.name, environment=run.tags.get(TAG_DEPLOY_ENV, "").partition("/")[2],
            commit=sha, run_id=run.run_id, title=f"{app.name}: {run.job_name} failed for {sha[:12]}",
            text=reason or "the run failed",
            fields={"branch": run.tags.get(TAG_BRANCH, "(by hand)"), "failed steps": ", ".join(steps[:5]) or "-"}),
            log=context.log.info)

    return [deploy_sensor, failure_notifier]


def deploy_job_selection(app: AppConfig, environment: str, keys: Sequence[dg.AssetKey]) -> list[dg.AssetKey]:
    return [k for k in keys if k == history.deployment_key(app.key, environment)
            or (k.path[-1] == "release_notes" and _feeds_release_notes(app, environment))]


def _feeds_release_notes(app: AppConfig, environment: str) -> bool:
    envs = app.deploy_environments
    terminal = [n for n in envs if not any(e.after == n for e in envs.values())]
    return terminal == [environment]
