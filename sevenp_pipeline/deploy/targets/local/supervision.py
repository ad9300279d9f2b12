"""The deploy's side of the environment keeper (keeper.py): start it detached, tell it which programs to
run, read what it runs.

The keeper of ``<home>/deploy/<app>/<env>`` keeps its files in that folder's ``keeper/``. A program is
a plain dict (argv, cwd, user, env, log file, stop signal...), written to ``programs.json`` under a
lock; the keeper applies it on SIGHUP and confirms by raising ``applied`` in ``state.json`` to the
file's version, which :meth:`Keeper.set_program` waits for. The keeper starts through the
:class:`ProcessRunner` in its own session with no parent-death signal: it outlives the run worker
(and the CLI) that started it, and ``stop()`` ends it (``make deploy-stop``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from sevenp_pipeline.deploy.targets.local import keeper as keeper_program
from sevenp_pipeline.deploy.targets.role import DeployError, LogFn
from sevenp_pipeline.files import private_dir, read_json_state, write_json_state
from sevenp_pipeline.locks import file_lock
from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessRunner, RunningProcess

OOM_ENV = "SEVENP_OOM_SCORE_ADJ"  # passed on to the keeper (default there: -800)
KEEPER_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
# keepers started by this process: reaped when they exit (a dead child must not look alive as a zombie)
_STARTED: dict[int, RunningProcess] = {}


class Keeper:
    """The keeper of one environment folder ``root``."""

    def __init__(self, *, root: Path, runner: ProcessRunner, python: str = sys.executable,
                 apply_timeout_seconds: float = 60.0) -> None:
        self.root = root
        self.folder = root / "keeper"
        self.runner = runner
        self.python = python
        self.apply_timeout_seconds = apply_timeout_seconds

    @property
    def programs_path(self) -> Path:
        return self.folder / keeper_program.PROGRAMS_FILE

    @property
    def state_path(self) -> Path:
        return self.folder / keeper_program.STATE_FILE

    @property
    def log_path(self) -> Path:
        return self.folder / "keeper.log"

    def state(self) -> dict[str, Any]:
        return read_json_state(self.state_path)

    def programs(self) -> dict[str, dict[str, Any]]:
        return dict(read_json_state(self.programs_path).get("programs") or {})

    # -- the keeper process ------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The live keeper's pid (its state names it and its command line names this folder)."""
        for started in list(_STARTED.values()):
            started.proc.poll()
        pid = int(self.state().get("keeper_pid") or 0)
        if not pid or keeper_program.start_time(pid) is None:
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if str(self.folder).encode() not in cmdline or not any(a.endswith(b"keeper.py") for a in cmdline):
            return None
        return pid

    def alive(self) -> bool:
        return self.pid() is not None

    def ensure_running(self, *, log: LogFn | None = None) -> int:
        """Starts the keeper unless it runs; it starts (or adopts) every program in ``programs.json``."""
        pid = self.pid()
        if pid is not None:
            return pid
        private_dir(self.folder)
        version = int(read_json_state(self.programs_path).get("version") or 0)
        started = self.runner.start(ExecuteRequest(
            argv=[self.python, "-I", keeper_program.__file__, str(self.folder)], cwd=self.folder,
            label=f"keeper of {self.root.name}", inherit_env=False, log_path=self.log_path,
            env={**KEEPER_ENV, **{k: os.environ[k] for k in (OOM_ENV,) if os.environ.get(k)}},
            timeout_seconds=float("inf")))
        _STARTED[started.pid] = started
        deadline = time.monotonic() + self.apply_timeout_seconds
        while time.monotonic() < deadline:
            state = self.state()
            if state.get("keeper_pid") == started.pid and int(state.get("applied") or 0) >= version:
                if log:
                    log(f"keeper of {self.root.name} running (pid {started.pid}, log {self.log_path})")
                return started.pid
            if not started.alive():
                pid = self.pid()  # another keeper won the race for the lock: that one serves
                if pid is not None:
                    return pid
                raise DeployError(f"the keeper of {self.root} exited at start: {_tail(self.log_path)}")
            time.sleep(0.02)
        raise DeployError(f"the keeper of {self.root} did not start in {self.apply_timeout_seconds:.0f}s: "
                          f"{_tail(self.log_path)}")

    def stop(self, *, log: LogFn | None = None, timeout: float = 90.0) -> bool:
        """Stops the keeper and every program it runs (each with its own stop signal). A keeper that died
        left its programs running: those its state names are stopped here."""
        pid = self.pid()
        if pid is None:
            return self._stop_orphans(log)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.pid() == pid:
            time.sleep(0.05)
        if self.pid() == pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        started = _STARTED.pop(pid, None)
        if started is not None:
            started.proc.wait(timeout=10)
        if log:
            log(f"keeper of {self.root.name} stopped (pid {pid})")
        return True

    def _stop_orphans(self, log: LogFn | None) -> bool:
        stopped = False
        for name, entry in (self.state().get("programs") or {}).items():
            pid = int(entry.get("pid") or 0)
            if not pid or keeper_program.start_time(pid) != entry.get("start_ticks"):
                continue
            sig = signal.Signals[entry.get("stop_signal") or "SIGTERM"]
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + 30
            while keeper_program.start_time(pid) is not None and time.monotonic() < deadline:
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            stopped = True
            if log:
                log(f"{name} (pid {pid}), left running by a keeper that died, stopped")
        return stopped

    # -- programs ----------------------------------------------------------------------------------
    def set_program(self, name: str, spec: dict[str, Any] | None, *, restart: bool = False,
                    log: LogFn | None = None) -> None:
        """Makes the keeper run ``spec`` as ``name`` (None: stop and forget it) and waits until it has.
        ``restart``: start it again even if the spec is unchanged."""
        private_dir(self.folder)
        with file_lock(self.folder / ".programs.lock", timeout=120, what=f"the keeper programs of {self.root}"):
            data = read_json_state(self.programs_path)
            programs = dict(data.get("programs") or {})
            if spec is None:
                if name not in programs:
                    return
                programs.pop(name)
            else:
                spec = {**spec, "generation": int((programs.get(name) or {}).get("generation") or 0)
                        + (1 if restart else 0)}
                if programs.get(name) == spec and self.alive():
                    return
                programs[name] = spec
            version = int(data.get("version") or 0) + 1
            write_json_state(self.programs_path, {"version": version, "programs": programs})
            pid = self.pid()
            if pid is None:
                if spec is None:
                    return
                self.ensure_running(log=log)
                return
            os.kill(pid, signal.SIGHUP)
            deadline = time.monotonic() + self.apply_timeout_seconds
            while int(self.state().get("applied") or 0) < version:
                if time.monotonic() > deadline or self.pid() != pid:
                    raise DeployError(f"the keeper of {self.root} did not apply '{name}': {_tail(self.log_path)}")
                time.sleep(0.02)

    def program_pid(self, name: str) -> int | None:
        """The pid of ``name`` when the keeper runs it now."""
        if not self.alive():
            return None
        entry = (self.state().get("programs") or {}).get(name) or {}
        pid = int(entry.get("pid") or 0)
        return pid if pid and keeper_program.start_time(pid) == entry.get("start_ticks") else None

    def restarts(self, name: str) -> int:
        return int(((self.state().get("programs") or {}).get(name) or {}).get("restarts") or 0)


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
