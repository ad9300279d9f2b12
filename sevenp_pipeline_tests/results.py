"""What a finished in-process run recorded, read the same way by every pipeline test: the metadata
an asset materialized, the verdict of each check, which assets ran, and the step failures' text."""

from __future__ import annotations

from typing import Any

import dagster as dg


def metadata_of(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, Any]:
    """The metadata of the first materialization of ``asset`` (its last key part) in ``result``."""
    for event in result.get_asset_materialization_events():
        if event.asset_key.path[-1] == asset:
            return {k: v.value for k, v in event.materialization.metadata.items()}
    raise AssertionError(f"{asset} was not materialized")


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
