"""The deploy targets of this installation, as one resource held by the orchestrator only.

AWS credentials (for ECS targets) arrive through ``dg.EnvVar`` in the resource set and stay here: the
smoke tests and every stage run in the sandbox without them.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.deploy.targets.role import DeployError, DeployTarget
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.registries.aws import AwsResource


class DeployTargets(AwsResource):
    """Builds the target of an app's environment: ``local`` (podman + nginx under ``home``) or ``ecs``."""

    home: str = Field(description="the pipeline home: local environments keep their state under deploy/")

    def target(self, app: AppConfig, environment: str) -> DeployTarget:
        envs = app.deploy_environments
        if environment not in envs:
            raise DeployError(f"{app.name}: no environment '{environment}' (declared: {', '.join(envs) or 'none'})")
        spec = envs[environment]
        if spec.target == "local":
            from sevenp_pipeline.deploy.targets.local.target import LocalTarget  # noqa: PLC0415

            return LocalTarget(home=Path(self.home), app=app, environment=environment, runner=ProcessRunner())
        from sevenp_pipeline.deploy.targets.ecs import EcsDeployer  # noqa: PLC0415 (boto3 only for ECS)

        fields = {name: getattr(self, name) for name in AwsResource.model_fields}
        return EcsDeployer(**fields).target(app, environment)
