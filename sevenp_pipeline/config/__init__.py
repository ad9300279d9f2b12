"""Per-application pipeline configuration: one YAML file per app, validated at load."""

from sevenp_pipeline.config.loader import (
    AppConfigs,
    BrokenConfig,
    ConfigError,
    load_app_config,
    load_app_configs,
    load_app_directory,
)
from sevenp_pipeline.config.models import STAGE_KINDS, AppConfig, Limits, StageLimits, StageSpec
from sevenp_pipeline.config.settings import Settings

__all__ = [
    "STAGE_KINDS",
    "AppConfig",
    "AppConfigs",
    "BrokenConfig",
    "ConfigError",
    "Limits",
    "Settings",
    "StageLimits",
    "StageSpec",
    "load_app_config",
    "load_app_configs",
    "load_app_directory",
]
