"""sbom: the pushed image's SBOM by syft (SPDX 2.3 and CycloneDX 1.6 JSON), which the image scans read."""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
import shutil
import tempfile
from pathlib import Path

import dagster as dg

from sevenp_pipeline.asset_helpers import failure, fingerprint, stage_asset_args
from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.image.records import ImageRecord, SbomRecord, latest_record
from sevenp_pipeline.models import Workspace
from sevenp_pipeline.resources.artifacts import ArtifactStore, sha256_file
from sevenp_pipeline.resources.git import GitClient
from sevenp_pipeline.resources.launch import LaunchOptions
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.registries.role import Registry
from sevenp_pipeline.resources.stage_cache import Manifest, StageResultCache
from sevenp_pipeline.resources.tool_answers import tool_answer
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.scanners.models import Component
from sevenp_pipeline.scanners.sbom import SbomError, generate_sbom, read_cyclonedx, syft_binary
from sevenp_pipeline.security.cache import (
    FAMILY,
    SCAN_CACHE_VERSION,
    ScanAssets,
    cached_result,
    security_key,
    workspace_of,
)
from sevenp_pipeline.stages.cache import decode_metadata, mark_restored, save_result
from sevenp_pipeline.triggers.identity import ensure_run_identity


def build_sbom(app: AppConfig, partitions: dg.PartitionsDefinition, image: dg.AssetKey) -> ScanAssets:
    """``sbom`` of the image ``image`` names; it has no gate of its own."""

    @dg.asset(**stage_asset_args(app, partitions, security_key(app, "sbom"), FAMILY,
                                 "SBOM of the pushed image by syft: SPDX 2.3 and CycloneDX 1.6 JSON.",
                                 kinds=frozenset({"syft"})), deps=[image])
    def sbom(context: dg.AssetExecutionContext, process_runner: ProcessRunner, workspaces: Workspaces,
             artifact_store: ArtifactStore, registry: Registry, stage_cache: StageResultCache,
             launch_options: LaunchOptions, git: GitClient) -> dg.MaterializeResult:
        ensure_run_identity(context, app)
        ws = workspace_of(context, workspaces, git, app)
        img = latest_record(context, ImageRecord, image)
        # The SBOM describes the image: the same digest, scanned by the same syft, gives the same SBOM.
        cache_key = fingerprint(SCAN_CACHE_VERSION, "sbom", img.digest,
                                tool_answer(process_runner, [syft_binary(), "version"], Path("/")))
        cached = cached_result(context, stage_cache, launch_options, app=app.key, name="sbom", key=cache_key)
        if cached is not None:
            return _restored_sbom(context, app, ws, artifact_store, stage_cache, img, *cached)
        registry.prepare(log=context.log.info)
        try:
            result = generate_sbom(process_runner, f"registry:{img.ref}", ws.root / "sbom", env=registry.client_env())
        except SbomError as exc:
            raise failure(f"sbom: {exc}") from exc
        uris = {p.name: artifact_store.put_file(app=app.key, sha=context.partition_key, name=f"sbom/{p.name}", path=p)
                for p in (result.spdx_path, result.cyclonedx_path)}
        record = SbomRecord(
            image_digest=img.digest, component_count=result.component_count,
            spdx_path=str(result.spdx_path), spdx_uri=uris[result.spdx_path.name],
            spdx_sha256=sha256_file(result.spdx_path),
            cyclonedx_path=str(result.cyclonedx_path), cyclonedx_uri=uris[result.cyclonedx_path.name],
            cyclonedx_sha256=sha256_file(result.cyclonedx_path),
        )
        metadata = {
            **record.to_metadata(),
            **{f"components_{k}": v for k, v in result.components_by_type.items()},
            "image": img.ref,
            "syft_seconds": round(result.duration_seconds, 2),
        }
        data_version = fingerprint(img.digest, "syft")
        # The cache's blobs are hard links to the stored files (replaced only by a rename), never to the
        # workspace's, which syft writes in place on the next run of this commit.
        with tempfile.TemporaryDirectory(prefix="sevenp-cache-") as tmp:  # a remote store's copies
            stored = {p.name: artifact_store.local_copy(app=app.key, sha=context.partition_key, name=f"sbom/{p.name}",
                                                        folder=Path(tmp))
                      for p in (result.spdx_path, result.cyclonedx_path)}
            if all(stored.values()):
                save_result(context, stage_cache, app=app.key, name="sbom", key=cache_key, data_version=data_version,
                            metadata=metadata, files={name: (path, uris[name]) for name, path in stored.items()})
            else:
                context.log.warning("sbom: not stored in the stage cache: the artifact store has no copy")
        return dg.MaterializeResult(data_version=dg.DataVersion(data_version), metadata=metadata)

    return ScanAssets(assets=(sbom,))


def _restored_sbom(context: dg.AssetExecutionContext, app: AppConfig, ws: Workspace, store: ArtifactStore,
                   stage_cache: StageResultCache, img: ImageRecord, manifest: Manifest,
                   blobs: dict[str, Path]) -> dg.MaterializeResult:
    """The SBOM of the same image from an earlier commit: its documents copied into this commit's
    workspace and artifacts, where the scans downstream read them."""
    out = ws.root / "sbom"
    out.mkdir(parents=True, exist_ok=True)
    uris = {}
    for cached in manifest.files:
        dest = out / Path(cached.name).name
        shutil.copyfile(blobs[cached.name], dest)
        uris[cached.uri] = store.put_file(app=app.key, sha=context.partition_key, name=f"sbom/{dest.name}",
                                          path=dest)
    metadata = decode_metadata(manifest.metadata, uris)
    for field_name in ("spdx_path", "cyclonedx_path"):
        metadata[field_name] = str(out / Path(str(metadata[field_name])).name)
    return dg.MaterializeResult(
        data_version=dg.DataVersion(manifest.data_version),
        metadata={**metadata, "image": img.ref, **mark_restored(context, stage_cache, manifest, name="sbom")})


def sbom_components(context: dg.AssetExecutionContext, app: AppConfig) -> list[Component]:
    """The components of the commit's SBOM, for the scans that read it; fails when the file changed."""
    bom = latest_record(context, SbomRecord, security_key(app, "sbom"))
    path = Path(bom.cyclonedx_path)
    if not path.exists() or sha256_file(path) != bom.cyclonedx_sha256:
        raise failure(f"{context.asset_key.to_user_string()}: the SBOM {path} is missing or changed since "
                      f"{app.key}/sbom materialized: materialize sbom again")
    return read_cyclonedx(path)
