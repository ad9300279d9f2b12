"""The forge status sensor: keeps the commit statuses of an app's pipeline runs up to date on its forge.

One sensor per app with a ``forge:`` section, ticking every 2 s. It reads the runs of the app's
pipeline (the CI job and *Materialize* runs from the asset graph) that are in progress or changed
since the last tick, computes what each run's commit should show (:mod:`sevenp_pipeline.forge.statuses`)
and posts only what changed since it last posted. A sensor, not code in the stages: reporting can
never fail or slow a stage, a run worker needs no forge token, and a forge that is down costs one
skipped tick (the next one posts what is still missing).

A run that deploys (a deploy job, or a *Materialize* of ``<env>_deployment``) posts no commit status:
it creates the forge's deployment of the commit to that environment (GitHub Deployments, GitLab
deployments) and sets its state as the deploy step goes (in progress, success with the environment's
URL, failure with the reason), linking the run.

On GitHub, a run whose ``vulnerability_report`` wrote its SARIF uploads it to code scanning once
(for the branch, or ``refs/pull/N/head``), so the findings show in the Security tab and the PR. GitLab
cannot ingest SARIF: its ``vulnerability_report`` status links the report instead of the run.

A pull-request run (tagged ``sevenp/pr``) also keeps the request's one comment up to date: the
stage table with each stage's one-line result, written when the run is first seen and edited when it
ends; the same comment is edited by every later run of the request (found by a hidden marker if the
cursor lost its id), never a new one per push. Below the table, the run's coverage, vulnerabilities and
image size against the base branch's latest successful run (:mod:`sevenp_pipeline.forge.compare`). The
base branch is the run's ``sevenp/pr-base`` tag, else what the forge says of the request (``GET
/pulls/{n}``, ``GET /merge_requests/{iid}``: asked once per newest run of the request, kept in the
cursor's ``pulls``), which also gives its title: checked against the app's commitlint rule and posted as
``<prefix>/pr-title``, counted in the group covering the commitlint stage (``code-quality``). A title
edited without a push (the forge's webhook: GitHub ``edited``, GitLab ``update`` with ``changes.title``,
spooled by the receiver) makes the next tick ask again and post the request's newest run's title check
and comment anew, with no new run.

The cursor holds, per run, the (state, description) last posted for each context, and ``!auth`` for a
run whose token the forge refused (said once, then that run is left alone); a finished run is kept
for ten minutes after its last post, then dropped. ``comments`` maps a request's number to its
comment id and the creation time of the run it shows; ``pulls`` a request's number to its base branch
and title and the run they were asked for.
"""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
import datetime as dt
import json
import time
from typing import Any

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.deploy.history import deploy_env_tag
from sevenp_pipeline.deploy.triggers import deploy_job_name
from sevenp_pipeline.devtools.stage_table import run_metadata, stage_rows
from sevenp_pipeline.forge.client import ForgeClient, Posted
from sevenp_pipeline.forge.compare import PullInfo, base_figures, compared, comparison, title_check
from sevenp_pipeline.forge.statuses import ACTIVE, comment_marker, deployment_states, pr_comment, run_statuses
from sevenp_pipeline.resources.artifacts import ArtifactStore
from sevenp_pipeline.triggers.identity import IMPLICIT_ASSET_JOB
from sevenp_pipeline.triggers.tags import (
    TAG_APP,
    TAG_BRANCH,
    TAG_COMMIT,
    TAG_DEPLOY_ENV,
    TAG_PR,
    TAG_PR_BASE,
    TAG_PR_HEAD,
)
from sevenp_pipeline.triggers.webhook_spool import WebhookInbox

FIRST_LOOK_SECONDS = 600.0  # the first tick also reports runs that ended this long ago
KEEP_SECONDS = 600.0
_AUTH = "!auth"
_COMMENTED = "!comment"
_DEPLOYMENT = "!deployment:"
_SARIF = "!sarif"
SARIF_NAME = "reports/vulnerability_report.sarif"  # where security/vulnerabilities.py stores it
_DONE_AT = "!done"
_MAX_RUNS = 50
PULL_RETRY_SECONDS = 60.0  # a pull request the forge did not describe is asked again after this
PULL_KEEP_SECONDS = 86400.0


def forge_sensor_name(app: AppConfig) -> str:
    return f"{app.key}_forge_status_sensor"


