"""The implementations of the deploy targets, by the name their schema has in ``config/targets.py``.

Each entry is the dotted path of the target's factory, ``build_target(*, targets, app, environment)``,
imported only when an environment of that target is deployed (boto3 stays unloaded without ECS).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from sevenp_pipeline.config.targets import TARGETS
from sevenp_pipeline.deploy.targets.role import DeployError

if TYPE_CHECKING:
    from sevenp_pipeline.config import AppConfig
    from sevenp_pipeline.deploy.targets.resource import DeployTargets
    from sevenp_pipeline.deploy.targets.role import DeployTarget

IMPLEMENTATIONS: Mapping[str, str] = {
    "local": "sevenp_pipeline.deploy.targets.local.target:build_target",
    "ecs": "sevenp_pipeline.deploy.targets.ecs:build_target",
}


class TargetFactory(Protocol):
    def __call__(self, *, targets: DeployTargets, app: AppConfig, environment: str) -> DeployTarget: ...


def factory(name: str) -> TargetFactory:
    """The factory of target ``name``.

    Raises:
        DeployError: no implementation is registered under ``name``; the message names the known ones.
    """
    path = IMPLEMENTATIONS.get(name)
    if path is None:
        raise DeployError(f"no implementation of target '{name}' (known: {', '.join(sorted(IMPLEMENTATIONS))}; "
                          f"schemas: {', '.join(sorted(TARGETS))})")
    module, _, attribute = path.partition(":")
    built: Callable[..., DeployTarget] = getattr(importlib.import_module(module), attribute)
    return built
