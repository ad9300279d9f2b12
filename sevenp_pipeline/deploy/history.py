"""What the instance knows of deployments: each environment's deployment asset, partitioned by commit,
is its history. A healthy deploy is a materialization (``status: live``); a failed or rolled-back one
is a failed step, so a partition's latest materialization always describes a deploy that went live.

Rollback reads this: the last healthy partition before the one live now is what ``make rollback``
deploys again. Retention reads it too (:func:`deployed_commits`): the commits an environment may be
rolled back to keep their workspaces (the smoke tests run from there).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from sevenp_pipeline.asset_helpers import latest_materialization
from sevenp_pipeline.triggers.tags import TAG_DEPLOY_ENV

DEPLOYMENT_SUFFIX = "_deployment"
ACTIVE_STATUSES = (dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                   dg.DagsterRunStatus.STARTED)
KEEP_HEALTHY = 3  # per environment: the workspaces of the last few healthy deploys stay for rollback


def deployment_key(app_key: str, environment: str) -> dg.AssetKey:
    return dg.AssetKey([app_key, f"{environment}{DEPLOYMENT_SUFFIX}"])


def deploy_env_tag(app_name: str, environment: str) -> str:
    """The value of the run tag ``sevenp/deploy-env``: one deploy run per value at a time (dagster.yaml)."""
    return f"{app_name}/{environment}"


@dataclass(frozen=True)
class Deployment:
    """One healthy deploy, as its materialization recorded it."""

    commit: str
    run_id: str
    timestamp: float
    metadata: dict[str, Any]

    @property
    def image_digest(self) -> str:
        return str(self.metadata.get("image_digest", ""))


def healthy_deployments(instance: dg.DagsterInstance, app_key: str, environment: str,
                        limit: int = 100) -> list[Deployment]:
    """Healthy deploys of an environment, newest first (one commit may appear more than once)."""
    records = instance.fetch_materializations(deployment_key(app_key, environment), limit=limit).records
    out = []
    for record in records:
        mat = record.asset_materialization
        if mat is None or mat.partition is None:
            continue
        meta = {k: v.value for k, v in mat.metadata.items()}
        if meta.get("status") != "live":
            continue
        out.append(Deployment(commit=mat.partition, run_id=record.run_id, timestamp=record.timestamp, metadata=meta))
    return out


def latest_for_commit(instance: dg.DagsterInstance, app_key: str, environment: str, sha: str) -> Deployment | None:
    """The latest healthy deploy of ``sha`` to ``environment`` (None: it never went live there)."""
    record = latest_materialization(instance, deployment_key(app_key, environment), sha)
    mat = record.asset_materialization if record is not None else None
    if record is None or mat is None:
        return None
    meta = {k: v.value for k, v in mat.metadata.items()}
    if meta.get("status") != "live":
        return None
    return Deployment(commit=sha, run_id=record.run_id, timestamp=record.timestamp, metadata=meta)


def rollback_candidate(instance: dg.DagsterInstance, app_key: str, environment: str,
                       live_commit: str | None) -> Deployment | None:
    """The last healthy deploy of another commit than the one live now: what a rollback deploys again."""
    for deployment in healthy_deployments(instance, app_key, environment):
        if deployment.commit != live_commit:
            return deployment
    return None


def run_partition(run: dg.DagsterRun) -> str | None:
    """The commit partition a run was launched for (Dagster keeps it in a tag)."""
    return run.tags.get("dagster/partition")


def newer_deploy_runs(instance: dg.DagsterInstance, run: dg.DagsterRun, tag_value: str) -> list[dg.DagsterRun]:
    """Deploy runs of the same environment, for another commit, created after ``run`` and not finished:
    when several commits queue for one environment, the newest wins."""
    mine = instance.get_run_record_by_id(run.run_id)
    if mine is None:
        return []
    others = instance.get_run_records(filters=dg.RunsFilter(tags={TAG_DEPLOY_ENV: tag_value},
                                                            statuses=list(ACTIVE_STATUSES)))
    return [r.dagster_run for r in others
            if r.dagster_run.run_id != run.run_id and r.create_timestamp > mine.create_timestamp
            and run_partition(r.dagster_run) not in (None, run_partition(run))]


def deployed_commits(instance: dg.DagsterInstance, app_keys: Iterable[str] | None = None) -> dict[str, set[str]]:
    """``{app key: SHAs}``: the last few healthy deploys of every environment (rollback targets)."""
    out: dict[str, set[str]] = {}
    for key in instance.get_asset_keys():
        if len(key.path) != 2 or not key.path[1].endswith(DEPLOYMENT_SUFFIX):
            continue
        app_key, name = key.path
        if app_keys is not None and app_key not in app_keys:
            continue
        env = name.removesuffix(DEPLOYMENT_SUFFIX)
        seen: list[str] = []
        for deployment in healthy_deployments(instance, app_key, env):
            if deployment.commit not in seen:
                seen.append(deployment.commit)
            if len(seen) >= KEEP_HEALTHY:
                break
        out.setdefault(app_key, set()).update(seen)
    return out
