"""Declared stages: the engine that runs one (runner), what each kind reads and gates (kinds,
gates), the conventional-commit check (commits) and the asset factory over an app's stage graph."""

from sevenp_pipeline.stages.runner import Stage, StageSkipped, checked_out, not_run

__all__ = ["Stage", "StageSkipped", "checked_out", "not_run"]
