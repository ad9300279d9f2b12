"""The local registry: Debian's ``docker-registry`` (distribution 2.8) on loopback, with authentication.

Long-lived shared state under the pipeline home: it outlives a run, so later runs find the images
of earlier ones.

Only the orchestrator can read or write it: the registry checks ``auth.htpasswd`` (a bcrypt entry for
a password made on first start, ``<home>/registry/credentials.json``, 0600), and the orchestrator's
container tools find the credentials in ``<home>/containers/auth/config.json`` (``REGISTRY_AUTH_FILE``,
and ``DOCKER_CONFIG`` for syft). Stages and image builds reach no loopback port in the first place,
and a build store never holds the file (see builders/stores.py); any other process of this machine
gets 401.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bcrypt
from pydantic import Field

from sevenp_pipeline.files import write_atomically
from sevenp_pipeline.locks import file_lock
from sevenp_pipeline.resources.builders.role import BuiltImage, ImageBuilder
from sevenp_pipeline.resources.processes import ExecuteRequest, LogFn, ProcessRunner, RunningProcess
from sevenp_pipeline.resources.registries.role import (
    MANIFEST_TYPES,
    Registry,
    RegistryError,
    validate_repository,
    validate_tag,
)
from sevenp_pipeline.resources.registries.transport import SkopeoTransport


@dataclass(frozen=True)
class RegistryState:
    pid: int
    port: int
    config: str
    # False once stop() ended it on purpose: the stack's supervisor then leaves it stopped
    wanted: bool = True


# servers started by this process, so stop() can reap them (no zombie left looking alive)
_STARTED: dict[int, RunningProcess] = {}


class LocalRegistry(Registry):
    """Debian's ``docker-registry`` on loopback, shared by all runs on this machine.

    ``ensure_running()`` starts it (or finds it running) and records pid and port in
    ``<home>/registry/state.json``; the port is kept across restarts so stored references stay
    valid. The server is not tied to the run that started it; ``stop()`` ends it.
    """

    runner: ProcessRunner
    home: str = Field(description="pipeline home; the registry keeps config, data and state in <home>/registry")
    host: str = Field(default="127.0.0.1", description="loopback address the registry listens on")
    port: int = Field(default=0, description="0: a free port picked on first start and kept in the state file")
    binary: str = Field(default="docker-registry", description="distribution 2.x registry binary")
    startup_timeout_seconds: float = Field(default=20, description="how long to wait for GET /v2/ after start")
    http_timeout_seconds: float = Field(default=10, description="timeout of one registry API request")
    clients_home: str = Field(default="", description="pipeline home whose container tools get the credentials "
                              "(<clients_home>/containers/auth/config.json); empty: home")

    # -- where things are ------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.home).resolve() / "registry"

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yml"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    @property
    def auth_dir(self) -> Path:
        """The clients' credentials: ``config.json`` here is both containers' auth file and docker's config."""
        return Path(self.clients_home or self.home).resolve() / "containers" / "auth"

    # -- credentials -------------------------------------------------------------------------------
    def _credentials(self) -> tuple[str, str]:
        """The orchestrator's user and password, made on first use (0600, never logged)."""
        path = self.root / "credentials.json"
        try:
            data = json.loads(path.read_text())
            return str(data["username"]), str(data["password"])
        except FileNotFoundError:
            pass
        except (ValueError, KeyError) as exc:
            raise RegistryError(f"{path}: unreadable credentials ({exc}); remove it to make new ones") from exc
        user, password = "sevenp", secrets.token_urlsafe(32)
        self.root.mkdir(parents=True, exist_ok=True)
        write_atomically(path, lambda out: out.write(json.dumps({"username": user, "password": password}).encode()))
        return user, password

    def _write_auth(self, port: int) -> Path:
        """The htpasswd the registry checks, and the clients' auth file for ``host:port``."""
        user, password = self._credentials()
        htpasswd = self.root / "htpasswd"
        try:
            current = htpasswd.read_text().strip()
            valid = current.startswith(f"{user}:") and bcrypt.checkpw(password.encode(),
                                                                       current.split(":", 1)[1].encode())
        except (OSError, ValueError):
            valid = False
        if not valid:
            entry = f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()}\n"
            write_atomically(htpasswd, lambda out: out.write(entry.encode()))
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        entry = {"auth": token}
        self.auth_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        config = self.auth_dir / "config.json"
        with file_lock(self.auth_dir / ".lock", what=f"registry credentials in {self.auth_dir}"):
            try:
                current = json.loads(config.read_text())
            except (OSError, ValueError):
                current = {}
            auths = dict(current.get("auths") or {}) if isinstance(current, dict) else {}
            if auths.get(f"{self.host}:{port}") != entry:  # other registries' entries stay
                auths[f"{self.host}:{port}"] = entry
                data = json.dumps({"auths": auths}, indent=2).encode()
                write_atomically(config, lambda out: out.write(data))
        return htpasswd

    def grant(self, home: Path) -> Path:
        """Writes this registry's credentials into another pipeline home's auth file (a second pipeline
        on this machine whose base image lives here: what ``podman login`` would do); returns the file."""
        other = self.model_copy(update={"clients_home": str(home)})
        other._write_auth(int(self.address().rsplit(":", 1)[1]))
        return other.auth_dir / "config.json"

    def client_env(self) -> dict[str, str]:
        return {"DOCKER_CONFIG": str(self.auth_dir)}

    def read_state(self) -> RegistryState | None:
        try:
            data = json.loads(self.state_path.read_text())
            return RegistryState(pid=int(data["pid"]), port=int(data["port"]), config=str(data["config"]),
                                 wanted=bool(data.get("wanted", True)))
        except (OSError, ValueError, KeyError):
            return None

    def address(self) -> str:
        """``host:port`` of the registry (from the state file when it was started before)."""
        state = self.read_state()
        port = state.port if state else self.port
        if not port:
            raise RegistryError(f"local registry under {self.root}: not started yet (call ensure_running())")
        return f"{self.host}:{port}"

    def describe(self) -> str:
        try:
            return f"local registry {self.address()}"
        except RegistryError:
            return f"local registry under {self.root}"

    def repository_ref(self, name: str) -> str:
        return f"{self.address()}/{validate_repository(name)}"

    # -- lifecycle ---------------------------------------------------------------------------------
    def healthy(self) -> bool:
        try:
            with self._request("GET", "/v2/", timeout=2) as response:
                return response.status == 200
        except (OSError, RegistryError):
            return False

    def running_pid(self) -> int | None:
        state = self.read_state()
        if state and _pid_serves(state.pid, state.config):
            return state.pid
        return None

    def prepare(self, *, log: LogFn | None = None) -> None:
        """Shared state that outlives runs: started here when it is not running."""
        self.ensure_running(log=log)

    def ensure_running(self, *, log: LogFn | None = None) -> str:
        """Starts the registry unless it already answers; returns ``host:port``. Idempotent."""
        with file_lock(self.root / ".lock", what=f"local registry under {self.root}", timeout=120):
            state = self.read_state()
            if state:
                self._write_auth(state.port)
            if state and _pid_serves(state.pid, state.config) and self.healthy() and not self._open_to_anyone():
                return self.address()
            if state and _pid_serves(state.pid, state.config):  # alive but not answering (or open): replace it
                _terminate(state.pid)
            port = (state.port if state else 0) or self.port or _free_port(self.host)
            self._write_config(port, self._write_auth(port))
            server = self.runner.start(ExecuteRequest(
                argv=[self.binary, "serve", str(self.config_path)], cwd=self.root, label="docker-registry",
                log_path=self.log_path, timeout_seconds=float("inf"),
            ))
            _STARTED[server.pid] = server
            self._write_state(RegistryState(pid=server.pid, port=port, config=str(self.config_path)))
            deadline = time.monotonic() + self.startup_timeout_seconds
            while time.monotonic() < deadline:
                if not server.alive():
                    _STARTED.pop(server.pid, None)
                    raise RegistryError(
                        f"local registry {self.host}:{port} exited at startup (log {self.log_path}): "
                        f"{_tail(self.log_path)}"
                    )
                if self.healthy():
                    if log:
                        log(f"local registry listening on {self.host}:{port} (pid {server.pid}, data "
                            f"{self.root / 'data'})")
                    return f"{self.host}:{port}"
                time.sleep(0.05)
            server.stop()
            _STARTED.pop(server.pid, None)
            raise RegistryError(f"local registry {self.host}:{port} not answering GET /v2/ after "
                                f"{self.startup_timeout_seconds:.0f}s: {_tail(self.log_path)}")

    def stop(self) -> bool:
        """Stops the registry if it runs; the data and the port stay for the next start."""
        with file_lock(self.root / ".lock", what=f"local registry under {self.root}", timeout=120):
            state = self.read_state()
            if state is None:
                return False
            self._write_state(RegistryState(pid=state.pid, port=state.port, config=state.config, wanted=False))
            server = _STARTED.pop(state.pid, None)
            if server is not None:
                server.stop()
                return True
            if _pid_serves(state.pid, state.config):
                _terminate(state.pid)
                return True
            return False

    def _open_to_anyone(self) -> bool:
        """Whether it answers without credentials (one started before the registry had them)."""
        try:
            request = urllib.request.Request(f"http://{self.address()}/v2/", method="GET")
            with urllib.request.urlopen(request, timeout=2):  # noqa: S310
                return True
        except urllib.error.HTTPError as exc:
            return exc.code != 401
        except OSError:
            return False

    def _write_config(self, port: int, htpasswd: Path) -> None:
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(data)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
            },
            "http": {"addr": f"{self.host}:{port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
            "auth": {"htpasswd": {"realm": "sevenp-registry", "path": str(htpasswd)}},
            "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
        }
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=2))  # YAML is a superset of JSON
        tmp.replace(self.config_path)

    def _write_state(self, state: RegistryState) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": state.pid, "port": state.port, "config": state.config,
                                   "wanted": state.wanted}))
        tmp.replace(self.state_path)

    # -- registry API ------------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, data: bytes | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None) -> Any:
        url = f"http://{self.address()}{path}"
        user, password = self._credentials()
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={**(headers or {}), "Authorization": f"Basic {token}"})
        return urllib.request.urlopen(request, timeout=timeout or self.http_timeout_seconds)  # noqa: S310

    def find(self, repository: str, tag: str) -> str | None:
        validate_repository(repository)
        validate_tag(tag)

        def head() -> str | None:
            try:
                with self._request("HEAD", f"/v2/{repository}/manifests/{tag}",
                                   headers={"Accept": ", ".join(MANIFEST_TYPES)}) as response:
                    return response.headers.get("Docker-Content-Digest")
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                raise

        return self.retrying(f"look up {self.repository_ref(repository)}:{tag}", head)

    def tags(self, repository: str) -> list[str]:
        """All tags of ``repository`` (empty when it does not exist)."""
        def fetch() -> list[str]:
            try:
                with self._request("GET", f"/v2/{validate_repository(repository)}/tags/list") as response:
                    return sorted(json.loads(response.read()).get("tags") or [])
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return []
                raise

        return self.retrying(f"list tags of {repository}", fetch)

    def _push_digest(self, *, builder: ImageBuilder, image: BuiltImage, repository: str,
                     log: LogFn | None) -> str:
        exported = builder.export(image=image, log=log)
        ref = f"{self.repository_ref(repository)}@{exported.manifest_digest}"
        return SkopeoTransport(builder).push_by_digest(image=image, destination_ref=ref, log=log)

    def _put_tag(self, *, repository: str, digest: str, tag: str) -> None:
        with self._request("GET", f"/v2/{repository}/manifests/{digest}",
                           headers={"Accept": ", ".join(MANIFEST_TYPES)}) as response:
            manifest = response.read()
            media_type = response.headers.get("Content-Type", MANIFEST_TYPES[0])
        with self._request("PUT", f"/v2/{repository}/manifests/{tag}", data=manifest,
                           headers={"Content-Type": media_type}) as response:
            written = response.headers.get("Docker-Content-Digest")
        if written != digest:
            raise RegistryError(f"{self.describe()}: tag {repository}:{tag} got digest {written}, expected {digest}")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _pid_serves(pid: int, config: str) -> bool:
    """True when ``pid`` is a live (not zombie) process whose command line names ``config``."""
    proc = Path(f"/proc/{pid}")
    try:
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        stat = (proc / "stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    return config.encode() in cmdline


def _terminate(pid: int, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL: a registry started by an earlier process (we cannot wait() on it)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _zombie(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"

