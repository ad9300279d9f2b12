"""Deployments as assets partitioned by commit: ``<env>_deployment`` per environment of the app, and
``release_notes``, written in the same step as the last environment of the chain (production by default).

A deployment's materialization is a release that went live: what runs where, since when, from which
image digest, launched by whom, with its health check and smoke tests. A deploy that failed or was
rolled back is a failed step whose failure says why, so the partition shows as failed. Rollback is a
deploy of an older healthy partition (``make rollback``, or launching the environment's deploy job for
that partition in the UI).

Before anything is touched a deploy is refused when the commit's gates did not all pass, its provenance
does not verify against our key, or (for an environment with ``after``) its smoke tests did not pass in
that environment first. Deploys of one environment are serialized (the ``sevenp/deploy-env`` run tag
limit in dagster.yaml, and the deployment's lock around the deploy itself: flock under the home, or a
PostgreSQL advisory lock that holds across machines) and the newest queued commit wins.
"""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from sevenp_pipeline.asset_helpers import failure, fingerprint, md_table
from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.config.models import Branches, EnvironmentSpec
from sevenp_pipeline.config.targets import target_schema
from sevenp_pipeline.deploy import history
from sevenp_pipeline.deploy.approvals import Approval, find_approval
from sevenp_pipeline.deploy.release_notes import render_release_notes
from sevenp_pipeline.deploy.smoke import smoke_runner
from sevenp_pipeline.deploy.targets.resource import DeployTargets
from sevenp_pipeline.deploy.targets.role import DeployError, DeployOutcome, Rollout, SmokeFn
from sevenp_pipeline.deploy.verify import Refused, VerifiedImage, verify_release
from sevenp_pipeline.locks import LockTimeout
from sevenp_pipeline.resources.artifacts import ArtifactStore
from sevenp_pipeline.resources.git import GitClient, GitError
from sevenp_pipeline.resources.locks import Locks, LocksUnavailable
from sevenp_pipeline.resources.notify import Notification, SlackNotifier
from sevenp_pipeline.resources.processes import ProcessError, ProcessRunner
from sevenp_pipeline.resources.registries.role import Registry, RegistryError
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.scanners.signing import SigningKey
from sevenp_pipeline.triggers.sensors import branch_matches
from sevenp_pipeline.triggers.tags import TAG_DEPLOY, TAG_DEPLOY_ENV, TAG_NOTIFIED, TAG_ROLLBACK, TAG_TRIGGER
from sevenp_pipeline.verdict import Gates

DEPLOY_CODE_VERSION = "1"
LOCK_WAIT_SECONDS = 3600.0


def deploy_queue_lock(app: str, environment: str) -> str:
    """The lock one deploy of ``environment`` holds (with file locks: ``<home>/deploy/<app>/<env>/queue.lock``)."""
    return f"deploy/{app}/{environment}/queue"


def launched_by(run: dg.DagsterRun) -> str:
    """Who or what started a deploy run, from its tags."""
    tags = run.tags
    if tags.get(TAG_ROLLBACK):
        return f"rollback from {tags[TAG_ROLLBACK][:12]} ({tags.get('dagster/user') or 'make rollback'})"
    if tags.get("dagster/sensor_name"):
        return f"sensor {tags['dagster/sensor_name']}"
    if tags.get("dagster/user"):
        return f"{tags['dagster/user']} (UI)"
    if tags.get(TAG_TRIGGER):
        return tags[TAG_TRIGGER]
    return "launched by hand (UI or API)"


def _outcome_metadata(outcome: DeployOutcome) -> dict[str, Any]:
    meta: dict[str, Any] = {"url": dg.MetadataValue.url(outcome.url)}
    if outcome.health is not None:
        meta.update(health=outcome.health.summary(), health_attempts=outcome.health.attempts,
                    health_passed=outcome.health.ok)
    if outcome.smoke is not None:
        meta.update(smoke_tests=outcome.smoke.summary(), smoke_passed=outcome.smoke.ok)
        if outcome.smoke.tail:
            meta["smoke_output"] = dg.MetadataValue.md("```\n" + outcome.smoke.tail + "\n```")
    if outcome.switch_seconds is not None:
        meta["switch_s"] = round(outcome.switch_seconds, 3)
    if outcome.steps:
        meta["steps"] = dg.MetadataValue.md(md_table(["step"], [[s] for s in outcome.steps]))
    if outcome.previous is not None:
        meta["previous_commit"] = outcome.previous.commit
    return meta


