"""Installation-wide settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sevenp_pipeline.files import HOME_DIR_MODE, private_dir

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_KEEP_PER_BRANCH = 5
DEFAULT_STAGE_CACHE_DAYS = 14.0
DEFAULT_HOME_BUDGET_GB = 20.0
DEFAULT_UI_URL = "http://127.0.0.1:3000"
# The artifact server of `make dev` / `make demo` (the UI's port + 1): resources/artifact_server.py.
DEFAULT_ARTIFACTS_URL = "http://127.0.0.1:3001"
# The Dagster instance on PostgreSQL (devtools/instance_config.py); the same server keeps the locks.
POSTGRES_URL = "SEVENP_DAGSTER_POSTGRES_URL"
POSTGRES_HOST = "SEVENP_DAGSTER_POSTGRES_HOST"
# postgres_db field -> the variable it is read from
POSTGRES_FIELDS = {
    "hostname": POSTGRES_HOST,
    "port": "SEVENP_DAGSTER_POSTGRES_PORT",
    "username": "SEVENP_DAGSTER_POSTGRES_USER",
    "password": "SEVENP_DAGSTER_POSTGRES_PASSWORD",
    "db_name": "SEVENP_DAGSTER_POSTGRES_DB",
}
# The same fields as docker/dagster.yaml and docker/dagster.ecs.yaml read them (compose and the ECS task
# definition set them for every service and run container).
DOCKER_POSTGRES_FIELDS = {
    "hostname": "DAGSTER_PG_HOST",
    "port": "DAGSTER_PG_PORT",
    "username": "DAGSTER_PG_USER",
    "password": "DAGSTER_PG_PASSWORD",
    "db_name": "DAGSTER_PG_DB",
}


@dataclass(frozen=True)
class Settings:
    """Where the pipeline keeps its state.

    ``home`` holds workspaces (one checkout per commit), caches, artifacts and local remotes;
    ``apps_dir`` holds one pipeline YAML per application.
    """

    home: Path
    apps_dir: Path
    registry: str = "local"  # SEVENP_REGISTRY: local | ecr
    ecr_endpoint_url: str | None = None  # SEVENP_ECR_ENDPOINT_URL: e.g. a moto server
    stage_user: str | None = None  # SEVENP_STAGE_USER; None: sandbox.STAGE_USER
    dagster_home: Path | None = None  # DAGSTER_HOME; None: under the home
    sandbox: bool = True  # SEVENP_SANDBOX=off: stages run unconfined
    aws_region: str | None = None  # AWS_REGION; None: boto3's default chain
    ecs_endpoint_url: str | None = None  # SEVENP_ECS_ENDPOINT_URL: e.g. a moto server
    ui_url: str = DEFAULT_UI_URL  # SEVENP_UI_URL: where notifications link runs
    artifacts_url: str = DEFAULT_ARTIFACTS_URL  # SEVENP_ARTIFACTS_URL: where metadata links artifacts
    artifacts: str = "local"  # SEVENP_ARTIFACTS: local (under the home) | s3
    artifacts_bucket: str | None = None  # SEVENP_ARTIFACTS_BUCKET: required with s3
    artifacts_prefix: str = "artifacts"  # SEVENP_ARTIFACTS_PREFIX: key prefix in the bucket
    s3_endpoint_url: str | None = None  # SEVENP_S3_ENDPOINT_URL: e.g. a moto server
    keep_per_branch: int = DEFAULT_KEEP_PER_BRANCH  # SEVENP_KEEP_COMMITS_PER_BRANCH
    stage_cache_days: float = DEFAULT_STAGE_CACHE_DAYS  # SEVENP_STAGE_CACHE_DAYS
    home_budget_gb: float = DEFAULT_HOME_BUDGET_GB  # SEVENP_HOME_BUDGET_GB; 0: no budget
    # SEVENP_LOCKS: file (flock under the home) | postgres (advisory locks on the instance's server);
    # unset: postgres when SEVENP_DAGSTER_POSTGRES_URL or _HOST (or docker/'s DAGSTER_PG_HOST) names the
    # instance's server, else file.
    locks: str = "file"

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("SEVENP_HOME") or PROJECT_ROOT / ".sevenp").resolve()
        apps = Path(os.environ.get("SEVENP_APPS_DIR") or PROJECT_ROOT / "apps").resolve()
        registry = os.environ.get("SEVENP_REGISTRY", "local")
        if registry not in ("local", "ecr"):
            raise ValueError(f"SEVENP_REGISTRY={registry!r}: expected 'local' or 'ecr'")
        artifacts = os.environ.get("SEVENP_ARTIFACTS") or "local"
        if artifacts not in ("local", "s3"):
            raise ValueError(f"SEVENP_ARTIFACTS={artifacts!r}: expected 'local' or 's3'")
        bucket = os.environ.get("SEVENP_ARTIFACTS_BUCKET") or None
        if artifacts == "s3" and not bucket:
            raise ValueError("SEVENP_ARTIFACTS=s3 needs SEVENP_ARTIFACTS_BUCKET (the bucket the artifacts go to)")
        dagster_home = os.environ.get("DAGSTER_HOME")
        on_postgres = any(os.environ.get(v) for v in (POSTGRES_URL, POSTGRES_HOST, DOCKER_POSTGRES_FIELDS["hostname"]))
        locks = os.environ.get("SEVENP_LOCKS") or ("postgres" if on_postgres else "file")
        if locks not in ("file", "postgres"):
            raise ValueError(f"SEVENP_LOCKS={locks!r}: expected 'file' or 'postgres'")
        return cls(home=home, apps_dir=apps, registry=registry,
                   ecr_endpoint_url=os.environ.get("SEVENP_ECR_ENDPOINT_URL") or None,
                   stage_user=os.environ.get("SEVENP_STAGE_USER") or None,
                   dagster_home=Path(dagster_home) if dagster_home else None,
                   sandbox=os.environ.get("SEVENP_SANDBOX", "on") != "off",
                   aws_region=os.environ.get("AWS_REGION") or None,
                   ecs_endpoint_url=os.environ.get("SEVENP_ECS_ENDPOINT_URL") or None,
                   ui_url=os.environ.get("SEVENP_UI_URL") or DEFAULT_UI_URL,
                   artifacts_url=_artifacts_url(os.environ.get("SEVENP_ARTIFACTS_URL", "")),
                   artifacts=artifacts, artifacts_bucket=bucket,
                   artifacts_prefix=os.environ.get("SEVENP_ARTIFACTS_PREFIX", "artifacts").strip("/"),
                   s3_endpoint_url=os.environ.get("SEVENP_S3_ENDPOINT_URL") or None,
                   keep_per_branch=_keep_per_branch(os.environ.get("SEVENP_KEEP_COMMITS_PER_BRANCH", "")),
                   stage_cache_days=_stage_cache_days(os.environ.get("SEVENP_STAGE_CACHE_DAYS", "")),
                   home_budget_gb=_home_budget_gb(os.environ.get("SEVENP_HOME_BUDGET_GB", "")), locks=locks)

    @staticmethod
    def secret_is_set(name: str) -> bool:
        """Whether the secret variable ``name`` is set (its value stays in the environment).

        Read when the resources are built, not with the other settings: a resource takes a secret as
        ``dg.EnvVar``, resolved at launch, and the variable's presence decides whether it gets one.
        """
        return bool(os.environ.get(name))

    def ensure_home(self) -> Path:
        """Creates the home 0711 (the test-database user passes through it to ``services/``; nobody
        else lists it), everything in it private: it holds checkouts, logs and artifacts that may
        quote a secret. An existing home keeps its mode: it may be a folder the operator set up.
        """
        return private_dir(self.home, mode=HOME_DIR_MODE)

    @property
    def workspaces_dir(self) -> Path:
        return self.home / "workspaces"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def stage_cache_dir(self) -> Path:
        """Stage results by input key (resources/stage_cache.py)."""
        return self.cache_dir / "stages"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def webhooks_dir(self) -> Path:
        """Deliveries the webhook receiver accepted, for the push sensor (forge/webhooks.py)."""
        return self.home / "webhooks"

    @property
    def services_dir(self) -> Path:
        return self.home / "services"


def _artifacts_url(raw: str) -> str:
    if not raw:
        return DEFAULT_ARTIFACTS_URL
    if not raw.startswith(("http://", "https://")):
        raise ValueError(f"SEVENP_ARTIFACTS_URL={raw!r}: expected an http:// or https:// URL")
    return raw.rstrip("/")


def _keep_per_branch(raw: str) -> int:
    try:
        return int(raw) if raw else DEFAULT_KEEP_PER_BRANCH
    except ValueError:
        raise ValueError(f"SEVENP_KEEP_COMMITS_PER_BRANCH={raw!r}: expected a whole number") from None


def _stage_cache_days(raw: str) -> float:
    try:
        days = float(raw) if raw else DEFAULT_STAGE_CACHE_DAYS
    except ValueError:
        raise ValueError(f"SEVENP_STAGE_CACHE_DAYS={raw!r}: expected a number of days") from None
    if days <= 0:
        raise ValueError(f"SEVENP_STAGE_CACHE_DAYS={raw!r}: expected more than 0 days")
    return days


def _home_budget_gb(raw: str) -> float:
    try:
        budget = float(raw) if raw else DEFAULT_HOME_BUDGET_GB
    except ValueError:
        raise ValueError(f"SEVENP_HOME_BUDGET_GB={raw!r}: expected a number of GB (0: no budget)") from None
    if budget < 0:
        raise ValueError(f"SEVENP_HOME_BUDGET_GB={raw!r}: expected 0 (no budget) or more")
    return budget
