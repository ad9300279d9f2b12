"""Test helper: a real ``moto_server`` process on a free loopback port (started through the process runner)."""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pytest

from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessRunner
from sevenp_pipeline_tests.waiting import wait_until

MOTO = Path(sys.executable).with_name("moto_server")
needs_moto = pytest.mark.skipif(not MOTO.exists(),
                                reason="needs moto[server] in the venv (pip install 'moto[server]')")
CREDS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def moto_server(work: Path, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """Runs ``moto_server`` (with ``env``, e.g. ``MOTO_ECS_SERVICE_RUNNING``) and yields its endpoint URL."""
    port = free_port()
    server = ProcessRunner().start(ExecuteRequest(
        argv=[str(MOTO), "-H", "127.0.0.1", "-p", str(port)], cwd=work, label="moto_server", env=dict(env or {}),
        log_path=work / "moto.log", die_with_parent=True))

    def listening() -> bool:
        assert server.alive(), (work / "moto.log").read_text()
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
        return True

    try:
        wait_until(listening, timeout=60, what=f"moto_server to listen on port {port} (log: {work / 'moto.log'})")
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
    assert not server.alive()
