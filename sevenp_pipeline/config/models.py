"""The schema of an application's pipeline YAML. Unknown keys are errors, not ignored."""

from __future__ import annotations

import dataclasses
import graphlib
import re
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    PrivateAttr,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from sevenp_pipeline.config.kinds import INSTALL, KIND_SCHEMAS, STAGE_KINDS, TEST_FORMATS
from sevenp_pipeline.config.references import check_env, has_references
from sevenp_pipeline.config.targets import take_target_sections, target_schema, validate_target_section

_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_FORGE_LOGIN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_FORGE_TEAM = re.compile(r"@[A-Za-z0-9][A-Za-z0-9_.-]{0,99}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,99}){0,20}")
_STRICT = ConfigDict(extra="forbid", frozen=True)


# Assets every app has outside the declared stages: a declared stage may not take their keys.
RESERVED_STAGE_NAMES = frozenset({"source_checkout", "container_image", "sbom", "vulnerability_report",
                                  "dependency_report", "license_report", "secret_scan", "provenance",
                                  "promoted_image"})

ServiceName = Literal["postgresql", "redis"]
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


def _input_pattern(value: str) -> str:
    """One ``inputs`` entry: a git glob pathspec relative to the app folder (``src/**``, ``*.config.*``)."""
    if not value.strip():
        raise ValueError("an empty pattern; give a path or glob relative to the app folder, e.g. 'src/**'")
    if value.startswith(":"):
        raise ValueError(f"'{value}': pathspec magic is not accepted, the pattern is read as a glob already")
    if value.startswith("/"):
        raise ValueError(f"'{value}' is absolute; patterns are relative to the app folder")
    if ".." in PurePosixPath(value).parts or "\\" in value:
        raise ValueError(f"'{value}' leaves the app folder ('..') or uses a backslash")
    return value


InputPattern = Annotated[str, AfterValidator(_input_pattern)]


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def _app_path(value: str) -> str:
    """A file or folder the pipeline reads, writes or removes in the checkout: it stays inside the app
    folder by its spelling (a link in the commit is refused where it is used, see stages/confined.py)."""
    path = PurePosixPath(value)
    if not value.strip() or path == PurePosixPath("."):
        raise ValueError(f"'{value}' names no file or folder inside the app folder")
    if path.is_absolute() or value.startswith("~"):
        raise ValueError(f"'{value}' is absolute; paths are relative to the app folder")
    if ".." in path.parts or "\\" in value or "\0" in value:
        raise ValueError(f"'{value}' leaves the app folder ('..') or uses a backslash")
    return value


# report, junit, coverage, output_dir, artifacts: validated like inputs (relative, no '..').
AppPath = Annotated[str, AfterValidator(_app_path)]


class StageGates(BaseModel):
    """A stage's gates, enforced as blocking asset checks. Which keys apply depends on the kind."""

    model_config = _STRICT

    max_problems: int | None = Field(default=None, ge=0, description="lint/format/typecheck: allowed problems")
    count_warnings: bool = Field(default=False, description="lint: warnings count against max_problems")
    min_coverage: float | None = Field(default=None, ge=0, le=100, description="test: coverage %, needs coverage:")
    coverage_metric: Literal["lines", "statements", "branches", "functions"] = "lines"
    p95_ms: float | None = Field(default=None, gt=0, description="performance: p95 latency budget")
    min_requests_per_second: float | None = Field(default=None, gt=0, description="performance: throughput floor")
    commit_types: list[str] | None = Field(default=None, description="commitlint: allowed types")
    max_header_length: int = Field(default=100, gt=0, description="commitlint: longest allowed header")


class StageLimits(BaseModel):
    """What one stage command may use. At the app's top level (``limits:``) the defaults of every stage
    and image build; under ``stages.<name>.limits`` a stage's overrides (keys left out inherit the app's).
    A stage over a limit fails with one line naming the key and the value (wall time is
    ``stages.<name>.timeout_seconds``)."""

    model_config = _STRICT

    memory_mb: int | None = Field(default=None, ge=64, description="memory of all its processes (cgroup), MB")
    pids: int | None = Field(default=None, ge=16, le=32768, description="processes and threads at once (cgroup)")
    cpu_shares: int | None = Field(
        default=None, ge=2, le=262144,
        description="CPU weight under contention (cgroup cpu.shares); the orchestrator and environments have 1024")
    disk_mb: int | None = Field(default=None, ge=1, description="size of the commit's checkout after the stage, MB; "
                                                                  "also the largest file the stage may write")
    output_mb: int | None = Field(default=None, ge=1, description="output (stdout+stderr) kept in the full log, MB; "
                                                                    "more fails the stage")
    log_mb: float | None = Field(default=None, gt=0, description="output shown in the run's event log, MB; "
                                                                  "the rest only in the full log")
    report_mb: int | None = Field(default=None, ge=1, description="largest report file the pipeline parses, MB")


