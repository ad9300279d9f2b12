"""An environment's own long-lived PostgreSQL and Redis (the local target's ``deploy.services``).

Unlike the test stages' throwaway servers (resources/services.py, whose initdb template, readiness
check and password setup are reused here), these keep their data under
``<home>/deploy/<app>/<env>/{postgres,redis}`` and outlive the run that started them: no parent-death
signal, ports chosen once and remembered in ``services.json``, each server's password generated once
and kept in a 0600 file. Both require it: any stage shares the host's loopback, and a Redis without
``requirepass`` answered every one of them. The Redis password reaches the server through a 0600 config
file its user owns, never a command line. ``ensure()`` reuses live servers and restarts dead ones on the same data.
As root the servers run as an unprivileged user (``postgres``), like the test servers.

With a ``keeper`` (a deployed environment, see keeper.py) the servers are the keeper's programs: it runs
them in the foreground and starts each again within moments of its death (same argv, data and port);
``ensure()`` then only (re)declares them and waits until each answers. A server started before the
environment had a keeper is stopped and started again under it, on the same data and port.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import secrets
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sevenp_pipeline.deploy.targets.local.supervision import Keeper
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
                 startup_timeout_seconds: float = 30, keeper: Keeper | None = None) -> None:
        self.home = home
        self.keeper = keeper
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
                ensure_pg = self._ensure_postgres if self.keeper is None else self._ensure_postgres_kept
                port = ensure_pg(base, state, password, log)
                env["POSTGRESQL_URI"] = f"postgresql://{PG_USER}:{password}@127.0.0.1:{port}/{PG_DATABASE}"
                env.update(PGHOST="127.0.0.1", PGPORT=str(port), PGUSER=PG_USER, PGDATABASE=PG_DATABASE,
                           PGPASSWORD=password)
            if "redis" in self.names:
                password = self._password(self.redis_password_path)
                hidden.append(password)
                ensure_redis = self._ensure_redis if self.keeper is None else self._ensure_redis_kept
                port = ensure_redis(base, state, password, log)
                env["REDIS_URI"] = f"redis://:{password}@127.0.0.1:{port}/0"
        except (ServiceError, ProcessError, OSError) as exc:
            raise DeployError(f"environment services under {self.root}: {exc}") from exc
        finally:
            self._write_state(state)
        return ServiceEnv(env=env, secrets=tuple(hidden))

    def stop(self, *, log: LogFn | None = None) -> None:
        """Stops the servers; their data, ports and password stay for the next ``ensure()``."""
        state = self._read_state()
        if self.keeper is not None:
            for name in ("redis", "postgresql"):
                pid = self.keeper.program_pid(name)
                self.keeper.set_program(name, None, log=log)  # its stop signal, then SIGKILL after the timeout
                if pid is not None:
                    if log:
                        log(f"{name} of {self.root.name} stopped (pid {pid})")
                    (state.get(name) or {}).pop("pid", None)
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
    def _new_data_dir(self, pg_bin: Path, folder: Path, data: Path, log: LogFn | None) -> bool:
        """A data folder copied from the initdb template when there is none yet; True if it is new."""
        if (data / "PG_VERSION").exists():
            return False
        template = self._helpers.initdb_template(self._helpers.root(), pg_bin, PG_USER, log)
        self.runner.check(ExecuteRequest(argv=["cp", "-a", str(template), str(data)], cwd=folder,
                                         label="postgresql data dir", user=self._user(), inherit_env=False,
                                         env=SERVER_ENV, timeout_seconds=120))
        return True

    def _ensure_postgres(self, base: Path, state: dict[str, Any], password: str, log: LogFn | None) -> int:
        entry = state.setdefault("postgresql", {})
        if self._alive("postgresql", entry):
            return int(entry["port"])
        helpers = self._helpers
        pg_bin = helpers.pg_bin()
        folder = self._own_folder(base / "postgres")
        data = folder / "data"
        entry["data"] = str(data)
        fresh = self._new_data_dir(pg_bin, folder, data, log)
        (data / "postmaster.pid").unlink(missing_ok=True)  # left by a server killed with SIGKILL
        setup = _pg_setup(password) if fresh else []
        server, port = helpers.start_postgres(pg_bin, data, folder, self._socket_dir(folder), pg_user=PG_USER,
                                              preferred_port=int(entry.get("port") or 0), setup=setup,
                                              secrets=(password,))
        _STARTED[server.pid] = server
        entry.update(pid=server.pid, port=port)
        if log:
            log(f"postgresql for {self.root.name} on 127.0.0.1:{port} (pid {server.pid}, data {data})")
        return port

    # -- under the keeper ------------------------------------------------------------------------
    def _program(self, argv: list[str], *, cwd: Path, log_path: Path, stop_signal: str,
                 stop_timeout: float, **extra: object) -> dict[str, object]:
        user = self._user()
        return {"argv": argv, "cwd": str(cwd), "user": user, "group": pwd.getpwnam(user).pw_gid if user else None,
                "env": dict(SERVER_ENV), "log": str(log_path), "stop_signal": stop_signal,
                "stop_timeout": stop_timeout, **extra}

    def _stop_unkept(self, name: str, entry: dict[str, Any], log: LogFn | None) -> None:
        """A server started before the environment had a keeper: stopped, to start again under it."""
        assert self.keeper is not None
        pid = entry.get("pid")
        if name in self.keeper.programs() or not pid or not self._running(name, entry):
            return
        _terminate(int(pid), signal.SIGINT if name == "postgresql" else signal.SIGTERM)
        if log:
            log(f"{name} of {self.root.name} (pid {pid}) stopped to run under the environment's keeper")

    def _ensure_postgres_kept(self, base: Path, state: dict[str, Any], password: str, log: LogFn | None) -> int:
        keeper = self.keeper
        assert keeper is not None
        entry = state.setdefault("postgresql", {})
        helpers = self._helpers
        pg_bin = helpers.pg_bin()
        folder = self._own_folder(base / "postgres")
        data = folder / "data"
        sockets = self._socket_dir(folder)
        known = "postgresql" in keeper.programs()
        if known:
            keeper.ensure_running(log=log)
            port = int(entry.get("port") or 0)
            if port and self._pg_ready(pg_bin, folder, sockets, port, self.startup_timeout_seconds):
                entry["pid"] = keeper.program_pid("postgresql")
                return port
        self._stop_unkept("postgresql", entry, log)
        entry["data"] = str(data)
        fresh = self._new_data_dir(pg_bin, folder, data, log)
        preferred = int(entry.get("port") or 0)
        port = preferred if preferred and port_free(preferred) else free_port()
        keeper.set_program("postgresql", self._program(
            [str(pg_bin / "postgres"), "-D", str(data), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
             "-c", f"unix_socket_directories={sockets}"],
            cwd=folder, log_path=folder / "postgresql.log", stop_signal="SIGINT", stop_timeout=30,
            stale_pid_file=str(data / "postmaster.pid")), restart=known, log=log)
        if not self._pg_ready(pg_bin, folder, sockets, port, self.startup_timeout_seconds):
            raise ServiceError(f"postgresql not ready after {self.startup_timeout_seconds:.0f}s: "
                               f"{_tail(folder / 'postgresql.log')}")
        if fresh:
            helpers._psql(pg_bin, folder, sockets, port, PG_USER, statements=_pg_setup(password), secrets=(password,))
        entry.update(pid=keeper.program_pid("postgresql"), port=port)
        if log:
            log(f"postgresql for {self.root.name} on 127.0.0.1:{port} under its keeper (pid {entry['pid']}, "
                f"data {data})")
        return port

    def _pg_ready(self, pg_bin: Path, folder: Path, sockets: Path, port: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            ready = self.runner.run(ExecuteRequest(
                argv=[str(pg_bin / "pg_isready"), "-q", "-h", str(sockets), "-p", str(port), "-U", PG_USER],
                cwd=folder, label="pg_isready", timeout_seconds=10, user=self._user(), inherit_env=False,
                env=SERVER_ENV))
            if ready.ok:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)

    def _ensure_redis_kept(self, base: Path, state: dict[str, Any], password: str, log: LogFn | None) -> int:
        keeper = self.keeper
        assert keeper is not None
        entry = state.setdefault("redis", {})
        data = self._own_folder(base / "redis")
        config = data / "redis.conf"
        with open_private(config, append=False) as handle:
            handle.write(f"requirepass {password}\n".encode())
        self._helpers.chown(config)
        known = "redis" in keeper.programs()
        if known:
            keeper.ensure_running(log=log)
            port = int(entry.get("port") or 0)
            if port and _wait(lambda: _redis_ping(port, password), self.startup_timeout_seconds):
                entry["pid"] = keeper.program_pid("redis")
                return port
        self._stop_unkept("redis", entry, log)
        binary = shutil.which(self.redis_server)
        if binary is None:
            raise ServiceError(f"redis: '{self.redis_server}' not found; install the Debian package 'redis-server'")
        preferred = int(entry.get("port") or 0)
        port = preferred if preferred and port_free(preferred) else free_port()
        keeper.set_program("redis", self._program(
            [binary, str(config), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
             "--appendonly", "yes", "--save", "", "--daemonize", "no", "--protected-mode", "yes"],
            cwd=data, log_path=data / "redis.log", stop_signal="SIGTERM", stop_timeout=15), restart=known, log=log)
        if not _wait(lambda: _redis_ping(port, password), self.startup_timeout_seconds):
            raise ServiceError(f"redis did not start: {_tail(data / 'redis.log')}")
        entry.update(pid=keeper.program_pid("redis"), port=port)
        if log:
            log(f"redis for {self.root.name} on 127.0.0.1:{port} under its keeper (pid {entry['pid']}, data {data})")
        return port

    # -- probes ------------------------------------------------------------------------------------
    def probe(self) -> dict[str, str]:
        """Each server of the environment: "" when it answers now, else what failed (one try, no wait)."""
        state = self._read_state()
        found: dict[str, str] = {}
        for name in self.names:
            entry = state.get(name) or {}
            port = int(entry.get("port") or 0)
            if not port:
                found[name] = "never started"
            elif name == "postgresql":
                found[name] = _pg_probe(port)
            else:
                found[name] = "" if _redis_ping(port, self._password(self.redis_password_path)) else \
                    f"no PONG from 127.0.0.1:{port} (AUTH + PING)"
        return found

    def port(self, name: str) -> int:
        return int((self._read_state().get(name) or {}).get("port") or 0)

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


def _pg_setup(password: str) -> list[str]:
    """A new server's role password and the app's database (the password is ours, URL-safe characters only)."""
    return [f"ALTER ROLE \"{PG_USER}\" PASSWORD '{password}'", f"CREATE DATABASE \"{PG_DATABASE}\" OWNER \"{PG_USER}\""]


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


def _wait(answers, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not answers():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _pg_probe(port: int) -> str:
    """"" when the PostgreSQL on ``port`` takes a connection and answers: a real protocol exchange (startup
    message, then whatever the server asks). Enough to tell "down" and "starting" from "serving"."""
    user, database = PG_USER.encode(), PG_DATABASE.encode()
    body = (196608).to_bytes(4, "big") + b"user\0" + user + b"\0database\0" + database + b"\0\0"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall((len(body) + 4).to_bytes(4, "big") + body)
            kind = sock.recv(1)
    except OSError as exc:
        return f"no connection to 127.0.0.1:{port}: {exc.strerror or exc}"
    if kind == b"R":  # an authentication request: the server runs and accepts connections
        return ""
    if kind == b"E":
        return f"127.0.0.1:{port} answered with an error (starting up or shutting down?)"
    return f"127.0.0.1:{port} closed the connection without an answer"


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
