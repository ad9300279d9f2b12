"""The commitlint stage's asset: every commit a push brought follows Conventional Commits
(stages/commits.py), recorded as the stage's one gate."""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg

from sevenp_pipeline.asset_helpers import failure, fingerprint, gated_result, md_table, stage_asset_args
from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.resources.git import GitClient, GitError
from sevenp_pipeline.stages.commits import check_commits
from sevenp_pipeline.stages.gate_checks import commit_types, commits_result
from sevenp_pipeline.stages.tool_asset import stage_description, stage_key
from sevenp_pipeline.triggers.identity import ensure_run_identity
from sevenp_pipeline.triggers.tags import TAG_BEFORE

if TYPE_CHECKING:
    from sevenp_pipeline.stages.kinds import Kind


def build_commitlint_asset(
    app: AppConfig, partitions: dg.PartitionsDefinition, name: str, deps: Sequence[dg.AssetKey], kind: "Kind"
) -> dg.AssetsDefinition:
    """The commit-message check: reads the pushed range from git, runs no command."""
    key = stage_key(app, name)
    spec = app.stage(name)

    @dg.asset(
        **stage_asset_args(app, partitions, key, kind.family, stage_description(app, name),
                           kinds=frozenset({"git"})),
        deps=list(deps),
        check_specs=kind.check_specs(app, name, key, partitions),
    )
    def _asset(context: dg.AssetExecutionContext, git: GitClient) -> Iterator[Any]:
        branch = ensure_run_identity(context, app).branch
        sha = context.partition_key
        before = context.run.tags.get(TAG_BEFORE) or None
        try:
            # Without the branch's previous head (a new branch, a launch by hand), the commits no
            # other branch of the remote has are the ones this push brought.
            others = [] if before else list(git.ls_remote_heads(app.repository.url).values())
            # A worker that has not run the checkout for this commit (a fresh run container, a re-run of
            # this stage alone) has no mirror yet, or an older one.
            git.ensure_commit(app.key, app.repository.url, sha, log=context.log.info)
            commits = git.pushed_commits(app.key, sha, before=before, others=others)
        except GitError as exc:
            raise failure(f"{name}: reading the pushed commits failed: {exc}", retry=True) from exc
        types = commit_types(app, name)
        violations = check_commits(commits, types=types, max_header_length=spec.gates.max_header_length)
        span = f"{before[:12]}..{sha[:12]}" if before else f"{sha[:12]} (not on any other branch)"
        context.log.info("%s: %d commit(s) in %s, %d not conventional", name, len(commits), span, len(violations))
        yield from gated_result(
            context,
            data_version=fingerprint(name, [c[0] for c in commits], types, spec.gates.max_header_length),
            metadata={
                "violations": len(violations),
                "range": span,
                "branch": branch or "(launched by hand)",
                "commits_checked": len(commits),
                "problems": dg.MetadataValue.md(md_table(["commit", "header", "problem"],
                                                         [[v.sha[:12], v.header, v.problem] for v in violations])),
                "gates_passed": not violations,
                "kind": kind.name,
            },
            checks=[commits_result(len(commits), violations)],
        )

    return _asset
