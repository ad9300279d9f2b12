"""Making a commit's workspace: what source_checkout does, and what a stage does on a worker where no
source_checkout ran (a fresh run container re-executing from failure, one stage materialized alone)."""

from __future__ import annotations

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.models import Workspace
from sevenp_pipeline.resources.git import GitClient
from sevenp_pipeline.resources.processes import LogFn
from sevenp_pipeline.resources.workspaces import Workspaces, record_inputs


def make_checkout(git: GitClient, workspaces: Workspaces, app: AppConfig, sha: str, *,
                  log: LogFn | None = None) -> tuple[Workspace, str]:
    """``(workspace, tree)``: the commit's workspace holding exactly ``sha`` (the app's subdirectory
    as its app folder), handed to the stage user, its commit and tree recorded in its inputs; and the
    tree id of the app folder. Idempotent: a finished checkout is kept. Raises GitError (CommitNotFound
    when the remote does not have the commit) or SandboxError (the stage user could not be given it)."""
    workspace = workspaces.for_commit(app=app.key, sha=sha, subdir=app.repository.subdirectory)
    git.checkout(app.key, app.repository.url, sha, workspace, log=log)
    workspaces.hand_over(workspace.src)  # the stages (as the sandbox's user) write in it
    tree = git.tree_hash(app.key, sha, app.repository.subdirectory)
    record_inputs(workspace, sha=sha, tree=tree)
    return workspace, tree
