"""Where each commit's isolated checkout, logs and dependency cache live."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from sevenp_pipeline.models import Workspace


class Workspaces(dg.ConfigurableResource):
    """One folder per (app, commit) under ``root``; dependency trees cached by lockfile hash."""

    root: str = Field(description="parent of the per-commit workspaces")
    cache_root: str = Field(description="node_modules trees cached by lockfile hash")

    def for_commit(self, *, app: str, sha: str, subdir: str = "") -> Workspace:
        return Workspace(root=Path(self.root) / app / sha, app_subdir=subdir)

    def dependency_cache(self, key: str) -> Path:
        return Path(self.cache_root) / "node_modules" / key


def read_inputs(workspace: Workspace) -> dict[str, Any]:
    """What earlier stages recorded about their inputs (tree hash, lockfile hash)."""
    path = workspace.root / "inputs.json"
    return json.loads(path.read_text()) if path.exists() else {}


def record_inputs(workspace: Workspace, **values: Any) -> None:
    data = read_inputs(workspace)
    data.update(values)
    path = workspace.root / "inputs.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    tmp.replace(path)
