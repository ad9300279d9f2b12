"""What every family's assets share: the step failure with its command and output, the @asset
arguments of a stage, retries, fingerprints, markdown tables, and the one query for the latest
materialization of an asset's partition. Low in the layers: it imports no family."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.resources.processes import Outcome
from sevenp_pipeline.text import md_text, printable

# Bumped when the meaning of a stage's output changes; part of every data version.
STAGE_CODE_VERSION = "1"


def fingerprint(*parts: Any) -> str:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


def failure(message: str, outcome: Outcome | None = None, *, retry: bool = False, **metadata: Any) -> dg.Failure:
    """A step failure whose metadata holds the command, exit code and output tail.

    ``retry`` lets the asset's RetryPolicy try again: only for transient (network) failures;
    a missing script or a failing test is not made better by trying again.
    """
    meta: dict[str, Any] = dict(metadata)
    if outcome is not None:
        meta.update(
            command=outcome.command,
            exit_code=outcome.exit_code if outcome.exit_code is not None else -1,
            timed_out=outcome.timed_out,
            duration_s=round(outcome.duration, 2),
            output_tail=dg.MetadataValue.md("```\n" + outcome.tail_text(40) + "\n```"),
        )
        if outcome.log_path:
            meta["log"] = dg.MetadataValue.path(str(outcome.log_path))
    return dg.Failure(description=message, metadata=meta, allow_retries=retry)


def retry_policy(retries: int) -> dg.RetryPolicy | None:
    """``stages.<name>.retries``: retries with backoff, only for failures marked transient
    (``failure(..., retry=True)``); a deterministic failure is not made better by trying again."""
    if retries <= 0:
        return None
    return dg.RetryPolicy(max_retries=retries, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def stage_asset_args(
    app: AppConfig, partitions: dg.PartitionsDefinition, key: dg.AssetKey, family: str, description: str,
    *, kinds: frozenset[str] = frozenset({"nodejs"}),
) -> dict[str, Any]:
    """The @asset arguments every stage shares: the app's group and commit partitions, the stage
    family as a tag, and the code version that is part of every data version."""
    return {
        "key": key,
        "group_name": app.key,
        "partitions_def": partitions,
        "description": description,
        "kinds": set(kinds),
        "tags": {"sevenp/stage": family},
        "code_version": STAGE_CODE_VERSION,
    }


def md_table(header: list[str], rows: list[list[Any]], limit: int = 50) -> str:
    def cell(v: Any) -> str:
        return md_text(printable(str(v))).replace("|", "\\|")[:300]

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows[:limit]]
    if len(rows) > limit:
        lines.append(f"\n…and {len(rows) - limit} more")
    return "\n".join(lines)


def latest_materialization(instance: dg.DagsterInstance, key: dg.AssetKey,
                           partition: str) -> dg.EventLogRecord | None:
    """The record of the latest materialization of ``key`` for ``partition`` (None: never materialized)."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1).records
    return records[0] if records and records[0].asset_materialization is not None else None


def partition_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> dict[str, Any] | None:
    """Metadata of the latest materialization of ``key`` for ``partition`` (None: never materialized)."""
    record = latest_materialization(instance, key, partition)
    mat = record.asset_materialization if record is not None else None
    return None if mat is None else {k: v.value for k, v in mat.metadata.items()}
