"""Loads and validates app pipeline YAML files. Every error names the file and the key."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sevenp_pipeline.config.models import STAGE_KINDS, AppConfig
from sevenp_pipeline.redaction import MIN_SECRET_LENGTH

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

_QUALITY = ["lint_report", "security_lint_report", "format_report", "type_check_report"]
_TESTS = ["unit_test_results", "integration_test_results", "api_test_results"]
_ESLINT_JSON = ["--format", "json", "--output-file", "{report}"]

# The spec's stages and package scripts: the default graph of every app. An app overrides any key
# of a stage, removes one (`name: null` or `enabled: false`) or adds its own (with a `kind`).
DEFAULT_STAGES: dict[str, dict[str, Any]] = {
    "commit_messages": {"kind": "commitlint", "enabled": False,
                        "description": "Conventional Commits: the messages of the pushed commits."},
    "node_dependencies": {"kind": "install", "retries": 2,
                          "description": "The frozen-lockfile install of the app's package manager, cached."},
    "lint_report": {"kind": "lint", "script": "lint", "args": _ESLINT_JSON, "report": "reports/lint.json",
                    "needs": ["node_dependencies"], "description": "ESLint problems."},
    "security_lint_report": {"kind": "lint", "script": "lint:security", "args": _ESLINT_JSON,
                             "report": "reports/lint-security.json", "needs": ["node_dependencies"],
                             # eslint-plugin-security reports every finding as a warning.
                             "gates": {"count_warnings": True},
                             "description": "Security lint findings, warnings included."},
    "format_report": {"kind": "format", "script": "format:check", "needs": ["node_dependencies"],
                      "description": "Files the formatter would change."},
    "type_check_report": {"kind": "typecheck", "script": "type-check", "needs": ["node_dependencies"],
                          "description": "TypeScript compiler errors."},
    "unit_test_results": {"kind": "test", "script": "test:unit", "junit": "reports/junit/unit.xml",
                          "coverage": "coverage/unit/coverage-summary.json", "gates": {"min_coverage": 80},
                          "needs": _QUALITY, "description": "Unit tests with coverage."},
    "integration_test_results": {"kind": "test", "script": "test:integration",
                                 "junit": "reports/junit/integration.xml", "services": ["postgresql", "redis"],
                                 "needs": _QUALITY,
                                 "description": "Integration tests against real PostgreSQL and Redis."},
    "api_test_results": {"kind": "test", "script": "test:api", "junit": "reports/junit/api.xml",
                         "services": ["postgresql", "redis"], "needs": _QUALITY,
                         "description": "API tests over HTTP."},
    "build_artifact": {"kind": "build", "script": "build", "output_dir": "dist", "needs": _TESTS,
                       "description": "The built application, packed reproducibly with its sha256."},
    "api_docs": {"kind": "docs", "script": "build:docs", "output_dir": "docs", "optional": True,
                 "needs": ["build_artifact"], "description": "API documentation."},
    "e2e_test_results": {"kind": "e2e", "script": "test:e2e", "junit": "reports/junit/e2e.xml",
                         "artifacts": "reports/e2e-artifacts", "services": ["postgresql", "redis"],
                         "optional": True, "needs": ["build_artifact"],
                         "description": "End-to-end tests in headless Chromium against the built app."},
    "performance_report": {"kind": "performance", "script": "test:performance", "report": "reports/performance.json",
                           "services": ["postgresql", "redis"], "optional": True, "needs": ["build_artifact"],
                           "gates": {"p95_ms": 500},
                           "description": "Load test of the built app: p95 latency and requests per second."},
}


class ConfigError(ValueError):
    """An app config is invalid. The message starts with the file and the key."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently):
    two stages of the same name are an error, not an override."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}'", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


@dataclass(frozen=True)
class BrokenConfig:
    """An app file that did not load; ``message`` starts with the file and names the key."""

    path: Path
    message: str


@dataclass(frozen=True)
class AppConfigs:
    """What a directory of app files holds: the apps that loaded and the files that did not."""

    apps: list[AppConfig]
    broken: list[BrokenConfig]
    files: dict[str, Path]  # app key -> the file it came from


