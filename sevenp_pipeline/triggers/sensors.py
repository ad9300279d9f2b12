"""The git push sensor: polls an app's remote and starts one run per new head commit of a watched
branch, pull/merge request or release tag.

The cursor holds the refs seen at the last tick (``{"heads": {branch: sha}, "prs": {n: [ref, sha]},
"tags": {tag: sha}}``). The first tick records a baseline and starts nothing: like a push hook, the
sensor reacts to pushes made after it was switched on.

- A **pull request** (GitHub ``refs/pull/N/head``, or ``/merge`` with ``trigger.pull_requests: merge``;
  GitLab ``refs/merge-requests/N/head``) whose head moved gets a run tagged ``sevenp/pr=N`` and
  ``sevenp/ref``, trigger ``pull_request``, on no branch: its image is tagged ``pr-N``, and it never
  deploys (the deploy sensor refuses it).
- A new or moved **tag** matching ``trigger.tags`` (default ``v*``) gets a run with trigger ``tag``:
  its image gets the semver tags when a release branch holds the commit.
- A **branch**: The run key is ``<branch>@<sha>``: a branch that moves to a commit already run
on *another* branch (a fast-forward merge, GitHub's "rebase and merge", a new branch at an existing
commit) runs the pipeline for that branch, so its image tags and its environments follow (the stage
cache restores the unchanged stages); the same branch moving back to a commit it already ran does not
run it again.

An unreachable remote is not a traceback every tick: the tick is skipped with one line naming the
remote and git's error (also logged as one warning), the heads are kept, and the cursor records
the failures in a row and the time before which git is not tried again (``failures``,
``retry_after``): the poll interval doubled per failure, capped at 5 minutes. A tick during the
backoff skips without calling git; the first success clears it.
"""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
import fnmatch
import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.config.models import Branches
from sevenp_pipeline.redaction import Redactor
from sevenp_pipeline.resources.git import GitClient, GitError
from sevenp_pipeline.text import printable
from sevenp_pipeline.triggers.tags import (
    TAG_APP,
    TAG_AUTHOR,
    TAG_BEFORE,
    TAG_BRANCH,
    TAG_COMMIT,
    TAG_MESSAGE,
    TAG_PR,
    TAG_PR_BASE,
    TAG_PR_HEAD,
    TAG_REF,
    TAG_TRIGGER,
)
from sevenp_pipeline.triggers.webhook_spool import WebhookEvent, WebhookInbox

PULL_REQUEST, TAG = "pull_request", "tag"  # the triggers of pull-request and tag runs

__all__ = ["TAG_APP", "TAG_BRANCH", "TAG_COMMIT", "backoff_seconds", "branch_matches", "build_push_sensor",
           "new_heads", "pull_requests", "push_run_key", "release_tags"]
_MAX_TAG = 200
_SENSOR_TAG = "dagster/sensor_name"  # only runs this sensor started are canceled: never a person's
MAX_BACKOFF_SECONDS = 300.0
WEBHOOK_TICK_SECONDS = 1
_MAX_ERROR = 400


def branch_matches(branch: str, rules: Branches) -> bool:
    def match(patterns: list[str]) -> bool:
        return any(fnmatch.fnmatchcase(branch, p) for p in patterns)

    return match(rules.include) and not match(rules.exclude)


def new_heads(previous: Mapping[str, str], current: Mapping[str, str], rules: Branches) -> dict[str, str]:
    """Branches (matching the rules) whose head is new or moved since the last tick."""
    return {b: s for b, s in sorted(current.items()) if branch_matches(b, rules) and previous.get(b) != s}


def push_run_key(branch: str, sha: str) -> str:
    """One run per commit *per branch*: the key the daemon deduplicates push runs by."""
    return f"{branch}@{sha}"


_PR_REFS = {"head": (re.compile(r"^refs/pull/([1-9][0-9]{0,9})/head$"),
                     re.compile(r"^refs/merge-requests/([1-9][0-9]{0,9})/head$")),
             # GitLab writes refs/merge-requests/N/merge only for merged-results pipelines: where it is
             # missing the head is built (it sorts first, so a merge ref present wins).
             "merge": (re.compile(r"^refs/pull/([1-9][0-9]{0,9})/merge$"),
                       re.compile(r"^refs/merge-requests/([1-9][0-9]{0,9})/head$"),
                       re.compile(r"^refs/merge-requests/([1-9][0-9]{0,9})/merge$")),
             "off": ()}