def _runs(instance: dg.DagsterInstance, app: AppConfig, job_names: set[str],
          since: float) -> list[tuple[dg.DagsterRun, float]]:
    """The app's pipeline and deploy runs in progress or changed since ``since``, oldest first, with their
    creation time. A deploy refused before its step named the run's app is found by its environment tag."""
    after = dt.datetime.fromtimestamp(since, tz=dt.timezone.utc)
    records = []
    for tags in [{TAG_APP: app.name}, *({TAG_DEPLOY_ENV: deploy_env_tag(app.name, env)}
                                        for env in app.deploy_environments)]:
        records += instance.get_run_records(filters=dg.RunsFilter(tags=tags, statuses=list(ACTIVE)), limit=_MAX_RUNS)
        records += instance.get_run_records(filters=dg.RunsFilter(tags=tags, updated_after=after), limit=_MAX_RUNS)
    seen: dict[str, tuple[dg.DagsterRun, float]] = {}
    for record in records:
        run = record.dagster_run
        if run.job_name in job_names and (run.tags.get(TAG_COMMIT) or run.tags.get("dagster/partition")):
            seen.setdefault(run.run_id, (run, record.create_timestamp.timestamp()))
    return sorted(seen.values(), key=lambda item: item[1])


def _title_edits(context: dg.SensorEvaluationContext, inbox: WebhookInbox, app: AppConfig, after: str,
                 pulls: dict[str, Any], runs: list[tuple[dg.DagsterRun, float]]) -> tuple[str, set[str]]:
    """Pull requests whose title was edited since ``after`` (the spool's name order): their cached answer
    is dropped, so ``_pull`` asks the forge again, and the run it was asked for (the request's newest) is
    added to ``runs`` if no change brought it. Returns the new ``after`` and those runs."""
    edited: set[str] = set()
    for name, event in inbox.pending(app.key, after):
        after = name
        known = pulls.get(str(event.pr_number), {})
        if not event.title_edited or not known.get("run"):
            continue  # not a title edit, or a request with no run asked for yet: its first run asks anyway
        run_id = known["run"]
        pulls[str(event.pr_number)] = {k: v for k, v in known.items() if k != "run"}
        edited.add(run_id)
        record = None if any(run.run_id == run_id for run, _ in runs) else context.instance.get_run_record_by_id(run_id)
        if record is not None:
            runs.append((record.dagster_run, record.create_timestamp.timestamp()))
            runs.sort(key=lambda item: item[1])
        context.log.info(f"pull request {event.pr_number}: title edited, checking it again")
    return after, edited


def _deployed_url(instance: dg.DagsterInstance, run_id: str, env: str) -> str:
    """The URL the run's ``<env>_deployment`` materialization recorded (where the release answers)."""
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    for record in records:
        event = record.event_log_entry.dagster_event
        mat = event.step_materialization_data.materialization if event else None
        if mat is not None and mat.asset_key.path[-1] == f"{env}_deployment":
            url = mat.metadata.get("url")
            return str(url.value) if url is not None else ""
    return ""