@dataclass(frozen=True)
class Limits:
    """A stage's limits with every value resolved (``StageSpec``'s over the app's over these defaults)."""

    memory_mb: int = 2048
    pids: int = 1024
    cpu_shares: int = 512
    disk_mb: int = 4096
    output_mb: int = 256
    log_mb: float = 4
    report_mb: int = 50

    def over(self, *layers: StageLimits | None) -> Limits:
        """These values with each layer's set keys on top, in order."""
        values = dataclasses.asdict(self)
        for layer in layers:
            if layer is not None:
                values.update(layer.model_dump(exclude_none=True))
        return Limits(**values)


DEFAULT_LIMITS = Limits()


class StageSpec(BaseModel):
    """One declared stage: its kind, how it runs (a package script or an argv) and what it needs."""

    model_config = _STRICT

    kind: str = Field(description=f"one of {', '.join(STAGE_KINDS)}")
    description: str = ""
    script: str | None = Field(default=None, description="package.json script, run through the app's manager")
    command: list[str] | None = Field(default=None, description="explicit argv instead of a script")
    args: list[str] = Field(default_factory=list, description="extra arguments ({report} = report path)")
    needs: list[str] = Field(default_factory=list, description="stages that must pass first")
    timeout_seconds: float = Field(default=600, gt=0)
    optional: bool = Field(default=False, description="not applicable, not failed, when the script is missing")
    enabled: bool = True
    env: dict[str, str] = Field(default_factory=dict)
    report: AppPath | None = Field(default=None, description="report file the command writes")
    junit: AppPath | None = Field(default=None, description="JUnit XML the tests write")
    report_format: Literal[TEST_FORMATS] | None = Field(  # type: ignore[valid-type]
        default=None, description=f"test/e2e: format of 'report' ({', '.join(TEST_FORMATS)}); default: sniffed")
    coverage: AppPath | None = Field(default=None, description="istanbul json-summary (istanbul, v8/c8, vitest)")
    output_dir: AppPath | None = Field(default=None, description="directory the stage produces")
    artifacts: AppPath | None = Field(default=None, description="folder of failure artifacts (screenshots, traces)")
    services: list[ServiceName] = Field(default_factory=list)
    retries: int = Field(default=0, ge=0, le=5, description="retries with backoff (network stages)")
    gates: StageGates = Field(default_factory=StageGates)
    inputs: list[InputPattern] | None = Field(
        default=None, description="git glob pathspecs (relative to the app folder) of the files the stage reads; "
                                  "default: the whole app folder. package.json and the lockfile always count")
    cache: bool = Field(default=True, description="restore the stored result of a run with the same input key "
                                                  "instead of running again")
    limits: StageLimits | None = Field(default=None, description="this stage's limits over the app's `limits:`")
    network: Literal["none", "outbound"] | None = Field(
        default=None, description="none: only the stage's own test services (and its own loopback); outbound: "
                                  "also a route out to the internet and the package registry, never to this "
                                  "machine's loopback. Default: outbound for the install stage, none otherwise")

    @property
    def outbound(self) -> bool:
        return self.network == "outbound" if self.network else KIND_SCHEMAS[self.kind].outbound

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        if value not in STAGE_KINDS:
            raise ValueError(f"unknown kind '{value}' (known: {', '.join(STAGE_KINDS)})")
        return value

    @field_validator("inputs")
    @classmethod
    def _inputs(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        kind = info.data.get("kind")
        if value is not None and kind in KIND_SCHEMAS and not KIND_SCHEMAS[kind].cacheable:
            raise ValueError(f"the {kind} stage is never restored from the stage cache; remove 'inputs'")
        if value is not None and not value:
            raise ValueError("an empty list would let any change of the app reuse an old result; list the files "
                             "the stage reads, or remove 'inputs' to key it on the whole app folder")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> StageSpec:
        kind = KIND_SCHEMAS[self.kind]
        if not kind.runs_command and (self.script is not None or self.command is not None):
            raise ValueError(f"{_a(self.kind)} stage runs no command: remove 'script'/'command'")
        if kind.default_command and self.script is not None:
            raise ValueError(f"{_a(self.kind)} stage takes a 'command' (default: {kind.default_command}), "
                             "not a 'script'")
        if kind.runs_command and not kind.default_command and (self.script is None) == (self.command is None):
            raise ValueError("give exactly one of 'script' or 'command'")
        if self.command is not None and not self.command:
            raise ValueError("'command' must be a non-empty list")
        required = kind.requires
        if required and not getattr(self, required):
            raise ValueError(f"a {self.kind} stage needs '{required}' (the file or folder it reads)")
        if kind.test_report:
            self._test_report_keys()
        elif self.report_format is not None:
            raise ValueError(f"'report_format' is for test and e2e stages, not {_a(self.kind)} stage")
        # Keys set to other than their default (a dumped config lists every key at its default).
        fields = StageGates.model_fields
        stray = sorted(k for k in self.gates.model_fields_set - set(kind.gate_keys)
                       if getattr(self.gates, k) != fields[k].default)
        if stray:
            applies = ", ".join(kind.gate_keys) or "none"
            raise ValueError(f"gates.{stray[0]} does not apply to {_a(self.kind)} stage (its gate keys: {applies})")
        if self.gates.min_coverage is not None and not self.coverage:
            raise ValueError("gates.min_coverage needs 'coverage' (the coverage summary file)")
        return self

    def _test_report_keys(self) -> None:
        """A test/e2e stage: 'junit', or 'report' (+ 'report_format'), or neither (the runner is detected)."""
        if self.junit and self.report:
            raise ValueError("give 'junit' or 'report' (with 'report_format'), not both")
        if self.report_format is not None and not self.report:
            raise ValueError("'report_format' needs 'report' (the test report file it describes)")

    @property
    def cacheable(self) -> bool:
        """Whether the stage cache may store and restore this stage's result."""
        return self.cache and KIND_SCHEMAS[self.kind].cacheable


class Repository(BaseModel):
    model_config = _STRICT

    url: str = Field(description="git remote URL or path; ${VAR} is expanded")
    subdirectory: str = Field(default="", description="the app's folder inside the repository")

    @field_validator("subdirectory")
    @classmethod
    def _inside(cls, value: str) -> str:
        return _app_path(value) if value else value


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
    pull_requests: Literal["head", "merge", "off"] = Field(
        default="head", description="run pull/merge requests: their head (refs/pull/N/head, "
                                    "refs/merge-requests/N/head), GitHub's merge result (refs/pull/N/merge), or off")
    tags: list[str] = Field(default_factory=lambda: ["v*"], description="git tags whose push runs the pipeline "
                                                                        "(fnmatch patterns); [] for none")
    cancel_superseded: bool = Field(default=False, description="a push cancels the branch's (or pull request's) "
                                                               "queued and running pipeline runs of older commits")


# The spec's required contexts (branch protection: code-quality, testing, security-scan), by what they
# cover: declared stages by kind, built-in assets by name. ``forge.contexts`` replaces them by stage name.
DEFAULT_FORGE_GROUPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "code-quality": (("install", "lint", "format", "typecheck", "commitlint"), ("license_report",)),
    "testing": (("test", "e2e", "performance"), ()),
    "security-scan": ((), ("vulnerability_report", "dependency_report", "secret_scan")),
}
_CONTEXT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_./-]{0,99}$")
_FORGE_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)+$")


