"""The front door alone (nginx, no containers): 503 when empty, idempotent start, a dead master noticed
and restarted, validated inputs, a master that survives the process that started it."""

from __future__ import annotations

import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sevenp_pipeline.deploy.targets.local.nginx import FrontDoor, Upstream
from sevenp_pipeline.deploy.targets.role import DeployError
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.services import free_port

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not shutil.which("nginx"), reason="needs nginx (Debian package nginx)")]


@pytest.fixture
def front(tmp_path: Path):
    door = FrontDoor(root=tmp_path / "nginx", port=free_port(), runner=ProcessRunner(), switch_timeout_seconds=5)
    yield door
    door.stop()
    assert door.running_pid() is None


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_empty_front_door_answers_503_and_start_is_idempotent(front: FrontDoor) -> None:
    pid = front.ensure_running()
    assert front.ensure_running() == pid
    assert status(front.url() + "/") == 503
    assert front.release_header() == "none"


def test_dead_master_is_noticed_and_restarted(front: FrontDoor) -> None:
    pid = front.ensure_running()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while front.running_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert front.running_pid() is None  # the pid file is stale now
    assert front.workers(), "the orphaned worker keeps the port"
    new = front.ensure_running()
    assert new != pid and status(front.url() + "/") == 503


def test_switch_to_a_dead_upstream_is_not_a_crash_and_values_are_validated(front: FrontDoor) -> None:
    front.ensure_running()
    front.switch(Upstream(port=free_port(), commit="abcdef1"))
    assert front.release_header() == "abcdef1"  # nginx answers 502 with the header: traffic did move
    with pytest.raises(DeployError, match="not a hex SHA"):
        Upstream(port=8080, commit="abc; return 200")
    with pytest.raises(DeployError, match="not a TCP port"):
        Upstream(port="8080; evil", commit="abcdef1")  # type: ignore[arg-type]

