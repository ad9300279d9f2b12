"""The deploy targets an environment may name (``environments.<env>.target``), as schema: the name, the
settings section it needs, its label and Dagster kinds.

This is the low half of the target registry: the app YAML is validated against it without importing
the deployers. Each name here has an implementation registered under the same name in
``sevenp_pipeline/deploy/targets/registry.py`` (a test holds the two lists equal). Adding a target is an
entry here (with its settings model, when it has one) and one module under ``deploy/targets/``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

_STRICT = ConfigDict(extra="forbid", frozen=True)


class EcsWait(BaseModel):
    model_config = _STRICT

    delay_seconds: float = Field(default=15, ge=0)
    max_attempts: int = Field(default=40, ge=1)


class EcsTargetSettings(BaseModel):
    """Amazon ECS (spec: deploy_to_ecs / rollback_deployment): a new task definition revision with the image
    digest, update the service, wait until stable, roll back to the previous revision on failure."""

    model_config = _STRICT

    cluster: str
    service: str
    container: str | None = Field(default=None, description="container to update (default: the first)")
    region: str | None = Field(default=None, description="default: AWS_REGION")
    url: str = Field(description="the environment's public URL (health checks and smoke tests)")
    wait: EcsWait = Field(default_factory=EcsWait)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"'{value}': an http(s) URL, e.g. https://staging-api.example.com")
        return value.rstrip("/")


@dataclass(frozen=True)
class TargetSchema:
    """What the configuration and the asset graph know of a deploy target.

    ``settings`` is the model of the environment's section named after the target (``ecs: {cluster: ...}``),
    None when the target needs none. ``runs_here``: its servers run on this machine, so the environment
    watchdog recovers them and the devtools stop them.
    """

    name: str
    label: str  # in the deployment asset's description: "Deploys ... to staging (ecs, ECS service)"
    kinds: frozenset[str]  # the deployment asset's Dagster kinds
    settings: type[BaseModel] | None = None
    runs_here: bool = False


TARGETS: Mapping[str, TargetSchema] = {schema.name: schema for schema in (
    TargetSchema(name="local", label="blue-green behind nginx", kinds=frozenset({"podman", "nginx"}),
                 runs_here=True),
    TargetSchema(name="ecs", label="ECS service", kinds=frozenset({"ecs"}), settings=EcsTargetSettings),
)}


def target_schema(name: str) -> TargetSchema:
    """The schema of the target ``name``.

    Raises:
        ValueError: no such target; the message names the known ones.
    """
    schema = TARGETS.get(name)
    if schema is None:
        raise ValueError(f"unknown target '{name}' (known: {', '.join(sorted(TARGETS))})")
    return schema


def take_target_sections(data: Any) -> tuple[Any, dict[str, Any]]:
    """Splits an environment's raw mapping into its own keys and the target sections (keys named after a
    target that has settings), so the sections are validated by their target's model."""
    if not isinstance(data, Mapping):
        return data, {}
    names = {name for name, schema in TARGETS.items() if schema.settings is not None}
    return ({k: v for k, v in data.items() if k not in names}, {k: v for k, v in data.items() if k in names})


def validate_target_section(target: str, sections: Mapping[str, Any]) -> BaseModel | None:
    """The settings of ``target`` from its section, validated by its model; errors keep the section's key
    in their location (``environments.prod.ecs.url``).

    Raises:
        ValueError: the target needs a section that is missing, or a section of another target is set.
        ValidationError: the section does not fit the target's model.
    """
    schema = target_schema(target)
    other = sorted(set(sections) - {target})
    if other:
        raise ValueError(f"'{other[0]}' is set but the target is '{target}'")
    if schema.settings is None:
        return None
    if target not in sections:
        required = [name for name, field in schema.settings.model_fields.items() if field.is_required()]
        raise ValueError(f"target '{target}' needs an '{target}' section ({', '.join(required)})")
    try:
        return schema.settings.model_validate(sections[target])
    except ValidationError as exc:
        raise ValidationError.from_exception_data(exc.title, [
            {**error, "loc": (target, *error["loc"])} for error in exc.errors()  # type: ignore[typeddict-item]
        ]) from exc
