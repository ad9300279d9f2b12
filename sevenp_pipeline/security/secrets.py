"""secret_scan: committed secrets in the commit's source tree and in the image's layers."""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
import importlib.metadata
import shutil
from collections.abc import Iterator
from typing import Any

import dagster as dg

from sevenp_pipeline.asset_helpers import failure, fingerprint, gated_result, md_table, stage_asset_args
from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.image.records import ImageRecord, latest_record
from sevenp_pipeline.resources.builders.role import ImageBuilder, ImagePushError
from sevenp_pipeline.resources.git import GitClient
from sevenp_pipeline.resources.launch import LaunchOptions
from sevenp_pipeline.resources.registries.role import Registry
from sevenp_pipeline.resources.registries.transport import SkopeoTransport
from sevenp_pipeline.resources.stage_cache import StageResultCache
from sevenp_pipeline.resources.workspaces import Workspaces, read_inputs
from sevenp_pipeline.scanners.secrets_scan import ImageScanError, scan_image_layers, scan_tree
from sevenp_pipeline.security.cache import (
    FAMILY,
    SCAN_CACHE_VERSION,
    ScanAssets,
    cached_result,
    security_key,
    workspace_of,
)
from sevenp_pipeline.stages.cache import decode_check, decode_metadata, mark_restored, save_result
from sevenp_pipeline.triggers.identity import ensure_run_identity
from sevenp_pipeline.verdict import Gates


def build_secret_scan(app: AppConfig, partitions: dg.PartitionsDefinition, checkout: dg.AssetKey,
                      image: dg.AssetKey) -> ScanAssets:
    """``secret_scan`` of the tree ``checkout`` holds and of the layers of ``image``."""
    sec = app.security
    check = dg.AssetCheckSpec("no_secrets", asset=security_key(app, "secret_scan"), blocking=True,
                              description="no committed secret in the source tree or the image",
                              partitions_def=partitions)

    @dg.asset(**stage_asset_args(app, partitions, security_key(app, "secret_scan"), FAMILY,
                                 "Committed secrets in the source tree and the image layers (detect-secrets).",
                                 kinds=frozenset({"detect-secrets"})), deps=[checkout, image],
              check_specs=[check])
    def secret_scan(context: dg.AssetExecutionContext, workspaces: Workspaces,
                    image_builder: ImageBuilder, registry: Registry, stage_cache: StageResultCache,
                    launch_options: LaunchOptions, git: GitClient) -> Iterator[Any]:
        ensure_run_identity(context, app)
        ws = workspace_of(context, workspaces, git, app)
        img = latest_record(context, ImageRecord, image)
        # What it scans: the commit's tree (the checkout) and the image's layers.
        tree = read_inputs(ws).get("tree")
        cache_key = fingerprint(SCAN_CACHE_VERSION, "secret_scan", img.digest, tree, sec.secrets.image_paths,
                                importlib.metadata.version("detect-secrets"))
        cached = cached_result(context, stage_cache, launch_options, app=app.key, name="secret_scan",
                               key=cache_key, checks=[check.name]) if tree else None
        if cached is not None:
            manifest = cached[0]
            note = f"restored from {manifest.commit[:12]}"
            yield dg.MaterializeResult(
                data_version=dg.DataVersion(manifest.data_version),
                metadata={**decode_metadata(manifest.metadata, {}),
                          **mark_restored(context, stage_cache, manifest, name="secret_scan")},
                check_results=[decode_check(c, note=note) for c in manifest.checks])
            return
        registry.prepare(log=context.log.info)
        layout = ws.root / "image-oci"
        shutil.rmtree(layout, ignore_errors=True)
        try:
            SkopeoTransport(image_builder).copy(source=f"docker://{img.ref}", dest=f"oci:{layout}:scan", log=None,
                                                label="export image for the secret scan")
            in_image = scan_image_layers(layout, paths=sec.secrets.image_paths)
        except (ImagePushError, ImageScanError) as exc:
            raise failure(f"secret_scan: {exc}") from exc
        finally:
            shutil.rmtree(layout, ignore_errors=True)
        in_source = scan_tree(ws.app_dir)
        rows = [["source", f.file, f.line, f.type] for f in in_source]
        rows += [["image", f.file, f.line, f.type] for f in in_image]
        found = len(rows)
        metadata = {"secrets_in_source": len(in_source), "secrets_in_image": len(in_image),
                    "image_paths": dg.MetadataValue.json(sec.secrets.image_paths),
                    "findings": dg.MetadataValue.md(md_table(["where", "file", "line", "type"], rows))}
        checks = [dg.AssetCheckResult(
            check_name=check.name, passed=found == 0, severity=dg.AssetCheckSeverity.ERROR,
            description=f"{found} likely secret(s) found" if found else "no secrets found",
            metadata={"found": found})]
        data_version = fingerprint(cache_key, found)
        if tree:  # only a clean result is stored: a finding is looked at again on the next commit
            save_result(context, stage_cache, app=app.key, name="secret_scan", key=cache_key,
                        data_version=data_version, metadata=metadata, checks=checks)
        yield from gated_result(context, data_version=data_version, metadata=metadata, checks=checks)

    return ScanAssets(assets=(secret_scan,), gates=Gates.of([check], FAMILY))