def build_deploy_assets(app: AppConfig, partitions: dg.PartitionsDefinition, promoted: dg.AssetKey,
                        gates: Gates) -> list[dg.AssetsDefinition]:
    """One deployment asset per environment (each after ``promoted_image`` and its ``after``). The
    environment nothing follows (none when several or none do) also writes ``release_notes``, in the
    same step: the two are one multi-asset that cannot be split, so a deploy launched from the asset
    graph, the deploy job, ``make deploy`` or a rollback always produces the notes of what went live."""
    envs = app.deploy_environments
    terminal = [n for n in envs if not any(e.after == n for e in envs.values())]
    notes_after = terminal[0] if len(terminal) == 1 else None
    return [_deployment_asset(app, partitions, name, promoted, gates, with_notes=name == notes_after) for name in envs]


def _description(name: str, env: EnvironmentSpec) -> str:
    """What the deployment asset of environment ``name`` says it does (the target's label from its schema)."""
    return (f"Deploys the commit's signed image to {name} ({env.target}, {target_schema(env.target).label})"
            + (f" after its smoke tests passed in {env.after}" if env.after else "")
            + ("; launched only by a person" if env.approval == "manual" else "")
            + ": health check, smoke tests, automatic rollback.")


def _deployment_asset(app: AppConfig, partitions: dg.PartitionsDefinition, name: str, promoted: dg.AssetKey,
                      gates: Gates, *, with_notes: bool) -> dg.AssetsDefinition:
    env = app.deploy_environments[name]
    key = history.deployment_key(app.key, name)
    deps = [promoted] + ([history.deployment_key(app.key, env.after)] if env.after else [])
    tag_value = history.deploy_env_tag(app.name, name)
    specs = [dg.AssetSpec(key, group_name=app.key, deps=deps, description=_description(name, env),
                          kinds=set(target_schema(env.target).kinds),
                          tags={"sevenp/stage": "deploy", "sevenp/environment": name},
                          code_version=DEPLOY_CODE_VERSION, skippable=True)]
    if with_notes:
        specs.append(dg.AssetSpec(
            release_notes_key(app), group_name=app.key, deps=[key], kinds={"markdown"},
            tags={"sevenp/stage": "deploy"}, code_version=DEPLOY_CODE_VERSION, skippable=True,
            description=f"The conventional commits between the previous and this {name} revision, grouped by "
                        f"type (the changelog): written by the {name} deploy's step once the commit is live."))

    # One step (op name = the asset's default step key); not subsettable, so nobody deploys the last
    # environment without its release notes.
    @dg.multi_asset(name=f"{app.key}__{key.path[-1]}", specs=specs, partitions_def=partitions, can_subset=False)
    def deployment(context: dg.AssetExecutionContext, deploy_targets: DeployTargets, signing_key: SigningKey,
                   artifact_store: ArtifactStore, workspaces: Workspaces, process_runner: ProcessRunner,
                   notifier: SlackNotifier, git: GitClient, registry: Registry,
                   locks: Locks) -> Iterator[dg.MaterializeResult]:
        run = context.run
        if run.tags.get(TAG_DEPLOY_ENV) != tag_value:  # launched from the asset graph: same tag for "newest wins"
            context.instance.add_run_tags(run.run_id, {TAG_DEPLOY_ENV: tag_value})
            run = context.instance.get_run_by_id(run.run_id) or run
        attempt = _Attempt(context=context, app=app, name=name, env=env, key=key, run=run, notifier=notifier)

        # 1. Refusals: nothing is touched before these pass.
        record = find_approval(Path(deploy_targets.home).resolve(), app.key, name, attempt.sha)
        override = attempt.branch_override(git, record)
        attempt.check_after()
        approval = attempt.approval(record)
        try:
            verified = verify_release(context.instance, app, attempt.sha, gates=gates,
                                      signing_key=signing_key, artifact_store=artifact_store)
        except Refused as exc:
            raise attempt.refuse(str(exc)) from exc
        smoke = smoke_runner(context, app, name, runner=process_runner, workspaces=workspaces, store=artifact_store,
                             git=git)
        context.log.info(f"{name}: {verified.image.ref} verified (provenance signed by {verified.keyid[:12]}, "
                         f"every gate of {attempt.sha[:12]} passed)")

        # 2. One deploy of this environment at a time; the newest queued commit wins.
        deployed = attempt.deploy_newest(deploy_targets, registry, locks, verified, smoke, tag_value)
        if deployed is None:
            return
        outcome, started = deployed
        live, replaced = attempt.result(outcome, started, verified, approval=approval, override=override)
        yield live
        if with_notes:
            yield _release_notes(context, app, name, replaced, git, artifact_store)

    return deployment


