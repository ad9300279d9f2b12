"""The front door alone (nginx, no containers): 503 when empty, idempotent start, a dead master noticed
and restarted, validated inputs, a master that survives the process that started it."""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sevenp_pipeline.deploy.targets.local.nginx import FrontDoor, Upstream
from sevenp_pipeline.deploy.targets.role import DeployError
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.services import free_port
from sevenp_pipeline_tests.waiting import wait_while

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
    wait_while(front.running_pid, timeout=30, interval=0.05, what="the pid file to go stale (its master was killed)")
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



class _EchoLength(http.server.BaseHTTPRequestHandler):
    """The app behind the front door: answers how many body bytes it got."""

    def do_POST(self) -> None:
        got = len(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(str(got).encode())

    def log_message(self, *_args: object) -> None:
        pass


def test_request_bodies_up_to_a_megabyte_reach_the_app(front: FrontDoor) -> None:
    """The workers run as nginx's unprivileged user, which cannot enter a temp folder under the home
    (made 0700 by the orchestrator's umask): a body spilled there failed with 500 from 16 KB on."""
    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoLength)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    try:
        front.switch(Upstream(port=app.server_address[1], commit="abcdef1"))
        for size in (100, 200_000, 1024 * 1024):
            request = urllib.request.Request(front.url() + "/", data=b"x" * size, method="POST")
            with urllib.request.urlopen(request, timeout=10) as response:
                assert (response.status, response.read()) == (200, str(size).encode())
        too_big = urllib.request.Request(front.url() + "/", data=b"x" * (1024 * 1024 + 1), method="POST")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(too_big, timeout=10)
        assert refused.value.code == 413
    finally:
        app.shutdown()
