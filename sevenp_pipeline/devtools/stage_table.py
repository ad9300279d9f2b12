"""The demo's table (`make demo`): one line per stage of a run, read back from the Dagster instance:
status, duration and the stage's key figure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg
from dagster._core.execution.stats import StepEventStatus

from sevenp_pipeline.stages.kinds import KINDS

# The figures of a declared stage are its kind's (stages/kinds.py, by the `kind` metadata) ...
# ... and for the built-in assets, by name.
KEY_FIGURES: dict[str, list[tuple[str, str]]] = {
    "source_checkout": [("changed_files_count", "{} changed files")],
    "container_image": [("digest", "{:.19}"), ("reused", "reused: {}"), ("size_bytes", "{} bytes"),
                        ("layer_count", "{} layers")],
    "sbom": [("component_count", "{} components")],
    "vulnerability_report": [("vulnerabilities_total", "{} vulnerabilities"), ("blocking", "{} blocking"),
                             ("suppressed", "{} suppressed")],
    "dependency_report": [("vulnerabilities_total", "{} vulnerabilities"), ("blocking", "{} blocking")],
    "license_report": [("checked", "{} checked"), ("denied", "{} denied"), ("unknown", "{} unknown")],
    "secret_scan": [("secrets_in_source", "{} in source"), ("secrets_in_image", "{} in image")],
    "provenance": [("keyid", "signed by {:.12}")],
    "promoted_image": [("tags", "tags {}"), ("refused", "not promoted: {}")],
}


@dataclass(frozen=True)
class StageRow:
    stage: str
    status: str
    duration_s: float | None
    figure: str


def stage_rows(instance: dg.DagsterInstance, run_id: str) -> list[StageRow]:
    """Rows in execution order for every step of the run (steps that never ran show NOT RUN)."""
    stats = {s.step_key: s for s in instance.get_run_step_stats(run_id)}
    metadata: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    failure_meta: dict[str, dict[str, Any]] = {}
    records = instance.get_records_for_run(run_id, of_type={dg.DagsterEventType.ASSET_MATERIALIZATION,
                                                            dg.DagsterEventType.STEP_FAILURE,
                                                            dg.DagsterEventType.ASSET_CHECK_EVALUATION}).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is None:
            continue
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            mat = event.step_materialization_data.materialization
            metadata[mat.asset_key.path[-1]] = {k: v.value for k, v in mat.metadata.items()}
        elif event.event_type == dg.DagsterEventType.STEP_FAILURE and event.step_key:
            data = event.step_failure_data
            text = (data.user_failure_data.description if data.user_failure_data else None) or (
                data.error.message if data.error else "failed")
            failures.setdefault(event.step_key, text.strip().splitlines()[0][:110])
            if data.user_failure_data:
                failure_meta[event.step_key] = {k: v.value for k, v in data.user_failure_data.metadata.items()}
        elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            check = event.asset_check_evaluation_data
            if not check.passed and check.severity == dg.AssetCheckSeverity.ERROR and event.step_key:
                # The gate says more than the step failure it causes: it wins.
                failures[event.step_key] = f"gate {check.check_name} failed: {check.description}"
    order = _step_order(instance, instance.get_run_by_id(run_id))
    rows = []
    for step_key in order:
        asset = step_key.split("__", 1)[-1]
        stat = stats.get(step_key)
        meta = metadata.get(asset, {})
        status = stat.status.value if stat and stat.status else "NOT RUN"
        if stat and stat.status == StepEventStatus.SUCCESS and step_key in failures:
            status = "FAILURE"
        if meta.get("skipped"):
            status = "SKIPPED"
        duration = (stat.end_time - stat.start_time) if stat and stat.end_time and stat.start_time else None
        figure = failures.get(step_key) or _figure(asset, meta)
        rows.append(StageRow(asset, status, duration, figure))
        if asset.endswith("_deployment"):
            rows += _deploy_checks(meta or failure_meta.get(step_key, {}))
    return rows


def run_metadata(instance: dg.DagsterInstance, run_id: str) -> dict[str, dict[str, Any]]:
    """``{asset name: its metadata values}`` for every asset the run materialized (the last one wins),
    read as :func:`stage_rows` reads them: the figures a pull request's comment compares with its base."""
    out: dict[str, dict[str, Any]] = {}
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    for record in records:
        event = record.event_log_entry.dagster_event
        mat = event.step_materialization_data.materialization if event else None
        if mat is not None:
            out[mat.asset_key.path[-1]] = {k: v.value for k, v in mat.metadata.items()}
    return out


def _deploy_checks(meta: dict[str, Any]) -> list[StageRow]:
    """A deployment's health check and smoke tests, as rows under it."""
    rows = []
    for label, passed, summary in (("  health check", "health_passed", "health"),
                                   ("  smoke tests", "smoke_passed", "smoke_tests")):
        if passed in meta:
            rows.append(StageRow(label, "PASSED" if meta[passed] else "FAILED", None, str(meta.get(summary, ""))))
    return rows


def _step_order(instance: dg.DagsterInstance, run: dg.DagsterRun | None) -> list[str]:
    """The run's steps in the plan's (topological) order."""
    if run is None or run.execution_plan_snapshot_id is None:
        return []
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    return list(plan.step_keys_to_execute)


def _figure(asset: str, meta: dict[str, Any]) -> str:
    if meta.get("skipped"):
        return str(meta.get("reason", "skipped"))
    if asset.endswith("_deployment") and meta.get("status") == "live":
        return (f"live at {meta.get('url')}: {str(meta.get('commit'))[:12]}, {str(meta.get('image_digest'))[:19]}"
                + (f", switched in {meta['switch_s']}s" if "switch_s" in meta else ""))
    parts = []
    kind = KINDS.get(str(meta.get("kind")))
    figures = list(kind.figures if kind else []) or KEY_FIGURES.get(asset, [])
    for key, fmt in figures:
        if key in meta:
            parts.append(fmt.format(meta[key]))
    if meta.get("restored_from"):
        parts.append(f"restored from {str(meta['restored_from'])[:12]}")
    return ", ".join(parts)


def format_table(rows: list[StageRow]) -> str:
    width = max([len(r.stage) for r in rows] + [5])
    lines = [f"{'STAGE':<{width}}  {'STATUS':<8}  {'TIME':>7}  KEY FIGURE"]
    for r in rows:
        duration = f"{r.duration_s:6.1f}s" if r.duration_s is not None else "      -"
        lines.append(f"{r.stage:<{width}}  {r.status:<8}  {duration}  {r.figure}")
    return "\n".join(lines)
