"""The process runner: argv only, live redacted output, timeouts that kill the whole group."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from sevenp_pipeline.execution.cancellation import cancel_on
from sevenp_pipeline.locks import file_lock
from sevenp_pipeline.redaction import Redactor
from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessError, ProcessRunner
from sevenp_pipeline_tests.waiting import wait_until, wait_while


def test_shell_metacharacters_are_data(tmp_path: Path) -> None:
    runner = ProcessRunner()
    out = runner.run(ExecuteRequest(argv=["echo", "$(touch pwned)", "; rm -rf x", "`id`"], cwd=tmp_path,
                                    label="echo", capture=True))
    assert out.ok
    assert out.output == ("$(touch pwned) ; rm -rf x `id`",)
    assert not (tmp_path / "pwned").exists()


def test_string_argv_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="argv must be a non-empty list"):
        ExecuteRequest(argv="echo hi", cwd=tmp_path, label="x")


def test_output_streams_live_and_is_redacted(tmp_path: Path) -> None:
    seen: list[tuple[float, str]] = []
    log = tmp_path / "out.log"
    script = "import time\nfor i in range(3):\n  print('line', i, 'tok=s3cr3t-value-42', flush=True); time.sleep(0.4)"
    runner = ProcessRunner(log_flush_seconds=0.1)
    out = runner.run(
        ExecuteRequest(argv=["python3", "-c", script], cwd=tmp_path, label="py", env={"MY_TOKEN": "s3cr3t-value-42"},
                       log_path=log),
        log=lambda m: seen.append((time.monotonic(), m)),
    )
    assert out.ok
    text = "\n".join(m for _, m in seen)
    assert "s3cr3t-value-42" not in text and "s3cr3t-value-42" not in log.read_text()
    assert "tok=***" in text and "line 2 tok=***" in log.read_text()
    line_events = [t for t, m in seen if "line " in m]
    assert len(line_events) >= 2 and line_events[-1] - line_events[0] > 0.5  # arrived while running


def test_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = f"sleep 300 & echo $! > {pidfile}; wait"
    runner = ProcessRunner(kill_grace_seconds=1)
    started = time.monotonic()
    out = runner.run(ExecuteRequest(argv=["bash", "-c", script], cwd=tmp_path, label="hang", timeout_seconds=1))
    assert out.timed_out and not out.ok
    assert time.monotonic() - started < 15
    assert "timed out after its 1 s limit; killed after " in out.describe()
    grandchild = int(pidfile.read_text())
    wait_while(lambda: _running(grandchild), timeout=10, what=f"the grandchild {grandchild} to be gone")


def test_cancelled_step_kills_the_process_group_and_raises_interrupted(tmp_path: Path) -> None:
    """What the threaded executor does on termination: the step's event is set while it waits."""
    pidfile = tmp_path / "child.pid"
    cancel = threading.Event()
    lines: list[str] = []
    runner = ProcessRunner(kill_grace_seconds=1)
    request = ExecuteRequest(argv=["bash", "-c", f"sleep 300 & echo $! > {pidfile}; echo started; wait"],
                             cwd=tmp_path, label="hang")

    def cancel_once_started() -> None:
        try:
            wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), timeout=30, interval=0.05,
                       what=f"the child's pid in {pidfile}")
        finally:
            cancel.set()  # also after the timeout, as before: the step is not left waiting on `sleep 300`

    threading.Thread(target=cancel_once_started, daemon=True).start()
    with cancel_on(cancel), pytest.raises(dg.DagsterExecutionInterruptedError, match=r"hang: .* was killed"):
        runner.run(request, log=lines.append)
    child = int(pidfile.read_text())
    wait_while(lambda: _running(child), timeout=10, what=f"the child {child} to be gone")
    assert any("started" in line for line in lines) and "the run was terminated" in lines[-1]
    # Once cancelled, nothing new starts; another thread (another step) is not affected.
    with cancel_on(cancel), pytest.raises(dg.DagsterExecutionInterruptedError, match="not started"):
        runner.run(ExecuteRequest(argv=["true"], cwd=tmp_path, label="next"))
    assert runner.run(ExecuteRequest(argv=["true"], cwd=tmp_path, label="elsewhere")).ok


def test_cancelled_step_stops_waiting_for_a_lock(tmp_path: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with file_lock(tmp_path / "x.lock"), cancel_on(cancel), \
            pytest.raises(dg.DagsterExecutionInterruptedError, match="waiting for the lock on cache x"), \
            file_lock(tmp_path / "x.lock", what="cache x"):
        pass


def _running(pid: int) -> bool:
    """True for a live process; a killed one may linger as a zombie until init reaps it."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "State:\tZ" not in status


def test_missing_binary_names_the_stage(tmp_path: Path) -> None:
    with pytest.raises(ProcessError, match=r"lint: could not start `no-such-tool-xyz"):
        ProcessRunner().run(ExecuteRequest(argv=["no-such-tool-xyz"], cwd=tmp_path, label="lint"))


def test_check_raises_with_tail(tmp_path: Path) -> None:
    with pytest.raises(ProcessError, match=r"exited with code 3[\s\S]*boom"):
        ProcessRunner().check(ExecuteRequest(argv=["bash", "-c", "echo boom; exit 3"], cwd=tmp_path, label="x"))


def test_redactor_masks_uri_passwords_and_secretish_env() -> None:
    redact = Redactor()
    redact.add_from_env({"DB_PASSWORD": "hunter2hunter2", "PATH": "/usr/bin", "SHORT_TOKEN": "abc"})
    assert redact("pw=hunter2hunter2 path=/usr/bin") == "pw=*** path=/usr/bin"
    assert redact("postgresql://u:p4ss@h:5/db") == "postgresql://u:***@h:5/db"
    assert redact("abc") == "abc"  # too short to be worth masking
    ref = "docker://127.0.0.1:5000/sevenp/app@sha256:" + "a" * 64
    assert redact(ref) == ref  # an image reference is not a URI with a password