def load_app_directory(directory: Path, *, variables: Mapping[str, str] | None = None) -> AppConfigs:
    """Loads every ``*.yaml`` in ``directory``, each on its own: a broken file is reported, not
    raised, so the other apps still load. Of two files naming the same app, the second (in file
    name order) is the broken one."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: app config directory does not exist (set SEVENP_APPS_DIR)")
    apps: dict[str, tuple[Path, AppConfig]] = {}
    broken: list[BrokenConfig] = []
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        try:
            app = load_app_config(path, variables=variables)
        except ConfigError as exc:
            broken.append(BrokenConfig(path, str(exc)))
            continue
        except Exception as exc:  # a loader bug on odd input must still break only this file
            broken.append(BrokenConfig(path, f"{path}: could not be loaded: {type(exc).__name__}: {exc}"))
            continue
        if app.key in apps:
            broken.append(BrokenConfig(path, f"{path}: name: '{app.name}' is already used by {apps[app.key][0]}"))
            continue
        apps[app.key] = (path, app)
    return AppConfigs(apps=[app for _, app in apps.values()], broken=broken,
                      files={key: path for key, (path, _) in apps.items()})


def load_app_configs(directory: Path, *, variables: Mapping[str, str] | None = None) -> list[AppConfig]:
    """Loads every ``*.yaml`` in ``directory``, strictly: any broken file raises (naming all of them)."""
    loaded = load_app_directory(directory, variables=variables)
    if loaded.broken:
        raise ConfigError("\n".join(b.message for b in loaded.broken))
    return loaded.apps


def load_app_config(path: Path, *, variables: Mapping[str, str] | None = None) -> AppConfig:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(raw).__name__}")
    raw = _with_stage_defaults(path, raw)
    env = {**os.environ, **(variables or {})}
    try:
        app = AppConfig.model_validate(_expand(raw, path, "", env))
    except ValidationError as exc:
        raise ConfigError(_describe(path, exc)) from exc
    _check_secret_lengths(path, app, env)
    return app


def _check_secret_lengths(path: Path, app: AppConfig, env: Mapping[str, str]) -> None:
    """Refuses a declared secret too short to mask: the redactor would let it through.

    An unset or empty variable is left to the stage that needs it (a fork's CI has no secrets).
    The message gives the length, never the value.
    """
    problems = [
        f"{path}: secrets[{i}]: {name} is {len(env[name])} characters long; a secret shorter than "
        f"{MIN_SECRET_LENGTH} characters cannot be masked reliably in logs"
        for i, name in enumerate(app.secrets)
        if 0 < len(env.get(name) or "") < MIN_SECRET_LENGTH
    ]
    if problems:
        raise ConfigError("\n".join(problems))


def _with_stage_defaults(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    stages = raw.get("stages") or {}
    if not isinstance(stages, dict):
        raise ConfigError(f"{path}: stages: must be a mapping of stage name to settings")
    merged: dict[str, Any] = {}
    for name in [*DEFAULT_STAGES, *(n for n in stages if n not in DEFAULT_STAGES)]:
        override = stages.get(name, {})
        if override is None:  # `name: null` removes a stage; what needed it inherits its needs
            override = {"enabled": False}
        if not isinstance(override, dict):
            raise ConfigError(f"{path}: stages.{name}: must be a mapping of settings (or null to remove it)")
        default = DEFAULT_STAGES.get(name)
        if default is None or ("kind" in override and override["kind"] != default["kind"]):
            if "kind" not in override:
                raise ConfigError(f"{path}: stages.{name}: a new stage needs a 'kind' "
                                  f"(one of {', '.join(STAGE_KINDS)})")
            merged[name] = dict(override)
            continue
        stage = copy.deepcopy(default)
        if "command" in override:  # the default args belong to the default script
            stage.pop("script", None)
            stage.pop("args", None)
        if "script" in override:
            stage.pop("command", None)
        if not isinstance(override.get("gates") or {}, dict):
            raise ConfigError(f"{path}: stages.{name}.gates: must be a mapping of gate settings")
        gates = {**stage.get("gates", {}), **(override.get("gates") or {})}
        stage.update(override)
        if gates:
            stage["gates"] = gates
        merged[name] = stage
    return {**raw, "stages": merged}


def _expand(value: Any, path: Path, key: str, variables: Mapping[str, str]) -> Any:
    if isinstance(value, dict):
        return {k: _expand(v, path, f"{key}.{k}" if key else str(k), variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, path, f"{key}[{i}]", variables) for i, v in enumerate(value)]
    if isinstance(value, str) and key.startswith("repository."):
        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in variables:
                raise ConfigError(f"{path}: {key}: environment variable ${{{name}}} is not set")
            return variables[name]

        expanded = _VAR.sub(sub, value)
        if key == "repository.url" and "://" not in expanded and not Path(expanded).is_absolute():
            expanded = str((path.parent / expanded).resolve())
        return expanded
    return value


def _describe(path: Path, exc: ValidationError) -> str:
    lines = []
    for error in exc.errors():
        key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"])
        key = key.removeprefix(".") or "(top level)"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        message = message.removeprefix("Value error, ")
        if not error["loc"] and message.startswith("stages"):  # the stage graph names its own key
            lines.append(f"{path}: {message}")
        else:
            lines.append(f"{path}: {key}: {message}")
    return "\n".join(lines)
