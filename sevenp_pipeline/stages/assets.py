"""One asset per declared stage of an app, wired by the stages' ``needs``.

Every stage depends on the commit's checkout and on the stages it needs; its kind's record
(stages/kinds.py) builds its asset: the install (stages/install.py), the commit-message check
(stages/commitlint.py), or a tool's run whose report the kind reads (stages/tool_asset.py).
"""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
from dataclasses import dataclass

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.family import Family
from sevenp_pipeline.stages.gates import stage_gates
from sevenp_pipeline.stages.kinds import KINDS
from sevenp_pipeline.stages.tool_asset import stage_key


@dataclass(frozen=True)
class StageAssets:
    """The declared stages of one app as assets, and the stages nothing else needs (what the
    package half waits for)."""

    assets: list[dg.AssetsDefinition]
    sinks: list[dg.AssetKey]


def build_stage_assets(app: AppConfig, partitions: dg.PartitionsDefinition, checkout: dg.AssetKey) -> StageAssets:
    names = app.stage_names()
    needed = {n for name in names for n in app.needs(name)}
    assets = []
    for name in names:
        deps = [checkout, *(stage_key(app, n) for n in app.needs(name))]
        kind = KINDS[app.stage(name).kind]
        assets.append(kind.build(app, partitions, name, deps, kind))
    return StageAssets(assets=assets, sinks=[stage_key(app, n) for n in names if n not in needed])


def build_stage_family(app: AppConfig, partitions: dg.PartitionsDefinition, checkout: dg.AssetKey) -> Family:
    """The declared stage family: one asset per stage with its gates, after the checkout; what comes
    next waits for the stages nothing else needs (all of the stage graph's gates)."""
    stages = build_stage_assets(app, partitions, checkout)
    return Family(dg.Definitions(assets=stages.assets), gates=stage_gates(app), outputs=tuple(stages.sinks))


def install_key(app: AppConfig) -> dg.AssetKey | None:
    """The install stage, if the app has one: what reads the installed dependencies names it."""
    return stage_key(app, app.install_stage) if app.install_stage else None
