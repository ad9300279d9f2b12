"""source_checkout: an isolated tree per commit, the root of every app's stage graph."""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.

import dagster as dg

from sevenp_pipeline.asset_helpers import failure, md_table, retry_policy
from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.family import Family
from sevenp_pipeline.resources.git import CommitNotFound, GitClient, GitError
from sevenp_pipeline.resources.launch import LaunchOptions
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.tool_answers import prefetch_tool_answers
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.sandbox import SandboxError
from sevenp_pipeline.scanners.signing import SIGNING_KEY_ENV, SigningKey
from sevenp_pipeline.source.checkout import make_checkout
from sevenp_pipeline.triggers.identity import ensure_run_identity


def build_source_assets(app: AppConfig, partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    common = {"key_prefix": [app.key], "group_name": app.key, "partitions_def": partitions}

    @dg.asset(
        name="source_checkout",
        description=f"An isolated checkout of the commit from {app.repository.url}.",
        kinds={"git"},
        tags={"sevenp/stage": "source"},
        code_version="1",
        retry_policy=retry_policy(2),  # the remote may be briefly unreachable
        **common,
    )
    def source_checkout(
        context: dg.AssetExecutionContext, git: GitClient, workspaces: Workspaces, signing_key: SigningKey,
        process_runner: ProcessRunner, launch_options: LaunchOptions,
    ) -> dg.MaterializeResult:
        sha = context.partition_key
        prefetch_tool_answers(process_runner)  # answered while the checkout runs
        chosen = launch_options.environment
        if chosen not in ("", "none") and chosen not in app.deploy_environments:
            raise failure(f"source_checkout: resources.launch_options.config.environment: '{chosen}' is not an "
                          f"environment of {app.name} (declared: {', '.join(app.deploy_environments) or 'none'}; "
                          "or '' for the branch's, 'none' for no deploy)")
        if app.image is not None and not signing_key.configured:
            # Found before any work starts, not after the image is built and only provenance is left.
            raise failure(f"source_checkout: {SIGNING_KEY_ENV} is not set, and {app.name} builds an image whose "
                          f"provenance must be signed: set it (make dev and make demo use a local demo key)")
        try:
            workspace, tree = make_checkout(git, workspaces, app, sha, log=context.log.info)
            info = git.commit_info(app.key, sha)
            changed = git.changed_files(app.key, sha)
        except GitError as exc:
            raise failure(f"source_checkout: {exc}", retry=not isinstance(exc, CommitNotFound)) from exc
        except SandboxError as exc:
            raise failure(f"source_checkout: {exc}") from exc
        branch = ensure_run_identity(context, app, git).branch  # tags a run launched by hand (its first step)
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

    return source_checkout


def checkout_key(app: AppConfig) -> dg.AssetKey:
    """The key every later family names the checkout by."""
    return dg.AssetKey([app.key, "source_checkout"])


def build_source_family(app: AppConfig, partitions: dg.PartitionsDefinition) -> Family:
    """The source family: the commit's checkout, which every stage names as its upstream."""
    return Family(dg.Definitions(assets=[build_source_assets(app, partitions)]), outputs=(checkout_key(app),))
