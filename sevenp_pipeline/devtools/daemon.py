"""``dagster-daemon`` with a shorter sensor loop: ``python -m sevenp_pipeline.devtools.daemon run -w …``.

Dagster's sensor daemon evaluates every sensor at most once per pass of its loop, and a pass lasts at
least ``MIN_INTERVAL_LOOP_TIME`` (5 s in ``dagster/_daemon/sensor.py``), whatever a sensor's own
``minimum_interval_seconds``. A push a webhook announced therefore waited 0-5 s for the next pass
(``benchmarks/webhook_latency.py`` measured a median push → run start of 5.7 s, no better than a 2 s
poll). This entry point sets that floor to ``SEVENP_SENSOR_LOOP_SECONDS`` (default 1) and then runs
Dagster's own daemon CLI, unchanged otherwise: each sensor still runs no more often than its own
interval says, so only the sensors that ask for less than 5 s (the push sensor of an app with a forge,
the forge status sensor) tick more often.

The floor is a module constant Dagster reads on every pass; if a Dagster release renames it, this
fails at start naming it rather than silently running with the 5 s loop.
"""

from __future__ import annotations

import os
import sys

from dagster._daemon import sensor as sensor_daemon
from dagster._daemon.cli import main as dagster_daemon_main

LOOP_VARIABLE = "SEVENP_SENSOR_LOOP_SECONDS"
DEFAULT_LOOP_SECONDS = 1.0


def loop_seconds(raw: str) -> float:
    if not raw:
        return DEFAULT_LOOP_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"{LOOP_VARIABLE}={raw!r}: expected seconds between 0.5 and 5") from None
    if not 0.5 <= value <= 5:
        raise SystemExit(f"{LOOP_VARIABLE}={raw!r}: expected seconds between 0.5 and 5")
    return value


def main(argv: list[str]) -> int:
    if not hasattr(sensor_daemon, "MIN_INTERVAL_LOOP_TIME"):
        raise SystemExit("dagster._daemon.sensor.MIN_INTERVAL_LOOP_TIME is gone in this Dagster release: "
                         "run dagster-daemon itself (sensors then pass every 5 s)")
    sensor_daemon.MIN_INTERVAL_LOOP_TIME = loop_seconds(os.environ.get(LOOP_VARIABLE, ""))
    sys.argv = ["dagster-daemon", *argv]
    return dagster_daemon_main()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
