"""The process runner: the only code in sevenp_pipeline that starts a subprocess.

A request goes in (argument list, working dir, env, timeout), an outcome comes out. Commands are
always argument lists, never shell strings, so a branch named ``$(touch pwned)`` stays data.
Output is read line by line, redacted, appended to a log file, kept as a tail for failure
metadata and forwarded live to the run's log.

Everything held is bounded, whatever a command prints: a line longer than ``MAX_LINE_BYTES`` is cut
(its rest is counted, never held); at most ``log_limit_bytes`` reach the run's log (the event log
the UI reads), then one line says where the full log is; the log file stops at
``output_limit_bytes``, where the command is killed; ``capture`` keeps at most ``capture_limit_mb``.

On timeout the whole process group is killed; so it
is when the run is terminated while a step of the threaded executor waits on the command
(execution/cancellation.py): ``run`` then raises ``DagsterExecutionInterruptedError``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import queue
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import dagster as dg
from pydantic import Field

from sevenp_pipeline.execution.cancellation import cancelled, current_event, raise_if_cancelled
from sevenp_pipeline.files import open_private
from sevenp_pipeline.redaction import RedactingStream, Redactor
from sevenp_pipeline.sandbox import LimitHit, SandboxError, SandboxSpec

LogFn = Callable[[str], None]

MB = 1024 * 1024
MAX_LINE_BYTES = 64 * 1024  # a longer line is cut here, in the run log and in the log file
QUEUED_LINES = 256  # lines read ahead of the consumer: the reader waits (and so does the command) beyond
EVENT_BYTES = 256 * 1024  # at most this much output in one run-log message


class ProcessError(Exception):
    """A command could not be started, exited non-zero or timed out."""

    def __init__(self, message: str, outcome: Outcome | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True)
class ExecuteRequest:
    """What to run. ``label`` names the stage or service in every message about it."""

    argv: Sequence[str]
    cwd: Path
    label: str
    timeout_seconds: float = 600.0
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Sequence[str] = ()
    secrets: Sequence[str] = ()
    log_path: Path | None = None
    user: str | None = None
    die_with_parent: bool = False  # for servers: killed when the process that started them dies
    capture: bool = False  # keep every output line in Outcome.output, not just the tail
    # False: the command gets ``env`` only, nothing of this process's environment (stages, servers)
    inherit_env: bool = True
    # A pushed branch's code: run in the stage sandbox (sevenp_pipeline/sandbox), dying with us
    sandbox: SandboxSpec | None = None
    # Output (bytes read) forwarded to ``log``; None: the runner's ``log_limit_mb``. Past it one line
    # names ``full_log`` (a link or name; default: the log file) and the rest goes to the log file only.
    log_limit_bytes: int | None = None
    full_log: str = ""
    # Output (bytes read) the command may print; past it the command is killed and the outcome says
    # so with ``output_limit_note`` (how to change it). None: no limit (the log file grows with it).
    output_limit_bytes: int | None = None
    output_limit_note: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.argv, str) or not self.argv:
            raise ValueError(f"{self.label}: argv must be a non-empty list of arguments, not {self.argv!r}")
        object.__setattr__(self, "argv", tuple(str(a) for a in self.argv))


@dataclass(frozen=True)
class Outcome:
    """What happened. ``tail`` and ``command`` are already redacted."""

    label: str
    command: str
    exit_code: int | None
    started: float
    ended: float
    tail: tuple[str, ...]
    timed_out: bool = False
    log_path: Path | None = None
    output: tuple[str, ...] = ()
    timeout_seconds: float | None = None  # the limit it was given (it is killed some time after)
    # Processes a sandboxed command left running when it exited ("name: command"); they were killed.
    leftovers: tuple[str, ...] = ()
    output_bytes: int = 0  # what the command printed, cut lines counted whole
    log_truncated: bool = False  # the run's log got only the first log_limit_bytes of it
    # Killed for printing more than ``output_limit_bytes`` (request.output_limit_bytes)
    output_exceeded: bool = False
    output_limit_bytes: int | None = None
    output_limit_note: str = ""
    capture_truncated: bool = False  # ``output`` holds only the first capture_limit_mb
    # The sandbox limits it ran into (memory, processes, file size): the command failed by them.
    limit_hits: tuple[LimitHit, ...] = ()

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out and not self.output_exceeded and not self.limit_hits

    @property
    def duration(self) -> float:
        return self.ended - self.started

    def describe(self) -> str:
        if self.output_exceeded:
            note = f" ({self.output_limit_note})" if self.output_limit_note else ""
            return (f"{self.label}: `{self.command}` was killed: its output passed the "
                    f"{_megabytes(self.output_limit_bytes)} limit{note}")
        if self.timed_out:
            return (f"{self.label}: `{self.command}` timed out after its {_seconds(self.timeout_seconds)} limit; "
                    f"killed after {self.duration:.1f} s")
        if self.limit_hits:
            return f"{self.label}: {self.limit_hits[0].describe()}"
        return f"{self.label}: `{self.command}` exited with code {self.exit_code} after {self.duration:.1f}s"

    def tail_text(self, lines: int = 30) -> str:
        return "\n".join(self.tail[-lines:])


def _with_parent_death_signal(argv: Sequence[str]) -> list[str]:
    """Prefixes ``setpriv --pdeathsig KILL`` (util-linux): the server dies if its parent does.

    Not a ``preexec_fn``: running Python between fork and exec in a threaded process (the gRPC
    code server evaluating sensors) crashed the child with SIGSEGV.
    """
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--", *argv] if setpriv else list(argv)


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


class RunningProcess:
    """A long-lived child (a test database, a registry) started by :meth:`ProcessRunner.start`."""

    def __init__(self, proc: subprocess.Popen[bytes], request: ExecuteRequest, grace: float) -> None:
        self.proc = proc
        self.request = request
        self._grace = grace

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int | None:
        if self.alive():
            _kill_group(self.proc, self._grace)
        return self.proc.returncode


class ProcessRunner(dg.ConfigurableResource):
    """Runs external commands as argument lists with live, redacted, line-level logs."""

    tail_lines: int = Field(default=60, description="Lines of output kept for failure metadata.")
    kill_grace_seconds: float = Field(default=5.0, description="SIGTERM to SIGKILL delay on timeout.")
    log_flush_seconds: float = Field(
        default=0.5, description="Output lines are forwarded to the run log in batches this often."
    )
    log_limit_mb: float = Field(
        default=4, gt=0, description="Output of one command forwarded to the run log when the request sets none.")
    capture_limit_mb: float = Field(
        default=64, gt=0, description="Output kept in Outcome.output of a capture=True command.")

    def build_env(self, request: ExecuteRequest) -> tuple[dict[str, str], Redactor]:
        env = dict(os.environ) if request.inherit_env and request.sandbox is None else {}
        env.update(request.env)
        redactor = Redactor(request.secrets)
        redactor.add_from_env(env, request.secret_env)
        return env, redactor

    def run(self, request: ExecuteRequest, *, log: LogFn | None = None) -> Outcome:
        """Runs to completion or timeout. Never raises for a non-zero exit: check ``ok``.

        Raises ``DagsterExecutionInterruptedError`` after killing the command's process group when
        the calling step is cancelled (its run was terminated).
        """
        env, redact = self.build_env(request)
        command = redact(" ".join(_quote(a) for a in request.argv))
        cancel = current_event()
        raise_if_cancelled(f"{request.label}: `{command}` not started", cancel)
        lines: queue.Queue[_Chunk | None] = queue.Queue(maxsize=QUEUED_LINES)
        stop_reading = threading.Event()
        started = time.time()
        logfile = _open_log(request.log_path)
        try:
            proc = self._popen(request, env, stdout=subprocess.PIPE)
        except (OSError, SandboxError) as exc:
            msg = redact(f"{request.label}: could not start `{command}`: {getattr(exc, 'strerror', None) or exc}")
            _write(logfile, msg + "\n")
            _close(logfile)
            raise ProcessError(msg) from exc
        if log:
            log(f"[{request.label}] $ {command}")
        reader = threading.Thread(target=_pump, args=(proc, lines, stop_reading), daemon=True)
        reader.start()
        out = _Output(
            tail=deque(maxlen=self.tail_lines), logfile=logfile, capture=request.capture,
            capture_limit=int(self.capture_limit_mb * MB),
            events=_EventLog(log, f"[{request.label}] ", self._log_limit(request), self.log_flush_seconds,
                             full_log=request.full_log or (str(request.log_path) if request.log_path else "")),
            # A line that could end in the first half of a secret waits for the next one.
            stream=redact.stream(),
        )
        try:
            timed_out, interrupted = self._watch(request, proc, lines, out, started + request.timeout_seconds, cancel)
            proc.wait()
        finally:
            if proc.poll() is None:  # interrupted (run terminated): leave nothing behind
                _kill_group(proc, self.kill_grace_seconds)
            stop_reading.set()  # a reader waiting on a full queue gives up
            reader.join(timeout=5)
            out.close()
        if interrupted:
            message = f"{request.label}: `{command}` was killed: the run was terminated"
            if log:
                log(f"[{request.label}] {message}")
            raise dg.DagsterExecutionInterruptedError(message)
        outcome = Outcome(
            label=request.label,
            command=command,
            exit_code=None if timed_out else proc.returncode,
            started=started,
            ended=time.time(),
            tail=tuple(out.tail),
            timed_out=timed_out,
            log_path=request.log_path,
            output=tuple(out.captured),
            timeout_seconds=request.timeout_seconds,
            leftovers=_leftovers(request, redact),
            output_bytes=out.output_bytes,
            log_truncated=out.events.truncated,
            output_exceeded=out.exceeded,
            output_limit_bytes=request.output_limit_bytes,
            output_limit_note=request.output_limit_note,
            capture_truncated=out.capture_truncated,
            limit_hits=request.sandbox.read_limit_hits() if request.sandbox else (),
        )
        if log and not outcome.ok:
            log(f"[{request.label}] {outcome.describe()}")
        return outcome

    def _watch(self, request: ExecuteRequest, proc: subprocess.Popen[bytes], lines: queue.Queue[_Chunk | None],
               out: _Output, deadline: float, cancel: threading.Event | None) -> tuple[bool, bool]:
        """Reads the command's output until it ends, killing it past its deadline or output limit, or
        when the run is cancelled. Returns (timed out, interrupted)."""
        timed_out = False
        killed_at = 0.0
        limit = request.output_limit_bytes
        while True:
            try:
                chunk = lines.get(timeout=0.1)
            except queue.Empty:
                chunk = _Chunk(None, 0)
            if chunk is None:
                return timed_out, False
            out.feed(chunk)
            if limit is not None and not out.exceeded and out.output_bytes > limit:
                out.stop_at_limit(f"output passed the {_megabytes(limit)} limit: the command is killed")
                _kill_group(proc, 0)
                killed_at = time.monotonic()
            out.events.flush_if_due()
            if not timed_out and not out.exceeded and time.time() > deadline:
                timed_out = True
                _kill_group(proc, self.kill_grace_seconds)
                killed_at = time.monotonic()
            if killed_at and time.monotonic() - killed_at > 10:
                return timed_out, False  # a grandchild that left the group still holds the pipe: stop reading
            if cancelled(cancel):
                _kill_group(proc, self.kill_grace_seconds)
                return timed_out, True

    def _log_limit(self, request: ExecuteRequest) -> int:
        return request.log_limit_bytes if request.log_limit_bytes is not None else int(self.log_limit_mb * MB)

    def check(self, request: ExecuteRequest, *, log: LogFn | None = None) -> Outcome:
        """Like :meth:`run`, but raises :class:`ProcessError` (with the output tail) on failure."""
        outcome = self.run(request, log=log)
        if not outcome.ok:
            raise ProcessError(f"{outcome.describe()}\n{outcome.tail_text()}", outcome)
        return outcome

    def start(self, request: ExecuteRequest) -> RunningProcess:
        """Starts a background server whose output goes to ``request.log_path``."""
        raise_if_cancelled(f"{request.label}: not started", current_event())
        env, _ = self.build_env(request)
        logfile = _open_log(request.log_path) or Path(os.devnull).open("wb")  # noqa: SIM115
        try:
            proc = self._popen(request, env, stdout=logfile)
        except OSError as exc:
            raise ProcessError(f"{request.label}: could not start {request.argv[0]}: {exc}") from exc
        finally:
            logfile.close()
        return RunningProcess(proc, request, self.kill_grace_seconds)

    def _popen(self, request: ExecuteRequest, env: dict[str, str], stdout) -> subprocess.Popen[bytes]:
        argv = request.sandbox.wrap(request.argv) if request.sandbox else list(request.argv)
        if request.die_with_parent or request.sandbox:
            argv = _with_parent_death_signal(argv)
        return subprocess.Popen(
            argv,
            cwd=request.cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            user=request.user,
            group=_primary_group(request.user),
            extra_groups=[] if request.user else None,
        )


def _seconds(value: float | None) -> str:
    return "?" if value is None else f"{value:g} s"


def _leftovers(request: ExecuteRequest, redact: Redactor) -> tuple[str, ...]:
    if request.sandbox is None:
        return ()
    return tuple(redact(f"{p['name']}: {p['command']}") for p in request.sandbox.read_leftovers())


def _primary_group(user: str | None) -> int | None:
    if user is None:
        return None
    return pwd.getpwnam(user).pw_gid


@dataclass(frozen=True)
class _Chunk:
    """What the reader hands on: a line (without its newline; None for the rest of a cut line, only
    counted) and the bytes it took on the pipe."""

    text: str | None
    size: int


def _pump(proc: subprocess.Popen[bytes], lines: queue.Queue[_Chunk | None], stop: threading.Event) -> None:
    """Reads lines of at most MAX_LINE_BYTES; the rest of a longer line is counted, not kept."""
    assert proc.stdout is not None

    def put(item: _Chunk | None) -> bool:
        while not stop.is_set():
            try:
                lines.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    cutting = False  # inside a line already cut
    try:
        while raw := proc.stdout.readline(MAX_LINE_BYTES):
            whole = raw.endswith(b"\n")
            if cutting:
                item = _Chunk(None, len(raw))
            elif whole:
                item = _Chunk(raw[:-1].decode("utf-8", errors="replace"), len(raw))
            else:  # the first MAX_LINE_BYTES of a longer line (or a last line without a newline)
                text = raw.decode("utf-8", errors="replace")
                if len(raw) == MAX_LINE_BYTES:
                    text += f" [line cut at {MAX_LINE_BYTES // 1024} KB]"
                item = _Chunk(text, len(raw))
            cutting = not whole
            if not put(item):
                return
    finally:
        proc.stdout.close()
        put(None)


@dataclass
class _Output:
    """Where a running command's redacted output goes: the failure tail, the capture (up to
    ``capture_limit`` bytes), the log file and the run log; the log file and capture stop at the
    output limit."""

    tail: deque[str]
    events: _EventLog
    logfile: BinaryIO | None
    stream: RedactingStream
    capture: bool
    capture_limit: int
    captured: list[str] = field(default_factory=list)
    captured_bytes: int = 0
    output_bytes: int = 0
    exceeded: bool = False
    capture_truncated: bool = False

    def feed(self, chunk: _Chunk) -> None:
        self.output_bytes += chunk.size
        if chunk.text is not None and not self.exceeded:
            self._keep(self.stream.feed(chunk.text))

    def stop_at_limit(self, note: str) -> None:
        """The output limit was passed: what is held back is kept, then only the note."""
        self._keep(self.stream.flush())
        self.exceeded = True
        _write(self.logfile, f"[{note}]\n")
        self.events.add(note)

    def close(self) -> None:
        if not self.exceeded:
            self._keep(self.stream.flush())
        self.events.flush()
        _close(self.logfile)

    def _keep(self, cleaned: list[str]) -> None:
        for clean in cleaned:
            self.tail.append(clean)
            if self.capture and not self.capture_truncated:
                self.captured_bytes += len(clean) + 1
                if self.captured_bytes > self.capture_limit:
                    self.capture_truncated = True
                else:
                    self.captured.append(clean)
            self.events.add(clean)
            if not self.exceeded:
                _write(self.logfile, clean + "\n")


class _EventLog:
    """Forwards output lines to the run's log in batches, up to ``limit`` bytes of output; then one
    line naming the full log, and nothing more."""

    def __init__(self, log: LogFn | None, prefix: str, limit: int, every: float, *, full_log: str) -> None:
        self.log, self.prefix, self.limit, self.every, self.full_log = log, prefix, limit, every, full_log
        self.pending: list[str] = []
        self.pending_bytes = 0
        self.sent = 0
        self.truncated = False
        self.last = time.monotonic()

    def add(self, line: str) -> None:
        if self.log is None or self.truncated:
            return
        size = len(line.encode("utf-8", errors="replace")) + len(self.prefix) + 1
        if self.sent + self.pending_bytes + size > self.limit:
            self.truncated = True
            where = f"; full log: {self.full_log}" if self.full_log else ""
            self.pending.append(f"output truncated at {_megabytes(self.limit)} in the run log{where}")
            self.flush()
            return
        self.pending.append(line)
        self.pending_bytes += size
        if self.pending_bytes >= EVENT_BYTES:
            self.flush()

    def flush_if_due(self) -> None:
        if self.pending and time.monotonic() - self.last >= self.every:
            self.flush()

    def flush(self) -> None:
        if self.pending and self.log is not None:
            self.log(self.prefix + ("\n" + self.prefix).join(self.pending))
        self.sent += self.pending_bytes
        self.pending.clear()
        self.pending_bytes = 0
        self.last = time.monotonic()


def _megabytes(value: int | None) -> str:
    return "?" if value is None else f"{value / MB:g} MB"


def _open_log(path: Path | None):
    return None if path is None else open_private(path)  # 0600: a log may hold what redaction missed


def _write(logfile, text: str) -> None:
    if logfile is not None:
        logfile.write(text.encode("utf-8", errors="replace"))


def _close(logfile) -> None:
    if logfile is not None:
        logfile.close()


def _quote(arg: str) -> str:
    """For display only: commands are never run through a shell."""
    return shlex.quote(arg)
