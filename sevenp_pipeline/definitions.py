"""The code location: one asset group, job and push sensor per configured application."""

from __future__ import annotations

import dagster as dg

from sevenp_pipeline.build.assets import build_build_assets
from sevenp_pipeline.config import AppConfig, Settings, load_app_configs
from sevenp_pipeline.image.assets import build_package_assets, build_promotion_asset
from sevenp_pipeline.quality.assets import build_quality_assets
from sevenp_pipeline.resources.deployments import build_resources
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
        gated = [key for a in build or tests or quality or [deps] for key in a.keys]
        (image,) = build_package_assets(app, partitions, gated, checkout.key)
        security = build_security_assets(app, partitions, image.key, checkout.key, deps.key)
        package = [image, *security.assets, build_promotion_asset(app, partitions, security.gate_keys)]
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


def build_definitions(settings: Settings) -> dg.Definitions:
    apps = load_app_configs(settings.apps_dir, variables={"SEVENP_HOME": str(settings.home)})
    return dg.Definitions.merge(
        *(build_app_definitions(app) for app in apps),
        dg.Definitions(resources=build_resources(settings)),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env())
