"""What a finished in-process run recorded, read the same way by every pipeline test: the metadata
an asset materialized, the verdict of each check, which assets ran, and the step failures' text."""

from __future__ import annotations

import asyncio
from typing import Any

import dagster as dg
from dagster._core.loader import LoadingContextForTest


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The metadata of the first materialization of ``asset`` (its last key part) in ``result``, or,
    for a stage whose gate failed (it does not materialize), of the observation it recorded instead."""
    for event in result.get_asset_materialization_events():
        if event.asset_key.path[-1] == asset:
            return {k: _value(v) for k, v in event.materialization.metadata.items()}
    for event in result.get_asset_observation_events():
        if event.asset_key.path[-1] == asset:
            return {k: _value(v) for k, v in event.asset_observation_data.asset_observation.metadata.items()}
    raise AssertionError(f"{asset} was not materialized and recorded no failure")


def _value(value: dg.MetadataValue) -> Any:
    """A metadata value as tests compare it: a table as its rows (dicts), anything else as its value."""
    if isinstance(value, dg.TableMetadataValue):
        return [dict(record.data) for record in value.records]
    return value.value


def check_status(instance: dg.DagsterInstance, asset: dg.AssetKey, check: str, partition: str) -> str:
    """How Dagster shows ``check`` of ``asset`` for commit ``partition``: SUCCEEDED, FAILED, SKIPPED
    (planned, not evaluated, the run succeeded), EXECUTION_FAILED, IN_PROGRESS, or NONE."""
    history = instance.event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(asset, check), limit=20)
    for record in history:
        if record.partition == partition:
            return asyncio.run(record.resolve_status(LoadingContextForTest(instance))).value
    return "NONE"


def failed_stages(result: dg.ExecuteInProcessResult) -> set[str]:
    """The assets (last key part) whose gates failed in ``result``: observed with a failure, not materialized."""
    return {e.asset_key.path[-1] for e in result.get_asset_observation_events()
            if "failure" in e.asset_observation_data.asset_observation.metadata} - materialized(result)


def check_verdicts(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    """``{"<asset>.<check>": passed}`` for every check evaluated in ``result``."""
    return {
        f"{e.asset_check_evaluation_data.asset_key.path[-1]}.{e.asset_check_evaluation_data.check_name}":
            e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def materialized(result: dg.ExecuteInProcessResult) -> set[str]:
    """The assets (last key part) ``result`` materialized."""
    return {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}


def failure_text(result: dg.ExecuteInProcessResult) -> str:
    """Every step failure's description (or error), one per line."""
    return "\n".join(
        str(e.step_failure_data.user_failure_data.description if e.step_failure_data.user_failure_data
            else e.step_failure_data.error)
        for e in result.all_events if e.is_step_failure
    )
