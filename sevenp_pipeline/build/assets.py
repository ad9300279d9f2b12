"""build_artifact and api_docs: the output folder packed as a reproducible tarball + sha256."""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
import dagster as dg

from sevenp_pipeline.config import AppConfig, StageName
from sevenp_pipeline.resources.artifacts import ArtifactStore, deterministic_tarball
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.stages import Stage, StageSkipped, failure, not_run, stage_asset_args


def build_build_assets(
    app: AppConfig, partitions: dg.PartitionsDefinition, upstream: list[dg.AssetsDefinition]
) -> list[dg.AssetsDefinition]:
    assets: list[dg.AssetsDefinition] = []
    if app.stage(StageName.build).enabled:
        assets.append(_output_asset(app, partitions, upstream, StageName.build, "build_artifact",
                                    "The built application (npm run build) as dist.tar.gz with its sha256."))
    if app.stage(StageName.docs).enabled:
        assets.append(_output_asset(app, partitions, assets[-1:] or upstream, StageName.docs, "api_docs",
                                    "API documentation (npm run build:docs) as docs.tar.gz."))
    return assets


def _output_asset(
    app: AppConfig,
    partitions: dg.PartitionsDefinition,
    upstream: list[dg.AssetsDefinition],
    stage_name: StageName,
    asset_name: str,
    description: str,
) -> dg.AssetsDefinition:
    @dg.asset(
        **stage_asset_args(app, partitions, dg.AssetKey([app.key, asset_name]), "build", description),
        deps=upstream,
    )
    def _asset(
        context: dg.AssetExecutionContext,
        process_runner: ProcessRunner,
        workspaces: Workspaces,
        artifact_store: ArtifactStore,
    ) -> dg.MaterializeResult:
        stage = Stage(context, app, stage_name, process_runner, workspaces, artifact_store)
        stage.require_workspace()
        try:
            argv = stage.argv()
        except StageSkipped as skipped:
            return not_run(context, str(skipped))
        out_dir = stage.report_path(stage.spec.output_dir) if stage.spec.output_dir else None
        outcome = stage.run(argv)
        if not outcome.ok:
            raise failure(f"{asset_name}: {outcome.describe()}", outcome)
        meta = stage.base_metadata(outcome)
        if out_dir is None:
            return dg.MaterializeResult(data_version=dg.DataVersion(stage.data_version(argv)), metadata=meta)
        if not out_dir.is_dir() or not any(out_dir.iterdir()):
            raise failure(f"{asset_name}: {outcome.command} succeeded but wrote nothing to "
                          f"{stage.spec.output_dir}/ (stages.{stage_name.value}.output_dir)", outcome)
        tarball = stage.workspace.root / "artifacts" / f"{out_dir.name}.tar.gz"
        digest = deterministic_tarball(out_dir, tarball, arcname=out_dir.name)
        files = sum(1 for p in out_dir.rglob("*") if p.is_file())
        uri = stage.keep(tarball, tarball.name)
        context.log.info("%s: %s (%d files, %d bytes) sha256:%s", asset_name, tarball.name, files,
                         tarball.stat().st_size, digest)
        return dg.MaterializeResult(
            # The content digest is the data version: a rebuild with identical output changes nothing
            # downstream.
            data_version=dg.DataVersion(digest),
            metadata={**meta, "sha256": digest, "files": files, "size_bytes": tarball.stat().st_size,
                      "artifact": dg.MetadataValue.url(uri)},
        )

    return _asset
