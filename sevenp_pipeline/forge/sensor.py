"""The forge status sensor: keeps the commit statuses of an app's pipeline runs up to date on its forge.

One sensor per app with a ``forge:`` section, ticking every 2 s. It reads the runs of the app's
pipeline (the CI job and *Materialize* runs from the asset graph) that are in progress or changed
since the last tick, computes what each run's commit should show (:mod:`sevenp_pipeline.forge.statuses`)
and posts only what changed since it last posted. A sensor, not code in the stages: reporting can
never fail or slow a stage, a run worker needs no forge token, and a forge that is down costs one
skipped tick (the next one posts what is still missing).

A pull-request run (tagged ``sevenp/pr``) also keeps the request's one comment up to date: the
stage table with each stage's one-line result, written when the run is first seen and edited when it
ends; the same comment is edited by every later run of the request (found by a hidden marker if the
cursor lost its id), never a new one per push.

The cursor holds, per run, the (state, description) last posted for each context, and ``!auth`` for a
run whose token the forge refused (said once, then that run is left alone); a finished run is kept
for ten minutes after its last post, then dropped. ``comments`` maps a request's number to its
comment id and the creation time of the run it shows.
"""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
import datetime as dt
import json
import time
from typing import Any

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.devtools.stage_table import stage_rows
from sevenp_pipeline.forge.client import ForgeClient
from sevenp_pipeline.forge.statuses import ACTIVE, comment_marker, pr_comment, run_statuses
from sevenp_pipeline.triggers.identity import IMPLICIT_ASSET_JOB
from sevenp_pipeline.triggers.tags import TAG_APP, TAG_COMMIT, TAG_PR

FIRST_LOOK_SECONDS = 600.0  # the first tick also reports runs that ended this long ago
KEEP_SECONDS = 600.0
_AUTH = "!auth"
_COMMENTED = "!comment"
_DONE_AT = "!done"
_MAX_RUNS = 50


def forge_sensor_name(app: AppConfig) -> str:
    return f"{app.key}_forge_status_sensor"


def _runs(instance: dg.DagsterInstance, app: AppConfig, job_names: set[str],
          since: float) -> list[tuple[dg.DagsterRun, float]]:
    """The app's pipeline runs in progress or changed since ``since``, oldest first, with their creation time."""
    tags = {TAG_APP: app.name}
    active = instance.get_run_records(filters=dg.RunsFilter(tags=tags, statuses=list(ACTIVE)), limit=_MAX_RUNS)
    changed = instance.get_run_records(filters=dg.RunsFilter(
        tags=tags, updated_after=dt.datetime.fromtimestamp(since, tz=dt.timezone.utc)), limit=_MAX_RUNS)
    seen: dict[str, tuple[dg.DagsterRun, float]] = {}
    for record in [*active, *changed]:
        run = record.dagster_run
        if run.job_name in job_names and (run.tags.get(TAG_COMMIT) or run.tags.get("dagster/partition")):
            seen.setdefault(run.run_id, (run, record.create_timestamp.timestamp()))
    return sorted(seen.values(), key=lambda item: item[1])


def build_forge_sensor(app: AppConfig, ci_job_name: str) -> dg.SensorDefinition:
    job_names = {ci_job_name, IMPLICIT_ASSET_JOB}

    @dg.sensor(
        name=forge_sensor_name(app), minimum_interval_seconds=2, default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Posts the commit statuses of {app.name}'s pipeline runs to {app.forge.kind} "
                    f"{app.forge.repository}: one per stage, the group contexts "
                    f"({', '.join(app.forge_groups()) or 'none'}) and {app.forge.context_prefix}/pipeline.")
    def _sensor(context: dg.SensorEvaluationContext, forge: ForgeClient) -> dg.SensorResult:
        state: dict[str, Any] = json.loads(context.cursor) if context.cursor else {}
        now = time.time()
        since = float(state.get("since", now - FIRST_LOOK_SECONDS))
        posted: dict[str, dict[str, Any]] = state.get("runs", {})
        instance = context.instance
        sent, trouble = 0, ""
        runs = _runs(instance, app, job_names, since - 5)  # 5 s: a run updated while the last tick read
        comments: dict[str, Any] = state.get("comments", {})
        # A pull request's comment shows its newest run: an older run ending late does not take it back.
        newest = {run.tags[TAG_PR]: run.run_id for run, _ in runs if run.tags.get(TAG_PR)}
        for run, created in runs:
            mine = posted.setdefault(run.run_id, {})
            if mine.get(_AUTH) or trouble:
                continue
            sha = run.tags.get(TAG_COMMIT) or run.tags["dagster/partition"]
            wanted = run_statuses(app, run, stage_rows(instance, run.run_id), forge.run_url(run.run_id))
            for status in wanted:
                if mine.get(status.context) == [status.state, status.description]:
                    continue
                result = forge.post_status(app.forge, sha, status, log=context.log.info)
                if result.outcome == "auth":
                    context.log.warning(f"run {run.run_id[:8]}: {result.message}")
                    mine[_AUTH] = True
                    break
                if result.outcome == "failed":  # the forge is down or refuses: try again next tick
                    trouble = result.message
                    context.log.warning(f"run {run.run_id[:8]}: {result.message}")
                    break
                mine[status.context] = [status.state, status.description]
                sent += 1
            number = run.tags.get(TAG_PR)
            if (number and newest.get(number) == run.run_id and created >= comments.get(number, {}).get("created", 0)
                    and not trouble and not mine.get(_AUTH)):
                trouble = _comment(context, forge, run, created, sha, wanted, mine, comments)
            if run.status not in ACTIVE and not trouble:
                mine.setdefault(_DONE_AT, now)
        for run_id in [r for r, m in posted.items() if now - float(m.get(_DONE_AT, now)) > KEEP_SECONDS]:
            del posted[run_id]
        # While a post failed, `since` stays: the runs that changed meanwhile are read again next tick.
        cursor = json.dumps({"since": since if trouble else now, "runs": posted, "comments": comments},
                            sort_keys=True)
        if trouble:
            return dg.SensorResult(skip_reason=f"{sent} status(es) posted; stopped: {trouble}", cursor=cursor)
        return dg.SensorResult(skip_reason=f"{sent} status(es) posted" if sent else "no status changed",
                               cursor=cursor)

    def _comment(context: dg.SensorEvaluationContext, forge: ForgeClient, run: dg.DagsterRun, created: float,
                 sha: str, wanted: list, mine: dict[str, Any], comments: dict[str, Any]) -> str:
        """Keeps the pull request's one comment up to date: written when the run is first seen and
        when it ends (not on every stage: an edit notifies nobody, but each costs an API call).
        Returns what went wrong, "" when nothing did."""
        finished = run.status not in ACTIVE
        done = mine.get(_COMMENTED)  # "started" or "final": what this run has written
        if done == "final" or (done == "started" and not finished):
            return ""
        number = run.tags[TAG_PR]
        body = pr_comment(app, run, sha, wanted)
        known = comments.get(number, {})
        result, comment_id = forge.upsert_comment(app.forge, int(number), comment_marker(app), body,
                                                  known_id=known.get("id"), log=context.log.info)
        if result.outcome == "ok":
            comments[number] = {"id": comment_id if comment_id is not None else known.get("id"), "created": created}
            mine[_COMMENTED] = "final" if finished else "started"
            return ""
        context.log.warning(f"run {run.run_id[:8]}: pull request {number} comment: {result.message}")
        if result.outcome == "auth":
            mine[_AUTH] = True
            return ""
        return result.message

    return _sensor
