"""Output and reports bounded (issue 15): a stage's output reaches the run's event log up to
``limits.log_mb``, is stored once (the artifact store, linked from the workspace and the stage
cache), fails the stage past ``limits.output_mb``; a report above ``limits.report_mb`` is refused
before it is parsed.

One pipeline run holds the three stages (a tiny app, real git, npm, node, the stage sandbox); a
second commit of the same tree restores the flooding stage from the stage cache.
"""

from __future__ import annotations

import os
import sys
from collections import defaultdict
from pathlib import Path

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from sevenp_pipeline import test_reports
from sevenp_pipeline.resources.processes import MAX_LINE_BYTES, MB, ExecuteRequest, Outcome, ProcessRunner
from sevenp_pipeline_tests.conftest import Pipeline
from sevenp_pipeline_tests.results import artifact_url

# Prints N MB of 4 KB lines (write(2) straight to the pipe: node's own stdout would buffer it all),
# or with --file writes an N MB file.
FLOOD_JS = """\
const fs = require('fs');
const args = process.argv.slice(2);
if (args[0] === '--file') {
  fs.mkdirSync(require('path').dirname(args[1]), {recursive: true});
  fs.writeFileSync(args[1], Buffer.alloc(Number(args[2]) * 1024 * 1024, 'x'));
  process.exit(0);
}
const line = Buffer.from('x'.repeat(4095) + '\\n');
for (let i = 0; i < Number(args[0]) * 256; i++) {
  let done = 0;
  while (done < line.length) {
    try { done += fs.writeSync(1, line, done); } catch (e) { if (e.code !== 'EAGAIN') throw e; }
  }
}
console.error('flood: done');
"""
STAGES = """
stages:
  big_output:
    kind: command
    command: [node, scripts/flood.js, "200"]
    needs: [node_dependencies]
    inputs: [scripts/flood.js]
  too_much:
    kind: command
    command: [node, scripts/flood.js, "200"]
    needs: [node_dependencies]
    limits: {output_mb: 20, log_mb: 0.5}
  big_report:
    kind: test
    command: [node, scripts/flood.js, --file, reports/big.xml, "100"]
    junit: reports/big.xml
    needs: [node_dependencies]
"""
SELECTION = "source_checkout,node_dependencies,big_output,too_much,big_report"