def pull_requests(refs: Mapping[str, str], mode: str) -> dict[str, list[str]]:
    """``{number: [ref, sha]}`` of the remote's pull requests (GitHub ``refs/pull/N/head``, or
    ``/merge`` for the merge result) and merge requests (GitLab ``refs/merge-requests/N/head``, or
    with ``merge`` its ``/merge`` ref where GitLab wrote one)."""
    out: dict[str, list[str]] = {}
    for ref, sha in sorted(refs.items()):
        for pattern in _PR_REFS[mode]:
            if match := pattern.match(ref):
                out[match[1]] = [ref, sha]
    return out


def release_tags(refs: Mapping[str, str], patterns: list[str]) -> dict[str, str]:
    """``{tag: commit sha}`` of the remote's tags matching ``trigger.tags``."""
    return {ref.removeprefix("refs/tags/"): sha for ref, sha in sorted(refs.items())
            if ref.startswith("refs/tags/") and any(fnmatch.fnmatchcase(ref.removeprefix("refs/tags/"), p)
                                                   for p in patterns)}


@dataclass(frozen=True)
class _Push:
    """One ref that moved: a branch head, a pull/merge request head, or a new tag."""

    ref: str
    sha: str
    before: str
    branch: str = ""
    pr: str = ""
    tag: str = ""
    base: str = ""  # a pull request's base and head branch, when a webhook named them
    head: str = ""
    webhook: bool = False  # from a webhook delivery, not the poll

    @property
    def run_key(self) -> str:
        return push_run_key(self.branch if self.branch else f"pr-{self.pr}" if self.pr else f"tag-{self.tag}",
                            self.sha)

    @property
    def trigger(self) -> str:
        return PULL_REQUEST if self.pr else TAG if self.tag else "push"

    @property
    def label(self) -> str:
        return (f"push on {self.branch}" if self.branch else f"pull request {self.pr} ({self.ref})" if self.pr
                else f"tag {self.tag}")

    @property
    def extra_tags(self) -> dict[str, str]:
        if self.pr:
            names = {TAG_PR_BASE: _clip(self.base), TAG_PR_HEAD: _clip(self.head)}
            return {TAG_PR: self.pr, TAG_REF: self.ref, **{k: v for k, v in names.items() if v}}
        return {TAG_REF: self.ref} if self.tag else {}


def backoff_seconds(failures: int, base: float) -> float:
    """Seconds to wait after ``failures`` failed ticks in a row: base, 2*base, 4*base, ... capped."""
    return min(MAX_BACKOFF_SECONDS, max(base, 1.0) * 2 ** (max(failures, 1) - 1))


