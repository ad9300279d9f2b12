"""An environment's own long-lived PostgreSQL and Redis (the local target's ``deploy.services``).

Unlike the test stages' throwaway servers (resources/services.py, whose initdb template, readiness
check and password setup are reused here), these keep their data under
``<home>/deploy/<app>/<env>/{postgres,redis}`` and outlive the run that started them: no parent-death
signal, ports chosen once and remembered in ``services.json``, each server's password generated once
and kept in a 0600 file. Both require it: any stage shares the host's loopback, and a Redis without
``requirepass`` answered every one of them. The Redis password reaches the server through a 0600 config
file its user owns, never a command line. ``ensure()`` reuses live servers and restarts dead ones on the same data.
As root the servers run as an unprivileged user (``postgres``), like the test servers.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import signal
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sevenp_pipeline.deploy.targets.role import DeployError, LogFn
from sevenp_pipeline.files import open_private, private_dir, read_json_state, write_json_state
from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessError, ProcessRunner, RunningProcess
from sevenp_pipeline.resources.service_dirs import services_root, socket_dir_fits
from sevenp_pipeline.resources.services import (
    SERVER_ENV,
    ServiceError,
    TestServices,
    free_port,
    port_free,
)

PG_USER = "app"
PG_DATABASE = "app"
# servers started by this process: stop() reaps them (a dead child must not look alive as a zombie)
_STARTED: dict[int, RunningProcess] = {}


@dataclass(frozen=True)
class ServiceEnv:
    """What the app's container gets (POSTGRESQL_URI, REDIS_URI, PG*) and the values to redact."""

    env: dict[str, str]
    secrets: tuple[str, ...]


