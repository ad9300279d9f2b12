"""Real PostgreSQL and Redis servers for integration tests, like the spec's ``services:`` block.

Each stage that asks for services gets its own servers on free loopback ports, with a fresh
random password, and they are always torn down in ``finally``: after success, failure, timeout
or an interrupted run. The children also carry a parent-death signal, so even a killed run
worker leaves no server behind. PostgreSQL refuses to run as root, so as root the servers run
as an unprivileged user (``postgres`` by default) on data directories it owns.

Each ``provide()`` gets its own ``svc-*`` folder under ``root_dir`` (the project home's
``services/``), recording its owner; it first removes the folders of owners that died (a run
worker killed with SIGKILL). service_dirs.py holds the folder rules. The test database password
is set from a 0600 file, never on a command line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pwd
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from sevenp_pipeline.locks import file_lock
from sevenp_pipeline.resources.processes import (
    ExecuteRequest,
    LogFn,
    ProcessError,
    ProcessRunner,
    RunningProcess,
)
from sevenp_pipeline.resources.service_dirs import (
    make_service_dir,
    remove_abandoned,
    remove_service_dir,
    services_root,
    socket_dir_fits,
)

# The servers run a branch's SQL, and the test database user is a superuser (`COPY ... FROM PROGRAM`
# runs a command as the server's OS user): they get nothing of the orchestrator's environment
# (signing key, credentials), only what they need to start.
SERVER_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}


def _server_request(**kwargs: Any) -> ExecuteRequest:
    return ExecuteRequest(inherit_env=False, env=SERVER_ENV, **kwargs)


class ServiceError(Exception):
    """A test service could not be started; the message names it and quotes its log."""


@dataclass(frozen=True)
class Server:
    """One started service: where it listens on this machine's loopback, its credentials, its version."""

    name: str  # postgresql | redis
    port: int
    version: str  # the full version string (`postgres --version`, `redis-server --version`)
    user: str = ""
    password: str = ""
    database: str = ""
    bin_dir: str = ""  # PostgreSQL: the folder of its binaries (psql for init_sql)
    stage_port: int = 0  # the port a stage connects to: ``port``, or the standard one in its own namespace

    def facts(self, *, host: str, port: int) -> dict[str, str]:
        """What ``${<name>.<fact>}`` in a stage's env stands for, for a client reaching the server at
        ``host:port`` (which the stage's own network namespace may map to ``self.port``)."""
        if self.name == "postgresql":
            url = f"postgresql://{self.user}:{self.password}@{host}:{port}/{self.database}"
            values = {"url": url, "host": host, "port": str(port), "user": self.user, "password": self.password,
                      "database": self.database}
        else:
            values = {"url": f"redis://{host}:{port}/0", "host": host, "port": str(port)}
        return {f"{self.name}.{fact}": value for fact, value in values.items()}

    def env(self, *, host: str, port: int) -> dict[str, str]:
        """The pipeline's own variables for the server: POSTGRESQL_URI and PG*, or REDIS_URI."""
        facts = self.facts(host=host, port=port)
        if self.name == "postgresql":
            return {"POSTGRESQL_URI": facts["postgresql.url"], "PGHOST": host, "PGPORT": str(port),
                    "PGUSER": self.user, "PGDATABASE": self.database, "PGPASSWORD": self.password}
        return {"REDIS_URI": facts["redis.url"]}


@dataclass(frozen=True)
class PostgresOptions:
    """How a stage's PostgreSQL is set up (config: services.postgresql)."""

    user: str = "testuser"
    database: str = "test_db"
    version: str | None = None  # a major version under /usr/lib/postgresql; None: the newest
    settings: tuple[str, ...] = ()  # name=value, each passed as -c
    extensions: tuple[str, ...] = ()  # created in the test database
    databases: tuple[str, ...] = ()  # more databases owned by the user


@dataclass(frozen=True)
class RedisOptions:
    """How a stage's Redis is set up (config: services.redis)."""

    version: str | None = None  # a prefix `redis-server --version` must have
    arguments: tuple[str, ...] = ()  # --name value pairs


@dataclass(frozen=True)
class ServiceEndpoints:
    env: dict[str, str]  # as a client on this machine's loopback reaches them
    secrets: tuple[str, ...]
    # (port the stage connects to, port the server listens on) for each server; the two differ when
    # the stage has a network namespace of its own, where its services sit on their standard ports
    ports: tuple[tuple[int, int], ...] = ()
    servers: tuple[Server, ...] = ()


