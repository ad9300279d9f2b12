"""The asset of a declared stage that runs a tool: lint, format, typecheck, test, e2e, performance,
build, docs and command stages. The stage's kind (stages/kinds.py) reads what the tool wrote and
records its gates as blocking checks."""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import dagster as dg

from sevenp_pipeline.asset_helpers import failure, gated_result, retry_policy, stage_spec
from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.resources.artifacts import ArtifactStore
from sevenp_pipeline.resources.git import GitClient
from sevenp_pipeline.resources.launch import LaunchOptions
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.services import TestServices
from sevenp_pipeline.resources.stage_cache import StageResultCache
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.stages import cache
from sevenp_pipeline.stages.runner import SKIPPED_BY_REQUEST, Stage, StageSkipped, not_run

if TYPE_CHECKING:
    from sevenp_pipeline.stages.kinds import Kind


def stage_key(app: AppConfig, name: str) -> dg.AssetKey:
    return dg.AssetKey([app.key, name])


def stage_description(app: AppConfig, name: str) -> str:
    """The stage's own description, then its kind and what it runs."""
    spec = app.stage(name)
    how = f"`{spec.script}` script" if spec.script else (f"`{' '.join(spec.command)}`" if spec.command else "")
    return " ".join(p for p in (spec.description, f"({spec.kind} stage{', ' + how if how else ''})") if p)


def build_tool_asset(
    app: AppConfig, partitions: dg.PartitionsDefinition, name: str, deps: Sequence[dg.AssetKey], kind: "Kind"
) -> dg.AssetsDefinition:
    """The asset of a stage that runs its command and has its kind read what the tool wrote; a stage
    whose input key is unchanged is restored from the stage cache instead of run (stages/cache.py)."""
    key = stage_key(app, name)
    spec = app.stage(name)
    checks = kind.check_specs(app, name, key, partitions)
    check_names = [c.name for c in checks]
    evaluate = kind.evaluate
    assert evaluate is not None, f"the {kind.name} kind reads no tool's output"

    # A multi-asset of one asset, only so that its checks are optional outputs (``can_subset``): a
    # stage that does not apply (optional script missing) or that a person skipped records no check
    # result, and Dagster shows its checks as skipped, not failed. The op keeps the name @asset gives
    # it (``<app>__<stage>``): step keys are unique across the apps of the code location.
    @dg.multi_asset(
        name="__".join(key.path),
        specs=[stage_spec(app, partitions, key, kind.family, stage_description(app, name), deps=deps)],
        check_specs=checks,
        can_subset=True,
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
    ) -> Iterator[Any]:
        stage = Stage(context, app, name, process_runner, workspaces, artifact_store, git, stage_cache)
        if kind.skipped_by_skip_tests and launch_options.skip_tests:
            yield not_run(context, "skip_tests was set when the run was launched", why=SKIPPED_BY_REQUEST)
            return
        stage.require_workspace()
        try:
            argv = stage.argv()
        except StageSkipped as skipped:
            yield not_run(context, str(skipped))
            return
        # What the stage reads, known before it runs: its data version, and its address in the cache.
        key = cache.try_input_key(stage, argv, git=git, app_port=kind.app_port)
        if key and spec.cacheable and launch_options.use_stage_cache:
            restored = cache.restore(stage, stage_cache, key, checks=check_names)
            if restored is not None:
                yield restored
                return
        elif key and spec.cacheable:
            context.log.info("%s: use_stage_cache is off for this run: running it", name)
        with stage.with_services(test_services, app_port=kind.app_port):
            outcome = stage.run(argv)
            if outcome.output_exceeded:  # one line naming the limit, not a parse of a cut-off report
                raise failure(outcome.describe(), outcome, **stage.base_metadata(outcome))
            evaluation = evaluate(stage, outcome)
        passed = all(r.passed for r in evaluation.results)
        data_version = (evaluation.data_version or key
                        or stage.data_version(argv, sorted(spec.services), kind.app_port))
        # The headline (counts, coverage, problems) first; how it ran (kind, command, exit code) after.
        metadata = {**evaluation.metadata, "gates_passed": passed, "kind": spec.kind,
                    **stage.base_metadata(outcome), **({"input_key": key} if key else {})}
        if key and spec.cacheable and passed:
            cache.store(stage, stage_cache, key, data_version=data_version, metadata=metadata,
                        checks=evaluation.results, outputs=evaluation.outputs)
        yield from gated_result(context, metadata=metadata, checks=evaluation.results, data_version=data_version,
                                failure_metadata=evaluation.failure_metadata)

    return _asset
