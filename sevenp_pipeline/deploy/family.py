"""The deploy family of one app: a deployment asset per environment (and release notes), a deploy
job per environment, and the sensors that start deploys after a successful CI run and report failures."""

from __future__ import annotations

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.deploy.assets import build_deploy_assets
from sevenp_pipeline.deploy.history import deploy_env_tag
from sevenp_pipeline.deploy.triggers import build_deploy_triggers, deploy_job_name, deploy_job_selection
from sevenp_pipeline.execution.threads import threaded_executor_for
from sevenp_pipeline.family import Family
from sevenp_pipeline.triggers.sensors import TAG_APP
from sevenp_pipeline.triggers.tags import TAG_DEPLOY_ENV
from sevenp_pipeline.verdict import Gates


def build_deploy_assets_family(app: AppConfig, partitions: dg.PartitionsDefinition, promoted: dg.AssetKey,
                               gates: Gates) -> Family:
    """The deployment assets alone: the CI job excludes their keys before the deploy jobs exist."""
    return Family(dg.Definitions(assets=build_deploy_assets(app, partitions, promoted, gates)))


def build_deploy_family(app: AppConfig, assets: Family, ci_job: dg.UnresolvedAssetJobDefinition) -> Family:
    """The deploy jobs and triggers over ``assets`` (see :func:`build_deploy_assets_family`)."""
    keys = assets.asset_keys
    jobs = {
        env: dg.define_asset_job(
            name=deploy_job_name(app, env), selection=deploy_job_selection(app, env, keys),
            description=f"Deploys one commit of {app.name} to {env}: launch it for a commit partition to deploy, "
                        f"approve or roll back (a redeploy of an older healthy commit).",
            executor_def=threaded_executor_for(app.execution.max_workers),
            tags={TAG_APP: app.name, TAG_DEPLOY_ENV: deploy_env_tag(app.name, env)},
        ) for env in app.deploy_environments
    }
    sensors = build_deploy_triggers(app, ci_job, jobs) if jobs else []
    return Family(dg.Definitions(assets=assets.defs.assets, jobs=list(jobs.values()), sensors=sensors))
