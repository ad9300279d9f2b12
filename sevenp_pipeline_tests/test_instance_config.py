"""The shipped dagster.yaml loads in the installed Dagster, and a killed run worker's pool slot is freed
by the monitoring daemon, so run_retries' retry is not stuck behind the dead run. (docker/'s instance
files and the instance on PostgreSQL: test_instance_postgres.py.)"""

from __future__ import annotations

import datetime
import logging
import shutil
import threading
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import pytest
from dagster._core.instance.config import dagster_instance_config
from dagster._daemon.monitoring import concurrency as slot_monitor

from sevenp_pipeline import instance_storage
from sevenp_pipeline.config.settings import PROJECT_ROOT


@pytest.fixture
def shipped_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    return tmp_path


def test_shipped_instance_config_validates_and_frees_slots_of_ended_runs(shipped_home: Path) -> None:
    config, _ = dagster_instance_config(str(shipped_home))  # raises on an unknown or mistyped key
    monitoring = config["run_monitoring"]
    assert monitoring["enabled"] is True
    assert 0 < monitoring["free_slots_after_run_end_seconds"] <= 30
    assert monitoring["poll_interval_seconds"] <= 15  # the slot check runs at this interval
    assert config["run_retries"]["enabled"] is True
    # One run's two service stages at once; a second run of the app waits (the comment says why).
    assert config["concurrency"]["pools"] == {"default_limit": 2, "granularity": "op"}


def test_shipped_storage_keeps_engines_and_loses_no_event(shipped_home: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped storage is Dagster's SQLite storage with engines kept per file (bounded): events
    written from threads at once, across more run shards than it keeps engines for, all read back."""
    monkeypatch.setattr(instance_storage, "MAX_ENGINES", 2)
    with dg.DagsterInstance.from_config(str(shipped_home)) as instance:
        storage = instance.event_log_storage
        assert isinstance(storage, instance_storage.EngineCachingSqliteEventLogStorage)
        runs = [str(uuid.uuid4()) for _ in range(4)]

        def write(run_id: str) -> None:
            for i in range(50):
                storage.store_event(dg.EventLogEntry(
                    error_info=None, level=logging.INFO, user_message=f"line {i}", run_id=run_id,
                    timestamp=time.time()))

        threads = [threading.Thread(target=write, args=(run_id,)) for run_id in runs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for run_id in runs:
            messages = [r.event_log_entry.user_message for r in storage.get_records_for_run(run_id, limit=100).records]
            assert messages == [f"line {i}" for i in range(50)]
        assert len(storage._engines) <= 2  # the bound under test
    assert (shipped_home / "history" / "runs" / f"{runs[0]}.db").exists()  # Dagster's own layout




def test_slot_held_by_a_killed_run_is_freed(shipped_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with dg.DagsterInstance.from_config(str(shipped_home)) as instance:
        storage = instance.event_log_storage
        assert storage.supports_global_concurrency_limits
        storage.set_concurrency_slots("web_services", 1)
        run = instance.add_run(dg.DagsterRun(job_name="web_ci_job", run_id=str(uuid.uuid4()),
                                             status=dg.DagsterRunStatus.STARTED))
        assert storage.claim_concurrency_slot("web_services", run.run_id, "web__integration_test_results")
        # What the code server does when the run worker dies: the run fails, the slot stays claimed.
        instance.report_run_failed(run)
        assert storage.get_concurrency_info("web_services").active_run_ids == {run.run_id}

        timeout = instance.run_monitoring_settings["free_slots_after_run_end_seconds"]
        later = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=timeout + 1)
        monkeypatch.setattr(slot_monitor, "get_current_datetime", lambda: later)
        # One iteration of the monitoring daemon's slot check, as the daemon runs it.
        list(slot_monitor.execute_concurrency_slots_iteration(SimpleNamespace(instance=instance),
                                                              logging.getLogger("test")))
        assert storage.get_concurrency_info("web_services").active_run_ids == set()
