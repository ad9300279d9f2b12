"""One asset per declared stage of an app, wired by the stages' ``needs``.

Every stage depends on the commit's checkout and on the stages it needs; its kind (stages/kinds.py)
reads the tool's report and records the gates (stages/gates.py) as blocking checks. The install
stage (source/dependencies.py) and the commit-message check have their own asset functions; every
other kind shares the one below, which restores a stage whose input key is unchanged from the stage
cache instead of running it (stages/cache.py).
"""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from sevenp_pipeline.asset_helpers import failure, fingerprint, md_table, retry_policy, stage_asset_args
from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.resources.artifacts import ArtifactStore
from sevenp_pipeline.resources.git import GitClient, GitError
from sevenp_pipeline.resources.launch import LaunchOptions
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.services import TestServices
from sevenp_pipeline.resources.stage_cache import StageResultCache
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.source.dependencies import build_install_asset
from sevenp_pipeline.stages import cache, gates
from sevenp_pipeline.stages.commits import check_commits
from sevenp_pipeline.stages.kinds import KINDS, Kind
from sevenp_pipeline.stages.runner import SKIPPED_BY_REQUEST, Stage, StageSkipped, not_run
from sevenp_pipeline.triggers.tags import TAG_BEFORE, TAG_BRANCH


@dataclass(frozen=True)
class StageAssets:
    """The declared stages of one app as assets, and the stages nothing else needs (what the
    package half waits for)."""

    assets: list[dg.AssetsDefinition]
    sinks: list[dg.AssetKey]
    install: dg.AssetKey | None


def stage_key(app: AppConfig, name: str) -> dg.AssetKey:
    return dg.AssetKey([app.key, name])


def build_stage_assets(app: AppConfig, partitions: dg.PartitionsDefinition, checkout: dg.AssetKey) -> StageAssets:
    names = app.stage_names()
    needed = {n for name in names for n in app.needs(name)}
    assets = []
    for name in names:
        deps = [checkout, *(stage_key(app, n) for n in app.needs(name))]
        kind = app.stage(name).kind
        if kind == "install":
            assets.append(build_install_asset(app, partitions, name, deps))
        elif kind == "commitlint":
            assets.append(_commitlint_asset(app, partitions, name, deps))
        else:
            assets.append(_stage_asset(app, partitions, name, deps, KINDS[kind]))
    install = app.install_stage
    return StageAssets(assets=assets, sinks=[stage_key(app, n) for n in names if n not in needed],
                       install=stage_key(app, install) if install else None)


def _description(app: AppConfig, name: str) -> str:
    spec = app.stage(name)
    how = f"`{spec.script}` script" if spec.script else (f"`{' '.join(spec.command)}`" if spec.command else "")
    return " ".join(p for p in (spec.description, f"({spec.kind} stage{', ' + how if how else ''})") if p)


