"""The code location: one asset group, job and push sensor per configured application."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import dagster as dg

from sevenp_pipeline.build.assets import build_build_assets
from sevenp_pipeline.config import AppConfig, Settings, load_app_configs
from sevenp_pipeline.image.assets import build_package_assets, build_promotion_asset
from sevenp_pipeline.quality.assets import build_quality_assets
from sevenp_pipeline.resources.artifacts import LocalArtifactStore
from sevenp_pipeline.resources.base_image import NodeBaseImage
from sevenp_pipeline.resources.builder import BuildahBuilder
from sevenp_pipeline.resources.git import GitClient
from sevenp_pipeline.resources.launch import LaunchOptions
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.registry import ECRRegistry, LocalRegistry, Registry
from sevenp_pipeline.resources.services import TestServices
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.security.assets import build_security_assets
from sevenp_pipeline.source.assets import build_source_assets
from sevenp_pipeline.testing.assets import build_test_assets
from sevenp_pipeline.triggers.sensors import TAG_APP, build_push_sensor


def commit_partitions(app: AppConfig) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"{app.key}_commits")


def build_app_definitions(app: AppConfig) -> dg.Definitions:
    """The CI half of the pipeline for one app: checkout → deps → quality → tests → build → docs."""
    partitions = commit_partitions(app)
    checkout, deps = build_source_assets(app, partitions)
    quality = build_quality_assets(app, partitions, deps)
    tests = build_test_assets(app, partitions, quality or [deps])
    build = build_build_assets(app, partitions, tests or quality or [deps])
    package: list[dg.AssetsDefinition] = []
    if app.image is not None:
        # The image is built from the gated source (spec: build needs code-quality and testing).
        (image,) = build_package_assets(app, partitions, build or tests or quality or [deps], checkout)
        security = build_security_assets(app, partitions, image, checkout, deps)
        gates = [a for a in security if a.key.path[-1] != "sbom"]
        package = [image, *security, build_promotion_asset(app, partitions, gates)]
    job = dg.define_asset_job(
        name=f"{app.key}_ci_job",
        selection=dg.AssetSelection.groups(app.key),
        description=f"The pipeline of {app.name} for one commit: quality, tests, build"
                    + (", image, SBOM, scans, provenance, promotion." if app.image else "."),
        # Steps run one after another in the run worker: ~0.1 s of orchestration per step
        # instead of ~3 s for a fresh process per step (benchmarks/ci_overhead.py measures it).
        executor_def=dg.in_process_executor,
        tags={TAG_APP: app.name},
    )
    return dg.Definitions(
        assets=[checkout, deps, *quality, *tests, *build, *package],
        jobs=[job],
        sensors=[build_push_sensor(app, job, partitions)],
    )


def build_registry(settings: Settings, runner: ProcessRunner) -> Registry:
    """The registry for this deployment: the local one (default) or ECR (SEVENP_REGISTRY=ecr)."""
    if settings.registry == "ecr":
        return ECRRegistry(
            region=os.environ.get("AWS_REGION", "us-east-1"),
            endpoint_url=settings.ecr_endpoint_url,
            aws_access_key_id=dg.EnvVar("AWS_ACCESS_KEY_ID"),
            aws_secret_access_key=dg.EnvVar("AWS_SECRET_ACCESS_KEY"),
            # An emulator (moto) has no /v2 endpoint for layer blobs: only the manifest is put.
            upload_layers=settings.ecr_endpoint_url is None,
        )
    return LocalRegistry(runner=runner, home=str(settings.home))


def build_resources(settings: Settings) -> dict[str, object]:
    runner = ProcessRunner()
    return {
        "image_builder": BuildahBuilder(runner=runner, home=str(settings.home)),
        "registry": build_registry(settings, runner),
        "node_base_image": NodeBaseImage(runner=runner, home=str(settings.home)),
        "process_runner": runner,
        "git": GitClient(runner=runner, cache_dir=str(settings.cache_dir)),
        "workspaces": Workspaces(root=str(settings.workspaces_dir), cache_root=str(settings.cache_dir)),
        "artifact_store": LocalArtifactStore(root=str(settings.artifacts_dir)),
        # Under the system temp dir: PostgreSQL runs as an unprivileged user that must reach it.
        "test_services": TestServices(runner=runner, root_dir=str(Path(tempfile.gettempdir()) / "sevenp-services")),
        "launch_options": LaunchOptions(),
    }


def build_definitions(settings: Settings) -> dg.Definitions:
    apps = load_app_configs(settings.apps_dir, variables={"SEVENP_HOME": str(settings.home)})
    return dg.Definitions.merge(
        *(build_app_definitions(app) for app in apps),
        dg.Definitions(resources=build_resources(settings)),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env())
