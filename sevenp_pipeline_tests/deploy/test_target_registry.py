"""The deploy target registry: every schema (config/targets.py) has an implementation registered under
its name (deploy/targets/registry.py) and the reverse, and what the config, the resource and the
deployment asset say of a target comes from its entry."""

from __future__ import annotations

import inspect
from pathlib import Path

import dagster as dg
import pytest

from sevenp_pipeline.config import AppConfig, ConfigError, load_app_config
from sevenp_pipeline.config.targets import TARGETS, target_schema
from sevenp_pipeline.deploy.assets import build_deploy_assets
from sevenp_pipeline.deploy.targets.ecs import EcsTarget
from sevenp_pipeline.deploy.targets.local.target import LocalTarget
from sevenp_pipeline.deploy.targets.registry import IMPLEMENTATIONS, factory
from sevenp_pipeline.deploy.targets.resource import DeployTargets
from sevenp_pipeline.deploy.targets.role import DeployError
from sevenp_pipeline.resources.registries.aws import AwsResource

APP = """\
name: web
repository: {url: /srv/web.git}
image: {dockerfile: Dockerfile}
environments:
  staging: {}
  production:
    target: ecs
    after: staging
    ecs: {cluster: prod, service: web, url: "https://web.example.com/"}
"""


def _app(tmp_path: Path, text: str = APP) -> AppConfig:
    path = tmp_path / "web.yaml"
    path.write_text(text)
    return load_app_config(path)


def test_every_schema_has_an_implementation_and_the_reverse() -> None:
    assert set(TARGETS) == set(IMPLEMENTATIONS)
    for name in TARGETS:
        built = factory(name)
        assert callable(built), name
        assert set(inspect.signature(built).parameters) == {"targets", "app", "environment"}, name


def test_an_unknown_target_names_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        _app(tmp_path, APP.replace("target: ecs", "target: kubernetes"))
    message = str(info.value)
    assert "environments.production.target: unknown target 'kubernetes' (known: ecs, local)" in message, message
    assert str(tmp_path / "web.yaml") in message
    with pytest.raises(ValueError, match=r"known: ecs, local"):
        target_schema("kubernetes")
    with pytest.raises(DeployError, match=r"no implementation of target 'kubernetes' \(known: ecs, local"):
        factory("kubernetes")


def test_the_resource_builds_each_environment_from_its_entry(tmp_path: Path) -> None:
    app = _app(tmp_path)
    targets = DeployTargets(home=str(tmp_path))
    assert isinstance(targets.target(app, "staging"), LocalTarget)
    ecs = targets.target(app, "production")
    assert isinstance(ecs, EcsTarget) and ecs.url() == "https://web.example.com"
    with pytest.raises(DeployError, match="no environment 'qa'"):
        targets.target(app, "qa")


def test_the_resource_is_not_aws_shaped() -> None:
    """AWS settings are the ECS entry's own resource, nested, not fields of the targets resource."""
    assert not issubclass(DeployTargets, AwsResource)
    assert set(DeployTargets.model_fields) == {"home", "ecs"}


def test_the_deployment_asset_takes_label_and_kinds_from_the_entry(tmp_path: Path) -> None:
    app = _app(tmp_path)
    partitions = dg.DynamicPartitionsDefinition(name="web_commits")
    assets = build_deploy_assets(app, partitions, dg.AssetKey(["web", "promoted_image"]), [])
    specs = {k.to_user_string(): a.specs_by_key[k] for a in assets for k in a.keys}
    staging, production = specs["web/staging_deployment"], specs["web/production_deployment"]
    assert "(local, blue-green behind nginx)" in (staging.description or "")
    assert "(ecs, ECS service)" in (production.description or "")
    assert staging.kinds == set(TARGETS["local"].kinds)
    assert production.kinds == {"ecs"}
    assert specs["web/release_notes"].kinds == {"markdown"}  # written by the production deploy's step


def test_the_target_section_survives_a_dump_and_an_instance(tmp_path: Path) -> None:
    """The section is validated by the target's model, outside the declared fields: a dump keeps it under
    its key, and an environment passed as an instance keeps its settings."""
    app = _app(tmp_path)
    again = AppConfig.model_validate(app.model_dump(mode="json"))
    assert again == app
    production = again.deploy_environments["production"]
    assert production.target_settings == app.deploy_environments["production"].target_settings
    rebuilt = AppConfig.model_validate({**app.model_dump(exclude={"environments"}),
                                        "environments": {**again.deploy_environments}})
    assert rebuilt.deploy_environments["production"].target_settings is production.target_settings