class EnvironmentServices:
    """The servers ``names`` (``postgresql``, ``redis``) of one environment, rooted at ``root``."""

    def __init__(self, *, home: Path, root: Path, runner: ProcessRunner, names: Sequence[str],
                 run_as_user: str = "postgres", pg_bin_dir: str = "", redis_server: str = "redis-server",
                 startup_timeout_seconds: float = 30) -> None:
        self.home = home
        self.root = root
        self.runner = runner
        self.names = tuple(names)
        self.redis_server = redis_server
        # the test servers' helpers: initdb template (shared, under <home>/services), readiness, setup SQL
        self._helpers = TestServices(runner=runner, root_dir=str(home / "services"), run_as_user=run_as_user,
                                     pg_bin_dir=pg_bin_dir, redis_server=redis_server,
                                     startup_timeout_seconds=startup_timeout_seconds)
        self.startup_timeout_seconds = startup_timeout_seconds

    # -- where things are ------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.root / "services.json"

    @property
    def password_path(self) -> Path:
        return self.root / "postgres-password"

    @property
    def redis_password_path(self) -> Path:
        return self.root / "redis-password"

    def _user(self) -> str | None:
        return self._helpers.server_user()

    def _read_state(self) -> dict[str, Any]:
        return read_json_state(self.state_path)

    def _write_state(self, state: dict[str, Any]) -> None:
        write_json_state(self.state_path, state)

    def _password(self, path: Path | None = None) -> str:
        """The password kept in ``path`` (the PostgreSQL one by default), made on first use."""
        path = path or self.password_path
        try:
            return path.read_text().strip()
        except FileNotFoundError:
            pass
        password = secrets.token_urlsafe(18)
        with open_private(path) as handle:
            handle.write(password.encode())
        return password

    def _reachable_root(self) -> Path:
        """The folder holding the servers' data: ``root`` when the server user can reach it (each folder
        from the home down gets the search bit), else a fixed folder under the temp dir (see service_dirs)."""
        user = self._user()
        self.root.mkdir(parents=True, exist_ok=True)
        folder = self.root
        while user and folder != self.home.resolve() and self.home.resolve() in folder.parents:
            with contextlib.suppress(OSError):
                folder.chmod(folder.stat().st_mode | 0o011)
            folder = folder.parent
        return services_root(self.root, user)

    # -- lifecycle -------------------------------------------------------------------------------
    def ensure(self, *, log: LogFn | None = None) -> ServiceEnv:
        """Starts what is not running (on its data and port); returns the container env. Idempotent."""
        env: dict[str, str] = {}
        hidden: list[str] = []
        if not self.names:
            return ServiceEnv(env={}, secrets=())
        state = self._read_state()
        base = self._reachable_root()
        try:
            if "postgresql" in self.names:
                password = self._password()
                hidden.append(password)
                port = self._ensure_postgres(base, state, password, log)
                env["POSTGRESQL_URI"] = f"postgresql://{PG_USER}:{password}@127.0.0.1:{port}/{PG_DATABASE}"
                env.update(PGHOST="127.0.0.1", PGPORT=str(port), PGUSER=PG_USER, PGDATABASE=PG_DATABASE,
                           PGPASSWORD=password)
            if "redis" in self.names:
                password = self._password(self.redis_password_path)
                hidden.append(password)
                port = self._ensure_redis(base, state, password, log)
                env["REDIS_URI"] = f"redis://:{password}@127.0.0.1:{port}/0"
        except (ServiceError, ProcessError, OSError) as exc:
            raise DeployError(f"environment services under {self.root}: {exc}") from exc
        finally:
            self._write_state(state)
        return ServiceEnv(env=env, secrets=tuple(hidden))

    def stop(self, *, log: LogFn | None = None) -> None:
        """Stops the servers; their data, ports and password stay for the next ``ensure()``."""
        state = self._read_state()
        for name in ("postgresql", "redis"):
            entry = state.get(name) or {}
            pid = entry.get("pid")
            if pid and self._running(name, entry):
                # postgres: SIGINT is its "fast shutdown"; redis saves the append-only file on SIGTERM
                _terminate(int(pid), signal.SIGINT if name == "postgresql" else signal.SIGTERM)
                if log:
                    log(f"{name} of {self.root.name} stopped (pid {pid})")
            started = _STARTED.pop(int(pid), None) if pid else None
            if started is not None:
                started.proc.poll()
            entry.pop("pid", None)
        if state:
            self._write_state(state)

    def _running(self, name: str, entry: dict[str, Any]) -> bool:
        """The recorded server process runs, serving with our password or not (a Redis started before
        servers had one): what stop() ends and what ensure() replaces."""
        pid = entry.get("pid")
        if name == "redis":
            return bool(pid) and _pid_alive(int(pid)) and _comm(int(pid)) == "redis-server"
        return self._alive(name, entry)

    def _alive(self, name: str, entry: dict[str, Any]) -> bool:
        """The recorded server runs and serves: what ensure() reuses."""
        pid, port = entry.get("pid"), entry.get("port")
        if not pid or not port or not _pid_alive(int(pid)):
            return False
        if name == "postgresql":
            try:
                cmdline = Path(f"/proc/{int(pid)}/cmdline").read_bytes()
            except OSError:
                return False
            return str(entry.get("data", "")).encode() in cmdline and _listening(int(port))
        return _redis_ping(int(port), self._password(self.redis_password_path))

    # -- PostgreSQL ------------------------------------------------------------------------------
    def _ensure_postgres(self, base: Path, state: dict[str, Any], password: str, log: LogFn | None) -> int:
        entry = state.setdefault("postgresql", {})
        if self._alive("postgresql", entry):
            return int(entry["port"])
        helpers = self._helpers
        pg_bin = helpers.pg_bin()
        folder = self._own_folder(base / "postgres")
        data = folder / "data"
        entry["data"] = str(data)
        fresh = not (data / "PG_VERSION").exists()
        if fresh:
            template = helpers.initdb_template(helpers.root(), pg_bin, PG_USER, log)
            self.runner.check(ExecuteRequest(argv=["cp", "-a", str(template), str(data)], cwd=folder,
                                             label="postgresql data dir", user=self._user(), inherit_env=False,
                                             env=SERVER_ENV, timeout_seconds=120))
        (data / "postmaster.pid").unlink(missing_ok=True)  # left by a server killed with SIGKILL
        setup = [f"ALTER ROLE \"{PG_USER}\" PASSWORD '{password}'",
                 f"CREATE DATABASE \"{PG_DATABASE}\" OWNER \"{PG_USER}\""] if fresh else []
        server, port = helpers.start_postgres(pg_bin, data, folder, self._socket_dir(folder), pg_user=PG_USER,
                                              preferred_port=int(entry.get("port") or 0), setup=setup,
                                              secrets=(password,))
        _STARTED[server.pid] = server
        entry.update(pid=server.pid, port=port)
        if log:
            log(f"postgresql for {self.root.name} on 127.0.0.1:{port} (pid {server.pid}, data {data})")
        return port

    def _own_folder(self, folder: Path) -> Path:
        """A 0700 folder owned by the server user."""
        private_dir(folder)
        self._helpers.chown(folder)
        return folder

    def _socket_dir(self, base: Path) -> Path:
        folder = base / "socket"
        if not socket_dir_fits(folder):
            digest = hashlib.sha256(str(folder).encode()).hexdigest()[:12]
            folder = Path(tempfile.gettempdir()) / f"sevenp-pg-{digest}"
        private_dir(folder)
        self._helpers.chown(folder)
        return folder

    # -- Redis -----------------------------------------------------------------------------------
    def _ensure_redis(self, base: Path, state: dict[str, Any], password: str, log: LogFn | None) -> int:
        entry = state.setdefault("redis", {})
        if self._alive("redis", entry):
            return int(entry["port"])
        if self._running("redis", entry):  # up, but not with this password (started before servers had one)
            _terminate(int(entry["pid"]), signal.SIGTERM)  # restarted on its data below
        data = self._own_folder(base / "redis")
        config = data / "redis.conf"
        with open_private(config, append=False) as handle:
            handle.write(f"requirepass {password}\n".encode())
        self._helpers.chown(config)
        binary = self.redis_server
        last_error = ""
        for attempt in range(3):
            preferred = int(entry.get("port") or 0) if attempt == 0 else 0
            port = preferred if preferred and port_free(preferred) else free_port()
            server = self.runner.start(ExecuteRequest(
                argv=[binary, str(config), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
                      "--appendonly", "yes", "--save", "", "--daemonize", "no", "--protected-mode", "yes"],
                cwd=data, label="redis", user=self._user(), inherit_env=False, env=SERVER_ENV,
                log_path=data / "redis.log", timeout_seconds=float("inf"),
            ))
            deadline = time.monotonic() + self.startup_timeout_seconds
            while time.monotonic() < deadline and server.alive() and not _redis_ping(port, password):
                time.sleep(0.05)
            if server.alive() and _redis_ping(port, password):
                _STARTED[server.pid] = server
                entry.update(pid=server.pid, port=port)
                if log:
                    log(f"redis for {self.root.name} on 127.0.0.1:{port} (pid {server.pid}, data {data})")
                return port
            server.stop()
            last_error = _tail(data / "redis.log")
        raise ServiceError(f"redis did not start: {last_error}")


def _pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _terminate(pid: int, sig: signal.Signals, grace: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        started = _STARTED.get(pid)
        if started is not None:
            started.proc.poll()
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _redis_ping(port: int, password: str) -> bool:
    """Whether the Redis on ``port`` answers PING after AUTH with ``password``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        try:
            sock.connect(("127.0.0.1", port))
            sock.sendall(f"AUTH {password}\r\nPING\r\n".encode())
            answer = b""
            while answer.count(b"\r\n") < 2:
                chunk = sock.recv(64)
                if not chunk:
                    break
                answer += chunk
            return answer.startswith(b"+OK\r\n+PONG")
        except OSError:
            return False


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
