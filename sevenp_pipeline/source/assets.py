"""source_checkout and node_dependencies: an isolated tree per commit, npm ci reused by lockfile."""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
import shutil
from pathlib import Path

import dagster as dg

from sevenp_pipeline.config import AppConfig, StageName
from sevenp_pipeline.locks import file_lock
from sevenp_pipeline.resources.artifacts import ArtifactStore, sha256_file
from sevenp_pipeline.resources.git import CommitNotFound, GitClient, GitError
from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessRunner
from sevenp_pipeline.resources.workspaces import Workspaces, record_inputs
from sevenp_pipeline.stages import Stage, failure, fingerprint, md_table, tool_versions
from sevenp_pipeline.triggers.tags import TAG_BRANCH

NETWORK_RETRY = dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def build_source_assets(app: AppConfig, partitions: dg.PartitionsDefinition) -> list[dg.AssetsDefinition]:
    common = {"key_prefix": [app.key], "group_name": app.key, "partitions_def": partitions}

    @dg.asset(
        name="source_checkout",
        description=f"An isolated checkout of the commit from {app.repository.url}.",
        kinds={"git"},
        tags={"sevenp/stage": "source"},
        code_version="1",
        retry_policy=NETWORK_RETRY,
        **common,
    )
    def source_checkout(
        context: dg.AssetExecutionContext, git: GitClient, workspaces: Workspaces
    ) -> dg.MaterializeResult:
        sha = context.partition_key
        workspace = workspaces.for_commit(app=app.key, sha=sha, subdir=app.repository.subdirectory)
        try:
            git.checkout(app.key, app.repository.url, sha, workspace, log=context.log.info)
            info = git.commit_info(app.key, sha)
            tree = git.tree_hash(app.key, sha, app.repository.subdirectory)
            changed = git.changed_files(app.key, sha)
        except GitError as exc:
            raise failure(f"source_checkout: {exc}", retry=not isinstance(exc, CommitNotFound)) from exc
        record_inputs(workspace, sha=sha, tree=tree)
        branch = context.run.tags.get(TAG_BRANCH)
        context.log.info("Checked out %s (%s) by %s: %s", sha[:12], tree[:12], info.author, info.subject)
        return dg.MaterializeResult(
            data_version=dg.DataVersion(tree),
            metadata={
                "commit": sha,
                "branch": branch or "(launched by hand)",
                "tree_hash": tree,
                "author": f"{info.author} <{info.email}>",
                "message": info.subject,
                "committed_at": dg.MetadataValue.timestamp(float(info.committed_at)),
                "changed_files_count": len(changed),
                "changed_files": dg.MetadataValue.md(md_table(["file"], [[f] for f in changed], limit=100)),
                "path": dg.MetadataValue.path(str(workspace.app_dir)),
            },
        )

    @dg.asset(
        name="node_dependencies",
        deps=[source_checkout],
        description="npm ci, reused from the cache when the lockfile and toolchain are unchanged.",
        kinds={"npm"},
        tags={"sevenp/stage": "source"},
        code_version="1",
        retry_policy=NETWORK_RETRY,
        **common,
    )
    def node_dependencies(
        context: dg.AssetExecutionContext,
        process_runner: ProcessRunner,
        workspaces: Workspaces,
        artifact_store: ArtifactStore,
    ) -> dg.MaterializeResult:
        stage = Stage(context, app, StageName.install, process_runner, workspaces, artifact_store)
        stage.require_workspace(node_modules=False)
        stage.package_scripts()  # fails naming package.json when it is missing
        lockfile = stage.workspace.app_dir / "package-lock.json"
        if not lockfile.exists():
            raise failure("node_dependencies: package-lock.json is missing: npm ci needs a committed lockfile")
        argv = stage.argv()
        lock_hash = sha256_file(lockfile)
        manifest_hash = sha256_file(stage.workspace.app_dir / "package.json")
        key = fingerprint(lock_hash, argv, tool_versions(process_runner), manifest_hash)
        cached = workspaces.dependency_cache(key)
        target = stage.workspace.app_dir / "node_modules"
        reused = False
        with file_lock(cached.with_suffix(".lock"), what=f"dependency cache {cached}"):
            if (cached / "complete").exists():
                shutil.rmtree(target, ignore_errors=True)
                _hardlink_tree(process_runner, cached / "node_modules", target)
                reused = True
                outcome = None
            else:
                outcome = stage.run(argv)
                if not outcome.ok:
                    raise failure(f"node_dependencies: {outcome.describe()}", outcome, retry=True)
                target.mkdir(exist_ok=True)  # an app without dependencies gets an empty tree
                shutil.rmtree(cached, ignore_errors=True)
                cached.mkdir(parents=True)
                _hardlink_tree(process_runner, target, cached / "node_modules")
                (cached / "complete").write_text(lock_hash)
        record_inputs(stage.workspace, lock=lock_hash)
        packages = sum(1 for _ in target.glob("*/package.json")) + sum(1 for _ in target.glob("@*/*/package.json"))
        context.log.info("node_modules %s (%d top-level packages)", "reused from cache" if reused else "installed",
                         packages)
        meta = {"reused": reused, "lockfile_sha256": lock_hash, "cache_key": key, "packages": packages,
                **tool_versions(process_runner)}
        if outcome is not None:
            meta.update(stage.base_metadata(outcome))
        return dg.MaterializeResult(data_version=dg.DataVersion(key), metadata=meta)

    return [source_checkout, node_dependencies]


def _hardlink_tree(runner: ProcessRunner, source: Path, dest: Path) -> None:
    """``cp -al``: a node_modules tree in well under a second, sharing file data with the cache."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    outcome = runner.run(ExecuteRequest(argv=["cp", "-al", str(source), str(dest)], cwd=dest.parent,
                                        label="node_modules cache", timeout_seconds=300))
    if not outcome.ok:
        raise failure(f"node_dependencies: copying the dependency cache failed: {outcome.tail_text(5)}", outcome)
