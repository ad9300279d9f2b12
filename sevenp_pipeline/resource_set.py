"""The resource set of this Dagster deployment, chosen once from the settings.

``local`` (the default): the local ``docker-registry`` on loopback. ``ecr`` (``SEVENP_REGISTRY=ecr``):
Amazon ECR through boto3. The artifact store is chosen apart (``SEVENP_ARTIFACTS``): ``local`` under the
home, or ``s3`` (an S3 bucket, resources/artifacts_s3.py). So are the locks of cross-run state
(``SEVENP_LOCKS``): ``file`` (flock under the home), or ``postgres`` (advisory locks on the Dagster
instance's server, the default when SEVENP_DAGSTER_POSTGRES_* or docker/'s DAGSTER_PG_* name one).
Everything else is shared. Secrets (the signing key, AWS keys) reach the resources only through
``dg.EnvVar``, so their values never land in stored run config. The environment is read only through :class:`Settings`.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from sevenp_pipeline.config import Settings
from sevenp_pipeline.config.settings import DOCKER_POSTGRES_FIELDS, POSTGRES_FIELDS, POSTGRES_HOST, POSTGRES_URL
from sevenp_pipeline.deploy.targets.ecs import EcsDeployer
from sevenp_pipeline.deploy.targets.resource import DeployTargets
from sevenp_pipeline.forge.client import GITHUB_TOKEN_ENV, GITLAB_TOKEN_ENV, ForgeClient
from sevenp_pipeline.housekeeping.retention import WorkspaceRetention
from sevenp_pipeline.resources.artifacts import ArtifactStore, LocalArtifactStore
from sevenp_pipeline.resources.base_image import NodeBaseImage
from sevenp_pipeline.resources.builders.buildah import BuildahBuilder
from sevenp_pipeline.resources.git import GitClient
from sevenp_pipeline.resources.launch import LaunchOptions
from sevenp_pipeline.resources.locks import FileLocks, Locks
from sevenp_pipeline.resources.notify import SLACK_WEBHOOK_ENV, SlackNotifier
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.registries.local import LocalRegistry
from sevenp_pipeline.resources.registries.role import Registry
from sevenp_pipeline.resources.services import TestServices
from sevenp_pipeline.resources.stage_cache import StageResultCache
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.sandbox import STAGE_USER
from sevenp_pipeline.scanners.signing import SIGNING_KEY_ENV, SigningKey
from sevenp_pipeline.triggers.webhook_spool import WebhookInbox


def _secret(settings: Settings, name: str) -> dg.EnvVar | None:
    """``dg.EnvVar(name)`` when the variable is set, else None.

    An ``EnvVar`` of an unset variable fails every run that needs the resource at launch, before any
    step; None lets the resource decide: the signing key fails only the provenance step (naming
    the variable), AWS credentials fall back to boto3's default chain (profile, instance role).
    """
    return dg.EnvVar(name) if settings.secret_is_set(name) else None


def _shared(settings: Settings, runner: ProcessRunner) -> dict[str, object]:
    key = _secret(settings, SIGNING_KEY_ENV)
    return {
        "process_runner": runner,
        "image_builder": BuildahBuilder(runner=runner, home=str(settings.home)),
        "node_base_image": NodeBaseImage(runner=runner, home=str(settings.home)),
        "git": GitClient(runner=runner, cache_dir=str(settings.cache_dir)),
        "workspaces": Workspaces(
            root=str(settings.workspaces_dir), cache_root=str(settings.cache_dir),
            stage_user=settings.stage_user or STAGE_USER,
            # What a pushed branch's stages must never see: the project home (signing key, Dagster's
            # storage, other branches' trees) and the orchestrator's own HOME (its npm/AWS/git config).
            private_paths=sorted({str(settings.home), str(settings.dagster_home or settings.home),
                                  str(Path.home())}),
            sandbox=settings.sandbox,
        ),
        # Linked over HTTP (the artifact server of make dev / make demo): the UI cannot open file:// links.
        "artifact_store": artifact_store(settings),
        # Under the cache folder, not the workspaces: restoring outlives workspace retention.
        "stage_cache": stage_cache(settings),
        # Per instance, under the home (see service_dirs for the unprivileged server user's access).
        "test_services": TestServices(runner=runner, root_dir=str(settings.services_dir)),
        "workspace_retention": WorkspaceRetention(workspaces_dir=str(settings.workspaces_dir),
                                                  keep_per_branch=settings.keep_per_branch,
                                                  stage_cache_dir=str(settings.stage_cache_dir),
                                                  stage_cache_days=settings.stage_cache_days,
                                                  budget_gb=settings.home_budget_gb, apps_dir=str(settings.apps_dir)),
        "launch_options": LaunchOptions(),
        "signing_key": SigningKey(pem=key) if key is not None else SigningKey(),
        # Deploy credentials stay in the orchestrator: the targets (AWS for ECS) and the Slack webhook.
        "deploy_targets": DeployTargets(home=str(settings.home), ecs=EcsDeployer(
            region_name=settings.aws_region, endpoint_url=settings.ecs_endpoint_url,
            aws_access_key_id=_secret(settings, "AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=_secret(settings, "AWS_SECRET_ACCESS_KEY"),
            aws_session_token=_secret(settings, "AWS_SESSION_TOKEN"))),
        "notifier": SlackNotifier(webhook_url=_secret(settings, SLACK_WEBHOOK_ENV),
                                  ui_url=settings.ui_url),
        # Commit statuses: only the forge sensor (in the daemon) holds the tokens, never a run worker.
        "forge": ForgeClient(github_token=_secret(settings, GITHUB_TOKEN_ENV),
                             gitlab_token=_secret(settings, GITLAB_TOKEN_ENV), ui_url=settings.ui_url),
        # What the webhook receiver accepted (forge/webhooks.py), read by the push sensors.
        "webhook_inbox": WebhookInbox(root=str(settings.webhooks_dir)),
        "locks": locks(settings),
    }


def locks(settings: Settings) -> Locks:
    """The locks ``settings.locks`` names: ``file`` under the home, or ``postgres`` on the instance's server,
    its connection as dg.EnvVar references (resolved in each run worker; no password in run config)."""
    if settings.locks == "file":
        return FileLocks(root=str(settings.home))
    if settings.locks != "postgres":
        raise ValueError(f"SEVENP_LOCKS={settings.locks!r}: expected 'file' or 'postgres'")
    from sevenp_pipeline.resources.locks_postgres import PostgresLocks  # noqa: PLC0415 (psycopg2: postgres only)

    if settings.secret_is_set(POSTGRES_URL):
        return PostgresLocks(url=dg.EnvVar(POSTGRES_URL))
    # The local stack's variables, else docker/'s (DAGSTER_PG_*, handed to every run container).
    variables = next((v for v in (POSTGRES_FIELDS, DOCKER_POSTGRES_FIELDS) if settings.secret_is_set(v["hostname"])),
                     POSTGRES_FIELDS)
    missing = [variables[f] for f in ("hostname", "username", "db_name") if not settings.secret_is_set(variables[f])]
    if missing:
        raise ValueError(f"SEVENP_LOCKS=postgres needs {POSTGRES_URL}, or {POSTGRES_HOST} (or DAGSTER_PG_HOST) with "
                         f"the user and database: {', '.join(missing)} not set")
    fields = {"host": "hostname", "port": "port", "user": "username", "password": "password", "dbname": "db_name"}
    return PostgresLocks(**{field: _secret(settings, variables[name]) for field, name in fields.items()})


def artifact_store(settings: Settings) -> ArtifactStore:
    """The store ``settings.artifacts`` names: ``local`` under the home, or ``s3`` (AWS keys as dg.EnvVar)."""
    if settings.artifacts == "s3":
        from sevenp_pipeline.resources.artifacts_s3 import s3_artifact_store  # noqa: PLC0415 (boto3: S3 only)

        return s3_artifact_store(settings)
    if settings.artifacts == "local":
        return LocalArtifactStore(root=str(settings.artifacts_dir), base_url=settings.artifacts_url)
    raise ValueError(f"SEVENP_ARTIFACTS={settings.artifacts!r}: expected 'local' or 's3'")


def stage_cache(settings: Settings) -> StageResultCache:
    """The stage and dependency caches on the local disk; with the S3 artifact store, in its bucket too
    (a worker that shares no disk with another restores what that one computed)."""
    if settings.artifacts == "s3":
        from sevenp_pipeline.resources.artifacts_s3 import s3_artifact_store  # noqa: PLC0415 (boto3: S3 only)
        from sevenp_pipeline.resources.stage_cache_s3 import S3StageResultCache  # noqa: PLC0415

        store = s3_artifact_store(settings)  # the same bucket and connection, refused the same way
        return S3StageResultCache(
            root=str(settings.stage_cache_dir), bucket=store.bucket, region_name=store.region_name,
            endpoint_url=store.endpoint_url, aws_access_key_id=_secret(settings, "AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=_secret(settings, "AWS_SECRET_ACCESS_KEY"),
            aws_session_token=_secret(settings, "AWS_SESSION_TOKEN"))
    return StageResultCache(root=str(settings.stage_cache_dir))


def _ecr_registry(settings: Settings) -> Registry:
    from sevenp_pipeline.resources.registries.ecr import ECRRegistry  # noqa: PLC0415 (boto3: ECR deployments only)

    return ECRRegistry(
        region_name=settings.aws_region,
        endpoint_url=settings.ecr_endpoint_url,
        aws_access_key_id=_secret(settings, "AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=_secret(settings, "AWS_SECRET_ACCESS_KEY"),
        aws_session_token=_secret(settings, "AWS_SESSION_TOKEN"),
        # An emulator (moto) has no /v2 endpoint for layer blobs: only the manifest is put.
        upload_layers=settings.ecr_endpoint_url is None,
    )


def build_resources(settings: Settings) -> dict[str, object]:
    """The resources of this deployment: ``settings.registry`` picks the local set or the AWS set.

    Keys: process_runner, image_builder, node_base_image, git, workspaces, artifact_store,
    test_services, workspace_retention, launch_options, signing_key, stage_cache, deploy_targets,
    notifier, forge, webhook_inbox, locks, registry.
    """
    runner = ProcessRunner()
    if settings.registry == "ecr":
        return {**_shared(settings, runner), "registry": _ecr_registry(settings)}
    if settings.registry == "local":
        return {**_shared(settings, runner), "registry": LocalRegistry(runner=runner, home=str(settings.home))}
    raise ValueError(f"SEVENP_REGISTRY={settings.registry!r}: expected 'local' or 'ecr'")
