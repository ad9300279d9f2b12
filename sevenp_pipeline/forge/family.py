"""The forge family of one app that names a forge: the sensor that posts its commit and deployment
statuses (and the pull-request comment), and the one that deploys on an approver's review or comment.

It builds on the CI job (triggers/) and the deploy jobs (deploy/), which know nothing of the forge."""

from __future__ import annotations

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.deploy.triggers import deploy_job_name
from sevenp_pipeline.family import Family
from sevenp_pipeline.forge.approval_sensor import build_forge_approval_sensor
from sevenp_pipeline.forge.sensor import build_forge_sensor


def build_forge_family(app: AppConfig, ci_job: dg.UnresolvedAssetJobDefinition, deploys: Family | None) -> Family:
    """Nothing for an app without ``forge:``; the approval sensor only when an environment names approvers."""
    if not app.forge.enabled:
        return Family(dg.Definitions())
    sensors = [build_forge_sensor(app, ci_job.name)]
    if deploys is not None and any(spec.approvers for spec in app.deploy_environments.values()):
        by_name = {job.name: job for job in deploys.defs.jobs or ()}
        jobs = {env: by_name[deploy_job_name(app, env)] for env in app.deploy_environments
                if deploy_job_name(app, env) in by_name}
        sensors.append(build_forge_approval_sensor(app, jobs))
    return Family(dg.Definitions(sensors=sensors))