@dataclass(frozen=True)
class _Attempt:
    """One run's attempt to deploy its partition's commit to one environment: the refusals, the deploy
    under the environment's queue lock, and what the outcome becomes (a live release or a failure)."""

    context: dg.AssetExecutionContext
    app: AppConfig
    name: str  # the environment
    env: EnvironmentSpec
    key: dg.AssetKey
    run: dg.DagsterRun
    notifier: SlackNotifier

    @property
    def sha(self) -> str:
        return self.context.partition_key

    def tag(self, tags: dict[str, str]) -> None:
        self.context.instance.add_run_tags(self.run.run_id, tags)

    def notify(self, kind: str, title: str, text: str, **fields: str) -> None:
        sent = self.notifier.notify(Notification(kind=kind, app=self.app.name, environment=self.name, commit=self.sha,
                                                 run_id=self.run.run_id, title=title, text=text, fields=fields),
                                    log=self.context.log.info)
        if sent:
            self.tag({TAG_NOTIFIED: "true"})

    def refuse(self, reason: str) -> dg.Failure:
        self.tag({TAG_DEPLOY: "refused"})
        self.notify("deploy_failed", f"{self.app.name}: deploy of {self.sha[:12]} to {self.name} refused", reason)
        return failure(f"{self.key.to_user_string()}: refused: {reason}", environment=self.name, reason=reason)

    def branch_override(self, git: GitClient, record: Approval | None) -> Approval | None:
        """The branch rule, on every route (sensor, Launchpad, asset graph, CLI, GraphQL): checked against the
        remote's heads, not the run's tags. Returns the override it was deployed on (None: nothing overridden).

        Raises:
            dg.Failure: the commit is on no allowed branch and no usable override was recorded.
        """
        env, name, sha, log = self.env, self.name, self.sha, self.context.log
        override = record if record is not None and record.override else None
        if not env.branches:
            return None
        rules = Branches(include=env.branches)
        try:
            on = git.branches_containing(self.app.key, self.app.repository.url, sha,
                                         allowed=lambda b: branch_matches(b, rules))
        except GitError as exc:
            raise self.refuse(f"cannot check which branches hold {sha[:12]}: {exc}") from exc
        if not on and override is not None and env.allow_override:
            log.warning(f"{name}: {sha[:12]} is on no branch that environments.{name}.branches allows "
                        f"({', '.join(env.branches)}); deployed on {override.approver}'s override "
                        f"({override.via}): {override.override}")
            return override
        if not on:
            closed = (f"; an override was recorded by {override.approver}, but environments.{name}."
                      f"allow_override is false") if override is not None else ""
            raise self.refuse(f"commit {sha[:12]} is on no branch that environments.{name}.branches allows "
                              f"({', '.join(env.branches)}) in {self.app.repository.url} now{closed}")
        log.info(f"{name}: {sha[:12]} is on {', '.join(on)} (environments.{name}.branches)")
        return None

    def check_after(self) -> None:
        """An environment with ``after``: the commit went live there first and its smoke tests passed."""
        after, sha = self.env.after, self.sha
        if not after:
            return
        prior = history.latest_for_commit(self.context.instance, self.app.key, after, sha)
        if prior is None:
            raise self.refuse(f"commit {sha[:12]} has not been deployed to {after} (environments.{self.name}.after):"
                              f" deploy it there first and let its smoke tests pass")
        if self.app.deploy.smoke is not None and prior.metadata.get("smoke_passed") is not True:
            raise self.refuse(f"the smoke tests of {sha[:12]} did not pass in {after}")

    def approval(self, record: Approval | None) -> Approval | None:
        """A manual environment's approval of this commit (None: the environment is automatic)."""
        if self.env.approval != "manual":
            return None
        if record is None:
            raise self.refuse(f"{self.name} is approval: manual and nobody approved {self.sha[:12]}: a person "
                              f"approves with `make deploy ENV={self.name} COMMIT={self.sha}` (recorded with "
                              f"APPROVER or their user name); a launch, a tag or a launch option is not an approval")
        self.context.log.info(f"{self.name}: {self.sha[:12]} approved by {record.approver} ({record.via})")
        return record

    def deploy_newest(self, deploy_targets: DeployTargets, registry: Registry, locks: Locks, verified: VerifiedImage,
                      smoke: SmokeFn | None, tag_value: str) -> tuple[DeployOutcome, float] | None:
        """Deploys under the environment's queue lock, unless a newer deploy run of it is queued (then None:
        superseded). Returns the outcome and when the deploy started. The lock is the deployment's
        (``locks``): one deploy of an environment at a time across every worker, on any machine.

        Raises:
            dg.Failure: the lock was not free in time (or its server unreachable), or the target raised
                :class:`DeployError`.
        """
        name, sha, context, image = self.name, self.sha, self.context, verified.image
        try:
            with locks.hold(deploy_queue_lock(self.app.name, name), timeout=LOCK_WAIT_SECONDS,
                            what=f"the {name} deploy queue of {self.app.name}"):
                newer = history.newer_deploy_runs(context.instance, self.run, tag_value)
                if newer:
                    other = newer[0]
                    context.log.warning(f"{name}: superseded by run {other.run_id[:8]} for commit "
                                        f"{(history.run_partition(other) or '?')[:12]}, queued after this one: "
                                        "not deployed")
                    self.tag({TAG_DEPLOY: "superseded"})
                    return None
                context.log.info(f"{name}: deploying {sha[:12]}: no newer deploy of {name} is queued")
                target = deploy_targets.target(self.app, name)
                try:  # the image is pulled from it: a killed local registry is started again, not a failed deploy
                    registry.prepare(log=context.log.info)
                except (RegistryError, ProcessError) as exc:
                    raise DeployError(f"the image registry is down and could not be started: {exc}") from exc
                rollout = Rollout(app=self.app.name, environment=name, commit=sha, image_ref=image.ref,
                                  image_digest=image.digest, run_id=self.run.run_id, env=dict(self.app.deploy.env))
                started = time.time()
                return target.deploy(rollout, smoke=smoke, log=context.log.info), started
        except (LockTimeout, LocksUnavailable) as exc:
            raise failure(f"{self.key.to_user_string()}: {exc}") from exc
        except DeployError as exc:
            self.tag({TAG_DEPLOY: "failed"})
            self.notify("deploy_failed", f"{self.app.name}: deploy of {sha[:12]} to {name} failed", str(exc))
            raise failure(f"{self.key.to_user_string()}: {exc}", environment=name) from exc

    def replaced_release(self) -> tuple[str | None, bool]:
        """The commit this deploy replaced (the newest healthy one before it), and whether this deploy is
        a rollback: ``make rollback`` said so, or the commit went live here before the one it replaces did
        (a person materialized an older green partition of the deployment in the UI)."""
        earlier = [d for d in history.healthy_deployments(self.context.instance, self.app.key, self.name)
                   if d.run_id != self.run.run_id]
        replaced = earlier[0].commit if earlier else None
        first_live: dict[str, float] = {}
        for deployment in earlier:  # newest first: the last write is the commit's first time live here
            first_live[deployment.commit] = deployment.timestamp
        back = (replaced is not None and replaced != self.sha and self.sha in first_live
                and first_live[self.sha] < first_live[replaced])  # back to a release older than the live one
        return replaced, bool(self.run.tags.get(TAG_ROLLBACK)) or back

    def result(self, outcome: DeployOutcome, started: float, verified: VerifiedImage, *, approval: Approval | None,
               override: Approval | None) -> tuple[dg.MaterializeResult, str | None]:
        """The live release's materialization and the commit it replaced; a rolled-back deploy raises a
        failure naming what serves.

        Raises:
            dg.Failure: the deploy was rolled back (or never went live).
        """
        name, sha, run, image = self.name, self.sha, self.run, verified.image
        meta = _outcome_metadata(outcome)
        if not outcome.ok:
            self.tag({TAG_DEPLOY: "rolled_back"})
            serving = outcome.live.commit[:12] if outcome.live else "nothing (first deploy)"
            self.notify("rolled_back", f"{self.app.name}: {sha[:12]} rolled back in {name}",
                        f"{outcome.reason}. {name} serves {serving}.", serving=serving)
            raise failure(f"{self.key.to_user_string()}: {outcome.reason}; traffic stays on {serving}",
                          environment=name, status="rolled_back", reason=outcome.reason, serving=serving,
                          **{k: v for k, v in meta.items() if k != "url"})
        self.tag({TAG_DEPLOY: "live"})
        replaced, rollback = self.replaced_release()
        self.notify("deploy_succeeded", f"{self.app.name}: {sha[:12]} is live in {name}",
                    f"{image.ref} at {outcome.url}", url=outcome.url)
        return dg.MaterializeResult(
            asset_key=self.key,
            data_version=dg.DataVersion(fingerprint(image.digest, name, run.run_id)),
            metadata={
                "status": "live", "environment": name, "target": self.env.target, "commit": sha,
                "image_ref": image.ref, "image_digest": image.digest,
                "since": dg.MetadataValue.timestamp(started), "launched_by": launched_by(run),
                "rollback": rollback, "replaced": replaced or "(first deploy)", "provenance_keyid": verified.keyid,
                **({"approved_by": approval.approver, "approved_via": approval.via} if approval else {}),
                **({"override_by": override.approver, "override_reason": override.override} if override else {}),
                **meta,
            },
        ), replaced


