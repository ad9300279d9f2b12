"""The installed ``node_modules`` tree of one dependency cache key on this worker: the install stage
puts it there, and a stage on a worker where the install did not run (a fresh run container
re-executing from failure) brings back the one the install recorded for its commit: from this
worker's dependency cache, or fetched and verified from the stage cache's second tier (S3)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from sevenp_pipeline.locks import file_lock
from sevenp_pipeline.resources.stage_cache import CacheError, StageResultCache
from sevenp_pipeline.resources.workspaces import Workspaces

# Lifecycle scripts of the app's own package.json that its package manager runs at install.
ROOT_INSTALL_SCRIPTS = frozenset({"preinstall", "install", "postinstall", "preprepare", "prepare", "postprepare"})


def fetch_tree(context: dg.AssetExecutionContext, cache: StageResultCache, workspaces: Workspaces, key: str,
               cached: Path, marker: str) -> str | None:
    """The tree another worker installed for ``key``, put into ``cached`` (under its lock) from the
    cache's second tier; None when there is none or it is unusable (a warning: the install runs)."""
    try:
        fetched = cache.fetch_dependencies(key=key, folder=cached)
    except (CacheError, OSError, ValueError) as exc:
        context.log.warning(f"node_modules for {key} not fetched, installing: {exc}")
        return None
    if fetched is not None:
        workspaces.hand_over(cached / "node_modules")  # as an install in the sandbox leaves it
        (cached / "complete").write_text(marker)
    return fetched


def restore_tree(context: dg.AssetExecutionContext, cache: StageResultCache | None, workspaces: Workspaces,
                 key: str, lock_hash: str) -> tuple[Path, str] | None:
    """``(tree, where)`` for ``key`` when this worker has it or can fetch it, and it was installed from
    the lockfile ``lock_hash`` (the marker the install wrote); None otherwise."""
    cached = workspaces.dependency_cache(key)
    with file_lock(cached.with_suffix(".lock"), what=f"dependency cache {cached}"):
        complete = cached / "complete"
        where = str(cached) if complete.exists() else None
        if where is None and cache is not None:
            where = fetch_tree(context, cache, workspaces, key, cached, lock_hash)
        if where is None or complete.read_text() != lock_hash:
            return None
    return cached / "node_modules", where