def _one_line(text: str) -> str:
    text = Redactor()(" ".join(text.split()))  # a token in the remote URL stays out of the log
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 1] + "…"


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
        # With a forge, webhook deliveries are read every few seconds; git is still polled every
        # poll_interval_seconds (the fallback for a delivery that never arrived).
        minimum_interval_seconds=min(app.trigger.poll_interval_seconds, WEBHOOK_TICK_SECONDS)
        if app.forge.enabled else app.trigger.poll_interval_seconds,
        default_status=(dg.DefaultSensorStatus.RUNNING if app.trigger.enabled
                        else dg.DefaultSensorStatus.STOPPED),
        description=f"Starts {job.name} for each new head pushed to {app.repository.url}.",
    )
    def _sensor(context: dg.SensorEvaluationContext, git: GitClient,
                webhook_inbox: WebhookInbox) -> dg.SensorResult:
        state: dict[str, Any] = json.loads(context.cursor) if context.cursor else {}
        url = _one_line(app.repository.url)
        wait = float(state.get("retry_after", 0)) - time.time()
        if wait > 0:  # backing off after failures: do not call git
            return dg.SensorResult(
                skip_reason=f"remote {url} unreachable ({state.get('failures', 1)} failure(s) in a row); "
                            f"next try in {wait:.0f}s", cursor=context.cursor)
        try:
            return _tick(context, git, webhook_inbox, state)
        except GitError as exc:
            failures = int(state.get("failures", 0)) + 1
            delay = backoff_seconds(failures, app.trigger.poll_interval_seconds)
            line = (f"cannot reach remote {url} ({failures} failure(s) in a row, next try in {delay:.0f}s): "
                    f"{_one_line(str(exc))}")
            context.log.warning(line)
            # The heads and the webhook cursor stay as they were: what was pushed meanwhile is found
            # by the next success.
            cursor = json.dumps({**state, "failures": failures, "retry_after": time.time() + delay}, sort_keys=True)
            return dg.SensorResult(skip_reason=line, cursor=cursor)

    def _tick(context: dg.SensorEvaluationContext, git: GitClient, inbox: WebhookInbox,
              state: dict[str, Any]) -> dg.SensorResult:
        now = time.time()
        delivered = inbox.pending(app.key, state.get("webhook_after", "")) if app.forge.enabled else []
        if "heads" not in state:
            refs = git.ls_remote_refs(app.repository.url, timeout=app.trigger.ls_remote_timeout_seconds)
            heads, prs, tags = _watched(app, refs)
            cursor = {"heads": heads, "prs": prs, "tags": tags, "polled_at": now,
                      "webhook_after": delivered[-1][0] if delivered else state.get("webhook_after", "")}
            return dg.SensorResult(skip_reason=f"baseline recorded: {len(heads)} watched head(s), "
                                               f"{len(prs)} pull request(s), {len(tags)} tag(s); "
                                               "runs start from the next push",
                                   cursor=json.dumps(cursor, sort_keys=True))
        # A cursor from before pull requests and tags were watched: theirs is a baseline too (the poll's).
        seen = {"heads": dict(state["heads"]), "prs": dict(state.get("prs", {})), "tags": dict(state.get("tags", {}))}
        events, gone_branches, closed_prs = _from_webhooks(app, context, delivered, seen)
        # Without a forge the sensor ticks once per poll interval: every tick polls.
        polled = not app.forge.enabled or "prs" not in state or "tags" not in state or (
            now - float(state.get("polled_at", 0)) >= app.trigger.poll_interval_seconds - 0.5)
        if polled:  # every poll interval; with webhooks, the fallback for a delivery that never came
            refs = git.ls_remote_refs(app.repository.url, timeout=app.trigger.ls_remote_timeout_seconds)
            heads, prs, tags = _watched(app, refs)
            prs_before = seen["prs"] if "prs" in state else prs
            tags_before = seen["tags"] if "tags" in state else tags
            events += [_Push(f"refs/heads/{b}", s, seen["heads"].get(b, ""), branch=b)
                       for b, s in new_heads(seen["heads"], heads, app.branches).items()]
            events += [_Push(ref, s, prs_before.get(n, [None, ""])[1], pr=n)
                       for n, (ref, s) in sorted(prs.items(), key=lambda i: int(i[0]))
                       if prs_before.get(n, [None, ""])[1] != s]
            events += [_Push(f"refs/tags/{t}", s, "", tag=t) for t, s in sorted(tags.items())
                       if tags_before.get(t) != s]
            gone_branches += sorted(set(seen["heads"]) - set(heads))
            seen = {"heads": heads, "prs": prs, "tags": tags}
        cursor = json.dumps({**seen, "polled_at": now if polled else state.get("polled_at", 0),
                             "webhook_after": delivered[-1][0] if delivered else state.get("webhook_after", "")},
                            sort_keys=True)  # no failures/retry_after: a success clears the backoff
        for gone in sorted(set(gone_branches)):  # a deleted branch: its queued runs are moot
            _cancel_runs(app, context, {TAG_BRANCH: gone}, job_name=job.name, sensor_name=_sensor.name,
                         keep="", queued_only=True, why=f"branch {gone} was deleted")
        for number in closed_prs:  # a closed or merged request: nothing of its runs is wanted any more
            _cancel_runs(app, context, {TAG_PR: number}, job_name=job.name, sensor_name=_sensor.name,
                         keep="", queued_only=False, why=f"pull request {number} was closed")
        if app.trigger.cancel_superseded:
            for event in events:
                if event.branch or event.pr:
                    selector = {TAG_BRANCH: event.branch} if event.branch else {TAG_PR: event.pr}
                    _cancel_runs(app, context, selector, job_name=job.name, sensor_name=_sensor.name,
                                 keep=event.sha, queued_only=False,
                                 why=f"superseded by {event.sha[:12]} on {event.label.removeprefix('push on ')}")
        if not events:
            return dg.SensorResult(skip_reason="no new commits on watched branches, pull requests or tags",
                                   cursor=cursor)
        git.fetch(app.key, app.repository.url)
        requests, shas = [], set()
        unique: dict[str, _Push] = {}
        for event in events:  # the webhook's and the poll's: one run (the webhook's, which names more)
            unique.setdefault(event.run_key, event)
        for event in unique.values():
            if event.webhook and not git.has_commit(app.key, event.sha):
                context.log.warning(f"{printable(event.label)}: commit {event.sha[:12]} from a webhook is not on "
                                    f"the remote any more (force-pushed away?): no run")
                continue
            info = git.commit_info(app.key, event.sha)
            context.log.info("%s: %s by %s%s", printable(event.label), event.sha[:12], info.author,
                             " (webhook)" if event.webhook else "")
            shas.add(event.sha)
            requests.append(dg.RunRequest(
                run_key=event.run_key, partition_key=event.sha,
                tags={TAG_APP: app.name, TAG_BRANCH: _clip(event.branch), TAG_COMMIT: event.sha,
                      TAG_TRIGGER: event.trigger, TAG_AUTHOR: _clip(info.author), TAG_MESSAGE: _clip(info.subject),
                      TAG_BEFORE: event.before, **event.extra_tags},
            ))
        known = set(context.instance.get_dynamic_partitions(partitions.name)) if context.instance else set()
        added = sorted(shas - known)
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[partitions.build_add_request(added)] if added else [],
            cursor=cursor,
            skip_reason=None if requests else "the commits named by webhooks are no longer on the remote",
        )

    return _sensor


