"""The daily workspace retention run: an op job (no assets, so no app's asset job selects it)."""

# No `from __future__ import annotations`: Dagster reads the context and resource annotations.
import dagster as dg

from sevenp_pipeline.housekeeping.retention import WorkspaceRetention

RETENTION_CRON = "30 3 * * *"  # daily, at a quiet hour


@dg.op(out=dg.Out(dg.Nothing), description="Removes per-commit workspaces no run, branch or deployment needs, "
                                           "and stage results unused for a while.")
def prune_workspaces(context: dg.OpExecutionContext, workspace_retention: WorkspaceRetention) -> dg.Output:
    report = workspace_retention.prune(context.instance, log=context.log.info)
    return dg.Output(None, metadata={
        "removed": len(report.removed),
        "bytes_freed": report.bytes_freed,
        "kept": len(report.kept),
        "removed_workspaces": dg.MetadataValue.json(
            [{"workspace": f"{r.app_key}/{r.sha}", "bytes_freed": r.bytes_freed, "why": r.why}
             for r in report.removed]),
        "kept_because": dg.MetadataValue.json(report.kept),
        "kept_bytes": dg.MetadataValue.json(report.kept_bytes),
        "home_bytes": report.home_bytes,
        "home_budget_bytes": report.budget_bytes,
        **({"stage_cache_results_removed": cache.manifests_removed,
            "stage_cache_files_removed": cache.blobs_removed,
            "stage_cache_bytes_freed": cache.bytes_freed,
            "stage_cache_results_kept": cache.manifests_kept} if (cache := report.stage_cache) else {}),
    })


@dg.job(executor_def=dg.in_process_executor, tags={"sevenp/housekeeping": "retention"},
        description="Workspace retention (sevenp_pipeline/housekeeping/retention.py); also `make prune`.")
def workspace_retention_job() -> None:
    prune_workspaces()


workspace_retention_schedule = dg.ScheduleDefinition(
    name="workspace_retention_schedule",
    job=workspace_retention_job,
    cron_schedule=RETENTION_CRON,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Prunes old workspaces once a day.",
)


def build_housekeeping_definitions() -> dg.Definitions:
    """The job and its schedule; the ``workspace_retention`` resource comes with the deployment's set."""
    return dg.Definitions(jobs=[workspace_retention_job], schedules=[workspace_retention_schedule])