class ForgeSettings(BaseModel):
    """Where the pipeline reports commit statuses: GitHub or GitLab (or nowhere: ``none``)."""

    model_config = _STRICT

    kind: Literal["github", "gitlab", "none"] = "none"
    api_url: str | None = Field(default=None, description="API base; default https://api.github.com or "
                                                          "https://gitlab.com/api/v4 (set it for a self-hosted forge)")
    repository: str = Field(default="", description="owner/name on GitHub, the project path on GitLab")
    context_prefix: str = Field(default="sevenp", description="per-stage contexts are <prefix>/<stage>; "
                                                              "the run's is <prefix>/pipeline")
    contexts: dict[str, list[str]] | None = Field(
        default=None, description="group contexts a branch protection can require, each the stages it covers; "
                                  "default: code-quality, testing and security-scan as in the spec")

    @field_validator("api_url")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"'{value}' is not an http(s) URL")
        return value

    @field_validator("context_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _CONTEXT.match(value):
            raise ValueError(f"'{value}': use letters, digits and . _ / -")
        return value

    @field_validator("contexts")
    @classmethod
    def _context_names(cls, value: dict[str, list[str]] | None) -> dict[str, list[str]] | None:
        for name, stages in (value or {}).items():
            if not _CONTEXT.match(name):
                raise ValueError(f"'{name}': a context name uses letters, digits and . _ / -")
            if not stages:
                raise ValueError(f"{name}: lists no stage")
        return value

    @model_validator(mode="after")
    def _repository(self) -> ForgeSettings:
        if self.kind != "none" and not _FORGE_REPOSITORY.match(self.repository):
            raise ValueError(f"repository: '{self.repository}' is not a {self.kind} repository path "
                             "(owner/name, or group/subgroup/project on GitLab)")
        return self

    @property
    def enabled(self) -> bool:
        return self.kind != "none"

    @property
    def base_url(self) -> str:
        default = "https://api.github.com" if self.kind == "github" else "https://gitlab.com/api/v4"
        return (self.api_url or default).rstrip("/")


_PG_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_PG_SETTING = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")
_REDIS_DIRECTIVE = re.compile(r"^[a-z][a-z0-9-]*$")
# Settings the pipeline sets itself (where the server listens, where its files are), and those that
# run a shell command as the server's OS user: refused, naming the key.
PG_RESERVED_SETTINGS = frozenset({
    "port", "listen_addresses", "unix_socket_directories", "unix_socket_group", "unix_socket_permissions",
    "data_directory", "config_file", "hba_file", "ident_file", "external_pid_file", "logging_collector",
    "log_directory", "log_filename", "archive_command", "archive_library", "restore_command",
    "archive_cleanup_command", "recovery_end_command", "ssl_passphrase_command", "include", "include_dir",
    "include_if_exists",
})
REDIS_RESERVED_SETTINGS = frozenset({
    "port", "bind", "dir", "daemonize", "protected-mode", "unixsocket", "unixsocketperm", "include",
    "dbfilename", "appendfilename", "appenddirname", "logfile", "pidfile", "supervised", "loadmodule",
    "requirepass", "masterauth", "masteruser", "user", "aclfile", "replicaof", "slaveof", "tls-port",
    "tls-cert-file", "tls-key-file", "tls-ca-cert-file", "syslog-enabled",
})
SettingValue = str | int | float | bool


def _setting_text(value: SettingValue, on: str, off: str) -> str:
    if isinstance(value, bool):
        return on if value else off
    text = str(value)
    if "\n" in text or "\0" in text:
        raise ValueError(f"{text!r}: a value is one line")
    return text


def _major_version(value: str | None) -> str | None:
    if value is not None and not re.match(r"^[0-9]+(\.[0-9]+)*$", value):
        raise ValueError(f"'{value}' is not a version number (e.g. \"15\")")
    return value


class PostgresService(BaseModel):
    """The stage's throwaway PostgreSQL: its test user and database, and how the server is set up."""

    model_config = _STRICT

    user: str = "testuser"
    database: str = "test_db"
    version: str | None = Field(default=None, description="major version, e.g. \"15\": the machine's "
                                "/usr/lib/postgresql/<version>/bin; default: the newest there")
    settings: dict[str, SettingValue] = Field(default_factory=dict,
                                              description="server settings, passed as -c name=value")
    extensions: list[str] = Field(default_factory=list, description="CREATE EXTENSION in the test database")
    databases: list[str] = Field(default_factory=list, description="more databases owned by the test user")
    init_sql: AppPath | None = Field(default=None, description="SQL file of the commit run against the test "
                                     "database after creation, in the stage's sandbox as the stage user")

    @field_validator("version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        return _major_version(value)

    @field_validator("user", "database")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not _PG_IDENTIFIER.match(value):
            raise ValueError(f"'{value}': use lowercase letters, digits and '_' (at most 63)")
        return value

    @field_validator("extensions", "databases")
    @classmethod
    def _identifiers(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not _PG_IDENTIFIER.match(v)]
        if bad:
            raise ValueError(f"{bad}: use lowercase letters, digits and '_' (at most 63)")
        return value

    @field_validator("settings")
    @classmethod
    def _settings(cls, value: dict[str, SettingValue]) -> dict[str, SettingValue]:
        for name, setting in value.items():
            if not _PG_SETTING.match(name):
                raise ValueError(f"{name}: not a PostgreSQL setting name")
            if name in PG_RESERVED_SETTINGS:
                raise ValueError(f"{name}: set by the pipeline itself (where the server listens and keeps "
                                 "its files) or runs a command; it cannot be configured")
            try:
                _setting_text(setting, "on", "off")
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
        return value

    @model_validator(mode="after")
    def _distinct(self) -> PostgresService:
        if self.database in self.databases:
            raise ValueError(f"databases: '{self.database}' is the test database already")
        return self

    def server_settings(self) -> tuple[str, ...]:
        """``name=value`` for each ``-c`` of the server's command line."""
        return tuple(f"{name}={_setting_text(value, 'on', 'off')}" for name, value in self.settings.items())


class RedisService(BaseModel):
    """The stage's throwaway Redis: its version and config directives."""

    model_config = _STRICT

    version: str | None = Field(default=None, description="the version redis-server must have, e.g. \"7\" "
                                "or \"7.0\" (a prefix of `redis-server --version`)")
    settings: dict[str, SettingValue] = Field(default_factory=dict,
                                              description="config directives, passed as --name value")

    @field_validator("version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        return _major_version(value)

    @field_validator("settings")
    @classmethod
    def _settings(cls, value: dict[str, SettingValue]) -> dict[str, SettingValue]:
        for name, setting in value.items():
            if not _REDIS_DIRECTIVE.match(name):
                raise ValueError(f"{name}: not a Redis config directive name")
            if name in REDIS_RESERVED_SETTINGS or name.startswith("tls-"):
                raise ValueError(f"{name}: set by the pipeline itself (where the server listens and keeps "
                                 "its files, who may connect) or loads code; it cannot be configured")
            try:
                text = _setting_text(setting, "yes", "no")
            except ValueError as exc:
                raise ValueError(f"{name}: {exc}") from None
            if text.startswith("--"):
                raise ValueError(f"{name}: '{text}' would read as another directive")
        return value

    def server_arguments(self) -> tuple[str, ...]:
        """``--name value`` pairs of the server's command line."""
        return tuple(arg for name, value in self.settings.items()
                     for arg in (f"--{name}", _setting_text(value, "yes", "no")))


class Services(BaseModel):
    model_config = _STRICT

    postgresql: PostgresService | None = Field(default_factory=PostgresService)
    redis: RedisService | None = Field(default_factory=RedisService)


class ImageSettings(BaseModel):
    """The container image (spec stage 3, 'Build & Package'). Without it the pipeline ends at the build."""

    model_config = _STRICT

    dockerfile: str = Field(default="Dockerfile", description="path in the app folder")
    context: str = Field(default=".", description="build context, relative to the app folder")
    repository: str | None = Field(default=None, description="image repository name (default: the app name)")
    base_image: str = Field(default="", description="BASE_IMAGE build arg; empty = the locally bootstrapped Node base")
    build_args: dict[str, str] = Field(default_factory=dict)


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
    """The signing key is always SEVENP_SIGNING_KEY, read by the signing_key resource (orchestrator only)."""

    model_config = _STRICT

    builder_id: str = "https://sevenp.example/sevenp_pipeline/dagster"


class ExecutionSettings(BaseModel):
    """How a run's stages execute: ready stages run at once on threads of the run worker
    (sevenp_pipeline/execution/threads.py)."""

    model_config = _STRICT

    max_workers: int | None = Field(
        default=None, ge=1, le=64,
        description="stages run at once in one run; default: the number of CPUs. A launch can set "
                    "another in its run config (execution.config.max_workers)",
    )


_ENV_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class HealthCheckSettings(BaseModel):
    """GET ``path`` on the new version until it answers 2xx (spec: 30 attempts, 10 s apart)."""

    model_config = _STRICT

    path: str = Field(default="/health", description="HTTP path of the app's health endpoint")
    attempts: int = Field(default=30, ge=1, le=1000)
    interval_seconds: float = Field(default=10, ge=0, le=600)
    timeout_seconds: float = Field(default=5, gt=0, le=120, description="per request")

    @field_validator("path")
    @classmethod
    def _path(cls, value: str) -> str:
        if not value.startswith("/") or any(c.isspace() for c in value):
            raise ValueError(f"'{value}': an absolute HTTP path without spaces, e.g. /health")
        return value


class SmokeSettings(BaseModel):
    """The app's smoke tests (spec: ``npm run test:smoke``), run from the commit's checkout, in the stage
    sandbox, against the new version's URL (given in ``url_env``)."""

    model_config = _STRICT

    script: str | None = Field(default="test:smoke", description="package.json script")
    command: list[str] | None = Field(default=None, description="explicit argv instead of a script")
    url_env: str = Field(default="API_BASE_URL", description="variable that carries the URL to test")
    env: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: float = Field(default=300, gt=0)

    @model_validator(mode="after")
    def _one(self) -> SmokeSettings:
        if (self.script is None) == (self.command is None):
            raise ValueError("give exactly one of 'script' or 'command'")
        if self.command is not None and not self.command:
            raise ValueError("'command' must be a non-empty list")
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", self.url_env):
            raise ValueError(f"url_env: '{self.url_env}' is not an environment variable name")
        return self


class DeploySettings(BaseModel):
    """How the app's image runs wherever it is deployed (every environment; one may override some)."""

    model_config = _STRICT

    port_env: str = Field(default="PORT", description="variable the app reads its listening port from")
    env: dict[str, str] = Field(default_factory=lambda: {"NODE_ENV": "production"},
                                description="the container's environment (not secrets)")
    pre_deploy: list[str] | None = Field(
        default=None, description="argv run in a container of the new image before it takes traffic (migrations)")
    pre_deploy_timeout_seconds: float = Field(default=300, gt=0)
    services: list[ServiceName] = Field(
        default_factory=lambda: ["postgresql", "redis"],
        description="local target: the environment's own long-lived servers (POSTGRESQL_URI, REDIS_URI)")
    health: HealthCheckSettings = Field(default_factory=HealthCheckSettings)
    smoke: SmokeSettings | None = Field(default_factory=SmokeSettings, description="null: no smoke tests")
    keep_previous_seconds: float = Field(
        default=10, ge=0, le=3600,
        description="after the switch: the old version keeps running this long, for an instant switch back "
                    "if the new one stops answering its health check; then it is retired")
    stop_timeout_seconds: float = Field(default=10, ge=0, le=300)

    @field_validator("pre_deploy")
    @classmethod
    def _argv(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("'pre_deploy' must be a non-empty argv list (or null)")
        return value

    @field_validator("port_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", value):
            raise ValueError(f"'{value}' is not an environment variable name")
        return value


class EnvironmentSpec(BaseModel):
    """One deployment environment (spec: staging, production)."""

    model_config = _STRICT

    target: str = Field(default="local", description="where it deploys: a name of config/targets.py TARGETS")
    branches: list[str] = Field(default_factory=list,
                                description="branches (glob patterns) whose pipelines deploy here")
    after: str | None = Field(default=None, description="environment whose smoke tests must pass first")
    approval: Literal["auto", "manual"] = Field(
        default="auto", description="manual: only a person launches it (the spec's protected environment)")
    approvers: list[str] = Field(
        default_factory=list, description="forge user names or teams (@org/team-slug on GitHub, @group/subgroup "
                                          "on GitLab: any member) whose approving review or '/deploy <env>' "
                                          "comment approves a deploy here (approval: manual; needs forge:)")
    allow_override: bool = Field(
        default=True, description="an operator may deploy here a commit that `branches` refuses (make deploy "
        "OVERRIDE='why'), named and recorded on the deployment; false: the branch rule has no exception")
    port: int | None = Field(default=None, ge=1024, le=65535,
                             description="local target: the front door's port (default: chosen once, kept)")
    health: HealthCheckSettings | None = Field(default=None, description="default: deploy.health")
    keep_previous_seconds: float | None = Field(default=None, ge=0, le=3600)
    _target_settings: BaseModel | None = PrivateAttr(default=None)

    @field_validator("approvers")
    @classmethod
    def _forge_logins(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not (_FORGE_LOGIN.fullmatch(v) or _FORGE_TEAM.fullmatch(v))]
        if bad:
            raise ValueError(f"not forge user names or teams: {bad} (a user: ada; a team: @org/team-slug on "
                             "GitHub, @group or @group/subgroup on GitLab)")
        return value

    @model_validator(mode="after")
    def _approvers_need_manual(self) -> EnvironmentSpec:
        if self.approvers and self.approval != "manual":
            raise ValueError("approvers: only an environment with approval: manual waits for an approval")
        return self

    @field_validator("target")
    @classmethod
    def _known_target(cls, value: str) -> str:
        target_schema(value)
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _target_section(cls, data: Any, handler: ModelWrapValidatorHandler[EnvironmentSpec]) -> EnvironmentSpec:
        """The section named after the target (``ecs: {...}``) is validated by the target's own model."""
        if isinstance(data, EnvironmentSpec):
            return handler(data)  # validated when it was made
        own, sections = take_target_sections(data)
        spec = handler(own)
        spec._target_settings = validate_target_section(spec.target, sections)
        return spec

    @model_serializer(mode="wrap")
    def _with_target_section(self, handler: SerializerFunctionWrapHandler, info: SerializationInfo) -> Any:
        """Dumps the target's section under its key again, so a dump loads back as the same spec."""
        data = handler(self)
        if self._target_settings is not None and isinstance(data, dict):
            data[self.target] = self._target_settings.model_dump(mode=info.mode)
        return data

    @property
    def target_settings(self) -> BaseModel | None:
        """The target's own section (e.g. ``EcsTargetSettings``), None when the target has none."""
        return self._target_settings


def default_environments() -> dict[str, EnvironmentSpec]:
    """The spec's: develop and main deploy to staging; main then to production, by a person."""
    return {
        "staging": EnvironmentSpec(branches=["develop", "main"]),
        "production": EnvironmentSpec(branches=["main"], after="staging", approval="manual"),
    }


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
    stages: dict[str, StageSpec] = Field(description="the declared stages, by name (the asset key)")
    image: ImageSettings | None = None
    security: SecuritySettings = Field(default_factory=SecuritySettings)
    provenance: ProvenanceSettings = Field(default_factory=ProvenanceSettings)
    execution: ExecutionSettings = Field(default_factory=ExecutionSettings)
    limits: StageLimits = Field(default_factory=StageLimits,
                                description="defaults of every stage's and the image build's limits")
    deploy: DeploySettings = Field(default_factory=DeploySettings)
    forge: ForgeSettings = Field(default_factory=ForgeSettings,
                                 description="the GitHub or GitLab repository that gets commit statuses")
    environments: dict[str, EnvironmentSpec] | None = Field(
        default=None, description="deployment environments; default (with an image): staging and production "
                                  "as in the spec; {} deploys nowhere")

    @field_validator("name")
    @classmethod
    def _slug(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use lowercase letters, digits and '-' (it names assets and folders)")
        return value

    @field_validator("stages")
    @classmethod
    def _stage_names(cls, value: dict[str, StageSpec]) -> dict[str, StageSpec]:
        for name in value:
            if not _STAGE_NAME.match(name):
                raise ValueError(f"'{name}': stage names use lowercase letters, digits and '_' (they name assets)")
            if name in RESERVED_STAGE_NAMES:
                raise ValueError(f"'{name}': the name of a built-in asset; choose another stage name")
        return value

    @field_validator("secrets")
    @classmethod
    def _env_names(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", v)]
        if bad:
            raise ValueError(f"not environment variable names: {bad}")
        return value

    @field_validator("env")
    @classmethod
    def _no_service_references(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if has_references(text):
                raise ValueError(f"{name}: '${{...}}' is not expanded in the app's env; a service reference "
                                 f"such as ${{postgresql.url}} goes under the env of the stage that lists the "
                                 f"service (stages.<stage>.env.{name}); a literal '${{' is written '$${{'")
        return value

    @model_validator(mode="after")
    def _service_references(self) -> AppConfig:
        for name, spec in self.stages.items():
            check_env(spec.env, spec.services, f"stages.{name}.env")  # raises naming the key
        return self

    @property
    def key(self) -> str:
        """Asset key prefix, group and partition-set name: Dagster names allow only [A-Za-z0-9_]."""
        return self.name.replace("-", "_")

    @property
    def image_repository(self) -> str:
        return (self.image.repository if self.image and self.image.repository else self.name)

    def stage(self, name: str) -> StageSpec:
        return self.stages[name]

    def limits_of(self, stage: str | None = None) -> Limits:
        """The limits of ``stage`` (None: the app's own, for its image build), every value resolved."""
        return DEFAULT_LIMITS.over(self.limits, self.stages[stage].limits if stage else None)

    @model_validator(mode="after")
    def _environments(self) -> AppConfig:
        envs = self.environments
        if envs is None:
            return self
        if envs and self.image is None:
            raise ValueError("environments: deployments need an 'image' section (the image they run)")
        for name, env in envs.items():
            if not _ENV_NAME.match(name):
                raise ValueError(f"environments.{name}: names use lowercase letters, digits and '_' "
                                 "(they name assets)")
            if f"{name}_deployment" in self.stages:
                raise ValueError(f"environments.{name}: stage '{name}_deployment' takes its asset name")
            if env.after is not None and env.after not in envs:
                raise ValueError(f"environments.{name}.after: no environment named '{env.after}' "
                                 f"(declared: {', '.join(sorted(envs))})")
        graph = {name: [env.after] if env.after else [] for name, env in envs.items()}
        try:
            list(graphlib.TopologicalSorter(graph).static_order())
        except graphlib.CycleError as exc:
            cycle = exc.args[1]
            raise ValueError(f"environments.{cycle[0]}.after: cycle {' -> '.join(cycle)}") from None
        return self

    @property
    def deploy_environments(self) -> dict[str, EnvironmentSpec]:
        """The environments this app deploys to, in an order where each comes after its ``after``."""
        if self.image is None:
            return {}
        envs = default_environments() if self.environments is None else self.environments
        graph = {name: [env.after] if env.after else [] for name, env in envs.items()}
        return {name: envs[name] for name in graphlib.TopologicalSorter(graph).static_order()}

    def health_for(self, environment: str) -> HealthCheckSettings:
        return self.deploy_environments[environment].health or self.deploy.health

    def keep_previous_for(self, environment: str) -> float:
        value = self.deploy_environments[environment].keep_previous_seconds
        return self.deploy.keep_previous_seconds if value is None else value

    @model_validator(mode="after")
    def _graph(self) -> AppConfig:
        order = stage_order(self.stages)  # raises naming the stage on a bad need or a cycle
        for kind in (k for k in KIND_SCHEMAS.values() if k.at_most_one):
            same = [n for n in order if self.stages[n].kind == kind.name]
            if len(same) > 1:
                raise ValueError(f"stages: {same[1]}: only one {kind.name} stage is allowed ({same[0]} is one)")
        return self

    @model_validator(mode="after")
    def _approvers_need_a_forge(self) -> AppConfig:
        for name, env in (self.environments or {}).items():
            if env.approvers and not self.forge.enabled:
                raise ValueError(f"environments.{name}.approvers: approvals by forge identity need a forge: section "
                                 "(kind: github or gitlab)")
            teams = [a for a in env.approvers if a.startswith("@") and a.count("/") != 1]
            if teams and self.forge.kind == "github":
                raise ValueError(f"environments.{name}.approvers: {teams}: a GitHub team is @org/team-slug "
                                 "(one organization, one team)")
        return self

    @model_validator(mode="after")
    def _forge_contexts(self) -> AppConfig:
        known = set(self.stages) | RESERVED_STAGE_NAMES | {f"{e}_deployment" for e in self.deploy_environments}
        for name, stages in (self.forge.contexts or {}).items():
            for stage in stages:
                if stage not in known:
                    raise ValueError(f"forge.contexts.{name}: no stage named '{stage}' "
                                     f"(stages: {', '.join(sorted(known))})")
        return self

    def forge_groups(self) -> dict[str, list[str]]:
        """Each group context and the stages (asset names) it covers, in pipeline order."""
        if self.forge.contexts is not None:
            return {name: list(stages) for name, stages in self.forge.contexts.items()}
        groups = {}
        for name, (kinds, builtins) in DEFAULT_FORGE_GROUPS.items():
            members = [n for n in self.stage_names() if self.stages[n].kind in kinds]
            members += [b for b in builtins if self.image is not None]
            if members:
                groups[name] = members
        return groups

    def stage_names(self) -> list[str]:
        """Enabled stages in an order where every stage comes after what it needs."""
        return stage_order(self.stages)

    def needs(self, name: str) -> list[str]:
        """What an enabled stage waits for, with disabled stages replaced by what they needed."""
        return resolved_needs(self.stages, name)

    @property
    def install_stage(self) -> str | None:
        return next((n for n in self.stage_names() if self.stages[n].kind == INSTALL), None)


class StageGraphError(ValueError):
    """A stage's needs point nowhere or form a cycle; the message names the stage and key."""


def resolved_needs(stages: dict[str, StageSpec], name: str) -> list[str]:
    out: list[str] = []
    for need in stages[name].needs:
        if need not in stages:
            raise StageGraphError(f"stages.{name}.needs: no stage named '{need}' "
                                  f"(declared: {', '.join(sorted(stages))})")
        if stages[need].enabled:
            out.append(need)
        else:  # a disabled stage passes on what it needed
            out.extend(n for n in resolved_needs(stages, need) if n not in out)
    return list(dict.fromkeys(out))


def stage_order(stages: dict[str, StageSpec]) -> list[str]:
    graph = {name: [n for n in spec.needs] for name, spec in stages.items()}
    for name in graph:
        resolved_needs(stages, name)  # unknown needs first: a clearer error than a cycle
    try:
        order = list(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        cycle = exc.args[1]
        raise StageGraphError(f"stages.{cycle[0]}.needs: cycle {' -> '.join(cycle)}") from None
    return [n for n in order if stages[n].enabled]