def _stage_asset(
    app: AppConfig, partitions: dg.PartitionsDefinition, name: str, deps: Sequence[dg.AssetKey], kind: Kind
) -> dg.AssetsDefinition:
    key = stage_key(app, name)
    spec = app.stage(name)
    checks = gates.check_specs(app, name, key)
    check_names = [c.name for c in checks]

    @dg.asset(
        **stage_asset_args(app, partitions, key, kind.family, _description(app, name)),
        deps=list(deps),
        check_specs=checks,
        pool=f"{app.key}_services" if spec.services or kind.app_port else None,
        retry_policy=retry_policy(spec.retries),
    )
    def _asset(
        context: dg.AssetExecutionContext,
        process_runner: ProcessRunner,
        workspaces: Workspaces,
        artifact_store: ArtifactStore,
        test_services: TestServices,
        launch_options: LaunchOptions,
        git: GitClient,
        stage_cache: StageResultCache,
    ) -> dg.MaterializeResult:
        stage = Stage(context, app, name, process_runner, workspaces, artifact_store)
        if kind.skipped_by_skip_tests and launch_options.skip_tests:
            return not_run(context, "skip_tests was set when the run was launched", check_names,
                           why=SKIPPED_BY_REQUEST)
        stage.require_workspace()
        try:
            argv = stage.argv()
        except StageSkipped as skipped:
            return not_run(context, str(skipped), check_names)
        # What the stage reads, known before it runs: its data version, and its address in the cache.
        key = cache.try_input_key(stage, argv, git=git, app_port=kind.app_port)
        if key and spec.cacheable and launch_options.use_stage_cache:
            restored = cache.restore(stage, stage_cache, key, checks=check_names)
            if restored is not None:
                return restored
        elif key and spec.cacheable:
            context.log.info("%s: use_stage_cache is off for this run: running it", name)
        with stage.with_services(test_services, app_port=kind.app_port):
            outcome = stage.run(argv)
            if outcome.output_exceeded:  # one line naming the limit, not a parse of a cut-off report
                raise failure(outcome.describe(), outcome, **stage.base_metadata(outcome))
            evaluation = kind.evaluate(stage, outcome)
        passed = all(r.passed for r in evaluation.results)
        data_version = (evaluation.data_version or key
                        or stage.data_version(argv, sorted(spec.services), kind.app_port))
        metadata = {"kind": spec.kind, **stage.base_metadata(outcome), **evaluation.metadata,
                    **({"input_key": key} if key else {}), "gates_passed": passed}
        if key and spec.cacheable and passed:
            cache.store(stage, stage_cache, key, data_version=data_version, metadata=metadata,
                        checks=evaluation.results, outputs=evaluation.outputs)
        return dg.MaterializeResult(
            data_version=dg.DataVersion(data_version), metadata=metadata, check_results=evaluation.results)

    return _asset


def _commitlint_asset(
    app: AppConfig, partitions: dg.PartitionsDefinition, name: str, deps: Sequence[dg.AssetKey]
) -> dg.AssetsDefinition:
    key = stage_key(app, name)
    spec = app.stage(name)

    @dg.asset(
        **stage_asset_args(app, partitions, key, "quality", _description(app, name), kinds=frozenset({"git"})),
        deps=list(deps),
        check_specs=gates.check_specs(app, name, key),
    )
    def _asset(context: dg.AssetExecutionContext, git: GitClient) -> dg.MaterializeResult:
        sha = context.partition_key
        before = context.run.tags.get(TAG_BEFORE) or None
        branch = context.run.tags.get(TAG_BRANCH)
        try:
            # Without the branch's previous head (a new branch, a launch by hand), the commits no
            # other branch of the remote has are the ones this push brought.
            others = [] if before else list(git.ls_remote_heads(app.repository.url).values())
            commits = git.pushed_commits(app.key, sha, before=before, others=others)
        except GitError as exc:
            raise failure(f"{name}: reading the pushed commits failed: {exc}", retry=True) from exc
        types = gates.commit_types(app, name)
        violations = check_commits(commits, types=types, max_header_length=spec.gates.max_header_length)
        span = f"{before[:12]}..{sha[:12]}" if before else f"{sha[:12]} (not on any other branch)"
        context.log.info("%s: %d commit(s) in %s, %d not conventional", name, len(commits), span, len(violations))
        return dg.MaterializeResult(
            data_version=dg.DataVersion(fingerprint(name, [c[0] for c in commits], types,
                                                    spec.gates.max_header_length)),
            metadata={
                "kind": "commitlint",
                "range": span,
                "branch": branch or "(launched by hand)",
                "commits_checked": len(commits),
                "violations": len(violations),
                "problems": dg.MetadataValue.md(md_table(["commit", "header", "problem"],
                                                         [[v.sha[:12], v.header, v.problem] for v in violations])),
                "gates_passed": not violations,
            },
            check_results=[gates.commits_result(len(commits), violations)],
        )

    return _asset
