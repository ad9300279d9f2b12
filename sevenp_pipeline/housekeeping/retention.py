"""Workspace retention: prunes ``<workspaces>/<app key>/<sha>/`` checkouts nothing needs any more.

Kept, per app, from the Dagster instance's runs (tags ``sevenp/app``, ``sevenp/branch``,
``sevenp/commit``; a run launched by hand is known by its partition):

- the last ``keep_per_branch`` commits of each branch (in push order: a commit's first run);
- every commit whose latest run failed (to look at it, or re-execute it from failure);
- every commit with a run queued or running: a workspace a run is using is never deleted;
- every deployed commit (:func:`deployed_commits`, the seam the deploy stages extend);
- every workspace changed within ``min_age_seconds`` (a run being set up right now).

Only folders named like a commit SHA are touched. Artifacts (``<home>/artifacts``) and the run
records are never removed.

**The home budget** (``budget_gb``, env ``SEVENP_HOME_BUDGET_GB``, default 20; ``make prune
BUDGET_GB=``; 0: none) counts the bytes of the workspaces and of the stage result cache (only what
deleting them would free: files linked from elsewhere are not counted). When the rules above leave
the home over it, workspaces kept only as one of a branch's last commits or for a failed run go too,
oldest push first, until it is under the budget, if their commit is on no protected branch: main,
master and every environment's ``branches`` (from the app configs in ``apps_dir``; an environment
that takes every branch protects none by this rule). Deployed commits, commits a run is using, recent
and locked workspaces are never removed for the budget either.

The stage result cache (``<home>/cache/stages``, resources/stage_cache.py) is pruned by age alone:
a manifest not stored or restored for ``stage_cache_days`` goes, then every blob no remaining
manifest names (blobs younger than an hour stay: a run may be storing its manifest).

``python -m sevenp_pipeline.housekeeping.retention`` (``make prune``) and the daily
``workspace_retention_schedule`` both call :meth:`WorkspaceRetention.prune`.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shutil
import stat
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from pydantic import Field

from sevenp_pipeline.config.settings import (
    DEFAULT_HOME_BUDGET_GB,
    DEFAULT_KEEP_PER_BRANCH,
    DEFAULT_STAGE_CACHE_DAYS,
    Settings,
)
from sevenp_pipeline.locks import LockTimeout, file_lock
from sevenp_pipeline.resources.git import is_sha
from sevenp_pipeline.resources.stage_cache import CachePruneReport, StageResultCache
from sevenp_pipeline.triggers.tags import TAG_APP, TAG_BRANCH, TAG_COMMIT

PARTITION_TAG = "dagster/partition"
ALWAYS_PROTECTED = ("main", "master")
GB = 10**9  # decimal, as the report prints sizes
# Reasons a workspace may still go when the home is over its budget (see the module docstring).
_BUDGET_MAY_REMOVE = ("one of the last ", "its latest run failed")
OVER_BUDGET = "the home was over its budget"


def deployed_commits(instance: dg.DagsterInstance) -> dict[str, set[str]]:
    """``{app key: SHAs}`` an environment runs or may be rolled back to: the last few healthy deploys of
    each environment (deploy/history.py). Their workspaces hold the smoke tests a redeploy runs."""
    from sevenp_pipeline.deploy.history import deployed_commits as from_history  # noqa: PLC0415 (no cycle)

    return from_history(instance)


@dataclass(frozen=True)
class RunFacts:
    """What retention needs to know of one run."""

    app_key: str
    sha: str
    branch: str | None
    created: float
    failed: bool
    finished: bool


def run_facts(instance: dg.DagsterInstance) -> list[RunFacts]:
    facts = []
    for record in instance.get_run_records():
        run = record.dagster_run
        tags = run.tags
        app = tags.get(TAG_APP)
        sha = tags.get(TAG_COMMIT) or tags.get(PARTITION_TAG) or ""
        if not app or not is_sha(sha):
            continue
        facts.append(RunFacts(app_key=app.replace("-", "_"), sha=sha, branch=tags.get(TAG_BRANCH) or None,
                              created=record.create_timestamp.timestamp(),
                              failed=run.status == dg.DagsterRunStatus.FAILURE, finished=run.is_finished))
    return facts


def protected_commits(facts: Iterable[RunFacts], keep_per_branch: int,
                      deployed: Mapping[str, set[str]]) -> dict[str, dict[str, str]]:
    """``{app key: {sha: why it is kept}}``."""
    latest: dict[tuple[str, str], RunFacts] = {}
    in_use: set[tuple[str, str]] = set()
    for fact in sorted(facts, key=lambda f: f.created):
        latest[(fact.app_key, fact.sha)] = fact  # the last run of a commit decides "failed"
        if not fact.finished:
            in_use.add((fact.app_key, fact.sha))
    kept: dict[str, dict[str, str]] = defaultdict(dict)
    for app, shas in deployed.items():
        for sha in shas:
            kept[app][sha] = "deployed"
    for app, sha in in_use:
        kept[app].setdefault(sha, "a run is queued or running")
    for (app, sha), fact in latest.items():
        if fact.failed:
            kept[app].setdefault(sha, "its latest run failed")
    # A commit's place on its branch is its first run (the push); re-running an old commit later
    # does not make it one of the branch's last commits.
    pushed: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for fact in facts:
        if fact.branch:
            first = pushed[(fact.app_key, fact.branch)]
            first[fact.sha] = min(first.get(fact.sha, fact.created), fact.created)
    for (app, branch), shas in pushed.items():
        newest_first = sorted(shas, key=lambda s: shas[s], reverse=True)
        for sha in newest_first[:keep_per_branch]:
            kept[app].setdefault(sha, f"one of the last {keep_per_branch} commits of {branch}")
    return dict(kept)


def disk_usage(path: Path) -> int:
    """Bytes on disk freed by deleting ``path``: a file also hard-linked from outside it (the
    node_modules trees linked from the dependency cache) frees nothing and is not counted."""
    folders = 0
    files: dict[tuple[int, int], list[int]] = {}  # inode -> [links inside, links in all, bytes]
    for root, dirs, names in os.walk(path):
        folders += Path(root).lstat().st_blocks * 512
        for name in [*dirs, *names]:
            try:
                info = (Path(root) / name).lstat()
            except OSError:
                continue
            if stat.S_ISDIR(info.st_mode):
                continue  # counted when walked
            entry = files.setdefault((info.st_dev, info.st_ino), [0, info.st_nlink, info.st_blocks * 512])
            entry[0] += 1
    return folders + sum(size for inside, links, size in files.values() if inside >= links)


@dataclass(frozen=True)
class Removed:
    app_key: str
    sha: str
    bytes_freed: int
    why: str = "no rule keeps it"


@dataclass(frozen=True)
class Kept:
    why: str
    bytes: int = 0


@dataclass
class PruneReport:
    removed: list[Removed] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # "<app>/<sha>" -> why
    kept_bytes: dict[str, int] = field(default_factory=dict)  # "<app>/<sha>" -> bytes on disk
    dry_run: bool = False
    stage_cache: CachePruneReport | None = None  # None: no stage cache configured
    stage_cache_bytes: int = 0  # what the stage cache holds after pruning
    budget_bytes: int = 0  # 0: no budget

    @property
    def home_bytes(self) -> int:
        """The workspaces kept and the stage cache: what counts against the budget."""
        return sum(self.kept_bytes.values()) + self.stage_cache_bytes

    def budget_line(self) -> str:
        budget = f" of a budget of {_size(self.budget_bytes)}" if self.budget_bytes else " (no budget)"
        over = " (still over: the rest is protected)" if self.budget_bytes and self.home_bytes > self.budget_bytes \
            else ""
        return (f"home: {_size(self.home_bytes)} kept{budget}{over}: workspaces {_size(sum(self.kept_bytes.values()))}"
                f" in {len(self.kept_bytes)}, stage cache {_size(self.stage_cache_bytes)}; "
                f"{_size(self.bytes_freed)} {'to free' if self.dry_run else 'freed'}")

    @property
    def bytes_freed(self) -> int:
        return sum(r.bytes_freed for r in self.removed)

    def summary(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        text = (f"{verb} {len(self.removed)} workspace(s), {_size(self.bytes_freed)} "
                f"{'to free' if self.dry_run else 'freed'}; kept {len(self.kept)}")
        cache = self.stage_cache
        if cache is not None:
            text += (f"; stage cache: {verb} {cache.manifests_removed} result(s) and {cache.blobs_removed} "
                     f"file(s), {_size(cache.bytes_freed)}; kept {cache.manifests_kept}")
        return text


def _size(n: int) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n} bytes"


def protected_branches(apps_dir: str) -> dict[str, list[str]]:
    """``{app key: branch patterns}`` whose commits the home budget never removes: main, master and
    every environment's ``branches`` (not ``*``). An app whose config is broken keeps the defaults."""
    from sevenp_pipeline.config.loader import load_app_directory  # noqa: PLC0415 (the loader is heavy)

    if not apps_dir or not Path(apps_dir).is_dir():
        return {}
    found = {}
    for app in load_app_directory(Path(apps_dir)).apps:
        patterns = list(ALWAYS_PROTECTED)
        for env in (app.environments or {}).values():
            patterns += [b for b in env.branches if b != "*"]
        found[app.key] = [*dict.fromkeys(patterns)]
    return found


