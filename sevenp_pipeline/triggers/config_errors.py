"""A broken app file stays visible: a sensor named after the file whose every tick fails with the
load error (file and key), in the UI's sensor list and tick history, while the other apps run."""

from __future__ import annotations

import re

import dagster as dg

from sevenp_pipeline.config import BrokenConfig, ConfigError

# Each tick writes a traceback to the daemon log; the message does not change until the file is
# fixed and the code location reloaded, so a tick every few minutes is enough.
ERROR_TICK_INTERVAL_SECONDS = 300


def config_error_sensor_name(broken: BrokenConfig, taken: set[str] | frozenset[str] = frozenset()) -> str:
    """``<file stem>_config_error``, in the characters Dagster names allow, unique among ``taken``."""
    base = re.sub(r"[^A-Za-z0-9_]", "_", broken.path.stem) + "_config_error"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}_{n}", n + 1
    return name


def build_config_error_sensor(broken: BrokenConfig, name: str) -> dg.SensorDefinition:
    @dg.sensor(
        name=name,
        minimum_interval_seconds=ERROR_TICK_INTERVAL_SECONDS,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"{broken.path.name} did not load, so its app has no pipeline until it is fixed "
                    f"(then reload the code location): {broken.message}",
    )
    def _sensor(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        raise ConfigError(broken.message)

    return _sensor
