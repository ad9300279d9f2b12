"""The git push sensor: polls an app's remote and starts one run per new head commit.

The cursor holds the heads seen at the last tick (``{"heads": {branch: sha}}``). The first tick
records a baseline and starts nothing: like a push hook, the sensor reacts to pushes made after
it was switched on. A head that moved to a commit already run gets no second run (run_key = SHA).
An unreachable remote raises: the tick shows the error, the cursor is kept, the next tick retries.
"""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
import fnmatch
import json
from collections.abc import Mapping

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.config.models import Branches
from sevenp_pipeline.resources.git import GitClient
from sevenp_pipeline.triggers.tags import (
    TAG_APP,
    TAG_AUTHOR,
    TAG_BEFORE,
    TAG_BRANCH,
    TAG_COMMIT,
    TAG_MESSAGE,
    TAG_TRIGGER,
)

__all__ = ["TAG_APP", "TAG_BRANCH", "TAG_COMMIT", "branch_matches", "build_push_sensor", "new_heads"]
_MAX_TAG = 200


def branch_matches(branch: str, rules: Branches) -> bool:
    def match(patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(branch, p) for p in patterns)

    return match(rules.include) and not match(rules.exclude)


def new_heads(previous: Mapping[str, str], current: Mapping[str, str], rules: Branches) -> dict[str, str]:
    """Branches (matching the rules) whose head is new or moved since the last tick."""
    return {b: s for b, s in sorted(current.items()) if branch_matches(b, rules) and previous.get(b) != s}


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_TAG else text[: _MAX_TAG - 1] + "…"


def build_push_sensor(
    app: AppConfig,
    job: "dg.UnresolvedAssetJobDefinition | dg.JobDefinition",
    partitions: dg.DynamicPartitionsDefinition,
) -> dg.SensorDefinition:
    @dg.sensor(
        name=f"{app.key}_git_push_sensor",
        job=job,
        minimum_interval_seconds=app.trigger.poll_interval_seconds,
        default_status=(dg.DefaultSensorStatus.RUNNING if app.trigger.enabled
                        else dg.DefaultSensorStatus.STOPPED),
        description=f"Starts {job.name} for each new head pushed to {app.repository.url}.",
    )
    def _sensor(context: dg.SensorEvaluationContext, git: GitClient) -> dg.SensorResult:
        state = json.loads(context.cursor) if context.cursor else None
        heads = git.ls_remote_heads(app.repository.url, timeout=app.trigger.ls_remote_timeout_seconds)
        watched = {b: s for b, s in heads.items() if branch_matches(b, app.branches)}
        cursor = json.dumps({"heads": watched}, sort_keys=True)
        if state is None:
            return dg.SensorResult(skip_reason=f"baseline recorded: {len(watched)} watched head(s); "
                                               "runs start from the next push", cursor=cursor)
        previous = state.get("heads", {})
        moved = new_heads(previous, heads, app.branches)
        if not moved:
            return dg.SensorResult(skip_reason="no new commits on watched branches", cursor=cursor)
        git.fetch(app.key, app.repository.url)
        requests = []
        for branch, sha in moved.items():
            info = git.commit_info(app.key, sha)
            context.log.info("push on %s: %s by %s", branch, sha[:12], info.author)
            requests.append(dg.RunRequest(
                run_key=sha,
                partition_key=sha,
                tags={TAG_APP: app.name, TAG_BRANCH: _clip(branch), TAG_COMMIT: sha, TAG_TRIGGER: "push",
                      TAG_AUTHOR: _clip(info.author), TAG_MESSAGE: _clip(info.subject),
                      TAG_BEFORE: previous.get(branch, "")},
            ))
        known = set(context.instance.get_dynamic_partitions(partitions.name)) if context.instance else set()
        added = sorted({sha for sha in moved.values()} - known)
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[partitions.build_add_request(added)] if added else [],
            cursor=cursor,
        )

    return _sensor
