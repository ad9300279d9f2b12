"""The environment keeper: one small process per local environment that runs its nginx, PostgreSQL and
Redis in the foreground and starts each again the moment it exits.

Why our own and not supervisord (pip ``supervisor`` 4.3): the deploy already knows each server's argv,
user, data folder and port, and needs three things supervisord does not give as directly: a change of
one program applied synchronously (the deploy waits until the keeper confirms it, then waits for the
server to answer); servers that survive the death of the keeper itself and are *adopted* by the next
one (watched through a pidfd) instead of being started twice on the same port and data; and a
restart of nginx with no wait, after clearing the orphaned workers of a master killed with SIGKILL,
which would otherwise keep the port. It is about 400 lines of stdlib, like the sandbox's init.

Run as ``python -I keeper.py <folder>``, started detached (own session, no parent-death signal) by
``Keeper.ensure_running`` in supervision.py. Files in ``<folder>`` (the environment's ``keeper/``):

- ``programs.json`` (written by the deploy): ``{"version": n, "programs": {name: spec}}``; SIGHUP
  makes the keeper read it again and apply what changed (start new programs, stop removed ones,
  restart changed ones); ``applied`` in the state then reaches ``version``.
- ``state.json`` (written by the keeper): its pid, and per program the pid, start time, restarts and
  the last exit, for status and for a keeper that starts after this one died.
- ``keeper.lock``: held (flock) while the keeper runs; a second keeper for the folder exits at once.
- stdout (``keeper.log``): one line per start, exit and restart, with UTC time and exit status.

SIGTERM: stop every program (its own stop signal, then SIGKILL after its timeout) and exit.
Restarts: at once after a program that ran at least ``STABLE_SECONDS``; after quick failures the wait
doubles from 0.1 s up to ``MAX_BACKOFF_SECONDS``. The keeper sets its own ``oom_score_adj`` (default
-800) before starting anything, so the servers inherit it: under memory pressure the kernel kills a
stage first. stdlib only: it must start in a few milliseconds and import nothing of the project.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

STABLE_SECONDS = 10.0
FIRST_BACKOFF_SECONDS = 0.1
MAX_BACKOFF_SECONDS = 5.0
DEFAULT_OOM_SCORE_ADJ = -800
PROGRAMS_FILE = "programs.json"
STATE_FILE = "state.json"
LOCK_FILE = "keeper.lock"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def log(message: str) -> None:
    sys.stdout.write(f"{_now()} {message}\n")
    sys.stdout.flush()


def spec_digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (with the pid: who it is), None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def _group_members(group: int) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if fields[0] not in ("Z", "X") and int(fields[2]) == group:
                found.append(int(proc.name))
    return found


def describe_exit(status: int | None) -> str:
    if status is None:
        return "exited (status unknown: adopted from an earlier keeper)"
    if status < 0:
        try:
            name = signal.Signals(-status).name
        except ValueError:
            name = str(-status)
        return f"killed by {name}"
    return f"exited with code {status}"


class Program:
    def __init__(self, name: str, spec: dict[str, Any]) -> None:
        self.name = name
        self.spec = spec
        self.digest = spec_digest(spec)
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid = 0
        self.pidfd = -1  # an adopted process (not our child): its exit shows on this fd
        self.started = 0.0
        self.start_ticks = 0
        self.restarts = 0
        self.quick_failures = 0
        self.next_start = 0.0  # monotonic; 0: now
        self.last_exit = ""
        self.last_exit_at = ""
        self.last_group = 0  # the process group of the last run (each program leads its own)

    # -- running -----------------------------------------------------------------------------------
    def running(self) -> bool:
        return self.pid > 0

    def start(self) -> None:
        spec = self.spec
        self._clear_leftovers()
        user = spec.get("user") or None
        group = spec.get("group") or None
        log_path = Path(spec["log"]) if spec.get("log") else None
        out = (log_path or Path(os.devnull)).open("ab")
        try:
            self.proc = subprocess.Popen(
                spec["argv"], cwd=spec.get("cwd") or None, env=spec.get("env") or {}, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, user=user, group=group,
                extra_groups=[] if user else None)
        except Exception as exc:  # a bad spec (unknown user, missing binary) is retried with backoff, logged
            self.proc = None
            self._exited(None, f"could not start: {type(exc).__name__}: {exc}", quick=True)
            return
        finally:
            out.close()
        self.pid = self.proc.pid
        self.started = time.monotonic()
        self.start_ticks = start_time(self.pid) or 0
        log(f"{self.name}: started pid {self.pid}" + (f" (restart #{self.restarts})" if self.restarts else ""))

    def adopt(self, pid: int, ticks: int) -> bool:
        """Watches ``pid`` (left running by a keeper that died) if it is still the same process."""
        if not pid or start_time(pid) != ticks:
            return False
        try:
            self.pidfd = os.pidfd_open(pid)
        except OSError:
            return False
        self.pid, self.start_ticks, self.started = pid, ticks, time.monotonic()
        log(f"{self.name}: adopted pid {pid} left by an earlier keeper")
        return True

    def poll(self) -> bool:
        """True when the program exited (and was noted)."""
        if not self.running():
            return False
        if self.proc is not None:
            status = self.proc.poll()
            if status is None:
                return False
            self.proc = None
            self._exited(status, describe_exit(status))
            return True
        if start_time(self.pid) == self.start_ticks:
            return False
        os.close(self.pidfd)
        self.pidfd = -1
        self._exited(None, describe_exit(None))
        return True

    def _exited(self, status: int | None, what: str, *, quick: bool | None = None) -> None:
        ran = time.monotonic() - self.started if self.started else 0.0
        pid = self.pid
        self.pid = 0
        self.last_group = pid
        self.last_exit, self.last_exit_at = what, _now()
        if quick is None:
            quick = ran < STABLE_SECONDS
        self.quick_failures = self.quick_failures + 1 if quick else 0
        wait = 0.0 if self.quick_failures <= 1 else min(
            MAX_BACKOFF_SECONDS, FIRST_BACKOFF_SECONDS * 2 ** (self.quick_failures - 2))
        self.next_start = time.monotonic() + wait
        self.restarts += 1
        log(f"{self.name}: pid {pid or '-'} {what} after {ran:.1f}s; restart #{self.restarts} in {wait:.1f}s"
            + ("" if status is None or status != 0 else " (it should not exit)"))

    def _clear_leftovers(self) -> None:
        """What a killed program leaves that would stop its successor: the rest of its process group (nginx
        workers of a master killed with SIGKILL keep the port; PostgreSQL's children keep its shared memory,
        and a new postmaster refuses to start until they are gone), workers that left the group, a stale
        ``postmaster.pid`` naming a dead process."""
        if self.last_group:
            group, self.last_group = self.last_group, 0
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while _group_members(group) and time.monotonic() < deadline:
                time.sleep(0.005)
        prefix = (self.spec.get("orphans_prefix") or "").encode()
        cwd = self.spec.get("cwd") or ""
        if prefix and cwd:
            killed = []
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    if (proc / "cmdline").read_bytes().startswith(prefix) and str((proc / "cwd").readlink()) == cwd:
                        os.kill(int(proc.name), signal.SIGKILL)
                        killed.append(int(proc.name))
                except OSError:
                    continue
            deadline = time.monotonic() + 2
            while killed and time.monotonic() < deadline:
                killed = [p for p in killed if start_time(p) is not None]
                time.sleep(0.005)
        stale = self.spec.get("stale_pid_file")
        if stale:
            with contextlib.suppress(OSError, ValueError, IndexError):
                pid = int(Path(stale).read_text().split()[0])
                if start_time(pid) is None:
                    Path(stale).unlink()

    def stop(self) -> None:
        """Its stop signal to the program, SIGKILL to its group after ``stop_timeout``."""
        if not self.running():
            return
        sig = signal.Signals[self.spec.get("stop_signal") or "SIGTERM"]
        pid = self.pid
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + float(self.spec.get("stop_timeout") or 10)
        while time.monotonic() < deadline and not self._gone():
            time.sleep(0.02)
        if not self._gone():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            while not self._gone():
                time.sleep(0.02)
        if self.pidfd >= 0:
            os.close(self.pidfd)
            self.pidfd = -1
        self.proc = None
        self.pid = 0
        log(f"{self.name}: pid {pid} stopped ({sig.name})")

    def _gone(self) -> bool:
        if self.proc is not None:
            return self.proc.poll() is not None
        return start_time(self.pid) != self.start_ticks

    def state(self) -> dict[str, Any]:
        return {"pid": self.pid, "start_ticks": self.start_ticks, "digest": self.digest, "restarts": self.restarts,
                "last_exit": self.last_exit, "last_exit_at": self.last_exit_at}


class Keeper:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.programs: dict[str, Program] = {}
        self.applied = 0
        self.reload = True
        self.stopping = False

    def _read_programs(self) -> tuple[int, dict[str, dict[str, Any]]]:
        try:
            data = json.loads((self.folder / PROGRAMS_FILE).read_text())
        except (OSError, ValueError) as exc:
            log(f"{PROGRAMS_FILE} unreadable, keeping the programs as they are: {exc}")
            return self.applied, {name: p.spec for name, p in self.programs.items()}
        return int(data.get("version", 0)), dict(data.get("programs") or {})

    def apply(self, previous: dict[str, Any]) -> None:
        version, wanted = self._read_programs()
        for name in [n for n in self.programs if n not in wanted]:
            self.programs.pop(name).stop()
        for name, spec in wanted.items():
            current = self.programs.get(name)
            if current is not None and current.digest == spec_digest(spec):
                continue
            if current is not None:
                current.stop()
            program = Program(name, spec)
            if current is not None:
                program.restarts = current.restarts
            self.programs[name] = program
            old = previous.get(name) or {}
            if current is None and old.get("digest") == program.digest and \
                    program.adopt(int(old.get("pid") or 0), int(old.get("start_ticks") or 0)):
                program.restarts = int(old.get("restarts") or 0)
                program.last_exit, program.last_exit_at = old.get("last_exit", ""), old.get("last_exit_at", "")
                continue
            if current is None and old.get("pid") and start_time(int(old["pid"])) == old.get("start_ticks"):
                # left by an earlier keeper, but no longer what the deploy wants: stop it before its successor
                program.pid, program.start_ticks = int(old["pid"]), int(old["start_ticks"])
                program.spec = {**spec, "stop_signal": old.get("stop_signal") or spec.get("stop_signal")}
                program.stop()
                program.spec = spec
            program.start()
        self.applied = version

    def write_state(self) -> None:
        state = {"keeper_pid": os.getpid(), "applied": self.applied, "updated": _now(),
                 "programs": {name: {**p.state(), "stop_signal": p.spec.get("stop_signal")}
                              for name, p in self.programs.items()}}
        tmp = self.folder / f".{STATE_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        tmp.replace(self.folder / STATE_FILE)

    def run(self) -> int:
        lock = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            log("another keeper runs for this environment; exiting")
            return 0
        adj = os.environ.get("SEVENP_OOM_SCORE_ADJ", str(DEFAULT_OOM_SCORE_ADJ))
        try:
            Path("/proc/self/oom_score_adj").write_text(adj)
        except OSError as exc:
            log(f"oom_score_adj {adj} not set: {exc}")
        try:
            previous = json.loads((self.folder / STATE_FILE).read_text()).get("programs") or {}
        except (OSError, ValueError):
            previous = {}
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)

        def on_hup(*_: object) -> None:
            self.reload = True

        def on_term(*_: object) -> None:
            self.stopping = True

        signal.signal(signal.SIGHUP, on_hup)
        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # only to wake the select
        log(f"keeper {os.getpid()} for {self.folder} (oom_score_adj {adj})")
        while not self.stopping:
            changed = False
            if self.reload:
                self.reload = False
                try:
                    self.apply(previous)
                except Exception as exc:  # keep running what runs; the deploy sees `applied` not move
                    log(f"{PROGRAMS_FILE} not applied: {type(exc).__name__}: {exc}")
                previous = {}
                changed = True
            for program in self.programs.values():
                changed |= program.poll()
            now = time.monotonic()
            for program in self.programs.values():
                if not program.running() and now >= program.next_start and not self.stopping:
                    program.start()
                    changed = True
            if changed:
                self.write_state()
            waits = [p.next_start - time.monotonic() for p in self.programs.values() if not p.running()]
            timeout = max(0.0, min([1.0, *waits]))
            fds = [wake_r, *[p.pidfd for p in self.programs.values() if p.pidfd >= 0]]
            with contextlib.suppress(InterruptedError):
                select.select(fds, [], [], timeout)
            with contextlib.suppress(BlockingIOError, OSError):
                while os.read(wake_r, 512):
                    pass
        log("stopping (SIGTERM)")
        for program in reversed(list(self.programs.values())):
            program.stop()
        self.write_state()
        log("stopped")
        return 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        sys.stderr.write("usage: keeper.py <folder>\n")
        return 2
    return Keeper(Path(argv[1]).resolve()).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
