"""The code location: per configured application, its families' definitions merged in flow order
(one asset group, a CI job and push sensor, deploy jobs); shared resources; and a failing sensor per
app file that did not load."""

from __future__ import annotations

import logging

import dagster as dg

from sevenp_pipeline.config import AppConfig, BrokenConfig, ConfigError, Settings, load_app_directory
from sevenp_pipeline.deploy.family import build_deploy_assets_family, build_deploy_family
from sevenp_pipeline.deploy.watchdog import build_environment_watchdog
from sevenp_pipeline.family import Family, merge
from sevenp_pipeline.files import use_private_umask
from sevenp_pipeline.forge.family import build_forge_family
from sevenp_pipeline.housekeeping.jobs import build_housekeeping_definitions
from sevenp_pipeline.image.assets import build_image_family
from sevenp_pipeline.promotion.assets import build_promotion_family
from sevenp_pipeline.resource_set import build_resources
from sevenp_pipeline.security.assets import build_security_family
from sevenp_pipeline.source.assets import build_source_family
from sevenp_pipeline.stages.assets import build_stage_family, install_key
from sevenp_pipeline.triggers.ci import build_ci_family, build_ci_job
from sevenp_pipeline.triggers.config_errors import build_config_error_sensor, config_error_sensor_name
from sevenp_pipeline.verdict import Gates

# Before Dagster opens any file in this process (the run worker's compute logs, the event log): a
# step's output can hold what redaction missed, so only the pipeline's user may read it.
use_private_umask()

_log = logging.getLogger(__name__)


def commit_partitions(app: AppConfig) -> dg.DynamicPartitionsDefinition:
    return dg.DynamicPartitionsDefinition(name=f"{app.key}_commits")


def _families(app: AppConfig) -> tuple[list[Family], Gates]:
    """One app's families in flow order, each naming its upstream by asset key: checkout → the
    declared stage graph → image → scans and provenance → promotion → deploys; the CI job and its
    push sensor over all but the deploys. Also the app's gate registry, in pipeline order."""
    partitions = commit_partitions(app)
    source = build_source_family(app, partitions)
    (checkout,) = source.outputs
    stages = build_stage_family(app, partitions, checkout)
    families, gates = [source, stages], stages.gates
    deploys = None
    if app.image is not None:
        image = build_image_family(app, partitions, stages.outputs, checkout)
        security = build_security_family(app, partitions, *image.outputs, checkout, install_key(app) or checkout)
        # One registry of the app's gates: promotion, deploys and the demo read its verdict.
        gates = stages.gates + security.gates
        promotion = build_promotion_family(app, partitions, security.outputs, gates)
        families += [image, security, promotion]
        deploys = build_deploy_assets_family(app, partitions, *promotion.outputs, gates)
    ci_job = build_ci_job(app, deploys.asset_keys if deploys else [])
    families.append(build_ci_family(app, partitions, ci_job))
    deploy_family = build_deploy_family(app, deploys, ci_job) if deploys is not None else None
    if deploy_family is not None:
        families.append(deploy_family)
    families.append(build_forge_family(app, ci_job, deploy_family))
    return families, gates


def build_app_definitions(app: AppConfig) -> dg.Definitions:
    """One app's pipeline: its families' definitions merged."""
    return merge(_families(app)[0])


def app_gates(app: AppConfig) -> Gates:
    """Every gate of the app's pipeline (declared stages and security), for :func:`verdict.verdict`."""
    return _families(app)[1]


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