# Where a stage with a network namespace of its own finds its services: their standard ports on its
# own loopback (relayed to the servers' random host ports), so `localhost:5432` in an app works.
STANDARD_PORTS = {"postgresql": 5432, "redis": 6379}


# Ports handed out by free_port(), kept out of its answers for a while: stages running at once
# (threads of one run worker) start servers between asking and binding, and the kernel may offer
# a port again as soon as the probe closes it. Another process can still take one in between:
# the servers retry on a bind failure.
_PORTS_LOCK = threading.Lock()
_HANDED_OUT: dict[int, float] = {}
PORT_HOLD_SECONDS = 300.0


def free_port() -> int:
    """A loopback port nothing listens on, not handed out by this process in the last few minutes."""
    with _PORTS_LOCK:
        now = time.monotonic()
        for port in [p for p, at in _HANDED_OUT.items() if now - at > PORT_HOLD_SECONDS]:
            del _HANDED_OUT[port]
        for _ in range(100):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.bind(("127.0.0.1", 0))
                port = int(sock.getsockname()[1])
            if port not in _HANDED_OUT:
                _HANDED_OUT[port] = now
                return port
    raise OSError("no free loopback port that was not handed out recently")


def port_free(port: int) -> bool:
    """Nothing is bound to loopback ``port`` now (a remembered port may be taken back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def installed_postgresql(root: Path = Path("/usr/lib/postgresql")) -> dict[str, Path]:
    """The machine's Debian PostgreSQL versions (major -> bin folder holding initdb)."""
    found = {r.parent.name: r for r in root.glob("*/bin") if (r / "initdb").exists() and r.parent.name.isdigit()}
    return dict(sorted(found.items(), key=lambda item: int(item[0])))


def _find_pg_bin() -> Path | None:
    """The newest Debian PostgreSQL, else the folder initdb resolves to on PATH."""
    roots = installed_postgresql()
    if roots:
        return list(roots.values())[-1]
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


_VERSIONS_LOCK = threading.Lock()
_VERSIONS: dict[tuple[str, ...], str] = {}


