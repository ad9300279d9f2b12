"""Every gate of the declared stages, by name: the blocking asset checks a stage's kind brings (its
record in stages/kinds.py, the gates themselves in stages/gate_checks.py), and the stage graph's
entries in the app's gate registry (``verdict.py``), which promotion and deploys read back.

A gate is a blocking check: when it fails, nothing downstream runs in that run. Each stage also
records ``gates_passed`` in its materialization, so a later run (a re-execution, a promotion
launched by hand) can tell whether every gate of a commit ran and passed.
"""

from __future__ import annotations

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.stages.kinds import KINDS
from sevenp_pipeline.verdict import Gates


def gate_names(app: AppConfig, stage: str) -> list[str]:
    """The checks of one declared stage, in the order they are recorded."""
    return KINDS[app.stage(stage).kind].gate_names(app.stage(stage))


def check_specs(app: AppConfig, stage: str, key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return KINDS[app.stage(stage).kind].check_specs(app, stage, key)


def stage_gates(app: AppConfig) -> Gates:
    """The gates of the declared stages, in the stage graph's order, for the app's registry."""
    gates = Gates()
    for stage in app.stage_names():
        gates += Gates.of(check_specs(app, stage, dg.AssetKey([app.key, stage])), family=stage)
    return gates