class WorkspaceRetention(dg.ConfigurableResource):
    """Prunes per-commit workspaces by the rules in the module docstring."""

    workspaces_dir: str = Field(description="the home's workspaces folder: <app key>/<sha>/ below it")
    keep_per_branch: int = Field(default=DEFAULT_KEEP_PER_BRANCH, ge=1,
                                 description="commits kept per branch (env SEVENP_KEEP_COMMITS_PER_BRANCH)")
    min_age_seconds: float = Field(default=3600, ge=0, description="workspaces changed more recently are kept")
    stage_cache_dir: str = Field(default="", description="the stage result cache to prune; empty: none")
    stage_cache_days: float = Field(default=DEFAULT_STAGE_CACHE_DAYS, gt=0,
                                    description="stage results not stored or restored for this long are "
                                                "removed (env SEVENP_STAGE_CACHE_DAYS)")
    budget_gb: float = Field(default=DEFAULT_HOME_BUDGET_GB, ge=0,
                             description="bytes of workspaces and stage cache the home may hold, GB; over it "
                                         "the oldest workspaces of unprotected branches go (env "
                                         "SEVENP_HOME_BUDGET_GB; 0: no budget)")
    apps_dir: str = Field(default="", description="the app configs: their environments' branches are protected")

    def prune(self, instance: dg.DagsterInstance, *, dry_run: bool = False,
              log: Callable[[str], None] | None = None) -> PruneReport:
        report = PruneReport(dry_run=dry_run)
        if self.stage_cache_dir:
            report.stage_cache = StageResultCache(root=self.stage_cache_dir).prune(
                unused_for_seconds=self.stage_cache_days * 86400, dry_run=dry_run)
        root = Path(self.workspaces_dir)
        if not root.is_dir():
            if log:
                log(report.summary())
            return report
        now = time.time()
        facts = run_facts(instance)
        if not facts:  # the wrong DAGSTER_HOME would make every workspace look unused
            if log:
                log("no pipeline runs in this Dagster instance (is DAGSTER_HOME the pipeline's?): "
                    "nothing removed")
            return report
        kept = protected_commits(facts, self.keep_per_branch, deployed_commits(instance))
        held: list[tuple[str, Path, str]] = []  # (app key, workspace, why kept)
        for app_dir in sorted(p for p in root.iterdir() if p.is_dir()):
            for workspace in sorted(p for p in app_dir.iterdir() if p.is_dir() and is_sha(p.name)):
                name = f"{app_dir.name}/{workspace.name}"
                why = kept.get(app_dir.name, {}).get(workspace.name)
                if why is None and now - workspace.stat().st_mtime < self.min_age_seconds:
                    why = f"changed in the last {self.min_age_seconds / 60:.0f} min"
                if why is not None:
                    held.append((app_dir.name, workspace, why))
                    continue
                removed = self._remove(app_dir.name, workspace, dry_run=dry_run)
                if removed is None:
                    held.append((app_dir.name, workspace, "locked by a run"))
                    continue
                report.removed.append(removed)
                if log:
                    log(f"{'would remove' if dry_run else 'removed'} workspace {name} "
                        f"({_size(removed.bytes_freed)})")
        self._within_budget(report, held, facts, dry_run=dry_run, log=log)
        if log:
            for name, why in report.kept.items():
                log(f"kept workspace {name} ({_size(report.kept_bytes[name])}): {why}")
            log(report.budget_line())
            log(report.summary())
        return report

    def _within_budget(self, report: PruneReport, held: list[tuple[str, Path, str]], facts: list[RunFacts], *,
                       dry_run: bool, log: Callable[[str], None] | None) -> None:
        """Records the kept workspaces with their bytes; over the budget, removes the oldest ones of
        unprotected branches that only the keep-N or failed-run rules kept (module docstring)."""
        sizes = {(app, ws.name): disk_usage(ws) for app, ws, _ in held}
        report.budget_bytes = int(self.budget_gb * GB)
        if self.stage_cache_dir and Path(self.stage_cache_dir).is_dir():
            report.stage_cache_bytes = disk_usage(Path(self.stage_cache_dir))
        total = sum(sizes.values()) + report.stage_cache_bytes
        gone: set[tuple[str, str]] = set()
        if report.budget_bytes and total > report.budget_bytes:
            protected = protected_branches(self.apps_dir)
            pushed: dict[tuple[str, str], float] = {}
            branches: dict[tuple[str, str], set[str]] = defaultdict(set)
            for fact in facts:
                key = (fact.app_key, fact.sha)
                pushed[key] = min(pushed.get(key, fact.created), fact.created)
                if fact.branch:
                    branches[key].add(fact.branch)

            def unprotected(app: str, sha: str) -> bool:
                patterns = protected.get(app, list(ALWAYS_PROTECTED))
                return not any(fnmatch.fnmatchcase(b, p) for b in branches[(app, sha)] for p in patterns)

            candidates = sorted(
                ((app, ws) for app, ws, why in held
                 if why.startswith(_BUDGET_MAY_REMOVE) and unprotected(app, ws.name)),
                key=lambda item: (pushed.get((item[0], item[1].name), item[1].stat().st_mtime), item[1].name))
            for app, workspace in candidates:
                if total <= report.budget_bytes:
                    break
                removed = self._remove(app, workspace, dry_run=dry_run, why=OVER_BUDGET)
                if removed is None:
                    continue  # a run took it meanwhile: stays, as "locked by a run" would
                report.removed.append(removed)
                total -= sizes[(app, workspace.name)]
                gone.add((app, workspace.name))
                if log:
                    log(f"{'would remove' if dry_run else 'removed'} workspace {app}/{workspace.name} "
                        f"({_size(removed.bytes_freed)}): {OVER_BUDGET} ({_size(report.budget_bytes)})")
        for app, workspace, why in held:
            if (app, workspace.name) not in gone:
                name = f"{app}/{workspace.name}"
                report.kept[name] = why
                report.kept_bytes[name] = sizes[(app, workspace.name)]

    @staticmethod
    def _remove(app_key: str, workspace: Path, *, dry_run: bool, why: str = "no rule keeps it") -> Removed | None:
        """Deletes ``workspace`` under the lock a checkout takes; None when a run holds it."""
        lock = workspace.with_suffix(".lock")
        had_lock_file = lock.exists()
        try:
            with file_lock(lock, timeout=0.5, what=f"workspace {workspace}"):
                freed = disk_usage(workspace)
                if not dry_run:
                    shutil.rmtree(workspace)
        except LockTimeout:
            return None
        if not dry_run or not had_lock_file:
            lock.unlink(missing_ok=True)
        return Removed(app_key=app_key, sha=workspace.name, bytes_freed=freed, why=why)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make prune", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=int, default=None,
                        help=f"commits kept per branch (default: $SEVENP_KEEP_COMMITS_PER_BRANCH or "
                             f"{DEFAULT_KEEP_PER_BRANCH})")
    parser.add_argument("--min-age-seconds", type=float, default=3600)
    parser.add_argument("--cache-days", type=float, default=None,
                        help=f"stage results unused for this many days are removed (default: "
                             f"$SEVENP_STAGE_CACHE_DAYS or {DEFAULT_STAGE_CACHE_DAYS:g})")
    parser.add_argument("--budget-gb", type=float, default=None,
                        help=f"bytes of workspaces and stage cache the home may hold (default: "
                             f"$SEVENP_HOME_BUDGET_GB or {DEFAULT_HOME_BUDGET_GB:g}; 0: no budget)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    dagster_home = os.environ.get("DAGSTER_HOME", "")
    if not dagster_home or not Path(dagster_home).is_dir():
        print(f"DAGSTER_HOME={dagster_home!r} is not a folder: set it to the pipeline's Dagster instance "
              "(make sets $(SEVENP_HOME)/dagster)", file=sys.stderr)
        return 2
    retention = WorkspaceRetention(workspaces_dir=str(settings.workspaces_dir),
                                   keep_per_branch=args.keep or settings.keep_per_branch,
                                   min_age_seconds=args.min_age_seconds,
                                   stage_cache_dir=str(settings.stage_cache_dir),
                                   stage_cache_days=args.cache_days or settings.stage_cache_days,
                                   budget_gb=settings.home_budget_gb if args.budget_gb is None else args.budget_gb,
                                   apps_dir=str(settings.apps_dir))
    with dg.DagsterInstance.get() as instance:  # DAGSTER_HOME: the instance whose runs say what is in use
        retention.prune(instance, dry_run=args.dry_run, log=print)
    return 0


if __name__ == "__main__":
    sys.exit(main())
