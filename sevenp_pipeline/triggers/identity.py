"""What a run is — app, branch, commit, message, author and trigger — however it was launched.

The push sensor tags the runs it starts. A run launched from the Launchpad, a *Materialize* in the
asset graph, or a re-execution does not carry those tags (or inherits the parent's
``sevenp/trigger=push``). :func:`ensure_run_identity`, called at the start of every stage asset,
fills what is missing with ``DagsterInstance.add_run_tags`` (which updates the run's tag rows the
runs list filters on) and corrects an inherited trigger. The first step of a run does the work; the
others find the tags complete and only read them (one run lookup).

The trigger comes from Dagster's own tags (:func:`trigger_of`). ``sevenp/origin`` is what started the
run's lineage: its own trigger, or for a re-execution the trigger of the run it re-executes (``push``
for a re-executed push run). Moving image tags and the deploy sensor's branch rules follow the origin.

The branch of a run launched by hand: the watched branch whose head is the commit (``main``,
``master``, ``develop`` first when several), else a watched branch that contains it, else none (logged).
Without the git resource (a stage that is not the checkout) it is the branch the commit's checkout
run recorded.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import dagster as dg

from sevenp_pipeline.asset_helpers import latest_materialization
from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.resources.git import GitClient, GitError
from sevenp_pipeline.triggers.sensors import PULL_REQUEST, TAG, branch_matches
from sevenp_pipeline.triggers.tags import (
    TAG_APP,
    TAG_AUTHOR,
    TAG_BRANCH,
    TAG_COMMIT,
    TAG_MESSAGE,
    TAG_ORIGIN,
    TAG_TRIGGER,
)

PUSH, MANUAL, GRAPH, REEXECUTION, SCHEDULE = "push", "manual", "graph", "reexecution", "schedule"
TRIGGERS = (PUSH, PULL_REQUEST, TAG, MANUAL, GRAPH, REEXECUTION, SCHEDULE)
UNKNOWN = "unknown"  # the origin of a re-execution of a run tagged by nothing we know
PREFERRED_BRANCHES = ("main", "master", "develop")
IMPLICIT_ASSET_JOB = "__ASSET_JOB"  # the job of a Materialize in the asset graph
_PARENT = "dagster/parent_run_id"
_SENSOR = "dagster/sensor_name"
_SCHEDULE = "dagster/schedule_name"
_MAX_TAG = 200
_lock = threading.Lock()  # the steps of a run on threads of one worker: one of them resolves


@dataclass(frozen=True)
class RunIdentity:
    """What a run is; ``branch`` is "" when the commit is on no watched branch."""

    app: str
    commit: str
    branch: str
    message: str
    author: str
    trigger: str
    origin: str

    def tags(self) -> dict[str, str]:
        return {TAG_APP: self.app, TAG_COMMIT: self.commit, TAG_BRANCH: self.branch, TAG_MESSAGE: self.message,
                TAG_AUTHOR: self.author, TAG_TRIGGER: self.trigger, TAG_ORIGIN: self.origin}

    @classmethod
    def from_tags(cls, tags: Mapping[str, str], *, trigger: str | None = None) -> RunIdentity:
        trigger = trigger or tags.get(TAG_TRIGGER, "")
        return cls(app=tags.get(TAG_APP, ""), commit=tags.get(TAG_COMMIT, ""), branch=tags.get(TAG_BRANCH, ""),
                   message=tags.get(TAG_MESSAGE, ""), author=tags.get(TAG_AUTHOR, ""), trigger=trigger,
                   origin=origin_of({**tags, TAG_TRIGGER: trigger}))


def trigger_of(tags: Mapping[str, str], job_name: str, *, parent_run_id: str | None = None) -> str:
    """What launched a run, from Dagster's own tags: a re-execution (also an automatic retry; the UI
    and the daemon tag the parent, the Python API sets only the run's ``parent_run_id``) before anything
    it inherited, then a sensor (the trigger it set, else ``push``), a schedule, a Materialize in the
    asset graph (the implicit asset job), else a launch by hand (Launchpad, API, CLI)."""
    if tags.get(_PARENT) or parent_run_id:
        return REEXECUTION
    if tags.get(_SENSOR):
        return tags.get(TAG_TRIGGER) or PUSH
    if tags.get(_SCHEDULE):
        return SCHEDULE
    if job_name.startswith(IMPLICIT_ASSET_JOB):
        return GRAPH
    return MANUAL


def origin_of(tags: Mapping[str, str]) -> str:
    """What started the run's lineage: ``sevenp/origin``, else its trigger (runs tagged before the
    origin existed); "" for a re-execution whose origin is unknown."""
    origin = tags.get(TAG_ORIGIN) or tags.get(TAG_TRIGGER, "")
    return "" if origin == REEXECUTION else origin


def pick_branch(branches: Iterable[str], app: AppConfig) -> str:
    """The branch to name a commit by among several: main, master, develop, then watched ones, by name."""
    names = sorted(set(branches))
    for name in PREFERRED_BRANCHES:
        if name in names:
            return name
    watched = [b for b in names if branch_matches(b, app.branches)]
    return (watched or names or [""])[0]


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _MAX_TAG else text[: _MAX_TAG - 1] + "…"


def _complete(tags: Mapping[str, str], trigger: str) -> bool:
    needed = (TAG_APP, TAG_COMMIT, TAG_BRANCH, TAG_MESSAGE, TAG_AUTHOR)
    return (all(k in tags for k in needed) and tags.get(TAG_TRIGGER) == trigger
            and (trigger != REEXECUTION or bool(tags.get(TAG_ORIGIN))))


def ensure_run_identity(context: dg.AssetExecutionContext, app: AppConfig,
                        git: GitClient | None = None) -> RunIdentity:
    """The run's identity, its missing tags filled first (idempotent; never fails the step).

    Args:
        context: the step's context (its run, instance and partition = the commit).
        app: the app whose stage calls it.
        git: the git resource, when the step has it (the checkout): the branch and message come from
            the remote. Without it they come from the commit's checkout and the run that made it.

    Returns:
        The identity as the run's tags now hold it.
    """
    run_id = context.run.run_id
    try:
        with _lock:
            run = context.instance.get_run_by_id(run_id) or context.run
            tags = dict(run.tags)
            trigger = trigger_of(tags, run.job_name, parent_run_id=run.parent_run_id)
            if _complete(tags, trigger):
                return RunIdentity.from_tags(tags, trigger=trigger)
            identity = _resolve(context, app, git, tags, trigger, run.parent_run_id)
            changed = {k: v for k, v in identity.tags().items() if tags.get(k) != v}
            context.instance.add_run_tags(run_id, changed)
    except Exception as exc:  # what a run is labelled must never fail its stage
        context.log.warning("run identity not recorded: %s: %s", type(exc).__name__, exc)
        return RunIdentity.from_tags(context.run.tags)
    context.log.info("run identity: %s run of %s %s%s (%s)", identity.trigger, identity.app, identity.commit[:12],
                     f" on {identity.branch}" if identity.branch else " (on no watched branch)",
                     ", ".join(sorted(changed)))
    return identity


def _resolve(context: dg.AssetExecutionContext, app: AppConfig, git: GitClient | None,
             tags: Mapping[str, str], trigger: str, parent_run_id: str | None) -> RunIdentity:
    inherited = dict(tags)
    parent_id = tags.get(_PARENT) or parent_run_id
    if parent_id and not all(inherited.get(k) for k in (TAG_COMMIT, TAG_MESSAGE, TAG_ORIGIN)):
        parent = context.instance.get_run_by_id(parent_id)
        # The run's own tags win: what a person set at launch stays.
        inherited = {**(dict(parent.tags) if parent else {}), **inherited}
    commit = context.partition_key if context.has_partition_key else inherited.get(TAG_COMMIT, "")
    if trigger == REEXECUTION:
        origin = origin_of(inherited) or UNKNOWN  # recorded, so the next step does not look again
    elif tags.get(_SENSOR):  # a sensor may start a run on behalf of another (deploys after a pushed commit)
        origin = tags.get(TAG_ORIGIN) or trigger
    else:
        origin = trigger
    if inherited.get(TAG_COMMIT, commit) != commit:  # tags copied from a run of another commit ("Open in Launchpad")
        inherited = {k: v for k, v in inherited.items() if k not in (TAG_BRANCH, TAG_MESSAGE, TAG_AUTHOR)}
    # What the launch set stays (a label: it moves no image tag and starts no deploy); the rest is looked up.
    branch, message, author = (inherited.get(TAG_BRANCH), inherited.get(TAG_MESSAGE), inherited.get(TAG_AUTHOR))
    if not (message and author and branch is not None):
        found = _from_git(context, app, git, commit) if git is not None else _from_checkout(context, app, commit)
        branch = branch if branch is not None else found[0]
        message, author = message or found[1], author or found[2]
    return RunIdentity(app=inherited.get(TAG_APP) or app.name, commit=commit, branch=_clip(branch or ""),
                       message=_clip(message or ""), author=_clip(author or ""), trigger=trigger, origin=origin)


def _from_git(context: dg.AssetExecutionContext, app: AppConfig, git: GitClient,
              sha: str) -> tuple[str, str, str]:
    info = git.commit_info(app.key, sha)
    return branch_of_commit(git, app, sha, log=context.log.info), info.subject, info.author


def branch_of_commit(git: GitClient, app: AppConfig, sha: str, *, log: dg.DagsterLogManager | None = None) -> str:
    """The branch whose head is ``sha`` (any branch of the remote), else a watched branch that holds it,
    else "" (logged); main, master, develop first when several."""
    say = log if log is not None else (lambda *_: None)
    url = app.repository.url
    try:
        heads = git.ls_remote_heads(url, timeout=app.trigger.ls_remote_timeout_seconds)
        at_head = [b for b, h in heads.items() if h == sha]
        if at_head:
            return pick_branch(at_head, app)
        holding = git.branches_containing(app.key, url, sha, allowed=lambda b: branch_matches(b, app.branches)
                                          or b in PREFERRED_BRANCHES)
    except GitError as exc:
        say(f"run identity: no branch for {sha[:12]}: the remote's heads could not be read: {exc}")
        return ""
    if holding:
        return pick_branch(holding, app)
    say(f"run identity: commit {sha[:12]} is the head of no branch and on no watched branch of the remote: "
        "the run has no branch")
    return ""


def _from_checkout(context: dg.AssetExecutionContext, app: AppConfig, sha: str) -> tuple[str, str, str]:
    """Branch, message and author as the commit's checkout recorded them (the checkout's run's branch)."""
    record = latest_materialization(context.instance, dg.AssetKey([app.key, "source_checkout"]), sha)
    if record is None or record.asset_materialization is None:
        context.log.info("run identity: %s has no checkout yet: message and branch unknown", sha[:12])
        return "", "", ""
    meta = {k: v.value for k, v in record.asset_materialization.metadata.items()}
    checkout_run = context.instance.get_run_by_id(record.run_id)
    branch = checkout_run.tags.get(TAG_BRANCH, "") if checkout_run else ""
    author = str(meta.get("author", "")).split(" <", 1)[0]
    return branch, str(meta.get("message", "")), author
