"""What the cockpit shows, read from the Dagster instance: per app, every branch its runs were for
(head commit, message, author, CI status with the failing stage, the run) and every environment
(live commit, its branch, URL, since when, health, smoke tests, the run, the previous healthy commit).

A branch's head is the commit its newest pushed run was for (``sevenp/origin`` push); its status is
the newest run for that head, whatever launched it (a re-execution from failure turns it green). A run
by hand of an older commit (a graph materialization, a form run of another commit) is not the
branch's status. Deploy runs (``sevenp/deploy-env``) and housekeeping are not a branch's CI. A run's
``sevenp/failure`` tag is the one line that says why it failed. Runs carry the app's name in
``sevenp/app``; assets are under the app's key (its name with ``_`` for ``-``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from sevenp_pipeline.deploy import history
from sevenp_pipeline.triggers.identity import PUSH
from sevenp_pipeline.triggers.tags import (
    TAG_APP,
    TAG_AUTHOR,
    TAG_BRANCH,
    TAG_COMMIT,
    TAG_DEPLOY_ENV,
    TAG_FAILURE,
    TAG_MESSAGE,
    TAG_ORIGIN,
    TAG_TRIGGER,
)

RUNS_READ = 500  # an app's newest runs read per page: enough for every active branch's latest
PASSING, FAILING, RUNNING, CANCELED = "passing", "failing", "running", "canceled"
_STATUS = {
    dg.DagsterRunStatus.SUCCESS: PASSING,
    dg.DagsterRunStatus.FAILURE: FAILING,
    dg.DagsterRunStatus.CANCELED: CANCELED,
    dg.DagsterRunStatus.CANCELING: CANCELED,
}


@dataclass(frozen=True)
class AppRef:
    """An app as the cockpit reads it: its name (run tags), its key (asset keys, URLs), its environments."""

    name: str
    key: str
    environments: tuple[str, ...] = ()


@dataclass(frozen=True)
class BranchStatus:
    branch: str
    commit: str
    message: str
    author: str
    status: str  # passing | failing | running | canceled
    failure: str  # the run's sevenp/failure line ("" when it did not fail or said nothing)
    run_id: str
    created: float
    deployed_to: tuple[str, ...]  # environments whose live commit is this head

    @property
    def title(self) -> str:
        """The commit's first line: what the UI shows beside the short SHA."""
        return self.message.splitlines()[0] if self.message else ""


@dataclass(frozen=True)
class EnvironmentStatus:
    environment: str
    commit: str  # "" when nothing was ever deployed
    branch: str
    url: str
    since: float | None
    health: bool | None
    smoke: bool | None
    run_id: str
    previous: str  # the last healthy commit before it: what a rollback deploys again ("" when none)


def _commit(run: dg.DagsterRun) -> str:
    return run.tags.get(TAG_COMMIT) or run.tags.get("dagster/partition", "")


def pipeline_runs(instance: dg.DagsterInstance, app: AppRef, limit: int = RUNS_READ) -> list[dg.RunRecord]:
    """The app's pipeline runs (no deploy or housekeeping runs), newest first."""
    records = instance.get_run_records(filters=dg.RunsFilter(tags={TAG_APP: app.name}), limit=limit)
    return [r for r in records if TAG_DEPLOY_ENV not in r.dagster_run.tags]


def _pushed(run: dg.DagsterRun) -> bool:
    return (run.tags.get(TAG_ORIGIN) or run.tags.get(TAG_TRIGGER)) == PUSH


def environments(instance: dg.DagsterInstance, app: AppRef) -> list[EnvironmentStatus]:
    """Each of the app's environments as its deploys recorded it: the newest healthy deploy is live."""
    out = []
    for name in app.environments:
        healthy = history.healthy_deployments(instance, app.key, name, limit=50)
        if not healthy:
            out.append(EnvironmentStatus(name, "", "", "", None, None, None, "", ""))
            continue
        live = healthy[0]
        previous = next((d.commit for d in healthy if d.commit != live.commit), "")
        run = instance.get_run_by_id(live.run_id)
        branch = run.tags.get(TAG_BRANCH, "") if run else ""
        if not branch:  # a deploy run launched by hand: the branch of the commit's pipeline run
            branch = next((r.dagster_run.tags.get(TAG_BRANCH, "") for r in pipeline_runs(instance, app)
                           if _commit(r.dagster_run) == live.commit and r.dagster_run.tags.get(TAG_BRANCH)), "")
        meta = live.metadata
        since = meta.get("since")
        out.append(EnvironmentStatus(
            environment=name, commit=live.commit, branch=branch, url=str(meta.get("url") or ""),
            since=float(since) if isinstance(since, int | float) else live.timestamp,
            health=meta.get("health_passed") if isinstance(meta.get("health_passed"), bool) else None,
            smoke=meta.get("smoke_passed") if isinstance(meta.get("smoke_passed"), bool) else None,
            run_id=live.run_id, previous=previous))
    return out


def branches(instance: dg.DagsterInstance, app: AppRef, envs: Sequence[EnvironmentStatus] = ()) -> list[BranchStatus]:
    """Every branch the app's runs were for, at its head, newest first."""
    live = {e.environment: e.commit for e in envs if e.commit}
    runs = [r for r in pipeline_runs(instance, app) if r.dagster_run.tags.get(TAG_BRANCH)]
    heads: dict[str, str] = {}
    for record in runs:  # newest first: the first pushed run of a branch names its head
        run = record.dagster_run
        if _pushed(run):
            heads.setdefault(run.tags[TAG_BRANCH], _commit(run))
    seen: dict[str, BranchStatus] = {}
    for record in runs:
        run = record.dagster_run
        branch, commit = run.tags[TAG_BRANCH], _commit(run)
        if branch in seen or heads.get(branch, commit) != commit:
            continue
        seen[branch] = BranchStatus(
            branch=branch, commit=commit, message=run.tags.get(TAG_MESSAGE, ""), author=run.tags.get(TAG_AUTHOR, ""),
            status=_STATUS.get(run.status, RUNNING), failure=run.tags.get(TAG_FAILURE, ""), run_id=run.run_id,
            created=record.create_timestamp.timestamp(),
            deployed_to=tuple(env for env, sha in live.items() if sha == commit))
    return list(seen.values())
