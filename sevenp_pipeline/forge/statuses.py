"""What the forge should show for one run: a status per stage, per group context, and for the run.

Read from the run's stage table (``devtools/stage_table.stage_rows``: the same rows ``make demo`` prints),
so a stage's description is the one-line figure or failure the cockpit shows ("1 of 95 tests failed:
…", "94 passed, coverage 100%"). A stage the run has not reached is ``pending``; once the run ended,
a stage it never reached is ``error`` ("not run"), so a required context never stays pending or turns
green without having run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.devtools.stage_table import StageRow
from sevenp_pipeline.forge.client import CommitStatus, DeployState, State
from sevenp_pipeline.forge.compare import TITLE_CONTEXT, commitlint_stage

ACTIVE = frozenset({dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
                    dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING})
_DONE = ("success", "skipped")


def _stage_state(row: StageRow, active: bool, canceled: bool) -> tuple[State, str]:
    if row.status == "SUCCESS":
        return "success", row.figure or "passed"
    if row.status == "SKIPPED":
        return "skipped", f"skipped: {row.figure}" if row.figure else "skipped"
    if row.status == "FAILURE":
        return "failure", row.figure or "failed"
    if row.status == "IN_PROGRESS":
        return ("running", "running") if active else ("error", "stopped before it finished")
    if active:
        return "pending", "waiting for the stages it needs"
    return "error", "not run: the run was canceled" if canceled else "not run: a stage it needs failed"


def is_deploy_step(stage: str) -> bool:
    return stage.endswith("_deployment") or stage == "release_notes"


def deployment_states(run: dg.DagsterRun, rows: Sequence[StageRow]) -> dict[str, tuple[DeployState, str]]:
    """``{environment: (state, description)}`` for each deployment step of the run that started."""
    active = run.status in ACTIVE
    out: dict[str, tuple[DeployState, str]] = {}
    for row in rows:
        if not row.stage.endswith("_deployment"):
            continue
        env = row.stage.removesuffix("_deployment")
        if row.status == "IN_PROGRESS":
            out[env] = ("in_progress", "deploying") if active else ("error", "stopped before it finished")
        elif row.status == "SUCCESS":
            out[env] = ("success", row.figure or "live")
        elif row.status == "FAILURE":
            out[env] = ("failure", row.figure or "failed")
    return out


def run_statuses(app: AppConfig, run: dg.DagsterRun, rows: Sequence[StageRow], target_url: str,
                 links: Mapping[str, str] | None = None,
                 title: tuple[State, str] | None = None) -> list[CommitStatus]:
    """Every status the run's commit should carry now: stages, then groups, then ``<prefix>/pipeline``.
    Deployments are not commit statuses (they are the forge's deployments): a run of deploy steps only
    posts none, so a deploy never overwrites the commit's pipeline result. ``links`` gives a stage's status
    another link than the run (GitLab: the vulnerability report's SARIF, which it cannot ingest).
    ``title`` is a pull request's title check (``compare.title_check``): ``<prefix>/pr-title``, counted in
    each group that covers the app's commitlint stage (``code-quality`` by default), not in the pipeline."""
    rows = [r for r in rows if not is_deploy_step(r.stage)]
    if not rows:
        return []
    prefix = app.forge.context_prefix
    active = run.status in ACTIVE
    canceled = run.status in (dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.CANCELING)
    stages = {r.stage: _stage_state(r, active, canceled) for r in rows if not r.stage.startswith(" ")}
    out = [CommitStatus(f"{prefix}/{stage}", state, text, (links or {}).get(stage, target_url))
           for stage, (state, text) in stages.items()]
    checked = dict(stages)
    if title is not None:
        out.append(CommitStatus(f"{prefix}/{TITLE_CONTEXT}", title[0], title[1], target_url))
        checked[TITLE_CONTEXT] = title
    for group, members in app.forge_groups().items():
        present = [m for m in members if m in stages]
        if title is not None and commitlint_stage(app) in members:
            present.append(TITLE_CONTEXT)
        if present:
            state, text = _group(present, checked)
            out.append(CommitStatus(group, state, text, target_url))
    if active:
        finished = sum(1 for s, _ in stages.values() if s in _DONE)
        out.append(CommitStatus(f"{prefix}/pipeline", "pending", f"running: {finished} of {len(stages)} stages done",
                                target_url))
    elif run.status == dg.DagsterRunStatus.SUCCESS:
        out.append(CommitStatus(f"{prefix}/pipeline", "success", f"{len(stages)} stages passed", target_url))
    else:
        failed = [s for s, (state, _) in stages.items() if state == "failure"]
        text = ("canceled" if canceled else
                f"failed: {failed[0]}: {stages[failed[0]][1]}" if failed else "failed")
        out.append(CommitStatus(f"{prefix}/pipeline", "error" if canceled else "failure", text, target_url))
    return out


def _group(members: list[str], stages: dict[str, tuple[State, str]]) -> tuple[State, str]:
    bad = [m for m in members if stages[m][0] in ("failure", "error")]
    if bad:
        first = stages[bad[0]]
        return "failure", f"{len(bad)} of {len(members)} failed: {bad[0]}: {first[1]}"
    waiting = [m for m in members if stages[m][0] in ("pending", "running")]
    if waiting:
        return "pending", f"{len(members) - len(waiting)} of {len(members)} done"
    skipped = sum(1 for m in members if stages[m][0] == "skipped")
    return "success", f"{len(members) - skipped} passed" + (f", {skipped} skipped" if skipped else "")


_ICON = {"success": "✅", "skipped": "⏭️", "failure": "❌", "error": "⛔", "pending": "⏳", "running": "🔄"}


def comment_marker(app: AppConfig) -> str:
    """What finds the app's one comment on a pull request again (an HTML comment: not rendered)."""
    return f"<!-- sevenp_pipeline:{app.name} -->"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|").replace("`", "'")[:300] or " "


def pr_comment(app: AppConfig, run: dg.DagsterRun, sha: str, statuses: Sequence[CommitStatus],
               against: Sequence[str] = ()) -> str:
    """The pull request's comment for ``run``: the outcome, a link to the run, one table row per stage
    with its one-line figure or failure (failing tests by name, coverage, vulnerabilities, image size, as
    the stage reports them), the title check, and ``against``: the lines comparing the run with its base
    branch (``compare.comparison``)."""
    prefix = f"{app.forge.context_prefix}/"
    title = next((s for s in statuses if s.context == f"{prefix}{TITLE_CONTEXT}"), None)
    stages = [s for s in statuses if s.context.startswith(prefix) and s is not title
              and s.context != f"{prefix}pipeline"]
    overall = next((s for s in statuses if s.context == f"{prefix}pipeline"), None)
    state = overall.state if overall else "pending"
    headline = {"success": "passed", "failure": "failed", "error": "was canceled"}.get(state, "is running")
    bad = [s for s in stages if s.state in ("failure", "error")]
    lines = [comment_marker(app),
             f"### {_ICON.get(state, '⏳')} {app.name}: the pipeline {headline} on `{sha[:12]}`",
             "",
             f"[Run {run.run_id[:8]}]({overall.target_url if overall else ''})"
             + (f" · {len(bad)} of {len(stages)} stages failed" if bad else f" · {len(stages)} stages"),
             "",
             "| stage | state | result |",
             "|---|---|---|"]
    lines += [f"| {s.context.removeprefix(prefix)} | {_ICON.get(s.state, '')} {s.state} | {_cell(s.description)} |"
              for s in stages]
    if against:
        lines += ["", *against]
    if title is not None:
        lines += ["", f"Title: {_ICON.get(title.state, '')} {_cell(title.description)}"]
    groups = [s for s in statuses if not s.context.startswith(prefix)]
    if groups:
        lines += ["", "Required checks: " + ", ".join(f"{_ICON.get(g.state, '')} `{g.context}`" for g in groups)]
    lines += ["", "<sub>Edited in place by sevenp_pipeline on each run of this pull request.</sub>"]
    return "\n".join(lines)
