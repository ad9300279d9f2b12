"""Declared stages: the engine that runs one (runner), what each kind reads and gates (kinds,
gates), the conventional-commit check (commits) and the asset factory over an app's stage graph."""

from sevenp_pipeline.stages.runner import (
    STAGE_CODE_VERSION,
    Stage,
    StageSkipped,
    checked_out,
    failure,
    fingerprint,
    md_table,
    not_run,
    stage_asset_args,
    tool_versions,
)

__all__ = [
    "STAGE_CODE_VERSION",
    "Stage",
    "StageSkipped",
    "checked_out",
    "failure",
    "fingerprint",
    "md_table",
    "not_run",
    "stage_asset_args",
    "tool_versions",
]
