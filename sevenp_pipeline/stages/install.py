"""The install stage: the app's package manager (npm, pnpm or yarn, found from the lockfile and the
``packageManager`` field) runs its frozen-lockfile install, in the stage sandbox, once per lockfile;
later commits with the same lockfile, manifest and toolchain reuse the installed tree from the cache.
With the S3 store, a tree just installed is also put in the bucket (``StageResultCache.put_dependencies``)
and a worker without it on its disk fetches and verifies it there instead of installing.
Stages read the cached tree through a copy-on-write layer of their own (the sandbox's overlay), so
no stage of any branch can change it.

A failed install writes no cache entry. Only failures that look like the network are retried:
a lockfile out of sync with package.json fails at once, naming the lockfile.
"""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import dagster as dg

from sevenp_pipeline.asset_helpers import failure, fingerprint, retry_policy, stage_asset_args
from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.files import private_dir
from sevenp_pipeline.locks import file_lock
from sevenp_pipeline.resources.artifacts import ArtifactStore, sha256_file
from sevenp_pipeline.resources.git import GitClient
from sevenp_pipeline.resources.processes import Outcome, ProcessRunner
from sevenp_pipeline.resources.stage_cache import CacheError, StageResultCache
from sevenp_pipeline.resources.workspaces import Workspaces, read_inputs, record_inputs
from sevenp_pipeline.stages.dependency_tree import ROOT_INSTALL_SCRIPTS, fetch_tree
from sevenp_pipeline.stages.runner import Stage

if TYPE_CHECKING:
    from sevenp_pipeline.stages.kinds import Kind

# Words of npm, pnpm and yarn for a registry they could not reach: worth another try.
_TRANSIENT = re.compile(r"ECONNRESET|ETIMEDOUT|EAI_AGAIN|ENOTFOUND|ECONNREFUSED|EPIPE|socket hang up|"
                        r"network (error|timeout)|ERR_PNPM_META_FETCH_FAIL|ERR_SOCKET_TIMEOUT|"
                        r"getaddrinfo|registry returned 5\d\d|\b50[234]\b.*(Gateway|Unavailable)", re.IGNORECASE)


def is_transient(outcome: Outcome) -> bool:
    return bool(_TRANSIENT.search(outcome.tail_text(60)))


def build_install_asset(
    app: AppConfig, partitions: dg.PartitionsDefinition, name: str, deps: Sequence[dg.AssetKey], kind: "Kind"
) -> dg.AssetsDefinition:
    key = dg.AssetKey([app.key, name])
    spec = app.stage(name)

    @dg.asset(
        **stage_asset_args(app, partitions, key, kind.family, spec.description or kind.summary),
        deps=list(deps),
        retry_policy=retry_policy(spec.retries),
    )
    def _asset(
        context: dg.AssetExecutionContext,
        process_runner: ProcessRunner,
        workspaces: Workspaces,
        artifact_store: ArtifactStore,
        stage_cache: StageResultCache,
        git: GitClient,
    ) -> dg.MaterializeResult:
        stage = Stage(context, app, name, process_runner, workspaces, artifact_store, git)
        stage.require_workspace(node_modules=False)
        scripts = stage.package_scripts()  # fails naming package.json when it is missing
        pm = stage.package_manager  # fails naming the lockfiles looked for
        app_dir = stage.workspace.app_dir
        argv = [*spec.command, *spec.args] if spec.command else pm.install_argv()
        inputs = {str(p.relative_to(app_dir)): sha256_file(p) for p in pm.cache_inputs(app_dir) if p.is_file()}
        lock_hash = inputs[pm.lockfile]  # detect() found it, and it is the first cache input
        # The app's own install scripts may read any file of the commit: then the tree is shared only
        # by commits with the same tree, or one branch could plant code in another's node_modules.
        lifecycle = sorted(set(scripts) & ROOT_INSTALL_SCRIPTS)
        tree = read_inputs(stage.workspace).get("tree") if lifecycle else None
        cache_key = fingerprint(pm.name, pm.version, inputs, argv, stage.tool_versions(),
                                {k: v for k, v in stage.env().items() if k not in stage.extra_env}, tree)
        cached = workspaces.dependency_cache(cache_key)
        tree_dir = cached / "node_modules"
        target = app_dir / "node_modules"
        outcome = None
        with file_lock(cached.with_suffix(".lock"), what=f"dependency cache {cached}"):
            reused = (cached / "complete").exists()
            fetched = None if reused else fetch_tree(context, stage_cache, workspaces, cache_key, cached, lock_hash)
            reused = reused or fetched is not None
            if not reused:
                shutil.rmtree(target, ignore_errors=True)
                outcome = stage.run(argv, node_modules=False)  # in the sandbox, into the checkout
                if not outcome.ok:
                    transient = is_transient(outcome)
                    hint = "" if transient else (
                        f" (not retried: {pm.lockfile} and package.json must agree; run `{pm.name} install` "
                        f"and commit {pm.lockfile})")
                    raise failure(f"{name}: {outcome.describe()}{hint}", outcome, retry=transient)
                target.mkdir(exist_ok=True)  # an app without dependencies gets an empty tree
                shutil.rmtree(cached, ignore_errors=True)
                private_dir(cached)  # only root reads it, mounting it under each stage's own layer
                shutil.move(target, tree_dir)
                (cached / "complete").write_text(lock_hash)
            # From here the checkout's node_modules is only where each stage's sandbox mounts its own
            # copy-on-write layer over the cached tree: no stage writes into the cache.
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
        if reused and pm.uses_corepack:
            # The pinned pnpm/yarn goes into this commit's corepack folder now, from the one stage with a
            # route out: the later stages have no network (a reused tree installed nothing here).
            primed = stage.run(pm.version_argv(), node_modules=False)
            if not primed.ok:
                raise failure(f"{name}: corepack could not fetch the pinned {pm.name}: {primed.describe()}\n"
                              f"{primed.tail_text(10)}", primed, retry=is_transient(primed))
        if outcome is not None:
            put_tree(context, stage_cache, cache_key, tree_dir)
        record_inputs(stage.workspace, lock=lock_hash, node_modules=str(tree_dir))
        if lifecycle:
            context.log.info("the app's own %s script(s) run at install: the cached tree is keyed by the "
                             "commit's tree too", ", ".join(lifecycle))
        packages = sum(1 for _ in tree_dir.glob("*/package.json")) + sum(1 for _ in tree_dir.glob("@*/*/package.json"))
        context.log.info("node_modules %s by %s (%d top-level packages)", f"fetched from {fetched}" if fetched
                         else "reused from cache" if reused else "installed", pm.name, packages)
        meta = {"kind": kind.name, "reused": reused, **({"fetched_from": fetched} if fetched else {}),
                "package_manager": pm.name + (f"@{pm.version}" if pm.version else ""),
                "lockfile": pm.lockfile, "lockfile_sha256": lock_hash, "cache_key": cache_key,
                "packages": packages, **stage.tool_versions()}
        if outcome is not None:
            meta.update(stage.base_metadata(outcome))
        return dg.MaterializeResult(data_version=dg.DataVersion(cache_key), metadata=meta)

    return _asset


def put_tree(context: dg.AssetExecutionContext, cache: StageResultCache, key: str, tree: Path) -> None:
    """Keeps a tree just installed where other workers find it; a failure is a warning, never a failed install."""
    try:
        where = cache.put_dependencies(key=key, tree=tree)
    except (CacheError, OSError, ValueError) as exc:
        context.log.warning(f"node_modules for {key} not kept for other workers: {exc}")
        return
    if where is not None:
        context.log.info("node_modules kept for other workers in %s", where)
