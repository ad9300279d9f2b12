"""The environment's front door: its own nginx master on a loopback port, proxying to the live release.

Not the system nginx: prefix, config, pid file and logs live under ``<home>/deploy/<app>/<env>/nginx/``.
In a deployed environment the master runs in the foreground (``daemon off``) under the environment's
keeper (keeper.py), which starts it again the moment it dies; the pid file and ``nginx -s reload``
(SIGHUP to the master) work as before. Without a keeper (the front door alone, in tests) the master
daemonizes itself (``daemon on``) and outlives the process that started it. ``stop()`` ends it.
A switch renders the whole candidate config, validates it with ``nginx -t``, renames it over the live
config and reloads gracefully (SIGHUP: new workers take new connections, old ones finish theirs),
then waits until the front door answers with the new ``X-Sevenp-Release`` header.
A config that fails ``nginx -t`` never replaces the live one.

Only validated values reach the config: ints for ports, hex for the commit.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from sevenp_pipeline.deploy.targets.local.supervision import Keeper
from sevenp_pipeline.deploy.targets.role import DeployError, LogFn
from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessRunner

RELEASE_HEADER = "X-Sevenp-Release"
MAX_BODY = "1m"
_HEX = re.compile(r"^[0-9a-f]{4,64}$")
PROGRAM = "nginx"  # its name among the keeper's programs
NGINX_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}


@dataclass(frozen=True)
class Upstream:
    """Where the front door sends traffic: a release's loopback port, named by its commit."""

    port: int
    commit: str

    def __post_init__(self) -> None:
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 1 <= self.port <= 65535:
            raise DeployError(f"front door: upstream port {self.port!r} is not a TCP port")
        if not _HEX.match(self.commit):
            raise DeployError(f"front door: commit {self.commit!r} is not a hex SHA")


