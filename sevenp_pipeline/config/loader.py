"""Loads and validates app pipeline YAML files. Every error names the file and the key."""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sevenp_pipeline.config.models import AppConfig, StageName

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

# The spec's npm scripts and the files the stages read. An app overrides any field per stage.
DEFAULT_STAGES: dict[str, dict[str, Any]] = {
    "install": {"command": ["npm", "ci", "--no-audit", "--no-fund"], "retries": 2},
    "lint": {
        "script": "lint",
        "args": ["--format", "json", "--output-file", "{report}"],
        "report": "reports/lint.json",
    },
    "lint_security": {
        "script": "lint:security",
        "args": ["--format", "json", "--output-file", "{report}"],
        "report": "reports/lint-security.json",
    },
    "format": {"script": "format:check"},
    "type_check": {"script": "type-check"},
    "unit_tests": {
        "script": "test:unit",
        "junit": "reports/junit/unit.xml",
        "coverage": "coverage/unit/coverage-summary.json",
    },
    "integration_tests": {
        "script": "test:integration",
        "junit": "reports/junit/integration.xml",
        "services": ["postgresql", "redis"],
    },
    "api_tests": {
        "script": "test:api",
        "junit": "reports/junit/api.xml",
        "services": ["postgresql", "redis"],
    },
    "build": {"script": "build", "output_dir": "dist"},
    "docs": {"script": "build:docs", "output_dir": "docs", "optional": True},
}


class ConfigError(ValueError):
    """An app config is invalid. The message starts with the file and the key."""


def load_app_configs(directory: Path, *, variables: Mapping[str, str] | None = None) -> list[AppConfig]:
    """Loads every ``*.yaml`` in ``directory``; app names must be unique."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: app config directory does not exist (set SEVENP_APPS_DIR)")
    apps: dict[str, tuple[Path, AppConfig]] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        app = load_app_config(path, variables=variables)
        if app.key in apps:
            raise ConfigError(f"{path}: name: '{app.name}' is already used by {apps[app.key][0]}")
        apps[app.key] = (path, app)
    return [app for _, app in apps.values()]


def load_app_config(path: Path, *, variables: Mapping[str, str] | None = None) -> AppConfig:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of keys, got {type(raw).__name__}")
    raw = _with_stage_defaults(path, raw)
    try:
        raw = _expand(raw, path, "", {**os.environ, **(variables or {})})
        return AppConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_describe(path, exc)) from exc


def _with_stage_defaults(path: Path, raw: dict[str, Any]) -> dict[str, Any]:
    stages = raw.get("stages") or {}
    if not isinstance(stages, dict):
        raise ConfigError(f"{path}: stages: must be a mapping of stage name to settings")
    valid = {s.value for s in StageName}
    merged: dict[str, Any] = {}
    for name, default in DEFAULT_STAGES.items():
        override = stages.get(name) or {}
        if not isinstance(override, dict):
            raise ConfigError(f"{path}: stages.{name}: must be a mapping")
        stage = copy.deepcopy(default)
        if "command" in override:  # the default args belong to the default npm script
            stage.pop("script", None)
            stage.pop("args", None)
        if "script" in override:
            stage.pop("command", None)
        stage.update(override)
        merged[name] = stage
    unknown = sorted(set(stages) - valid)
    if unknown:
        raise ConfigError(f"{path}: stages.{unknown[0]}: unknown stage (known: {', '.join(sorted(valid))})")
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
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        lines.append(f"{path}: {key}: {message}")
    return "\n".join(lines)
