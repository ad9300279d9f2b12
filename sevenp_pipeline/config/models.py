"""The schema of an application's pipeline YAML. Unknown keys are errors, not ignored."""

from __future__ import annotations

import re
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_STRICT = ConfigDict(extra="forbid", frozen=True)


class StageName(str, Enum):
    """The CI stages, in the spec's order (stage 1: code quality, stage 2: testing, build)."""

    install = "install"
    lint = "lint"
    lint_security = "lint_security"
    format = "format"
    type_check = "type_check"
    unit_tests = "unit_tests"
    integration_tests = "integration_tests"
    api_tests = "api_tests"
    build = "build"
    docs = "docs"


ServiceName = Literal["postgresql", "redis"]


class StageSpec(BaseModel):
    """How one stage runs: an npm script (the spec's names by default) or an explicit command."""

    model_config = _STRICT

    script: str | None = Field(default=None, description="npm script to run: npm run <script>")
    command: list[str] | None = Field(default=None, description="explicit argv instead of a script")
    args: list[str] = Field(default_factory=list, description="extra arguments ({report} = report path)")
    timeout_seconds: float = Field(default=600, gt=0)
    optional: bool = Field(default=False, description="skip, not fail, when the npm script is missing")
    enabled: bool = True
    env: dict[str, str] = Field(default_factory=dict)
    report: str | None = Field(default=None, description="report file the command writes")
    junit: str | None = None
    coverage: str | None = Field(default=None, description="istanbul json-summary file")
    output_dir: str | None = Field(default=None, description="directory the stage produces")
    services: list[ServiceName] = Field(default_factory=list)
    retries: int = Field(default=0, ge=0, le=5, description="retries with backoff (network stages)")

    @model_validator(mode="after")
    def _one_way_to_run(self) -> StageSpec:
        if (self.script is None) == (self.command is None):
            raise ValueError("give exactly one of 'script' or 'command'")
        if self.command is not None and not self.command:
            raise ValueError("'command' must be a non-empty list")
        return self


class Repository(BaseModel):
    model_config = _STRICT

    url: str = Field(description="git remote URL or path; ${VAR} is expanded")
    subdirectory: str = Field(default="", description="the app's folder inside the repository")


class Branches(BaseModel):
    model_config = _STRICT

    include: list[str] = Field(
        default_factory=lambda: ["main", "develop", "release/*", "hotfix/*", "feature/*"]
    )
    exclude: list[str] = Field(default_factory=list)


class Trigger(BaseModel):
    model_config = _STRICT

    # Dagster's sensor daemon loops every 5 s, so anything below that means "every loop".
    poll_interval_seconds: int = Field(default=5, ge=1)
    enabled: bool = True
    ls_remote_timeout_seconds: float = Field(default=30, gt=0)


class PostgresService(BaseModel):
    model_config = _STRICT

    user: str = "testuser"
    database: str = "test_db"


class RedisService(BaseModel):
    model_config = _STRICT


class Services(BaseModel):
    model_config = _STRICT

    postgresql: PostgresService | None = Field(default_factory=PostgresService)
    redis: RedisService | None = Field(default_factory=RedisService)


class Gates(BaseModel):
    """Quality gates, enforced as blocking asset checks."""

    model_config = _STRICT

    max_lint_errors: int = Field(default=0, ge=0)
    max_security_lint_errors: int = Field(default=0, ge=0)
    max_format_issues: int = Field(default=0, ge=0)
    max_type_errors: int = Field(default=0, ge=0)
    coverage_min: float = Field(default=80.0, ge=0, le=100)
    coverage_metric: Literal["lines", "statements", "branches", "functions"] = "lines"


class ImageSettings(BaseModel):
    """The container image (spec stage 3, 'Build & Package'). Without it the pipeline ends at the build."""

    model_config = _STRICT

    dockerfile: str = Field(default="Dockerfile", description="path in the app folder")
    context: str = Field(default=".", description="build context, relative to the app folder")
    repository: str | None = Field(default=None, description="image repository name (default: the app name)")
    base_image: str = Field(default="", description="BASE_IMAGE build arg; empty = the locally bootstrapped Node base")
    build_args: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=1800, gt=0)


class LicensePolicy(BaseModel):
    model_config = _STRICT

    allow: list[str] | None = Field(default=None, description="SPDX ids; default: a permissive allowlist")
    deny: list[str] = Field(default_factory=list)
    unknown: Literal["fail", "warn", "allow"] = "fail"
    paths: list[str] = Field(
        default_factory=lambda: ["/app"],
        description="image folders whose components are checked: the app's dependencies, as license-checker "
                    "does, not the base image's runtime (whose licenses are the base image vendor's matter)",
    )


class SecretScanSettings(BaseModel):
    model_config = _STRICT

    image_paths: list[str] = Field(default_factory=lambda: ["app"], description="image folders to scan")


class SecuritySettings(BaseModel):
    """Scans and their gates (spec stage 4, 'Security Scanning')."""

    model_config = _STRICT

    advisories: str = Field(default="", description="OSV advisory folder; empty = the shipped snapshot")
    severity_threshold: Literal["low", "medium", "high", "critical"] = "high"
    vex: list[str] = Field(default_factory=list, description="OpenVEX documents, paths in the app folder")
    allowlist: str | None = Field(default=None, description="advisory allowlist YAML in the app folder")
    licenses: LicensePolicy = Field(default_factory=LicensePolicy)
    secrets: SecretScanSettings = Field(default_factory=SecretScanSettings)


class ProvenanceSettings(BaseModel):
    model_config = _STRICT

    key_env: str = Field(default="SEVENP_SIGNING_KEY", description="env var holding the PEM signing key")
    builder_id: str = "https://sevenp.example/sevenp_pipeline/dagster"


class AppConfig(BaseModel):
    """One application's pipeline."""

    model_config = _STRICT

    name: str
    description: str = ""
    repository: Repository
    branches: Branches = Field(default_factory=Branches)
    trigger: Trigger = Field(default_factory=Trigger)
    services: Services = Field(default_factory=Services)
    secrets: list[str] = Field(default_factory=list, description="env var names passed through, redacted")
    env: dict[str, str] = Field(default_factory=dict)
    gates: Gates = Field(default_factory=Gates)
    stages: dict[StageName, StageSpec]
    image: ImageSettings | None = None
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    provenance: ProvenanceSettings = Field(default_factory=ProvenanceSettings)

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use lowercase letters, digits and '-' (it names assets and folders)")
        return value

    @field_validator("secrets")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", v)]
        if bad:
            raise ValueError(f"not environment variable names: {bad}")
        return value

    @property
    def key(self) -> str:
        """Asset key prefix, group and partition-set name: Dagster names allow only [A-Za-z0-9_]."""
        return self.name.replace("-", "_")

    @property
    def image_repository(self) -> str:
        return (self.image.repository if self.image and self.image.repository else self.name)

    def stage(self, name: StageName) -> StageSpec:
        return self.stages[name]