class FrontDoor:
    """One environment's nginx master on ``127.0.0.1:<port>``."""

    def __init__(self, *, root: Path, port: int, runner: ProcessRunner, binary: str = "nginx",
                 switch_timeout_seconds: float = 15.0, keeper: Keeper | None = None) -> None:
        if not isinstance(port, int) or not 1024 <= port <= 65535:
            raise DeployError(f"front door port {port!r}: an int between 1024 and 65535")
        self.root = root
        self.port = port
        self.runner = runner
        self.binary = binary
        self.switch_timeout_seconds = switch_timeout_seconds
        self.keeper = keeper

    # -- where things are ------------------------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def pid_file(self) -> Path:
        return self.root / "nginx.pid"

    @property
    def error_log(self) -> Path:
        return self.root / "logs" / "error.log"

    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- config ----------------------------------------------------------------------------------
    def render(self, upstream: Upstream | None) -> str:
        """The whole config for ``upstream`` (None: nothing live, every request gets 503)."""
        if upstream is None:
            location = (f'        add_header {RELEASE_HEADER} "none" always;\n'
                        "        return 503 \"nothing is deployed here yet\\n\";\n")
        else:
            location = (f"        proxy_pass http://127.0.0.1:{int(upstream.port)};\n"
                        "        proxy_http_version 1.1;\n"
                        '        proxy_set_header Connection "";\n'
                        "        proxy_set_header Host $host;\n"
                        "        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n"
                        "        proxy_connect_timeout 5s;\n"
                        "        proxy_max_temp_file_size 0;\n"
                        f'        add_header {RELEASE_HEADER} "{upstream.commit}" always;\n')
        root = self.root
        return (
            "# Written by sevenp_pipeline (deploy/targets/local/nginx.py); replaced on every switch.\n"
            f"daemon {'off' if self.keeper is not None else 'on'};\n"
            "worker_processes 1;\n"
            f"pid {root / 'nginx.pid'};\n"
            f"error_log {self.error_log} warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            f"    access_log {root / 'logs' / 'access.log'};\n"
            # A request body is kept in memory up to the size nginx accepts at all (its default 1m): the
            # workers run as nginx's unprivileged user, which cannot enter the temp folder under the
            # home (0700); a body spilled to it failed with 500. Responses are never spilled either.
            f"    client_max_body_size {MAX_BODY};\n"
            f"    client_body_buffer_size {MAX_BODY};\n"
            f"    client_body_temp_path {root / 'temp' / 'client'};\n"
            f"    proxy_temp_path {root / 'temp' / 'proxy'};\n"
            f"    fastcgi_temp_path {root / 'temp' / 'fastcgi'};\n"
            f"    uwsgi_temp_path {root / 'temp' / 'uwsgi'};\n"
            f"    scgi_temp_path {root / 'temp' / 'scgi'};\n"
            "    server_tokens off;\n"
            "    server {\n"
            f"        listen 127.0.0.1:{int(self.port)};\n"
            "        location / {\n"
            f"{location}"
            "        }\n"
            "    }\n"
            "}\n"
        )

    def _argv(self, *args: str) -> list[str]:
        found = shutil.which(self.binary)
        if found is None:
            raise DeployError(f"nginx is not installed ('{self.binary}' not found on PATH): apt install nginx")
        return [found, "-p", f"{self.root}/", "-e", str(self.error_log), *args]

    def _nginx(self, *args: str, label: str, timeout: float = 30):
        return self.runner.run(ExecuteRequest(
            argv=self._argv(*args),
            cwd=self.root, label=label, timeout_seconds=timeout, capture=True))

    def _validate(self, candidate: Path) -> None:
        outcome = self._nginx("-t", "-q", "-c", str(candidate), label="nginx -t")
        if not outcome.ok:
            raise DeployError(f"front door config rejected by nginx -t ({candidate.name}): "
                              f"{' | '.join(outcome.output[-5:]) or outcome.describe()}")

    def _prepare_dirs(self) -> None:
        for sub in ("logs", "temp"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def write_config(self, upstream: Upstream | None) -> str:
        """Validates and installs the config for ``upstream``; returns the config it replaced ("" if none).
        A rejected config raises :class:`DeployError` and leaves the live one as it was."""
        self._prepare_dirs()
        text = self.render(upstream)
        candidate = self.root / f".nginx.conf.candidate-{os.getpid()}"
        try:
            candidate.write_text(text)
            self._validate(candidate)
            previous = self.conf.read_text() if self.conf.exists() else ""
            candidate.replace(self.conf)
            return previous
        finally:
            candidate.unlink(missing_ok=True)

    def restore_config(self, text: str, *, log: LogFn | None = None) -> None:
        """Puts back a config returned by :meth:`write_config` and reloads (after a failed step)."""
        if not text:
            return
        tmp = self.root / f".nginx.conf.restore-{os.getpid()}"
        tmp.write_text(text)
        tmp.replace(self.conf)
        pid = self.running_pid()
        if pid is not None:
            os.kill(pid, signal.SIGHUP)
            if log:
                log(f"front door: previous config restored on {self.url()}")

    # -- master ----------------------------------------------------------------------------------
    def running_pid(self) -> int | None:
        """The master's pid when the pid file names a live nginx master of this config."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            return None
        if state in ("Z", "X") or "nginx: master" not in cmdline or str(self.root) not in cmdline:
            return None
        return pid

    def workers(self) -> list[int]:
        """nginx processes working in this front door's folder (a master's workers, or orphans of a
        master killed with SIGKILL, which keep the port)."""
        found = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if (proc / "cmdline").read_bytes().startswith(b"nginx: worker") and \
                        (proc / "cwd").readlink() == self.root:
                    found.append(int(proc.name))
            except OSError:
                continue
        return found

    def ensure_running(self, *, initial: Upstream | None = None, log: LogFn | None = None) -> int:
        """Starts the master unless it runs (a stale pid file is replaced); returns its pid. Idempotent.
        A first start serves ``initial`` (None: 503 until a release is switched in)."""
        pid = self.running_pid()
        if self.keeper is not None:
            if PROGRAM in self.keeper.programs():
                self.keeper.ensure_running(log=log)  # a keeper that died: the new one adopts or restarts nginx
            supervised = self.keeper.program_pid(PROGRAM)
            pid = self.running_pid()
            if supervised is not None and pid in (None, supervised):  # running, or started and not up yet
                return self._wait_up(log)
            if pid is not None:  # started before environments had a keeper (or by hand): the keeper takes over
                self._stop_master(pid, timeout=10.0)
                if log:
                    log(f"front door: nginx master {pid} stopped to run under the environment's keeper")
                pid = None
        if pid is not None:
            return pid
        self.pid_file.unlink(missing_ok=True)
        for orphan in self.workers():  # a master killed with SIGKILL leaves its workers on the port
            with contextlib.suppress(ProcessLookupError):
                os.kill(orphan, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while self.workers() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not self.conf.exists():
            self.write_config(initial)
        else:
            if self.keeper is not None and "\ndaemon on;\n" in self.conf.read_text():  # written before the keeper
                self.conf.write_text(self.conf.read_text().replace("\ndaemon on;\n", "\ndaemon off;\n", 1))
            self._validate(self.conf)
        if not _port_free(self.port):
            raise DeployError(f"front door port 127.0.0.1:{self.port} is already in use by another process; "
                              "free it or set the environment's 'port' to another one")
        if self.keeper is not None:
            self.keeper.set_program(PROGRAM, self.program(), log=log)
            return self._wait_up(log)
        outcome = self._nginx("-c", str(self.conf), label="nginx front door")
        if not outcome.ok:
            text = " | ".join(outcome.output[-5:]) or _tail(self.error_log)
            if "Address already in use" in text:
                raise DeployError(f"front door port 127.0.0.1:{self.port} is already in use: {text}")
            raise DeployError(f"front door (nginx) did not start: {outcome.describe()}: {text}")
        return self._wait_up(log)

    def program(self) -> dict[str, object]:
        """The keeper's program for this front door: the master in the foreground (``daemon off`` in the
        config), stopped gracefully with SIGQUIT; workers orphaned by a killed master are cleared first."""
        return {"argv": self._argv("-c", str(self.conf)), "cwd": str(self.root), "env": dict(NGINX_ENV),
                "stop_signal": "SIGQUIT", "stop_timeout": 10, "orphans_prefix": "nginx: worker"}

    def _wait_up(self, log: LogFn | None) -> int:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid = self.running_pid()
            if pid is not None and not _port_free(self.port):
                if log:
                    log(f"front door: nginx master {pid} listening on {self.url()}")
                return pid
            time.sleep(0.05)
        raise DeployError(f"front door (nginx) on {self.url()} did not come up: {_tail(self.error_log)}")

    def switch(self, upstream: Upstream | None, *, log: LogFn | None = None) -> str:
        """Validates and installs the config for ``upstream``, reloads gracefully and waits until the front
        door answers with its release header. Returns the previous config (for :meth:`restore_config`)."""
        pid = self.ensure_running(initial=upstream, log=log)
        previous = self.write_config(upstream)
        try:
            old_workers = self.workers()
            os.kill(pid, signal.SIGHUP)
            self.wait_for_release(upstream.commit if upstream else "none")
            # Until the old workers have gone, one of them may still accept a new connection for the old
            # release: wait for them (they leave once their in-flight requests are answered).
            deadline = time.monotonic() + self.switch_timeout_seconds
            while any(_alive(w) for w in old_workers) and time.monotonic() < deadline:
                time.sleep(0.02)
        except BaseException:
            self.restore_config(previous, log=log)
            raise
        if log:
            log(f"front door {self.url()} now serves {upstream.commit if upstream else 'nothing (503)'}")
        return previous

    def wait_for_release(self, commit: str) -> None:
        """Until a fresh request through the front door carries ``commit`` in its release header."""
        deadline = time.monotonic() + self.switch_timeout_seconds
        seen = ""
        while True:
            seen = self.release_header()
            if seen == commit:
                return
            if time.monotonic() > deadline:
                raise DeployError(f"front door {self.url()} still answers with release '{seen}' "
                                  f"{self.switch_timeout_seconds:.0f}s after the reload (expected {commit})")
            time.sleep(0.02)

    def release_header(self) -> str:
        request = urllib.request.Request(self.url() + "/", headers={"Connection": "close"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=2) as response:  # noqa: S310 (loopback URL we built)
                return response.headers.get(RELEASE_HEADER, "")
        except urllib.error.HTTPError as exc:
            return exc.headers.get(RELEASE_HEADER, "") if exc.headers else ""
        except OSError as exc:
            return f"(no answer: {exc})"

    def stop(self, *, timeout: float = 10.0, log: LogFn | None = None) -> bool:
        """Graceful stop (SIGQUIT), then SIGKILL. The config stays for the next start."""
        if self.keeper is not None:
            supervised = self.keeper.program_pid(PROGRAM)
            self.keeper.set_program(PROGRAM, None, log=log)
            if supervised is not None:
                self.pid_file.unlink(missing_ok=True)
                if log:
                    log(f"front door: nginx master {supervised} on {self.url()} stopped")
                return True
        pid = self.running_pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        self._stop_master(pid, timeout=timeout)
        if log:
            log(f"front door: nginx master {pid} on {self.url()} stopped")
        return True

    def _stop_master(self, pid: int, *, timeout: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
