"""The deploy targets of this installation, as one resource held by the orchestrator only.

Which implementation an environment gets comes from the target registry (``registry.py``, by the
environment's ``target``). The connections that targets need from the orchestrator sit here as their
own nested resources: the ECS target's AWS settings (region, endpoint, keys through ``dg.EnvVar`` in the
resource set) stay in its :class:`EcsDeployer`; the smoke tests and every stage run in the sandbox
without them.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.deploy.targets.ecs import EcsDeployer
from sevenp_pipeline.deploy.targets.registry import factory
from sevenp_pipeline.deploy.targets.role import DeployError, DeployTarget


class DeployTargets(dg.ConfigurableResource):
    """Builds the target of an app's environment, by the environment's ``target`` (see ``registry.py``)."""

    home: str = Field(description="the pipeline home: local environments keep their state under deploy/")
    ecs: EcsDeployer | None = Field(
        default=None, description="ECS targets' AWS connection (default: boto3's chain, AWS_REGION)")

    def target(self, app: AppConfig, environment: str) -> DeployTarget:
        """The deployer of ``app``'s ``environment``.

        Raises:
            DeployError: the environment is not declared, or its target cannot be built.
        """
        envs = app.deploy_environments
        if environment not in envs:
            raise DeployError(f"{app.name}: no environment '{environment}' (declared: {', '.join(envs) or 'none'})")
        return factory(envs[environment].target)(targets=self, app=app, environment=environment)
