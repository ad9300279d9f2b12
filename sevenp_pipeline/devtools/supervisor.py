"""Keeps the orchestrator's own long-lived processes up: restarts each one that dies.

``make dev`` and ``make demo`` (through ``devstack serve``) run the stack as separate processes
under this supervisor instead of ``dagster dev``, which stops everything when any one of its
children dies (a ``kill -9`` of the daemon took the webserver down and failed the run in flight):

- the **code server** (``dagster code-server start``: the location ``sevenp_pipeline`` on a
  loopback gRPC port; it reloads the code when the UI asks, and launches run workers);
- the **webserver** and the **daemon**, each loading a workspace file (under DAGSTER_HOME) that
  points at the code server with ``grpc_server:``. Both watch that server and reconnect to a
  restarted one on their own;
- the read-only **artifact server** (resources/artifact_server.py), which serves the links in the
  metadata;
- the **image registry** (``LocalRegistry``, detached: it outlives the stack): probed every second;
  when its process is gone, or it has not answered for ``registry_unhealthy_seconds``, it is started
  again. A registry stopped on purpose (``make stop``) is left stopped.

Each dead process is started again at once, then after a back-off while it keeps dying within
``stable_seconds`` of its start (0.5 s, doubling, at most 8 s); after ``max_quick_deaths`` such deaths in a row the
supervisor gives up and stops the stack with an error naming the process, so a broken install
does not spin for ever. Every restart is logged with the exit status.

The supervised processes get ``oom_score_adj`` -900 (``oom_score_adj``; root only, skipped with a
message otherwise), so under memory pressure the kernel kills a stage (+1000 in the sandbox) long
before the orchestrator. Children inherit the value: run workers (children of the code server)
put themselves back to 0 when they start executing (execution/threads.py), and every stage
command raises its own to +1000 in the sandbox.

Why a small supervisor of our own and not supervisord (pip ``supervisor``): the loop already
existed (``serve`` had to watch ``dagster dev`` for a taken port and a dead webserver); the
registry is not a child of anything we start (it outlives the stack, found through its state file)
and its health is an HTTP probe with credentials, which supervisord cannot express without an
event-listener plugin; the OOM priority, die-with-parent and the "UI never came up" exit status are
a few lines here and would each be a wrapper script around supervisord. Supervisord would also be
one more long-lived process with its own config, socket and pid file to keep right.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sevenp_pipeline.oom import OOM_SCORE_ADJ, set_oom_score_adj
from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessRunner, RunningProcess

Say = Callable[[str], None]


class SupervisorGaveUp(RuntimeError):
    pass


@dataclass
class Service:
    """One supervised process: how to start it; its current process and restart history."""

    name: str
    request: ExecuteRequest
    process: RunningProcess | None = None
    started_at: float = 0.0
    next_start: float = 0.0
    quick_deaths: int = 0
    restarts: int = 0
    groups: set[int] = field(default_factory=set)  # process groups it ever had (orphans keep them)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None


class Supervisor:
    """Starts services, restarts the ones that die, and stops them all on :meth:`stop`."""

    def __init__(self, services: list[Service], *, runner: ProcessRunner, say: Say,
                 oom_adj: int | None = OOM_SCORE_ADJ, stable_seconds: float = 30.0,
                 first_backoff: float = 0.5, max_backoff: float = 8.0, max_quick_deaths: int = 8) -> None:
        self.services = {s.name: s for s in services}
        self.runner = runner
        self.say = say
        self.oom_adj = oom_adj
        self.stable_seconds = stable_seconds
        self.first_backoff = first_backoff
        self.max_backoff = max_backoff
        self.max_quick_deaths = max_quick_deaths
        self._oom_warned = False
        self._reaped_at = 0.0

    def start_all(self) -> None:
        for service in self.services.values():
            self.start(service)

    def start(self, service: Service) -> None:
        service.process = self.runner.start(service.request)
        service.started_at = time.monotonic()
        service.groups.add(service.process.pid)  # start_new_session: its pid is its group
        self.protect(service.process.pid)

    def protect(self, pid: int) -> None:
        if self.oom_adj is None:
            return
        ok = set_oom_score_adj(pid, self.oom_adj, say=None if self._oom_warned else self.say)
        self._oom_warned = self._oom_warned or not ok

    def check(self) -> None:
        """One pass: restart what died and is due. Raises :class:`SupervisorGaveUp`."""
        now = time.monotonic()
        for service in self.services.values():
            process = service.process
            if process is None and not service.started_at:
                continue  # not started yet
            if process is not None and process.alive():
                if service.quick_deaths and now - service.started_at > self.stable_seconds:
                    service.quick_deaths = 0
                continue
            if process is not None:  # it just died: decide when to start it again
                code = process.proc.returncode
                status = f"killed by signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                quick = now - service.started_at < self.stable_seconds
                service.quick_deaths = service.quick_deaths + 1 if quick else 1
                if service.quick_deaths > self.max_quick_deaths:
                    raise SupervisorGaveUp(
                        f"the {service.name} (pid {process.pid}) exited ({status}) {service.quick_deaths} times in "
                        f"a row within {self.stable_seconds:.0f}s of starting; giving up (see its output above)")
                # at once the first time; then 0.5 s, doubling while it keeps dying young
                delay = 0.0 if service.quick_deaths == 1 else min(
                    self.first_backoff * 2 ** (service.quick_deaths - 2), self.max_backoff)
                service.next_start = now + delay
                service.process = None
                self.say(f"the {service.name} (pid {process.pid}) exited ({status}); restarting it in {delay:.1f}s")
                continue
            if now >= service.next_start:
                self.start(service)
                service.restarts += 1
                self.say(f"restarted the {service.name}: pid {service.pid} (restart {service.restarts})")
        if now - self._reaped_at >= 1.0:  # a walk over /proc: once a second is enough
            self._reaped_at = now
            reap_orphans({s.pid for s in self.services.values() if s.pid is not None})

    def stop(self, *, grace: float = 3.0) -> None:
        """Stops every service at once (SIGTERM to each process group, SIGKILL after ``grace``
        seconds), and whatever is left in the groups of earlier incarnations (e.g. a run worker
        whose code server was killed)."""
        groups = {g for service in self.services.values() for g in service.groups}
        live = [s.process for s in self.services.values() if s.process is not None and s.process.alive()]
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while any(p.alive() for p in live) and time.monotonic() < deadline:
            time.sleep(0.05)
        for group in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGKILL)
        for process in live:
            process.stop()  # reaps it (SIGKILL already sent)
        reap_orphans(set())


def reap_orphans(keep: set[int]) -> None:
    """Reaps exited children that are not ``keep`` (ours to poll): processes re-parented to us as
    the subreaper (a run worker whose code server died), so none stays a zombie."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in keep:
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) == me:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(int(entry.name), os.WNOHANG)


