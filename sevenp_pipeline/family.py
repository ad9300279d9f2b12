"""What one stage family (source, stages, image, security, promotion, deploy, triggers) hands the
code location: its own ``dg.Definitions`` (assets, checks, jobs, sensors), the gates it registers in
the app's registry, and the asset keys the next family waits for. ``definitions.py`` merges them in
flow order, as dagster-open-platform merges one ``Definitions`` per folder."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import dagster as dg

from sevenp_pipeline.verdict import Gates


@dataclass(frozen=True)
class Family:
    defs: dg.Definitions
    gates: Gates = field(default_factory=Gates)
    outputs: tuple[dg.AssetKey, ...] = ()  # what the next family names as its upstream

    @property
    def asset_keys(self) -> list[dg.AssetKey]:
        return [key for asset in self.defs.assets or () if isinstance(asset, dg.AssetsDefinition)
                for key in asset.keys]


def merge(families: Sequence[Family]) -> dg.Definitions:
    return dg.Definitions.merge(*(f.defs for f in families))
