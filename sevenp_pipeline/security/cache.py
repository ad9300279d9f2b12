"""What the scans of the security family share: the stage-cache lookup, the checkout they scan, and
the record each scan module returns (its assets and its gates)."""

# No `from __future__ import annotations`: kept like the asset modules that import it.
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.models import Workspace
from sevenp_pipeline.resources.git import GitClient
from sevenp_pipeline.resources.launch import LaunchOptions
from sevenp_pipeline.resources.stage_cache import Manifest, StageResultCache
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.stages import checked_out
from sevenp_pipeline.stages.cache import load_result
from sevenp_pipeline.verdict import Gates

TOOL_URI = "https://sevenp.example/sevenp_pipeline"
# Bumped when what the SBOM or secret-scan assets record changes: part of their stage-cache keys.
SCAN_CACHE_VERSION = "1"
FAMILY = "security"


@dataclass(frozen=True)
class ScanAssets:
    """What one scan module builds: its assets and the gates they bring to the app's registry."""

    assets: tuple[dg.AssetsDefinition, ...]
    gates: Gates = field(default_factory=Gates)


def security_key(app: AppConfig, name: str) -> dg.AssetKey:
    return dg.AssetKey([app.key, name])


def workspace_of(context: dg.AssetExecutionContext, workspaces: Workspaces, git: GitClient,
                 app: AppConfig) -> Workspace:
    """The commit's checkout the scan reads, made here when this worker has none (checked_out)."""
    return checked_out(workspaces, app, context.partition_key, stage=context.asset_key.path[-1], git=git,
                       log=context.log.info)


def cached_result(context: dg.AssetExecutionContext, cache: StageResultCache, launch: LaunchOptions, *,
                  app: str, name: str, key: str,
                  checks: Sequence[str] = ()) -> tuple[Manifest, dict[str, Path]] | None:
    """A stored result of ``name`` for input ``key`` with its verified files, or None (the scan runs)."""
    if not launch.use_stage_cache:
        context.log.info("%s: use_stage_cache is off for this run: running it", name)
        return None
    return load_result(context, cache, app=app, name=name, key=key, checks=checks)