class TestServices(dg.ConfigurableResource):
    """Starts throwaway PostgreSQL and Redis servers on loopback for one stage."""

    __test__ = False  # not a pytest class

    runner: ProcessRunner
    root_dir: str = Field(description="parent folder of the servers' data directories")
    pg_bin_dir: str = Field(default="", description="PostgreSQL binaries (default: found on the host)")
    redis_server: str = Field(default="redis-server")
    run_as_user: str = Field(default="postgres", description="unprivileged user for the servers when root")
    startup_timeout_seconds: float = Field(default=30)

    @contextlib.contextmanager
    def provide(
        self, names: Sequence[str], *, postgresql: PostgresOptions | None = None, redis: RedisOptions | None = None,
        log: LogFn | None = None, standard_ports: bool = False,
    ) -> Iterator[ServiceEndpoints]:
        """The servers ``names`` asks for (set up by ``postgresql`` and ``redis``), and what a stage needs
        to reach them; stopped after the block. ``standard_ports``: the stage runs in a network namespace
        of its own, and reaches each server at its standard port there (the endpoints' ``ports`` say
        which host port to relay it to; each server's ``stage_port`` is the port the stage connects to)."""
        pg, rd = postgresql or PostgresOptions(), redis or RedisOptions()
        env: dict[str, str] = {}
        hidden: list[str] = []
        ports: list[tuple[int, int]] = []
        servers: list[Server] = []

        with contextlib.ExitStack() as stack:
            root = self.root()
            removed, failed = remove_abandoned(root)  # left by run workers killed mid-stage
            if removed and log:
                log(f"removed {len(removed)} service folder(s) left by dead runs: "
                    f"{', '.join(p.name for p in removed)}")
            if failed and log:
                log(f"WARNING: {'; '.join(failed)}")
            workdir = make_service_dir(root)  # 0700
            stack.callback(self._remove, workdir, log)  # last: after the servers have stopped
            self.chown(workdir)
            if "postgresql" in names:
                password = secrets.token_urlsafe(18)
                hidden.append(password)
                servers.append(stack.enter_context(self._postgres(root, workdir, pg, password, log)))
            if "redis" in names:
                servers.append(stack.enter_context(self._redis(workdir, rd, log)))
            servers = [dataclasses.replace(s, stage_port=STANDARD_PORTS[s.name] if standard_ports else s.port)
                       for s in servers]
            for server in servers:
                ports.append((server.stage_port, server.port))
                env.update(server.env(host="127.0.0.1", port=server.stage_port))
            yield ServiceEndpoints(env=env, secrets=tuple(hidden), ports=tuple(ports), servers=tuple(servers))
            if log:
                log(f"tearing down services: {', '.join(names)}")

    @staticmethod
    def _remove(workdir: Path, log: LogFn | None) -> None:
        try:
            remove_service_dir(workdir)
        except OSError as exc:  # the next provide()'s janitor tries again; the stage's result stands
            if log:
                log(f"WARNING: {exc}")

    def root(self) -> Path:
        """Where the ``svc-*`` folders go: ``root_dir``, or a per-instance temp folder when the
        server user cannot reach it (see service_dirs)."""
        return services_root(Path(self.root_dir), self.server_user())

    # -- PostgreSQL ------------------------------------------------------------------------
    def server_user(self) -> str | None:
        return self.run_as_user if os.geteuid() == 0 else None

    def chown(self, path: Path) -> None:
        user = self.server_user()
        if user:
            entry = pwd.getpwnam(user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def pg_bin(self, version: str | None = None) -> Path:
        """The PostgreSQL binaries: of ``version`` (a major, services.postgresql.version) when given."""
        if version is not None and not (self.pg_bin_dir and Path(self.pg_bin_dir).parent.name == version):
            installed = installed_postgresql()
            if version not in installed:
                raise ServiceError(
                    f"postgresql {version} is not installed (services.postgresql.version): no "
                    f"/usr/lib/postgresql/{version}/bin/initdb; this machine has "
                    f"{', '.join(installed) or 'none under /usr/lib/postgresql'}")
            return installed[version]
        pg_bin = Path(self.pg_bin_dir) if self.pg_bin_dir else _find_pg_bin()
        if pg_bin is None or not (pg_bin / "initdb").exists():
            raise ServiceError(
                "postgresql: initdb not found; install the Debian package 'postgresql' or set pg_bin_dir"
            )
        return pg_bin

    def initdb_template(self, root: Path, pg_bin: Path, pg_user: str, log: LogFn | None) -> Path:
        """initdb once per (version, user) and copy the result: copying is ~10x faster than initdb."""
        template = root / "templates" / f"pg-{pg_bin.parent.name}-{pg_user}"
        with file_lock(template.with_suffix(".lock"), what=f"postgres template {template}"):
            if (template / "PG_VERSION").exists():
                return template
            shutil.rmtree(template, ignore_errors=True)
            template.parent.mkdir(parents=True, exist_ok=True)
            template.parent.chmod(0o755)  # the unprivileged server user must traverse it
            staging = Path(tempfile.mkdtemp(prefix="initdb-", dir=template.parent))
            self.chown(staging)
            self.runner.check(
                _server_request(
                    argv=[str(pg_bin / "initdb"), "-D", str(staging / "data"), "-U", pg_user,
                          "--auth=scram-sha-256", "--auth-local=trust", "--no-sync", "-E", "UTF8",
                          "--locale=C.UTF-8" if _has_c_utf8() else "--locale=C"],
                    cwd=staging, label="postgresql initdb", user=self.server_user(), timeout_seconds=120,
                ),
                log=log,
            )
            (staging / "data").rename(template)
            shutil.rmtree(staging, ignore_errors=True)
        return template

    def version_of(self, argv: list[str]) -> str:
        """A server binary's ``--version`` line (asked once per binary)."""
        key = tuple(argv)
        with _VERSIONS_LOCK:
            if key in _VERSIONS:
                return _VERSIONS[key]
        outcome = self.runner.run(_server_request(argv=argv, cwd=Path("/"), label="version", capture=True,
                                                  timeout_seconds=30))
        line = next((text.strip() for text in outcome.output if text.strip()), "")
        if not outcome.ok or not line:
            raise ServiceError(f"{argv[0]} --version failed: {outcome.tail_text(5)}")
        with _VERSIONS_LOCK:
            _VERSIONS[key] = line
        return line

    @contextlib.contextmanager
    def _postgres(
        self, root: Path, workdir: Path, pg: PostgresOptions, password: str, log: LogFn | None
    ) -> Iterator[Server]:
        pg_bin = self.pg_bin(pg.version)
        # "postgres (PostgreSQL) 15.8 (Debian 15.8-0+deb12u1)" -> "15.8 (Debian 15.8-0+deb12u1)"
        version = self.version_of([str(pg_bin / "postgres"), "--version"]).removeprefix("postgres (PostgreSQL) ")
        template = self.initdb_template(root, pg_bin, pg.user, log)
        data = workdir / "pgdata"
        self.runner.check(
            _server_request(argv=["cp", "-a", str(template), str(data)], cwd=workdir,
                           label="postgresql data dir", user=self.server_user(), timeout_seconds=120)
        )
        with (self._socket_dir(workdir) as sockets,
              self._serve_postgres(pg_bin, workdir, sockets, pg, password, log) as port):
            yield Server(name="postgresql", port=port, version=version, user=pg.user, password=password,
                         database=pg.database, bin_dir=str(pg_bin))

    @contextlib.contextmanager
    def _socket_dir(self, workdir: Path) -> Iterator[Path]:
        """The service folder, unless a long home makes its socket path too long for PostgreSQL:
        then a short private folder under the temp dir (or /tmp), removed afterwards."""
        if socket_dir_fits(workdir):
            yield workdir
            return
        base = Path(tempfile.gettempdir())
        short = Path(tempfile.mkdtemp(prefix="sevenp-pg-", dir=base if socket_dir_fits(base / "sevenp-pg-xxxxxxxx")
                                      else "/tmp"))
        try:
            self.chown(short)
            yield short
        finally:
            shutil.rmtree(short, ignore_errors=True)

    @contextlib.contextmanager
    def _serve_postgres(
        self, pg_bin: Path, workdir: Path, sockets: Path, pg: PostgresOptions, password: str, log: LogFn | None,
    ) -> Iterator[int]:
        # The names are identifiers validated at load (config/models.py): safe to quote.
        server, port = self.start_postgres(
            pg_bin, workdir / "pgdata", workdir, sockets, pg_user=pg.user, die_with_parent=True,
            settings=("fsync=off", "synchronous_commit=off", "full_page_writes=off", *pg.settings),
            setup=[f"ALTER ROLE \"{pg.user}\" PASSWORD '{password}'",
                   *[f"CREATE DATABASE \"{name}\" OWNER \"{pg.user}\"" for name in (pg.database, *pg.databases)]],
            secrets=(password,))
        try:
            if pg.extensions:
                try:
                    self._psql(pg_bin, workdir, sockets, port, pg.user, database=pg.database,
                               statements=[f"CREATE EXTENSION IF NOT EXISTS \"{name}\"" for name in pg.extensions])
                except ServiceError as exc:
                    errors = [line.split("ERROR:", 1)[1].strip() for line in str(exc).splitlines() if "ERROR:" in line]
                    raise ServiceError(f"services.postgresql.extensions {list(pg.extensions)}: "
                                       f"{'; '.join(errors) or exc}") from exc
            if log:
                log(f"postgresql {pg_bin.parent.name} ready on 127.0.0.1:{port} (pid {server.pid})")
            yield port
        finally:
            server.stop()

    def start_postgres(
        self, pg_bin: Path, data: Path, workdir: Path, sockets: Path, *, pg_user: str, preferred_port: int = 0,
        die_with_parent: bool = False, settings: Sequence[str] = (), setup: Sequence[str] = (),
        secrets: Sequence[str] = (),
    ) -> tuple[RunningProcess, int]:
        """Starts ``postgres`` on ``data`` (loopback only, sockets in ``sockets``, log in ``workdir``), waits
        until it answers, runs the ``setup`` statements; returns the server and its port. A port taken
        between probe and bind is retried on another; ``preferred_port`` is tried first when it is free.
        ``die_with_parent``: a stage's throwaway server; False for one that outlives the run."""
        last_error = ""
        for attempt in range(3):
            port = preferred_port if attempt == 0 and preferred_port and port_free(preferred_port) else free_port()
            server = self.runner.start(
                _server_request(
                    argv=[str(pg_bin / "postgres"), "-D", str(data), "-p", str(port),
                          "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={sockets}",
                          *[arg for setting in settings for arg in ("-c", setting)]],
                    cwd=workdir, label="postgresql", user=self.server_user(), die_with_parent=die_with_parent,
                    log_path=workdir / "postgresql.log",
                )
            )
            try:
                self._wait_pg(pg_bin, server, workdir, sockets, port, pg_user)
                if setup:
                    self._psql(pg_bin, workdir, sockets, port, pg_user, statements=list(setup), secrets=secrets)
            except ServiceError as exc:
                server.stop()
                last_error = str(exc)
                if "could not bind" in last_error or "already in use" in last_error:
                    continue
                raise
            return server, port
        raise ServiceError(f"postgresql: could not bind a loopback port: {last_error}")

    def _wait_pg(self, pg_bin: Path, server: RunningProcess, workdir: Path, sockets: Path, port: int,
                 user: str) -> None:
        deadline = time.monotonic() + self.startup_timeout_seconds
        while time.monotonic() < deadline:
            if not server.alive():
                raise ServiceError(f"postgresql exited at startup: {_tail(workdir / 'postgresql.log')}")
            ready = self.runner.run(_server_request(
                argv=[str(pg_bin / "pg_isready"), "-q", "-h", str(sockets), "-p", str(port), "-U", user],
                cwd=workdir, label="pg_isready", timeout_seconds=10, user=self.server_user()))
            if ready.ok:
                return
            time.sleep(0.1)
        raise ServiceError(
            f"postgresql not ready after {self.startup_timeout_seconds:.0f}s: {_tail(workdir / 'postgresql.log')}"
        )

    def _psql(self, pg_bin: Path, workdir: Path, sockets: Path, port: int, user: str, *, statements: list[str],
              database: str = "postgres", secrets: Sequence[str] = ()) -> None:
        """Runs ``statements`` from a 0600 file only the server user can read, deleted right after:
        a password in them never appears on a command line (``ps`` shows every argv)."""
        script = workdir / ".setup.sql"
        fd = os.open(script, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write("".join(f"{statement};\n" for statement in statements))
            self.chown(script)
            self.runner.check(_server_request(
                argv=[str(pg_bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", str(sockets),
                      "-p", str(port), "-U", user, "-d", database, "-f", str(script)],
                cwd=workdir, label="postgresql setup", secrets=secrets, user=self.server_user(), timeout_seconds=30))
        except ProcessError as exc:
            raise ServiceError(str(exc)) from exc
        finally:
            script.unlink(missing_ok=True)

    # -- Redis -----------------------------------------------------------------------------
    def redis_version(self, binary: str, asked: str | None) -> str:
        """``redis-server --version``'s version (``v=7.0.15``); refuses one that is not ``asked``."""
        line = self.version_of([binary, "--version"])
        version = next((word[2:] for word in line.split() if word.startswith("v=")), line)
        if asked is not None and version != asked and not version.startswith(f"{asked}."):
            raise ServiceError(f"redis {asked} is not installed (services.redis.version): {binary} is "
                               f"redis {version}, the only one this machine has")
        return version

    @contextlib.contextmanager
    def _redis(self, workdir: Path, options: RedisOptions, log: LogFn | None) -> Iterator[Server]:
        binary = shutil.which(self.redis_server)
        if binary is None:
            raise ServiceError(f"redis: '{self.redis_server}' not found; install the Debian package 'redis-server'")
        version = self.redis_version(binary, options.version)
        last_error = ""
        for _ in range(3):
            port = free_port()
            logfile = workdir / f"redis-{port}.log"
            server = self.runner.start(
                _server_request(
                    argv=[binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                          "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no",
                          "--protected-mode", "yes", *options.arguments],
                    cwd=workdir, label="redis", user=self.server_user(), log_path=logfile, die_with_parent=True,
                )
            )
            try:
                _wait_tcp(port, server, self.startup_timeout_seconds, logfile)
            except ServiceError as exc:
                server.stop()
                last_error = str(exc)
                if "in use" in last_error:  # the port was taken between probe and bind: another one
                    continue
                raise ServiceError(f"redis: {last_error}") from exc
            if log:
                log(f"redis {version} ready on 127.0.0.1:{port} (pid {server.pid})")
            try:
                yield Server(name="redis", port=port, version=version)
            finally:
                server.stop()
            return
        raise ServiceError(f"redis: did not start: {last_error}")


def _wait_tcp(port: int, server: RunningProcess, timeout: float, logfile: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not server.alive():
            raise ServiceError(f"{server.request.label} exited at startup: {_tail(logfile)}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            try:
                sock.connect(("127.0.0.1", port))
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
            except OSError:
                pass
        time.sleep(0.05)
    raise ServiceError(f"{server.request.label} not ready after {timeout:.0f}s: {_tail(logfile)}")


def _tail(path: Path, lines: int = 10) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _has_c_utf8() -> bool:
    return Path("/usr/lib/locale/C.utf8").exists() or Path("/usr/lib/locale/C.UTF-8").exists()