def build_forge_sensor(app: AppConfig, ci_job_name: str) -> dg.SensorDefinition:
    job_names = {ci_job_name, IMPLICIT_ASSET_JOB, *(deploy_job_name(app, env) for env in app.deploy_environments)}

    @dg.sensor(
        name=forge_sensor_name(app), minimum_interval_seconds=2, default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Posts the commit statuses of {app.name}'s pipeline runs to {app.forge.kind} "
                    f"{app.forge.repository}: one per stage, the group contexts "
                    f"({', '.join(app.forge_groups()) or 'none'}) and {app.forge.context_prefix}/pipeline; "
                    "deployment statuses; the pull-request comment.")
    def _sensor(context: dg.SensorEvaluationContext, forge: ForgeClient, artifact_store: ArtifactStore,
                webhook_inbox: WebhookInbox) -> dg.SensorResult:
        state: dict[str, Any] = json.loads(context.cursor) if context.cursor else {}
        now = time.time()
        since = float(state.get("since", now - FIRST_LOOK_SECONDS))
        posted: dict[str, dict[str, Any]] = state.get("runs", {})
        instance = context.instance
        sent, trouble = 0, ""
        runs = _runs(instance, app, job_names, since - 5)  # 5 s: a run updated while the last tick read
        comments: dict[str, Any] = state.get("comments", {})
        pulls: dict[str, Any] = state.get("pulls", {})
        edits_after, edited = _title_edits(context, webhook_inbox, app, state.get("edits_after", ""), pulls, runs)
        # A pull request's comment shows its newest run: an older run ending late does not take it back.
        newest = {run.tags[TAG_PR]: run.run_id for run, _ in runs if run.tags.get(TAG_PR)}
        for run, created in runs:
            mine = posted.setdefault(run.run_id, {})
            if run.run_id in edited:
                mine.pop(_COMMENTED, None)  # the comment shows the title check: written again
            if mine.get(_AUTH) or trouble:
                continue
            sha = run.tags.get(TAG_COMMIT) or run.tags["dagster/partition"]
            rows = stage_rows(instance, run.run_id)
            links = {}
            if app.forge.kind == "gitlab" and artifact_store.exists(app=app.key, sha=sha, name=SARIF_NAME):
                links["vulnerability_report"] = artifact_store.uri(app=app.key, sha=sha, name=SARIF_NAME)
            number = run.tags.get(TAG_PR)
            pull = _pull(app, context, forge, run, number, newest.get(number), pulls, now) if number else {}
            title = title_check(app, pull["title"]) if "title" in pull else None
            wanted = run_statuses(app, run, rows, forge.run_url(run.run_id), links, title)
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
            if (number and newest.get(number) == run.run_id and created >= comments.get(number, {}).get("created", 0)
                    and not trouble and not mine.get(_AUTH)):
                trouble = _comment(app, context, forge, run, created, sha, wanted, mine, comments,
                                   base=run.tags.get(TAG_PR_BASE) or pull.get("base", ""), job_names=job_names)
            if not trouble and not mine.get(_AUTH):
                trouble = _deployments(app, context, forge, run, sha, rows, mine)
            if not trouble and not mine.get(_AUTH) and not mine.get(_SARIF) and app.forge.kind == "github":
                trouble = _sarif(app, context, forge, artifact_store, run, sha, rows, mine)
            if run.status not in ACTIVE and not trouble:
                mine.setdefault(_DONE_AT, now)
        for run_id in [r for r, m in posted.items() if now - float(m.get(_DONE_AT, now)) > KEEP_SECONDS]:
            del posted[run_id]
        for number in [n for n, p in pulls.items() if now - float(p.get("at", now)) > PULL_KEEP_SECONDS]:
            del pulls[number]
        # While a post failed, `since` stays: the runs that changed meanwhile are read again next tick.
        cursor = json.dumps({"since": since if trouble else now, "runs": posted, "comments": comments,
                             "pulls": pulls, "edits_after": edits_after}, sort_keys=True)
        if trouble:
            return dg.SensorResult(skip_reason=f"{sent} status(es) posted; stopped: {trouble}", cursor=cursor)
        return dg.SensorResult(skip_reason=f"{sent} status(es) posted" if sent else "no status changed",
                               cursor=cursor)

    return _sensor


def _sarif(app: AppConfig, context: dg.SensorEvaluationContext, forge: ForgeClient, store: ArtifactStore,
           run: dg.DagsterRun, sha: str, rows: list, mine: dict[str, Any]) -> str:
    """The run's vulnerability report to GitHub code scanning, once, when the stage wrote it."""
    if not any(r.stage == "vulnerability_report" and r.status in ("SUCCESS", "FAILURE") for r in rows):
        return ""
    sarif = store.read_bytes(app=app.key, sha=sha, name=SARIF_NAME)
    number, branch = run.tags.get(TAG_PR), run.tags.get(TAG_BRANCH)
    ref = f"refs/pull/{number}/head" if number else f"refs/heads/{branch}" if branch else ""
    if sarif is None or not ref:
        mine[_SARIF] = "none"  # nothing to upload (no report kept, or the commit is on no branch)
        return ""
    result = forge.upload_sarif(app.forge, sha=sha, ref=ref, sarif=sarif, log=context.log.info)
    if result.outcome == "ok":
        mine[_SARIF] = ref
        return ""
    return _not_taken(context, run, "SARIF upload", result, mine)


def _not_taken(context: dg.SensorEvaluationContext, run: dg.DagsterRun, what: str, result: Posted,
               mine: dict[str, Any]) -> str:
    """Logs a post the forge did not take. A refused token ends the run's reporting (one warning);
    anything else is returned, to be tried again next tick."""
    context.log.warning(f"run {run.run_id[:8]}: {what}: {result.message}")
    if result.outcome == "auth":
        mine[_AUTH] = True
        return ""
    return result.message