def become_subreaper() -> bool:
    """``prctl(PR_SET_CHILD_SUBREAPER)``: orphans of our children (a run worker whose code server
    was killed) are re-parented to us, not to init, so :meth:`Supervisor.stop` still finds them."""
    import ctypes  # noqa: PLC0415

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(36, 1, 0, 0, 0) == 0  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        return False


class RegistryWatch:
    """Probes the local image registry every ``interval`` seconds on a thread of its own (a start
    can wait for the registry's file lock while a pipeline holds it; the other services must not).

    Restarts it when its process is gone, or when it has not answered for ``unhealthy_seconds``.
    Leaves it alone when nothing ever started it or ``make stop`` stopped it (``wanted`` false in
    its state file)."""

    def __init__(self, registry: object, *, say: Say, protect: Callable[[int], None],
                 interval: float = 1.0, unhealthy_seconds: float = 10.0) -> None:
        from sevenp_pipeline.resources.registries.local import LocalRegistry  # noqa: PLC0415

        assert isinstance(registry, LocalRegistry)
        self.registry = registry
        self.say = say
        self.protect = protect
        self.interval = interval
        self.unhealthy_seconds = unhealthy_seconds
        self.restarts = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="registry-watch", daemon=True)
        self._protected: int | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def probe(self) -> None:
        """One probe (the loop's body; tests call it directly)."""
        state = self.registry.read_state()
        if state is None or not state.wanted:
            self._bad_since = None
            return
        pid = self.registry.running_pid()
        if pid is not None and self.registry.healthy():
            self._bad_since = None
            if pid != self._protected:
                self.protect(pid)
                self._protected = pid
            return
        now = time.monotonic()
        if pid is not None:  # alive but not answering: give it a while (a big push can slow it)
            self._bad_since = self._bad_since or now
            if now - self._bad_since < self.unhealthy_seconds:
                return
            what = f"has not answered GET /v2/ for {now - self._bad_since:.0f}s"
        else:
            what = f"(pid {state.pid}) is gone"
        self.say(f"the image registry {what}; starting it again")
        address = self.registry.ensure_running()
        self._bad_since = None
        self.restarts += 1
        new_pid = self.registry.running_pid()
        if new_pid is not None:
            self.protect(new_pid)
            self._protected = new_pid
        self.say(f"the image registry answers again on {address} (pid {new_pid})")

    _bad_since: float | None = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.probe()
            except Exception as exc:  # keep watching; say why this probe failed
                self.say(f"the image registry could not be restarted: {exc}")


# What identifies each supervised process among the children of ``devstack serve``.
MARKERS = {"code server": "code-server", "webserver": "dagster-webserver", "daemon": "sevenp_pipeline.devtools.daemon",
           "artifact server": "sevenp_pipeline.cockpit.server"}


def service_pids(serve_pid: int) -> dict[str, int]:
    """``{service name: pid}`` of the live supervised processes under ``serve_pid`` (Linux /proc)."""
    found: dict[str, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(fields[1]) != serve_pid or fields[0] == "Z" or len(argv) < 2:
            continue
        for name, marker in MARKERS.items():
            if any(arg.decode(errors="replace").endswith(marker) or arg == marker.encode() for arg in argv[:3]):
                found[name] = int(entry.name)
    return found
