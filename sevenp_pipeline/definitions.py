"""The code location: one asset group, job and push sensor per configured application, and a
failing sensor per app file that did not load."""

from __future__ import annotations

import logging

import dagster as dg

from sevenp_pipeline.config import AppConfig, BrokenConfig, ConfigError, Settings, load_app_directory
from sevenp_pipeline.deploy.assets import build_deploy_assets
from sevenp_pipeline.deploy.history import deploy_env_tag
from sevenp_pipeline.deploy.triggers import build_deploy_triggers, deploy_job_name, deploy_job_selection
from sevenp_pipeline.deploy.watchdog import build_environment_watchdog
from sevenp_pipeline.execution.threads import threaded_executor_for
from sevenp_pipeline.files import use_private_umask
from sevenp_pipeline.housekeeping.jobs import build_housekeeping_definitions
from sevenp_pipeline.image.assets import build_package_assets
from sevenp_pipeline.promotion.assets import build_promotion_asset
from sevenp_pipeline.resource_set import build_resources
from sevenp_pipeline.security.assets import build_security_assets
from sevenp_pipeline.source.assets import build_source_assets
from sevenp_pipeline.stages.assets import build_stage_assets
from sevenp_pipeline.stages.gates import stage_gates
from sevenp_pipeline.triggers.config_errors import build_config_error_sensor, config_error_sensor_name
from sevenp_pipeline.triggers.sensors import TAG_APP, build_push_sensor
from sevenp_pipeline.triggers.tags import TAG_DEPLOY_ENV

# Before Dagster opens any file in this process (the run worker's compute logs, the event log): a
# step's output can hold what redaction missed, so only the pipeline's user may read it.
use_private_umask()

_log = logging.getLogger(__name__)


def commit_partitions(app: AppConfig) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"{app.key}_commits")


def build_app_definitions(app: AppConfig) -> dg.Definitions:
    """One app's pipeline, family by family; each names its upstream by asset key:
    checkout → the declared stage graph → image → scans and provenance → promotion."""
    partitions = commit_partitions(app)
    checkout = build_source_assets(app, partitions)
    stages = build_stage_assets(app, partitions, checkout.key)
    assets: list[dg.AssetsDefinition] = [checkout, *stages.assets]
    deploys: list[dg.AssetsDefinition] = []
    if app.image is not None:
        # The image waits for every stage nothing else needs: all of the stage graph's gates.
        (image,) = build_package_assets(app, partitions, stages.sinks, checkout.key)
        security = build_security_assets(app, partitions, image.key, checkout.key, stages.install or checkout.key)
        # One registry of the app's gates, in pipeline order: promotion and deploys read its verdict.
        gates = stage_gates(app) + security.gates
        promotion = build_promotion_asset(app, partitions, security.gate_keys, gates)
        assets += [image, *security.assets, promotion]
        deploys = build_deploy_assets(app, partitions, promotion.key, gates)
    about = f" ({app.description})" if app.description else ""
    deploy_keys = [k for a in deploys for k in a.keys]
    job = dg.define_asset_job(
        name=f"{app.key}_ci_job",
        selection=dg.AssetSelection.groups(app.key) - dg.AssetSelection.assets(*deploy_keys),
        description=f"The pipeline of {app.name}{about} for one commit: its declared stages"
                    + (", image, SBOM, scans, provenance, promotion." if app.image else ".")
                    + " Stages whose needs are met run at once, each on a thread of the run worker.",
        # Ready stages run at once, each on a thread of the run worker (execution/threads.py): no
        # fresh process per step (~3 s each here), and still one step per stage, so re-execution
        # from failure works. The app's execution.max_workers is the default a launch may override.
        executor_def=threaded_executor_for(app.execution.max_workers),
        tags={TAG_APP: app.name},
    )
    deploy_jobs = {
        env: dg.define_asset_job(
            name=deploy_job_name(app, env), selection=deploy_job_selection(app, env, deploy_keys),
            description=f"Deploys one commit of {app.name} to {env}: launch it for a commit partition to deploy, "
                        f"approve or roll back (a redeploy of an older healthy commit).",
            executor_def=threaded_executor_for(app.execution.max_workers),
            tags={TAG_APP: app.name, TAG_DEPLOY_ENV: deploy_env_tag(app.name, env)},
        ) for env in app.deploy_environments
    }
    sensors = [build_push_sensor(app, job, partitions)]
    if deploy_jobs:
        sensors += build_deploy_triggers(app, job, deploy_jobs)
    return dg.Definitions(assets=[*assets, *deploys], jobs=[job, *deploy_jobs.values()], sensors=sensors)


def build_definitions(settings: Settings) -> dg.Definitions:
    """Every app that loads gets its pipeline; a broken app file breaks only its own app and
    shows up as a failing ``<file>_config_error`` sensor naming the file and the key."""
    settings.ensure_home()
    loaded = load_app_directory(settings.apps_dir, variables={"SEVENP_HOME": str(settings.home)})
    parts: list[dg.Definitions] = []
    broken = list(loaded.broken)
    for app in loaded.apps:
        try:
            parts.append(build_app_definitions(app))
        except (ConfigError, dg.DagsterInvalidDefinitionError) as exc:
            path = loaded.files[app.key]
            broken.append(BrokenConfig(path, f"{path}: {exc}"))
    error_sensors: list[dg.SensorDefinition] = []
    taken: set[str] = set()
    for item in broken:
        _log.warning("app config not loaded, its app is skipped: %s", item.message)
        name = config_error_sensor_name(item, taken)
        taken.add(name)
        error_sensors.append(build_config_error_sensor(item, name))
    return dg.Definitions.merge(
        *parts,
        build_housekeeping_definitions(),
        dg.Definitions(resources=build_resources(settings),
                       sensors=[*error_sensors, *build_environment_watchdog(loaded.apps)]),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(Settings.from_env())
