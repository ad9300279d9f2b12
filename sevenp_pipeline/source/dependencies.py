"""The install stage: the app's package manager (npm, pnpm or yarn, found from the lockfile and the
``packageManager`` field) runs its frozen-lockfile install once per lockfile; later commits with
the same lockfile, manifest and toolchain reuse the installed tree from the cache.

A failed install writes no cache entry. Only failures that look like the network are retried:
a lockfile out of sync with package.json fails at once, naming the lockfile.
"""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.locks import file_lock
from sevenp_pipeline.resources.artifacts import ArtifactStore, sha256_file
from sevenp_pipeline.resources.processes import ExecuteRequest, Outcome, ProcessRunner
from sevenp_pipeline.resources.workspaces import Workspaces, record_inputs
from sevenp_pipeline.stages.runner import Stage, failure, fingerprint, retry_policy, stage_asset_args

# Words of npm, pnpm and yarn for a registry they could not reach: worth another try.
_TRANSIENT = re.compile(r"ECONNRESET|ETIMEDOUT|EAI_AGAIN|ENOTFOUND|ECONNREFUSED|EPIPE|socket hang up|"
                        r"network (error|timeout)|ERR_PNPM_META_FETCH_FAIL|ERR_SOCKET_TIMEOUT|"
                        r"getaddrinfo|registry returned 5\d\d|\b50[234]\b.*(Gateway|Unavailable)", re.IGNORECASE)


def is_transient(outcome: Outcome) -> bool:
    return bool(_TRANSIENT.search(outcome.tail_text(60)))


def build_install_asset(
    app: AppConfig, partitions: dg.PartitionsDefinition, name: str, deps: Sequence[dg.AssetKey]
) -> dg.AssetsDefinition:
    key = dg.AssetKey([app.key, name])
    spec = app.stage(name)

    @dg.asset(
        **stage_asset_args(app, partitions, key, "source",
                           spec.description or "The package manager's frozen-lockfile install, cached by lockfile."),
        deps=list(deps),
        retry_policy=retry_policy(spec.retries),
    )
    def _asset(
        context: dg.AssetExecutionContext,
        process_runner: ProcessRunner,
        workspaces: Workspaces,
        artifact_store: ArtifactStore,
    ) -> dg.MaterializeResult:
        stage = Stage(context, app, name, process_runner, workspaces, artifact_store)
        stage.require_workspace(node_modules=False)
        stage.package_scripts()  # fails naming package.json when it is missing
        pm = stage.package_manager  # fails naming the lockfiles looked for
        app_dir = stage.workspace.app_dir
        argv = [*spec.command, *spec.args] if spec.command else pm.install_argv()
        inputs = {str(p.relative_to(app_dir)): sha256_file(p) for p in pm.cache_inputs(app_dir) if p.is_file()}
        lock_hash = inputs[pm.lockfile]  # detect() found it, and it is the first cache input
        cache_key = fingerprint(pm.name, pm.version, inputs, argv, stage.tool_versions(),
                                {k: v for k, v in stage.env().items() if k not in stage.extra_env})
        cached = workspaces.dependency_cache(cache_key)
        target = app_dir / "node_modules"
        outcome = None
        with file_lock(cached.with_suffix(".lock"), what=f"dependency cache {cached}"):
            reused = (cached / "complete").exists()
            if reused:
                shutil.rmtree(target, ignore_errors=True)
                _hardlink_tree(process_runner, cached / "node_modules", target)
            else:
                outcome = stage.run(argv)
                if not outcome.ok:
                    transient = is_transient(outcome)
                    hint = "" if transient else (
                        f" (not retried: {pm.lockfile} and package.json must agree; run `{pm.name} install` "
                        f"and commit {pm.lockfile})")
                    raise failure(f"{name}: {outcome.describe()}{hint}", outcome, retry=transient)
                target.mkdir(exist_ok=True)  # an app without dependencies gets an empty tree
                shutil.rmtree(cached, ignore_errors=True)
                cached.mkdir(parents=True)
                _hardlink_tree(process_runner, target, cached / "node_modules")
                (cached / "complete").write_text(lock_hash)
        record_inputs(stage.workspace, lock=lock_hash)
        packages = sum(1 for _ in target.glob("*/package.json")) + sum(1 for _ in target.glob("@*/*/package.json"))
        context.log.info("node_modules %s by %s (%d top-level packages)",
                         "reused from cache" if reused else "installed", pm.name, packages)
        meta = {"kind": "install", "reused": reused,
                "package_manager": pm.name + (f"@{pm.version}" if pm.version else ""),
                "lockfile": pm.lockfile, "lockfile_sha256": lock_hash, "cache_key": cache_key,
                "packages": packages, **stage.tool_versions()}
        if outcome is not None:
            meta.update(stage.base_metadata(outcome))
        return dg.MaterializeResult(data_version=dg.DataVersion(cache_key), metadata=meta)

    return _asset


def _hardlink_tree(runner: ProcessRunner, source: Path, dest: Path) -> None:
    """``cp -al``: a node_modules tree in well under a second, sharing file data with the cache."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    outcome = runner.run(ExecuteRequest(argv=["cp", "-al", str(source), str(dest)], cwd=dest.parent,
                                        label="node_modules cache", timeout_seconds=300))
    if not outcome.ok:
        raise failure(f"install: copying the dependency cache failed: {outcome.tail_text(5)}", outcome)
