"""The daemon entry point's sensor loop floor: read from SEVENP_SENSOR_LOOP_SECONDS, bounded, and set on
Dagster's sensor daemon before its CLI runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from sevenp_pipeline.devtools.daemon import DEFAULT_LOOP_SECONDS, LOOP_VARIABLE, loop_seconds


def test_the_loop_is_one_second_unless_set_within_bounds() -> None:
    assert loop_seconds("") == DEFAULT_LOOP_SECONDS == 1.0
    assert loop_seconds("2.5") == 2.5
    for bad in ("0.1", "10", "soon"):
        with pytest.raises(SystemExit, match=LOOP_VARIABLE):
            loop_seconds(bad)


def test_the_floor_reaches_dagsters_sensor_daemon_then_its_cli_runs() -> None:
    """`--help` of Dagster's own daemon CLI, after the entry point set the floor (read back in-process)."""
    code = ("import sys; from sevenp_pipeline.devtools import daemon; from dagster._daemon import sensor\n"
            "try:\n    daemon.main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('floor', sensor.MIN_INTERVAL_LOOP_TIME)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False,
                          env={"PATH": "/usr/bin:/bin", LOOP_VARIABLE: "1.5"})
    assert "run" in done.stdout and "floor 1.5" in done.stdout, done.stdout + done.stderr