def _failures(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {e.step_key.split("__")[-1]: str(e.step_failure_data.user_failure_data.description
                            if e.step_failure_data.user_failure_data else e.step_failure_data.error)
            for e in result.all_events if e.is_step_failure}


def _messages(pipe: Pipeline, run_id: str, stage: str) -> list[str]:
    return [e.user_message for e in pipe.instance.all_logs(run_id)
            if not e.is_dagster_event and e.user_message.startswith(f"[{stage}] ")]


def _big_files(root: Path, size: int) -> dict[tuple[int, int], list[Path]]:
    """Files of at least ``size`` bytes under ``root``, by inode: one inode = one copy on disk."""
    found: dict[tuple[int, int], list[Path]] = defaultdict(list)
    for folder, _, names in os.walk(root):
        for name in names:
            info = (Path(folder) / name).lstat()
            if info.st_size >= size:
                found[(info.st_dev, info.st_ino)].append(Path(folder) / name)
    return found


@pytest.mark.integration
def test_output_capped_in_the_event_log_stored_once_and_limits_named(make_pipeline, monkeypatch) -> None:
    parsed: list[Path] = []
    real_junit = test_reports.junit_summary
    monkeypatch.setattr(test_reports, "junit_summary", lambda path: parsed.append(path) or real_junit(path))
    pipe = make_pipeline(STAGES)
    pipe.remote.write("scripts/flood.js", FLOOD_JS)
    sha = pipe.remote.commit("chore: a flooding script")
    result = pipe.materialize(sha, SELECTION)
    failures = _failures(result)

    # 200 MB printed, under the default output_mb (256): the stage passes.
    assert "big_output" not in failures, failures
    messages = _messages(pipe, result.run_id, "big_output")
    logged = sum(len(m) for m in messages)
    assert 3.5 * MB < logged < 4.2 * MB, logged  # log_mb: 4 by default
    store_log = pipe.settings.artifacts_dir / pipe.key / sha / "logs" / "big_output.log"
    truncation = f"output truncated at 4 MB in the run log; full log: {artifact_url(pipe.settings, store_log)}"
    assert sum(truncation in m for m in messages) == 1 and truncation in messages[-1]
    # The full log: 200 MB, redacted and stored once. The workspace's log and the stage cache's
    # blob are the same file (hard links), nothing else in the home holds a copy.
    assert store_log.stat().st_size == 200 * MB + len("flood: done\n")
    copies = _big_files(pipe.settings.home, 200 * MB)
    assert len(copies) == 1, copies
    (paths,) = copies.values()
    workspace_log = pipe.settings.workspaces_dir / pipe.key / sha / "logs" / "big_output.log"
    assert store_log in paths and workspace_log in paths
    assert any(p.is_relative_to(pipe.settings.stage_cache_dir / "blobs") for p in paths), paths
    # What the UI reads for the run (every event, serialized) stays a few MB for 200 + 20 MB of output.
    events = pipe.instance.all_logs(result.run_id)
    assert sum(len(serialize_value(e)) for e in events) < 6 * MB

    # Past its output_mb the command is killed and the stage fails naming the limit; its run log
    # stopped at its own log_mb.
    assert "limits.output_mb = 20" in failures["too_much"]
    assert "set stages.too_much.limits.output_mb to change it" in failures["too_much"], failures["too_much"]
    assert "passed the 20 MB limit" in failures["too_much"]
    assert sum(len(m) for m in _messages(pipe, result.run_id, "too_much")) < 0.6 * MB
    kept = pipe.settings.artifacts_dir / pipe.key / sha / "logs" / "too_much.log"
    assert 20 * MB <= kept.stat().st_size < 21 * MB

    # A 100 MB JUnit file is refused by name and size before any parser reads it.
    assert failures["big_report"] == ("big_report: reports/big.xml is 100.0 MB, over limits.report_mb = 50 MB: "
                                      "not read (stages.big_report.limits.report_mb to change)")
    assert parsed == []
    assert not (pipe.settings.artifacts_dir / pipe.key / sha / "reports").exists()

    # A commit changing nothing the stage reads (its inputs): restored from the stage cache, and
    # its log stored for the new commit as one more link to the same bytes.
    pipe.remote.write("README.md", "# again\n")
    second_sha = pipe.remote.commit("docs: a readme")
    second = pipe.materialize(second_sha, "source_checkout,node_dependencies,big_output")
    assert second.success
    (restored,) = [e.materialization for e in second.get_asset_materialization_events()
                   if e.asset_key.path[-1] == "big_output"]
    assert restored.metadata["restored_from"].value == sha
    second_log = pipe.settings.artifacts_dir / pipe.key / second_sha / "logs" / "big_output.log"
    assert restored.metadata["log"].value == artifact_url(pipe.settings, second_log)
    assert second_log.read_bytes()[-12:] == b"flood: done\n"
    (paths,) = _big_files(pipe.settings.home, 200 * MB).values()
    assert second_log in paths


# -- the process runner alone ----------------------------------------------------------------------
def _run(tmp_path: Path, code: str, runner: ProcessRunner | None = None, **request) -> tuple[Outcome, list[str]]:
    sent: list[str] = []
    outcome = (runner or ProcessRunner()).run(ExecuteRequest(
        argv=[sys.executable, "-c", code], cwd=tmp_path, label="flood", log_path=tmp_path / "flood.log",
        timeout_seconds=60, **request), log=sent.append)
    return outcome, sent


def test_a_long_line_is_cut_and_the_rest_only_counted(tmp_path: Path) -> None:
    outcome, sent = _run(tmp_path, "import sys; sys.stdout.write('y' * (3 << 20) + '\\nafter\\n')")
    assert outcome.ok and outcome.output_bytes == (3 << 20) + 7
    cut = "y" * MAX_LINE_BYTES + " [line cut at 64 KB]"
    assert outcome.tail == (cut, "after")
    assert (tmp_path / "flood.log").read_text() == cut + "\nafter\n"
    assert "\n".join(sent[1:]).count("y") == MAX_LINE_BYTES  # sent[0] is the command


def test_the_run_log_stops_at_its_limit_with_one_line_naming_the_full_log(tmp_path: Path) -> None:
    outcome, sent = _run(tmp_path, "for i in range(20000): print('line', i, 'x' * 100)",
                         log_limit_bytes=256 * 1024, full_log="file:///store/logs/flood.log")
    text = "\n".join(sent)
    assert outcome.ok and outcome.log_truncated
    assert 200 * 1024 < len(text) < 260 * 1024
    assert text.count("output truncated at 0.25 MB in the run log; full log: file:///store/logs/flood.log") == 1
    assert "line 19999" not in text and outcome.tail[-1].startswith("line 19999")  # the tail is whole
    assert (tmp_path / "flood.log").read_text().count("\n") == 20000  # the full log too


def test_past_its_output_limit_the_command_is_killed_and_the_limit_named(tmp_path: Path) -> None:
    outcome, _ = _run(tmp_path, "while True: print('x' * 1000)", output_limit_bytes=2 * MB,
                      output_limit_note="limits.output_mb = 2; set stages.s.limits.output_mb to change it")
    assert not outcome.ok and outcome.output_exceeded and not outcome.timed_out
    assert outcome.describe().endswith("was killed: its output passed the 2 MB limit "
                                       "(limits.output_mb = 2; set stages.s.limits.output_mb to change it)")
    assert 2 * MB <= (tmp_path / "flood.log").stat().st_size < 2 * MB + MAX_LINE_BYTES
    assert outcome.duration < 30  # killed, not timed out at 60 s


def test_captured_output_is_bounded(tmp_path: Path) -> None:
    outcome, _ = _run(tmp_path, "for i in range(30000): print(i, 'z' * 100)", ProcessRunner(capture_limit_mb=1),
                      capture=True)
    assert outcome.ok and outcome.capture_truncated
    assert sum(len(line) + 1 for line in outcome.output) <= MB
    assert outcome.output[0].startswith("0 ") and outcome.tail[-1].startswith("29999 ")
