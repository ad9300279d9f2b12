"""What a pull request changes against its base branch, for its comment, and the check of its title.

The figures compared are the ones the stages record as metadata: each test stage's coverage
(``coverage_<metric>_pct``, the metric its gate uses), ``vulnerability_report``'s findings (the
advisory ids of its ``findings`` table, else its ``vulnerabilities_<severity>`` counts) and
``container_image``'s ``size_bytes``. The base's figures are those of the latest successful pipeline
run of the base branch in the instance (:func:`base_figures`); a missing base run or figure is said,
never an error.

The title check is the app's commitlint stage's rule (``stages/commits.check_message`` with that
stage's types and header length), applied to the pull request's title: with squash merges the title
becomes the commit message on the base branch. An app without an enabled commitlint stage gets no
title check: nothing in its config asks for Conventional Commits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.devtools.stage_table import run_metadata
from sevenp_pipeline.forge.client import State
from sevenp_pipeline.stages.commits import check_message
from sevenp_pipeline.stages.gate_checks import commit_types
from sevenp_pipeline.triggers.tags import TAG_APP, TAG_BRANCH, TAG_COMMIT

IMAGE = "container_image"
VULNERABILITIES = "vulnerability_report"
COMMITLINT = "commitlint"
TITLE_CONTEXT = "pr-title"  # the status is <prefix>/pr-title
_SEVERITIES = ("critical", "high", "medium", "low", "unknown")
_MINUS = "\u2212"
_SHOWN_IDS = 8
_BASE_RUNS_READ = 20


@dataclass(frozen=True)
class PullInfo:
    """What the forge says of a pull/merge request: its base (target) branch and title."""

    base: str
    title: str
    head: str = ""  # the request's source branch ("" for a fork's or when not said)

    @classmethod
    def from_answer(cls, kind: str, answer: object) -> PullInfo | None:
        """GitHub ``GET /pulls/{n}`` (``base.ref``, ``title``), GitLab ``GET /merge_requests/{iid}``
        (``target_branch``, ``title``); None when the answer is not one."""
        if not isinstance(answer, dict) or not isinstance(answer.get("title"), str):
            return None
        base = answer.get("target_branch") if kind == "gitlab" else (answer.get("base") or {}).get("ref")
        head = answer.get("source_branch") if kind == "gitlab" else (answer.get("head") or {}).get("ref")
        return cls(base if isinstance(base, str) else "", answer["title"], head if isinstance(head, str) else "")


@dataclass(frozen=True)
class BaseRun:
    """The base branch's latest successful run that recorded any compared figure."""

    run_id: str
    sha: str
    metadata: dict[str, dict[str, Any]]


def commitlint_stage(app: AppConfig) -> str | None:
    return next((n for n in app.stage_names() if app.stages[n].kind == COMMITLINT), None)


def title_check(app: AppConfig, title: str) -> tuple[State, str] | None:
    """``(state, one line)`` of the title against the app's commitlint rule; None without that stage."""
    stage = commitlint_stage(app)
    if stage is None:
        return None
    problem = check_message(title, types=commit_types(app, stage),
                            max_header_length=app.stage(stage).gates.max_header_length)
    if problem:
        return "failure", f"the title is not a conventional commit: {problem}"
    return "success", "the title is a conventional commit"


def compared(app: AppConfig, metadata: Mapping[str, Mapping[str, Any]]) -> bool:
    """Whether the run recorded any figure the comment compares."""
    return bool(_coverage(app, metadata) or VULNERABILITIES in metadata
                or isinstance(metadata.get(IMAGE, {}).get("size_bytes"), int))


def base_figures(instance: dg.DagsterInstance, app: AppConfig, branch: str, job_names: set[str]) -> BaseRun | None:
    """The newest successful pipeline run of ``branch`` (tagged ``sevenp/branch`` and ``sevenp/app``)
    that recorded a compared figure, with what its assets recorded; None when there is none."""
    records = instance.get_run_records(filters=dg.RunsFilter(
        tags={TAG_BRANCH: branch, TAG_APP: app.name}, statuses=[dg.DagsterRunStatus.SUCCESS]),
        limit=_BASE_RUNS_READ)
    for record in records:  # newest first
        run = record.dagster_run
        if run.job_name not in job_names:
            continue
        metadata = run_metadata(instance, run.run_id)
        if compared(app, metadata):
            sha = run.tags.get(TAG_COMMIT) or run.tags.get("dagster/partition") or ""
            return BaseRun(run.run_id, sha, metadata)
    return None