def _watched(app: AppConfig, refs: Mapping[str, str]) -> tuple[dict[str, str], dict[str, list[str]], dict[str, str]]:
    heads = {r.removeprefix("refs/heads/"): s for r, s in refs.items()
             if r.startswith("refs/heads/") and branch_matches(r.removeprefix("refs/heads/"), app.branches)}
    return heads, pull_requests(refs, app.trigger.pull_requests), release_tags(refs, app.trigger.tags)


def _from_webhooks(app: AppConfig, context: dg.SensorEvaluationContext, delivered: list[tuple[str, WebhookEvent]],
                   seen: dict[str, dict[str, Any]]) -> tuple[list[_Push], list[str], list[str]]:
    """The webhook deliveries as pushes (updating ``seen``, so the poll does not start them again),
    deleted branches and closed pull requests."""
    events: list[_Push] = []
    gone: list[str] = []
    closed: list[str] = []
    for _name, event in delivered:
        if event.kind == "push":
            branch = event.ref.removeprefix("refs/heads/")
            if branch_matches(branch, app.branches) and seen["heads"].get(branch) != event.sha:
                events.append(_Push(event.ref, event.sha, event.before or seen["heads"].get(branch, ""),
                                    branch=branch, webhook=True))
                seen["heads"][branch] = event.sha
        elif event.kind == "tag":
            tag = event.ref.removeprefix("refs/tags/")
            if release_tags({event.ref: event.sha}, app.trigger.tags) and seen["tags"].get(tag) != event.sha:
                events.append(_Push(event.ref, event.sha, "", tag=tag, webhook=True))
                seen["tags"][tag] = event.sha
        elif event.kind == "pull_request" and event.pr_number is not None:
            number = str(event.pr_number)
            # With trigger.pull_requests: merge the run is of the forge's merge commit, which the
            # payload does not name: the poll finds it.
            if app.trigger.pull_requests == "head" and pull_requests({event.ref: event.sha}, "head") and \
                    seen["prs"].get(number, [None, ""])[1] != event.sha:
                events.append(_Push(event.ref, event.sha, seen["prs"].get(number, [None, ""])[1], pr=number,
                                    base=event.base_branch, head=event.head_branch, webhook=True))
                seen["prs"][number] = [event.ref, event.sha]
        elif event.kind == "delete" and event.ref.startswith("refs/heads/"):
            branch = event.ref.removeprefix("refs/heads/")
            if seen["heads"].pop(branch, None) is not None:
                gone.append(branch)
        elif event.kind == "pr_closed" and event.pr_number is not None and app.trigger.pull_requests != "off":
            closed.append(str(event.pr_number))
        else:
            continue
        context.log.debug(f"webhook {event.kind} {printable(event.ref)} {event.sha[:12]}")
    return events, gone, closed


def _cancel_runs(app: AppConfig, context: dg.SensorEvaluationContext, selector: dict[str, str], *, job_name: str,
                 sensor_name: str, keep: str, queued_only: bool, why: str) -> None:
    """Cancels the app's push-started CI runs matching ``selector`` (not of commit ``keep``): queued ones
    leave the queue, started ones are terminated through the run launcher. Never fails the tick."""
    statuses = [dg.DagsterRunStatus.QUEUED] + ([] if queued_only else [
        dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED])
    instance = context.instance
    try:
        runs = instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=statuses,
                                                       tags={TAG_APP: app.name, **selector}))
    except Exception as exc:  # a cancel must never stop the runs that follow from starting
        context.log.warning(f"runs to cancel not read ({why}): {type(exc).__name__}: {exc}")
        return
    for run in runs:
        if run.tags.get(TAG_COMMIT) == keep or run.tags.get(_SENSOR_TAG) != sensor_name:
            continue
        try:
            done = instance.run_coordinator.cancel_run(run.run_id)
        except Exception as exc:
            context.log.warning(f"run {run.run_id[:8]} not canceled ({why}): {type(exc).__name__}: {exc}")
            continue
        context.log.info(f"run {run.run_id[:8]} of {run.tags.get(TAG_COMMIT, '')[:12]} "
                         f"{'canceled' if done else 'could not be canceled'}: {why}")
