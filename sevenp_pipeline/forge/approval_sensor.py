"""``<app>_forge_approval_sensor``: turns an approval on the forge into the approval record and the deploy.

See :mod:`sevenp_pipeline.forge.approvals` for what counts as an approval. Every minute, for each
``approval: manual`` environment with ``approvers``, the sensor asks the forge about the few newest
commits waiting for it (live in the environment it comes ``after``, else the latest successful
pipeline runs of its branches) that have neither an approval record nor a live deploy there; team
memberships are asked once per user and team a tick. A forge
that cannot be asked skips the tick with one line; nothing is recorded from half an answer.
"""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
from pathlib import Path

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.config.models import Branches
from sevenp_pipeline.deploy.approvals import find_approval, record_approval
from sevenp_pipeline.deploy.history import deploy_env_tag, healthy_deployments, latest_for_commit
from sevenp_pipeline.deploy.targets.resource import DeployTargets
from sevenp_pipeline.forge.approvals import ForgeTrouble, TeamMembership, find_forge_approval
from sevenp_pipeline.forge.client import ForgeClient
from sevenp_pipeline.triggers.sensors import branch_matches
from sevenp_pipeline.triggers.tags import TAG_APP, TAG_APPROVED, TAG_BRANCH, TAG_COMMIT, TAG_DEPLOY_ENV, TAG_TRIGGER

CANDIDATES = 3  # newest commits asked about per environment and tick


def approval_candidates(instance: dg.DagsterInstance, app: AppConfig, env: str) -> list[str]:
    """Commits that may wait for ``env``'s approval, newest first."""
    spec = app.deploy_environments[env]
    if spec.after:
        commits = [d.commit for d in healthy_deployments(instance, app.key, spec.after, limit=20)]
    else:
        rules = Branches(include=spec.branches)
        runs = instance.get_runs(filters=dg.RunsFilter(job_name=f"{app.key}_ci_job", tags={TAG_APP: app.name},
                                                       statuses=[dg.DagsterRunStatus.SUCCESS]), limit=20)
        commits = [r.tags.get(TAG_COMMIT, "") for r in runs if branch_matches(r.tags.get(TAG_BRANCH, ""), rules)]
    return list(dict.fromkeys(c for c in commits if c))[:CANDIDATES]


def build_forge_approval_sensor(app: AppConfig, jobs: dict[str, "dg.UnresolvedAssetJobDefinition"],
                                ) -> dg.SensorDefinition:
    waiting = {env: spec.approvers for env, spec in app.deploy_environments.items()
               if spec.approval == "manual" and spec.approvers and env in jobs}

    @dg.sensor(
        name=f"{app.key}_forge_approval_sensor", minimum_interval_seconds=60, jobs=[jobs[e] for e in waiting],
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Deploys {app.name} to {', '.join(waiting)} when an approver approves on "
                    f"{app.forge.kind}: an approving review of the pull request, or a '/deploy <env>' comment.")
    def _sensor(context: dg.SensorEvaluationContext, forge: ForgeClient,
                deploy_targets: DeployTargets) -> dg.SensorResult | dg.SkipReason:
        home = Path(deploy_targets.home).resolve()
        requests, asked = [], 0
        teams = TeamMembership(forge, app.forge, log=context.log.info, warn=context.log.warning)  # one per tick
        for env, approvers in waiting.items():
            for sha in approval_candidates(context.instance, app, env):
                if find_approval(home, app.key, env, sha) or latest_for_commit(context.instance, app.key, env, sha):
                    continue
                asked += 1
                try:
                    found = find_forge_approval(forge, app.forge, sha=sha, env=env, approvers=approvers,
                                                log=context.log.info, membership=teams)
                except ForgeTrouble as exc:
                    context.log.warning(f"approvals of {sha[:12]} for {env} not read: {exc}")
                    return dg.SkipReason(f"{app.forge.kind} could not be asked about approvals: {exc}")
                if found is None:
                    continue
                record_approval(home, app.key, env, sha, approver=found.approver, via=found.via)
                context.log.info(f"{sha[:12]} approved for {env} by {found.approver} ({found.via})")
                requests.append(dg.RunRequest(
                    run_key=f"forge-approval:{env}:{sha}", job_name=jobs[env].name, partition_key=sha,
                    tags={TAG_APP: app.name, TAG_COMMIT: sha, TAG_DEPLOY_ENV: deploy_env_tag(app.name, env),
                          TAG_APPROVED: env, TAG_TRIGGER: f"approved on {app.forge.kind} by {found.approver}"}))
        if requests:
            return dg.SensorResult(run_requests=requests)
        return dg.SkipReason(f"no new approval ({asked} commit(s) asked about)")

    return _sensor