def release_notes_key(app: AppConfig) -> dg.AssetKey:
    return dg.AssetKey([app.key, "release_notes"])


def _release_notes(context: dg.AssetExecutionContext, app: AppConfig, environment: str, replaced: str | None,
                   git: GitClient, artifact_store: ArtifactStore) -> dg.MaterializeResult:
    """``release_notes`` of the commit that just went live in ``environment``: the commits since the
    release it replaced (a redeploy of the live commit: since the one before that).

    Raises:
        dg.Failure: git could not list the commits. The release stays live and recorded; re-executing
            the step deploys the same commit again (a no-op switch) and writes the notes.
    """
    sha = context.partition_key
    previous = replaced
    if previous == sha:
        earlier = [d.commit for d in history.healthy_deployments(context.instance, app.key, environment)
                   if d.commit != sha]
        previous = earlier[0] if earlier else None
    try:
        git.ensure_commit(app.key, app.repository.url, sha, log=context.log.info)
        commits = git.commits_between(app.key, sha, previous=previous)
    except GitError as exc:
        raise failure(f"release_notes: {sha[:12]} is live in {environment}, but its notes could not be "
                      f"written: {exc}") from exc
    notes = render_release_notes(app.name, environment, previous, sha, commits)
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"sevenp-release-notes-{app.key}-{sha}.md"
    path.write_text(notes, encoding="utf-8")
    try:
        uri = artifact_store.put_file(app=app.key, sha=sha, name="RELEASE_NOTES.md", path=path)
    finally:
        path.unlink(missing_ok=True)
    return dg.MaterializeResult(
        asset_key=release_notes_key(app),
        data_version=dg.DataVersion(fingerprint(previous, sha, notes)),
        metadata={"commits": len(commits), "previous_commit": previous or "(first release)",
                  "notes": dg.MetadataValue.md(notes), "file": dg.MetadataValue.url(uri)})
