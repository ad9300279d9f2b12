"""What every family's assets share: the step failure with its command and output, the @asset
arguments of a stage, retries, fingerprints, markdown tables, and the one query for the latest
materialization of an asset's partition. Low in the layers: it imports no family."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.resources.processes import Outcome
from sevenp_pipeline.text import md_text, printable
from sevenp_pipeline.triggers.tags import TAG_FAILURE

MAX_FAILURE_TAG = 300  # characters of the run's failure tag (the runs list shows it whole)

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


def stage_spec(
    app: AppConfig, partitions: dg.PartitionsDefinition, key: dg.AssetKey, family: str, description: str,
    *, deps: Sequence[dg.AssetKey] = (), kinds: frozenset[str] = frozenset({"nodejs"}),
) -> dg.AssetSpec:
    """:func:`stage_asset_args` as the spec of a multi-asset's one asset."""
    args = stage_asset_args(app, partitions, key, family, description, kinds=kinds)
    return dg.AssetSpec(args.pop("key"), deps=list(deps), **args)


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


def latest_failure(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> dg.EventLogRecord | None:
    """The record of the latest failed-gate observation of ``key`` for ``partition`` (:func:`gated_result`)."""
    records = instance.fetch_observations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=5).records
    for record in records:
        observation = record.asset_observation
        if observation is not None and "failure" in observation.metadata:
            return record
    return None


def partition_metadata(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> dict[str, Any] | None:
    """Metadata of the latest materialization of ``key`` for ``partition`` (None: never materialized)."""
    record = latest_materialization(instance, key, partition)
    mat = record.asset_materialization if record is not None else None
    return None if mat is None else {k: v.value for k, v in mat.metadata.items()}


def failed_gates_line(results: Sequence[dg.AssetCheckResult]) -> str:
    """The failed gates' descriptions as one line: what a developer acts on, no stack trace."""
    return "; ".join(printable(r.description or f"{r.check_name} did not pass")
                     for r in results if not r.passed)


def tag_failure(context: dg.AssetExecutionContext, line: str) -> None:
    """Puts ``<stage>: line`` on the run as ``sevenp/failure`` unless an earlier stage already did:
    the runs list then says why the run failed. Stages that fail at once may race; one of them wins."""
    run = context.instance.get_run_by_id(context.run.run_id)
    if run is not None and run.tags.get(TAG_FAILURE):
        return
    text = f"{context.asset_key.path[-1]}: {line}"
    if len(text) > MAX_FAILURE_TAG:
        text = text[: MAX_FAILURE_TAG - 1] + "…"
    context.instance.add_run_tags(context.run.run_id, {TAG_FAILURE: text})


def gated_result(context: dg.AssetExecutionContext, *, metadata: dict[str, Any],
                 checks: Sequence[dg.AssetCheckResult], data_version: str | None = None,
                 failure_metadata: dict[str, Any] | None = None) -> Iterator[Any]:
    """What a gated stage records. Every gate passed: its materialization with the check results.
    A gate failed: the stage does not materialize (the commit counts as failed in Dagster's partition
    views and pickers). Its report is recorded as an observation of the asset for the commit, its
    checks as evaluated (per commit), and the step fails with one line naming what failed, which the
    run also carries as its ``sevenp/failure`` tag."""
    if all(r.passed for r in checks):
        yield dg.MaterializeResult(
            metadata=metadata, check_results=list(checks),
            data_version=dg.DataVersion(data_version) if data_version else None)
        return
    line = failed_gates_line(checks)
    yield dg.AssetObservation(asset_key=context.asset_key, partition=context.partition_key,
                              metadata={"failure": line, **metadata})
    yield from checks
    tag_failure(context, line)
    raise dg.Failure(description=f"{context.asset_key.path[-1]}: {line}",
                     metadata={**(failure_metadata or {}), **_links(metadata)}, allow_retries=False)


def _links(metadata: dict[str, Any]) -> dict[str, Any]:
    """The report and log links of a stage's metadata and its output's tail, for its step failure: the
    step says where to read more without opening the asset."""
    return {k: v for k, v in metadata.items()
            if isinstance(v, dg.UrlMetadataValue | dg.PathMetadataValue) or k == "output_tail"}
