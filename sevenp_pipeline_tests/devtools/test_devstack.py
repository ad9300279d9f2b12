"""make dev / make demo start-up: a taken UI port fails fast naming the port; a webserver that dies
is restarted while the daemon stays; SIGTERM stops everything and nothing is left running."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from sevenp_pipeline.config.settings import PROJECT_ROOT
from sevenp_pipeline.devtools.devstack import LocalDagster, port_available, stack_services
from sevenp_pipeline.devtools.supervisor import service_pids
from sevenp_pipeline.resources.services import free_port
from sevenp_pipeline_tests.waiting import wait_until, wait_while


def _processes_with_env(marker: str) -> list[str]:
    """Command lines of live processes whose environment holds ``marker`` (e.g. SEVENP_HOME=<tmp>)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes().split(b"\0"):
                stat = (entry / "stat").read_text()
                if stat.rsplit(")", 1)[1].split()[0] != "Z":
                    found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200])
        except OSError:
            continue
    return found


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.fixture
def held_port() -> Iterator[int]:
    """A free port, then held by a listening socket (as another server would)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def _run(argv: list[str], home: Path, timeout: float = 20,
         extra_env: dict[str, str] | None = None) -> tuple[int, str, float]:
    env = {**os.environ, "SEVENP_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "PYTHONPATH": str(PROJECT_ROOT), **(extra_env or {})}
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout, start_new_session=True, check=False)
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - started


def test_port_available_sees_bound_and_listening_sockets_but_not_time_wait() -> None:
    with socket.socket() as bound:
        bound.bind(("127.0.0.1", 0))
        assert not port_available(bound.getsockname()[1])  # bound, not listening: uvicorn could not bind
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn's listener does
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        assert not port_available(port)
        client = socket.create_connection(("127.0.0.1", port))
        conn, _ = server.accept()
        conn.close()  # the server side closes first: its end stays in TIME_WAIT
        client.close()
    assert port_available(port)  # a stopped server's TIME_WAIT connections do not block a restart
    assert port_available(free_port())


@pytest.mark.parametrize("argv", [
    ["sevenp_pipeline.devtools.devstack", "serve", "--port"],  # make dev
    ["sevenp_pipeline.devtools.demo", "--no-ui", "--port"],  # make demo
], ids=["dev", "demo"])
def test_taken_ui_port_exits_non_zero_naming_the_port(argv: list[str], held_port: int, tmp_path: Path) -> None:
    code, output, took = _run([*argv, str(held_port)], tmp_path / "home")
    assert code != 0 and took < 20
    assert f"port {held_port} on 127.0.0.1 is already in use" in output and "PORT=<a free port>" in output
    assert _processes_with_env(f"SEVENP_HOME={tmp_path / 'home'}") == []
    assert not (tmp_path / "home" / "remotes").exists()  # the demo made nothing before checking


@pytest.mark.parametrize("argv", [
    ["sevenp_pipeline.devtools.devstack", "serve", "--port"],  # make dev
    ["sevenp_pipeline.devtools.demo", "--no-ui", "--port"],  # make demo
], ids=["dev", "demo"])
def test_taken_artifacts_port_exits_non_zero_naming_it(argv: list[str], held_port: int, tmp_path: Path) -> None:
    ui_port = free_port()
    code, output, took = _run([*argv, str(ui_port), "--artifacts-port", str(held_port)], tmp_path / "home")
    assert code != 0 and took < 20
    assert f"port {held_port} on 127.0.0.1 is already in use, so the artifact server" in output, output
    assert "ARTIFACTS_PORT=<a free port>" in output
    assert _processes_with_env(f"SEVENP_HOME={tmp_path / 'home'}") == []


def test_taken_webhook_port_exits_non_zero_naming_it_when_a_secret_is_set(held_port: int, tmp_path: Path) -> None:
    ui_port = free_port()
    argv = ["sevenp_pipeline.devtools.devstack", "serve", "--port", str(ui_port), "--artifacts-port",
            str(free_port()), "--webhook-port", str(held_port)]
    code, output, took = _run(argv, tmp_path / "home", extra_env={"SEVENP_WEBHOOK_SECRET": "whsec-0123456789abcdef"})
    assert code != 0 and took < 20
    assert f"port {held_port} on 127.0.0.1 is already in use, so the webhook receiver" in output, output
    assert "WEBHOOK_PORT=<a free port>" in output and "whsec-0123456789abcdef" not in output
    assert _processes_with_env(f"SEVENP_HOME={tmp_path / 'home'}") == []


def test_the_webhook_receiver_is_a_service_only_when_given_a_port(tmp_path: Path) -> None:
    common = {"host": "127.0.0.1", "port": 3000, "grpc_port": 4000, "workspace": tmp_path / "w.yaml", "env": {},
              "log_path": tmp_path / "log", "artifacts_root": tmp_path / "a", "artifacts_port": 3001}
    assert "webhook receiver" not in [s.name for s in stack_services(**common)]
    receiver = stack_services(**common, webhook_port=3002)[-1]
    assert receiver.name == "webhook receiver"
    # The secret is inherited from the environment, never an argument (argument lists are world-readable).
    assert list(receiver.request.argv[-4:]) == ["--host", "127.0.0.1", "--port", "3002"]
    local = next(s for s in stack_services(**common) if s.name == "artifact server")
    assert list(local.request.argv[3:5]) == ["--root", str(tmp_path / "a")]
    # SEVENP_ARTIFACTS=s3: no folder; the server serves the settings' bucket.
    s3 = next(s for s in stack_services(**{**common, "artifacts_root": None}) if s.name == "artifact server")
    assert "--root" not in s3.request.argv


def _free_pair() -> int:
    """A free port whose next one is free too: the UI's and the artifact server's (port + 1)."""
    for _ in range(50):
        port = free_port()
        if port_available(port + 1):
            return port
    raise AssertionError("no two free consecutive loopback ports")


@pytest.mark.integration
def test_dev_restarts_a_dead_webserver_and_sigterm_stops_everything(tmp_path: Path) -> None:
    home = tmp_path / "home"
    apps = tmp_path / "apps"
    apps.mkdir()
    port = _free_pair()
    marker = f"SEVENP_HOME={home}"
    env = {**os.environ, "SEVENP_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
           "SEVENP_APPS_DIR": str(apps), "PYTHONPATH": str(PROJECT_ROOT)}
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen([sys.executable, "-m", "sevenp_pipeline.devtools.devstack", "serve", "--port", str(port)],
                             cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_until(lambda: _answers(port), timeout=120, interval=0.5, what=f"the UI to answer on port {port}")
        except AssertionError as exc:
            pytest.fail(f"{exc}: {(tmp_path / 'serve.log').read_text()[-3000:]}")
        pids = service_pids(serve.pid)
        assert pids.keys() == {"code server", "webserver", "daemon", "artifact server"}
        # The artifact server on the UI's port + 1, read-only: it lists the (empty) store.
        with urllib.request.urlopen(f"http://127.0.0.1:{port + 1}/", timeout=5) as response:
            assert response.status == 200 and response.headers["X-Content-Type-Options"] == "nosniff"
        # Said by the supervisor once it saw the UI answer: a moment after this test saw it.
        wait_until(lambda: f"artifacts are served on http://127.0.0.1:{port + 1}" in
                   (tmp_path / "serve.log").read_text(), timeout=10, what="the stack to say where artifacts are")
        # ... and the apps' branch pages beside them, read from this stack's instance (no app here).
        with urllib.request.urlopen(f"http://127.0.0.1:{port + 1}/_cockpit/", timeout=5) as response:
            assert response.status == 200 and b"<h1>Apps</h1>" in response.read()
        assert [line for line in _processes_with_env(marker) if "dagster-webserver" in line]
        os.kill(pids["webserver"], signal.SIGKILL)
        wait_until(lambda: service_pids(serve.pid).get("webserver") not in (None, pids["webserver"]) and _answers(port),
                   timeout=60, interval=0.2, what="a restarted webserver to answer")
        assert serve.poll() is None
        assert service_pids(serve.pid)["daemon"] == pids["daemon"]  # the daemon was never stopped
        output = (tmp_path / "serve.log").read_text()
        assert f"the webserver (pid {pids['webserver']}) exited (killed by signal 9); restarting it" in output
        serve.send_signal(signal.SIGTERM)
        stopped = time.monotonic()
        assert serve.wait(timeout=30) == 0 and time.monotonic() - stopped < 10
        # the webserver, daemon and code server went with it
        wait_while(lambda: _processes_with_env(marker), timeout=10, what="the stack's processes to exit")
    finally:
        if serve.poll() is None:
            os.killpg(serve.pid, signal.SIGKILL)
        log.close()


@pytest.mark.integration
def test_local_dagster_stop_leaves_nothing_running(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    stack = LocalDagster(home=tmp_path / "home", port=free_port(), apps_dir=apps)
    stack.start()
    try:
        assert any("sevenp_pipeline.devtools.daemon" in p for p in _processes_with_env(f"SEVENP_HOME={stack.home}"))
        # The wrapper polls the UI on its own 0.5 s beat, so its announcement may trail start().
        wait_until(lambda: "the Dagster UI answers on" in stack.log_path.read_text(), timeout=30, interval=0.2,
                   what=f"the wrapper to announce the UI in {stack.log_path}")
    finally:
        stack.stop()  # SIGTERM to serve, which stops each supervised process's group
    wait_while(lambda: _processes_with_env(f"SEVENP_HOME={stack.home}"), timeout=10,
               what="the stack's processes to exit")
