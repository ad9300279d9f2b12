"""A stage on a worker where source_checkout did not run (a fresh run container re-executing a run
from failure, one stage materialized alone from the asset graph): it makes the checkout itself."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import dagster as dg

from sevenp_pipeline_tests.conftest import Pipeline, reachable_home
from sevenp_pipeline_tests.results import failure_text, metadata_of


def _on_new_worker(pipe: Pipeline, home: Path) -> Pipeline:
    """The same instance and remote, another SEVENP_HOME: no workspace, no git mirror, no caches."""
    return dataclasses.replace(pipe, settings=dataclasses.replace(pipe.settings, home=home))


def _messages(pipe: Pipeline, result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.user_message for e in pipe.instance.all_logs(result.run_id)]


def _workspace(pipe: Pipeline, sha: str) -> Path:
    return pipe.settings.workspaces_dir / pipe.key / sha


def test_a_stage_on_a_fresh_worker_recreates_the_checkout(make_pipeline) -> None:
    pipe = make_pipeline()
    sha = pipe.remote.push("develop")
    first = pipe.materialize(sha, "source_checkout")
    assert first.success, failure_text(first)
    made = metadata_of(first, "source_checkout")
    with reachable_home() as fresh:
        worker = _on_new_worker(pipe, fresh)
        assert not (worker.settings.workspaces_dir / pipe.key).exists()
        # Only the later stages, as "Re-execute from failure" or the asset graph launches them.
        result = worker.materialize(sha, "node_dependencies,lint_report")
        assert result.success, failure_text(result)
        assert metadata_of(result, "lint_report")["errors"] == 0
        recreated = [m for m in _messages(pipe, result) if "recreated the checkout" in m]
        # The install stage made it; lint (after it, on the same worker) found it there.
        assert len(recreated) == 1 and recreated[0].startswith("node_dependencies: "), recreated
        assert sha[:12] in recreated[0] and made["tree_hash"][:12] in recreated[0]
        # The very checkout source_checkout makes: same commit and tree, same owner and mode.
        here, there = _workspace(pipe, sha), _workspace(worker, sha)
        inputs = json.loads((there / "inputs.json").read_text())
        assert (inputs["sha"], inputs["tree"]) == (sha, made["tree_hash"])
        assert (there / "checkout.done").read_text() == f"{sha}\n"
        for rel in ("src", "src/package.json", "src/scripts"):
            a, b = (here / rel).stat(), (there / rel).stat()
            assert (b.st_uid, b.st_gid, b.st_mode) == (a.st_uid, a.st_gid, a.st_mode), rel
        assert (there / "src/package.json").read_bytes() == (here / "src/package.json").read_bytes()


def test_a_commit_gone_from_the_remote_fails_naming_it(make_pipeline) -> None:
    pipe = make_pipeline()
    sha = pipe.remote.commit("feat: never pushed", push_to=None)  # the remote never had it
    with reachable_home() as fresh:
        worker = _on_new_worker(pipe, fresh)
        result = worker.materialize(sha, "node_dependencies")
        assert not result.success
        text = failure_text(result)
        assert f"node_dependencies: no checkout of {sha[:12]} on this worker" in text, text
        assert f"commit {sha} is not on remote {pipe.remote.url}" in text, text