def _deployments(app: AppConfig, context: dg.SensorEvaluationContext, forge: ForgeClient, run: dg.DagsterRun, sha: str,
                 rows: list, mine: dict[str, Any]) -> str:
    """The forge's deployment of each environment the run deployed (or tried to): created when the
    deploy step is first seen, its state set as it changes; the URL of a live one is the environment's."""
    for env, (state, text) in deployment_states(run, rows).items():
        key = f"{_DEPLOYMENT}{env}"
        known = mine.get(key, {})
        if known.get("state") == [state, text]:
            continue
        url = _deployed_url(context.instance, run.run_id, env) if state == "success" else ""
        result, deployment_id = forge.deployment(
            app.forge, deployment_id=known.get("id"), sha=sha, ref=run.tags.get(TAG_BRANCH) or "main",
            environment=env, state=state, url=url, log_url=forge.run_url(run.run_id), description=text,
            log=context.log.info)
        if result.outcome == "ok":
            mine[key] = {"id": deployment_id, "state": [state, text]}
            continue
        context.log.warning(f"run {run.run_id[:8]}: {env} deployment status: {result.message}")
        if result.outcome == "auth":
            mine[_AUTH] = True
            return ""
        if deployment_id is not None:
            mine[key] = {"id": deployment_id}
        return result.message
    return ""


def _pull(app: AppConfig, context: dg.SensorEvaluationContext, forge: ForgeClient, run: dg.DagsterRun, number: str,
          newest: str | None, pulls: dict[str, Any], now: float) -> dict[str, Any]:
    """What the forge says of pull request ``number`` (``{"base", "title"}``; {} while it said nothing),
    asked once per newest run of the request (a push after the title was edited checks the new title) and
    kept in the cursor; a request the forge did not describe is asked again after a minute."""
    known: dict[str, Any] = pulls.get(number, {})
    if known.get("run") == run.run_id or newest != run.run_id or now < float(known.get("retry", 0)):
        return known
    kind = app.forge.kind
    result = forge.get(app.forge, f"pulls/{int(number)}" if kind == "github" else f"merge_requests/{int(number)}",
                       log=context.log.info)
    info = PullInfo.from_answer(kind, result.answer) if result.outcome == "ok" else None
    if info is None:
        context.log.warning(f"pull request {number}: the forge did not describe it "
                            f"({result.message or 'no title in its answer'}): no title check, and the base branch "
                            "only from the run's tags")
        pulls[number] = {**known, "at": known.get("at", now), "retry": now + PULL_RETRY_SECONDS}
    else:
        pulls[number] = {"run": run.run_id, "base": info.base, "title": info.title, "at": now}
        # A run the poll started knows only the request's number: the forge names its branches.
        names = {TAG_PR_BASE: info.base, TAG_PR_HEAD: info.head}
        missing = {tag: value[:200] for tag, value in names.items() if value and not run.tags.get(tag)}
        if missing:
            context.instance.add_run_tags(run.run_id, missing)
    return pulls[number]


def _comment(app: AppConfig, context: dg.SensorEvaluationContext, forge: ForgeClient, run: dg.DagsterRun,
             created: float, sha: str, wanted: list, mine: dict[str, Any], comments: dict[str, Any], *,
             base: str, job_names: set[str]) -> str:
    """Keeps the pull request's one comment up to date: written when the run is first seen and
    when it ends (not on every stage: an edit notifies nobody, but each costs an API call), with the
    run's figures against ``base``'s latest successful run. Returns what went wrong, "" when nothing did."""
    finished = run.status not in ACTIVE
    done = mine.get(_COMMENTED)  # "started" or "final": what this run has written
    if done == "final" or (done == "started" and not finished):
        return ""
    number = run.tags[TAG_PR]
    head = run_metadata(context.instance, run.run_id)
    base_run = base_figures(context.instance, app, base, job_names) if base and compared(app, head) else None
    against = comparison(app, base, head, base_run, forge.run_url(base_run.run_id) if base_run else "")
    body = pr_comment(app, run, sha, wanted, against)
    known = comments.get(number, {})
    result, comment_id = forge.upsert_comment(app.forge, int(number), comment_marker(app), body,
                                              known_id=known.get("id"), log=context.log.info)
    if result.outcome == "ok":
        comments[number] = {"id": comment_id if comment_id is not None else known.get("id"), "created": created}
        mine[_COMMENTED] = "final" if finished else "started"
        return ""
    return _not_taken(context, run, f"pull request {number} comment", result, mine)
