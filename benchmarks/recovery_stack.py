"""How long the orchestrator's own processes are down after a ``kill -9``, under the stack's supervisor.

  .venv/bin/python benchmarks/recovery_stack.py

Starts a stack as ``make dev`` does (LocalDagster: ``devstack serve``) on a fresh home with the
local image registry, then kills each of the daemon, the webserver, the code server and the
registry with SIGKILL, one at a time, and measures the seconds from the kill until it is back:

- daemon: a new daemon process is up and has written a heartbeat newer than the kill;
- webserver: the UI answers ``/server_info`` again;
- code server: the restarted server answers and the webserver shows the location LOADED again
  (updated after the kill);
- registry: ``GET /v2/`` answers again (``LocalRegistry.healthy()``).

Prints ``RESULT recovery_s_daemon=…``, ``RESULT recovery_s_webserver=…``,
``RESULT recovery_s_code_server=…``, ``RESULT recovery_s_registry=…``. Target: ≤ 5 s each.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dagster as dg

from sevenp_pipeline.devtools.devstack import LocalDagster
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.registries.local import LocalRegistry
from sevenp_pipeline.resources.services import free_port


def _until(check: Callable[[], bool], *, timeout: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        try:
            if check():
                return time.monotonic()
        except Exception:  # a server on its way up: ask again
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{what} not back within {timeout:.0f}s")


def kill_daemon(stack: LocalDagster, *, timeout: float = 60) -> float:
    """SIGKILLs the daemon; seconds until a new one is up and heartbeating."""
    old = stack.service_pids()["daemon"]
    with dg.DagsterInstance.from_config(str(stack.dagster_home)) as instance:
        os.kill(old, signal.SIGKILL)
        killed = time.monotonic()
        wall = time.time()

        def back() -> bool:
            new = stack.service_pids().get("daemon")
            beats = instance.get_daemon_heartbeats()
            return new not in (None, old) and any(b.timestamp > wall for b in beats.values())

        return _until(back, timeout=timeout, what="the daemon") - killed


def kill_webserver(stack: LocalDagster, *, timeout: float = 60) -> float:
    """SIGKILLs the webserver; seconds until the UI answers again."""
    old = stack.service_pids()["webserver"]
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()

    def back() -> bool:
        new = stack.service_pids().get("webserver")
        return new not in (None, old) and stack.answers()

    return _until(back, timeout=timeout, what="the webserver") - killed


def kill_code_server(stack: LocalDagster, *, timeout: float = 60) -> float:
    """SIGKILLs the code server; seconds until a new one runs and the webserver has the location
    LOADED again, refreshed after the kill."""
    old = stack.service_pids()["code server"]
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()
    wall = time.time()

    def back() -> bool:
        new = stack.service_pids().get("code server")
        entry = stack.location_entry()
        return (new not in (None, old) and entry is not None and entry["loadStatus"] == "LOADED"
                and entry["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                and float(entry["updatedTimestamp"]) > wall)

    return _until(back, timeout=timeout, what="the code server") - killed


def kill_registry(registry: LocalRegistry, *, timeout: float = 60) -> float:
    """SIGKILLs the registry; seconds until it answers GET /v2/ again."""
    old = registry.running_pid()
    assert old is not None, "the registry is not running"
    os.kill(old, signal.SIGKILL)
    killed = time.monotonic()

    def back() -> bool:
        return registry.running_pid() not in (None, old) and registry.healthy()

    return _until(back, timeout=timeout, what="the registry") - killed


def measure() -> dict[str, float]:
    """Recovery seconds of each supervised process after a kill -9 (a fresh stack, stopped after)."""
    root = Path(tempfile.mkdtemp(prefix="sevenp-bench-recovery-"))
    apps = root / "apps"
    apps.mkdir()
    home = root / "home"
    registry = LocalRegistry(runner=ProcessRunner(), home=str(home))
    stack = LocalDagster(home=home, port=free_port(), apps_dir=apps)
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(stack.dagster_home)  # the instance this process reads heartbeats from
    try:
        registry.ensure_running()
        stack.start()
        results = {
            "daemon": kill_daemon(stack),
            "webserver": kill_webserver(stack),
            "code_server": kill_code_server(stack),
            "registry": kill_registry(registry),
        }
    finally:
        stack.stop()
        registry.stop()
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous
        shutil.rmtree(root, ignore_errors=True)
    return results


def main() -> int:
    for name, seconds in measure().items():
        print(f"RESULT recovery_s_{name}={seconds:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
