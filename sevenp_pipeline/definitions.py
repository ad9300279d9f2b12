"""The code location: one asset group, job and push sensor per configured application."""

from __future__ import annotations

import tempfile
from pathlib import Path

import dagster as dg

from sevenp_pipeline.build.assets import build_build_assets
from sevenp_pipeline.config import AppConfig, Settings, load_app_configs
from sevenp_pipeline.quality.assets import build_quality_assets
from sevenp_pipeline.resources.artifacts import LocalArtifactStore
from sevenp_pipeline.resources.git import GitClient
from sevenp_pipeline.resources.launch import LaunchOptions
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.services import TestServices
from sevenp_pipeline.resources.workspaces import Workspaces
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
    job = dg.define_asset_job(
        name=f"{app.key}_ci_job",
        selection=dg.AssetSelection.groups(app.key),
        description=f"The CI pipeline of {app.name}: quality, tests, build, for one commit.",
        # Steps run one after another in the run worker: ~0.1 s of orchestration per step
        # instead of ~3 s for a fresh process per step (benchmarks/ci_overhead.py measures it).
        executor_def=dg.in_process_executor,
        tags={TAG_APP: app.name},
    )
    return dg.Definitions(
        assets=[checkout, deps, *quality, *tests, *build],
        jobs=[job],
        sensors=[build_push_sensor(app, job, partitions)],
    )


def build_resources(settings: Settings) -> dict[str, object]:
    runner = ProcessRunner()
    return {
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