def _coverage(app: AppConfig, metadata: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """``{stage: coverage %}`` of each stage that recorded coverage, by the metric its gate uses."""
    out = {}
    for stage, meta in metadata.items():
        spec = app.stages.get(stage)
        metric = spec.gates.coverage_metric if spec is not None else "lines"
        value = meta.get(f"coverage_{metric}_pct")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[stage] = float(value)
    return out


def _signed(value: float, digits: int = 1) -> str:
    text = f"{abs(value):.{digits}f}"
    return f"+{text}" if value > 0 else f"{_MINUS}{text}"


def _coverage_lines(app: AppConfig, base: str, head: Mapping[str, Any], old: Mapping[str, Any]) -> list[str]:
    mine, theirs = _coverage(app, head), _coverage(app, old)
    lines = []
    for stage, pct in mine.items():
        label = f"coverage ({stage})" if len(mine) > 1 else "coverage"
        if stage not in theirs:
            lines.append(f"{label} {pct:g}% ({base} recorded none)")
        elif round(pct - theirs[stage], 1) == 0:
            lines.append(f"{label} {pct:g}% (as on {base})")
        else:
            lines.append(f"{label} {pct:g}% ({_signed(pct - theirs[stage])} against {base})")
    return lines


def findings(meta: Mapping[str, Any]) -> dict[str, str] | None:
    """``{advisory id: severity}`` from the stage's ``findings`` table (``asset_helpers.md_table``:
    advisory, severity, …); None when it is missing or cut short (``…and N more``)."""
    table = meta.get("findings")
    if not isinstance(table, str) or "…and " in table:
        return None
    out = {}
    for line in table.splitlines()[2:]:  # the header and its rule
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) >= 2 and cells[0]:
            out[cells[0]] = cells[1].lower()
    return out


def _counts(meta: Mapping[str, Any]) -> dict[str, int]:
    return {s: int(meta.get(f"vulnerabilities_{s}", 0) or 0) for s in _SEVERITIES}


def _vulnerability_line(base: str, head: Mapping[str, Any], old: Mapping[str, Any] | None) -> str:
    total = int(head.get("vulnerabilities_total", 0) or 0)
    if old is None:
        return f"vulnerabilities {total}: {base} recorded no scan to compare with"
    mine, theirs = findings(head), findings(old)
    if mine is not None and theirs is not None:
        new = sorted(set(mine) - set(theirs), key=lambda i: (_SEVERITIES.index(mine[i]) if mine[i] in _SEVERITIES
                                                              else len(_SEVERITIES), i))
        fixed = len(set(theirs) - set(mine))
        gone = f", {fixed} fixed" if fixed else ""
        if not new:
            return f"no new vulnerabilities against {base} ({total} in all{gone})"
        shown = ", ".join(f"{i} ({mine[i]})" for i in new[:_SHOWN_IDS])
        more = f" and {len(new) - _SHOWN_IDS} more" if len(new) > _SHOWN_IDS else ""
        return f"{len(new)} new vulnerabilit{'y' if len(new) == 1 else 'ies'} against {base}: {shown}{more}{gone}"
    before, now = _counts(old), _counts(head)
    more_of = [f"+{now[s] - before[s]} {s}" for s in _SEVERITIES if now[s] > before[s]]
    if not more_of:
        return f"no more vulnerabilities than {base} by severity ({total} in all)"
    return f"vulnerabilities {total}, more than {base}: {', '.join(more_of)}"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def _image_line(base: str, head: Mapping[str, Any], old: Mapping[str, Any] | None) -> str | None:
    size = head.get("size_bytes")
    if not isinstance(size, int):
        return None
    before = old.get("size_bytes") if old is not None else None
    if not isinstance(before, int) or before <= 0:
        return f"image {_size(size)} ({base} recorded no image size)"
    if size == before:
        return f"image {_size(size)} (as on {base})"
    change = size - before
    sign = "+" if change > 0 else _MINUS
    return f"image {_size(size)} ({sign}{_size(abs(change))}, {_signed(100 * change / before)}% against {base})"


def comparison(app: AppConfig, base: str, head: Mapping[str, Mapping[str, Any]], base_run: BaseRun | None,
               base_url: str = "") -> list[str]:
    """The comment's lines comparing the run's figures (``head``: asset → metadata) with the base's:
    a heading, then one line per figure the run recorded; [] when it recorded none."""
    if not compared(app, head):
        return []
    if not base:
        return ["**Against the base branch**: no base branch to compare with (the forge did not name it)."]
    if base_run is None:
        return [f"**Against `{base}`**: no run of {base} to compare with."]
    old = base_run.metadata
    link = f"[run {base_run.run_id[:8]}]({base_url})" if base_url else f"run {base_run.run_id[:8]}"
    lines = _coverage_lines(app, base, head, old)
    if VULNERABILITIES in head:
        lines.append(_vulnerability_line(base, head[VULNERABILITIES], old.get(VULNERABILITIES)))
    if IMAGE in head and (image := _image_line(base, head[IMAGE], old.get(IMAGE))):
        lines.append(image)
    return [f"**Against `{base}`** ({link} of `{base_run.sha[:12]}`):", *(f"- {line}" for line in lines)]

