"""An environment's own Redis requires its password: a stage shares the host's loopback and must not
SET or GET in staging's or production's cache. The password is never on a command line."""

from __future__ import annotations

import shutil
import socket
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from sevenp_pipeline.deploy.targets.local.services import EnvironmentServices
from sevenp_pipeline.files import HOME_DIR_MODE, use_private_umask
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline_tests.conftest import reachable_home

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not shutil.which("redis-server"), reason="needs redis-server")]


def _redis(port: int, *commands: str) -> list[bytes]:
    """Sends inline commands; returns one reply line each."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall("".join(f"{c}\r\n" for c in commands).encode())
        data = b""
        while data.count(b"\r\n") < len(commands):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n")[: len(commands)]


@pytest.fixture
def services() -> Iterator[EnvironmentServices]:
    use_private_umask()  # as the orchestrator runs
    with reachable_home() as home:
        home.chmod(HOME_DIR_MODE)  # as Settings.ensure_home makes it: the data stays under it, removed with it
        made = EnvironmentServices(home=home, root=home / "deploy" / "app" / "staging", runner=ProcessRunner(),
                                   names=["redis"])
        try:
            yield made
        finally:
            made.stop()
        assert (made.root / "redis").is_dir(), "the data went elsewhere (a folder the server user cannot reach)"


def test_environment_redis_refuses_a_client_without_its_password(services: EnvironmentServices) -> None:
    env = services.ensure()
    uri = urllib.parse.urlsplit(env.env["REDIS_URI"])
    password = services.redis_password_path.read_text().strip()
    assert uri.password == password and password in env.secrets
    # What a stage on the same loopback tries: refused.
    assert _redis(uri.port, "SET poisoned 1")[0].startswith(b"-NOAUTH")
    assert _redis(uri.port, "AUTH wrong", "GET poisoned")[1].startswith(b"-NOAUTH")
    # The app, with the URI it was given: served.
    assert _redis(uri.port, f"AUTH {password}", "SET k v", "GET k") == [b"+OK", b"+OK", b"$1"]
    # Never on a command line (ps shows every argv).
    cmdlines = [p.read_bytes() for p in Path("/proc").glob("[0-9]*/cmdline") if p.exists()]
    assert not [c for c in cmdlines if password.encode() in c]
    # ensure() again finds it alive (it answers AUTH + PING) and keeps port and password.
    again = services.ensure()
    assert again.env["REDIS_URI"] == env.env["REDIS_URI"]


def test_a_redis_left_without_a_password_is_restarted_with_one(services: EnvironmentServices) -> None:
    """An environment started before its Redis had a password: ensure() replaces the open server."""
    env = services.ensure()
    port = urllib.parse.urlsplit(env.env["REDIS_URI"]).port
    password = services.redis_password_path.read_text().strip()
    assert _redis(port, f"AUTH {password}", "CONFIG SET requirepass ''") == [b"+OK", b"+OK"]  # as before
    assert _redis(port, "PING") == [b"+PONG"]
    again = services.ensure()
    new_port = urllib.parse.urlsplit(again.env["REDIS_URI"]).port
    assert _redis(new_port, "PING")[0].startswith(b"-NOAUTH")
    # make deploy-stop ends such a server too, though it does not answer with the password.
    assert _redis(new_port, f"AUTH {password}", "CONFIG SET requirepass ''") == [b"+OK", b"+OK"]
    services.stop()
    with pytest.raises(OSError):
        _redis(new_port, "PING")
