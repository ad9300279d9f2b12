"""Every gate of the declared stages, by name: the blocking asset checks a stage's kind brings (its
record in stages/kinds.py, the gates themselves in stages/gate_checks.py), and the promotion rule that
reads them back.

A gate is a blocking check: when it fails, nothing downstream runs in that run. Each stage also
records ``gates_passed`` in its materialization, so a later run (a re-execution, a promotion
launched by hand) can tell whether every gate of a commit ran and passed.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.stages.kinds import KINDS


def gate_names(app: AppConfig, stage: str) -> list[str]:
    """The checks of one declared stage, in the order they are recorded."""
    return KINDS[app.stage(stage).kind].gate_names(app.stage(stage))


def check_specs(app: AppConfig, stage: str, key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return KINDS[app.stage(stage).kind].check_specs(app, stage, key)


@dataclass(frozen=True)
class UnmetGate:
    stage: str
    reason: str


def unmet_gates(instance: dg.DagsterInstance, app: AppConfig, partition: str) -> list[UnmetGate]:
    """Why a commit may not be promoted: each gated stage must have run for it and passed every gate.

    A stage skipped by request (skip_tests) never counts as passed; an optional stage whose
    script the app does not define is not applicable and does not block.
    """
    unmet = []
    for stage in app.stage_names():
        if not gate_names(app, stage):
            continue
        key = dg.AssetKey([app.key, stage])
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
        if not records or records[0].asset_materialization is None:
            unmet.append(UnmetGate(stage, "has not run for this commit"))
            continue
        meta = {k: v.value for k, v in records[0].asset_materialization.metadata.items()}
        not_run = meta.get("not_run")
        if not_run == "not_applicable":
            continue
        if not_run:
            unmet.append(UnmetGate(stage, f"did not run ({meta.get('reason', not_run)})"))
        elif meta.get("gates_passed") is not True:
            unmet.append(UnmetGate(stage, "a gate failed"))
    return unmet
