"""The shipped apps (``apps/*.yaml``) loaded through the real definitions, compared with the snapshot
beside this file: asset keys, checks, jobs, sensors and schedules. A refactor that changes none of
them passes; one that does shows the difference. After an intended change, regenerate the snapshot:
``SEVENP_UPDATE_SNAPSHOT=1 .venv/bin/pytest sevenp_pipeline_tests/test_defs.py`` and commit it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from sevenp_pipeline.config import Settings, load_app_configs
from sevenp_pipeline.config.settings import PROJECT_ROOT
from sevenp_pipeline.definitions import app_gates, build_definitions

SNAPSHOT = Path(__file__).with_name("defs_snapshot.json")


def shape(defs: dg.Definitions) -> dict[str, Any]:
    """What a user sees of the code location, as sorted lists of names."""
    repo = defs.get_repository_def()
    assets = sorted(key.to_user_string() for key in repo.asset_graph.get_all_asset_keys())
    checks = sorted(f"{key.asset_key.to_user_string()}:{key.name}"
                    for key in repo.asset_graph.asset_check_keys)
    blocking = sorted(f"{spec.asset_key.to_user_string()}:{spec.name}"
                      for node in repo.assets_defs_by_key.values() for spec in node.check_specs
                      if spec.blocking)
    return {
        "assets": assets,
        "checks": checks,
        "blocking_checks": sorted(set(blocking)),
        "jobs": sorted(job.name for job in repo.get_all_jobs() if not job.name.startswith("__")),
        "sensors": sorted(sensor.name for sensor in repo.sensor_defs),
        "schedules": sorted(schedule.name for schedule in repo.schedule_defs),
        "resources": sorted(defs.resources or {}),
    }


def test_shipped_apps_load_as_the_snapshot_says(tmp_path: Path) -> None:
    apps = PROJECT_ROOT / "apps"
    assert sorted(apps.glob("*.yaml")), f"no app files in {apps}"
    found = shape(build_definitions(Settings(home=tmp_path / "home", apps_dir=apps)))
    # A broken app file would show up as a <file>_config_error sensor instead of its pipeline.
    assert not [name for name in found["sensors"] if name.endswith("_config_error")], found["sensors"]
    if os.environ.get("SEVENP_UPDATE_SNAPSHOT"):
        SNAPSHOT.write_text(json.dumps(found, indent=2) + "\n")
    expected = json.loads(SNAPSHOT.read_text())
    for part in expected:
        assert found[part] == expected[part], (
            f"{part} differ from {SNAPSHOT.name}: added {sorted(set(found[part]) - set(expected[part]))}, "
            f"removed {sorted(set(expected[part]) - set(found[part]))}")
    assert found.keys() == expected.keys()


def test_every_blocking_check_is_in_the_gate_registry(tmp_path: Path) -> None:
    """Promotion, deploys and the demo read one registry: it must hold every blocking check the
    code location defines, declared stages and security alike, and nothing else."""
    apps = PROJECT_ROOT / "apps"
    found = shape(build_definitions(Settings(home=tmp_path / "home", apps_dir=apps)))
    registered = sorted(gate.label for app in load_app_configs(apps, variables={"SEVENP_HOME": str(tmp_path)})
                        for gate in app_gates(app))
    assert registered == found["blocking_checks"]
