"""Workspace retention against a real Dagster instance and fake workspace folders."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import dagster as dg
import pytest

from sevenp_pipeline.config import Settings
from sevenp_pipeline.definitions import build_definitions
from sevenp_pipeline.housekeeping import retention
from sevenp_pipeline.housekeeping.retention import RunFacts, WorkspaceRetention, protected_commits
from sevenp_pipeline.locks import file_lock
from sevenp_pipeline.triggers.tags import TAG_APP, TAG_BRANCH, TAG_COMMIT

OLD = time.time() - 7 * 86400


def sha(label: str) -> str:
    return (label.encode().hex() + "0" * 40)[:40]


class Home:
    """A settings home with fake workspaces, and an instance holding the runs that made them."""

    def __init__(self, tmp_path: Path) -> None:
        self.settings = Settings(home=tmp_path / "home", apps_dir=tmp_path / "apps")
        self.settings.apps_dir.mkdir()
        self.instance = dg.DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster"))

    def run(self, label: str, status: dg.DagsterRunStatus, branch: str | None = "main", app: str = "web") -> None:
        tags = {TAG_APP: app, "dagster/partition": sha(label)}
        if branch:
            tags.update({TAG_BRANCH: branch, TAG_COMMIT: sha(label)})
        self.instance.add_run(dg.DagsterRun(job_name=f"{app.replace('-', '_')}_ci_job", run_id=str(uuid.uuid4()),
                                            status=status, tags=tags))
        time.sleep(0.002)  # runs are ordered by creation time

    def workspace(self, label: str, app: str = "web", size: int = 1000, age: float = OLD) -> Path:
        root = self.settings.workspaces_dir / app / sha(label)
        (root / "src").mkdir(parents=True)
        (root / "src" / "index.js").write_bytes(b"x" * size)
        (root / "checkout.done").write_text(sha(label))
        os.utime(root, (age, age))
        return root

    def names(self, app: str = "web") -> set[str]:
        folder = self.settings.workspaces_dir / app
        return {p.name for p in folder.iterdir() if p.is_dir()} if folder.exists() else set()


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path)


S, F, STARTED, STARTING = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.STARTED,
                           dg.DagsterRunStatus.STARTING)  # (a QUEUED run needs a code location origin)


def test_keeps_last_commits_per_branch_failed_running_deployed_and_recent(
        home: Home, monkeypatch: pytest.MonkeyPatch) -> None:
    for label, status in [("m1", S), ("m2", F), ("m3", S), ("m4", F), ("m5", S), ("m6", S), ("m7", S)]:
        home.run(label, status)
    home.run("m4", S)  # m4 failed, then a re-execution passed: no longer kept for failing
    home.run("m3", STARTED)  # a run is using m3 right now
    home.run("d1", S, branch="develop")
    home.run("q1", STARTING, branch="feature/x")
    home.run("x1", S, branch=None)  # launched by hand: known by its partition only
    home.run("a1", S, app="billing-api")
    for label in ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "d1", "q1", "x1", "orphan"]:
        home.workspace(label)
    home.workspace("fresh", age=time.time())  # no run yet: one being set up
    home.workspace("a1", app="billing_api")
    (home.settings.workspaces_dir / "web" / "notes").mkdir()  # not a commit: never touched
    artifact = home.settings.artifacts_dir / "web" / sha("m1") / "report.json"
    artifact.parent.mkdir(parents=True)
    artifact.write_text("{}")
    monkeypatch.setattr(retention, "deployed_commits", lambda instance: {"web": {sha("m1")}})

    lines: list[str] = []
    report = WorkspaceRetention(workspaces_dir=str(home.settings.workspaces_dir), keep_per_branch=2).prune(
        home.instance, log=lines.append)

    assert {f"{r.app_key}/{r.sha}" for r in report.removed} == {
        f"web/{sha(x)}" for x in ("m4", "m5", "x1", "orphan")}
    assert home.names() == {sha(x) for x in ("m1", "m2", "m3", "m6", "m7", "d1", "q1", "fresh")} | {"notes"}
    assert home.names("billing_api") == {sha("a1")}
    assert report.kept[f"web/{sha('m1')}"] == "deployed"
    assert report.kept[f"web/{sha('m2')}"] == "its latest run failed"
    assert report.kept[f"web/{sha('m3')}"] == "a run is queued or running"
    assert report.kept[f"web/{sha('q1')}"] == "a run is queued or running"
    assert report.kept[f"web/{sha('m7')}"] == "one of the last 2 commits of main"
    assert report.kept[f"web/{sha('fresh')}"] == "changed in the last 60 min"
    assert artifact.read_text() == "{}"  # artifacts are never removed
    assert all(r.bytes_freed >= 1000 for r in report.removed)
    assert lines[-1] == f"removed 4 workspace(s), {report.bytes_freed} bytes freed; kept 9"
    assert sum(f"removed workspace web/{sha(x)}" in " ".join(lines) for x in ("m4", "m5", "x1", "orphan")) == 4
    again = WorkspaceRetention(workspaces_dir=str(home.settings.workspaces_dir), keep_per_branch=2).prune(
        home.instance)
    assert again.removed == []
    assert not list((home.settings.workspaces_dir / "web").glob("*.lock"))


def test_bytes_freed_skip_files_linked_from_the_cache_and_locked_workspaces_stay(home: Home) -> None:
    home.run("elsewhere", S)  # the instance has pipeline runs, none for these commits
    cache = home.settings.cache_dir / "node_modules" / "k" / "big.js"
    cache.parent.mkdir(parents=True)
    cache.write_bytes(b"c" * 200_000)
    linked = home.workspace("l1", size=50_000)
    (linked / "src" / "node_modules").mkdir()
    os.link(cache, linked / "src" / "node_modules" / "big.js")  # as the install stage links the cache
    os.utime(linked, (OLD, OLD))
    locked = home.workspace("l2")
    retention_ = WorkspaceRetention(workspaces_dir=str(home.settings.workspaces_dir))
    with file_lock(locked.with_suffix(".lock")):  # a checkout in progress
        dry = retention_.prune(home.instance, dry_run=True)
        assert [r.sha for r in dry.removed] == [sha("l1")] and linked.exists()
        report = retention_.prune(home.instance)
    assert report.kept[f"web/{sha('l2')}"] == "locked by a run" and locked.exists()
    (removed,) = report.removed
    assert 50_000 <= removed.bytes_freed < 200_000  # the cache's file is still on disk
    assert removed.bytes_freed == dry.removed[0].bytes_freed
    assert cache.read_bytes() == b"c" * 200_000 and not linked.exists()


def test_an_instance_with_no_pipeline_runs_removes_nothing(home: Home) -> None:
    home.workspace("w1")
    lines: list[str] = []
    report = WorkspaceRetention(workspaces_dir=str(home.settings.workspaces_dir)).prune(home.instance,
                                                                                       log=lines.append)
    assert report.removed == [] and home.names() == {sha("w1")} and "is DAGSTER_HOME" in lines[0]


def test_protected_commits_by_branch_are_the_newest_distinct_commits() -> None:
    facts = [RunFacts("web", sha(x), "main", created=t, failed=False, finished=True)
             for t, x in enumerate(["a", "b", "c", "d", "a", "c"])]
    kept = protected_commits(facts, 2, {})
    assert set(kept["web"]) == {sha("c"), sha("d")}  # pushed last; re-running a or c changes nothing


def test_daily_schedule_runs_the_retention_job_outside_the_app_jobs(home: Home) -> None:
    (home.settings.apps_dir / "web.yaml").write_text("name: web\nrepository: {url: /srv/web.git}\n")
    home.workspace("old")
    home.workspace("kept")
    home.run("kept", F)
    defs = build_definitions(home.settings)
    schedule = defs.resolve_schedule_def("workspace_retention_schedule")
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING and schedule.cron_schedule == "30 3 * * *"
    assert schedule.job_name == "workspace_retention_job"
    assert "prune_workspaces" not in {n.name for n in defs.resolve_job_def("web_ci_job").graph.node_defs}
    result = defs.resolve_job_def("workspace_retention_job").execute_in_process(instance=home.instance)
    assert result.success
    (output,) = [e for e in result.all_events if e.event_type_value == "STEP_OUTPUT"]
    metadata = {k: v.value for k, v in output.event_specific_data.metadata.items()}
    assert metadata["removed"] == 1 and metadata["bytes_freed"] >= 1000
    assert metadata["removed_workspaces"][0]["workspace"] == f"web/{sha('old')}"
    assert home.names() == {sha("kept")}


def test_make_prune_reports_what_it_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    dagster_home = tmp_path / "dagster-home"
    dagster_home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("SEVENP_HOME", str(tmp_path / "home"))
    with dg.DagsterInstance.get() as instance:
        for label in ("p1", "p2", "p3"):
            instance.add_run(dg.DagsterRun(job_name="web_ci_job", run_id=str(uuid.uuid4()), status=S,
                                           tags={TAG_APP: "web", TAG_BRANCH: "main", TAG_COMMIT: sha(label)}))
            time.sleep(0.002)
    for label in ("p1", "p2", "p3"):
        root = tmp_path / "home" / "workspaces" / "web" / sha(label)
        root.mkdir(parents=True)
        (root / "f").write_bytes(b"x" * 4096)
        os.utime(root, (OLD, OLD))
    assert retention.main(["--keep", "2"]) == 0
    out = capsys.readouterr().out
    assert f"removed workspace web/{sha('p1')}" in out and "removed 1 workspace(s)" in out and "freed" in out
    assert sorted(p.name for p in (tmp_path / "home" / "workspaces" / "web").iterdir()) == sorted(
        [sha("p2"), sha("p3")])


def test_over_the_home_budget_the_oldest_unprotected_workspaces_go_first(home: Home) -> None:
    """keep_per_branch keeps every commit here; the budget then removes feature branches' oldest
    pushes first, never main, an environment's branch (develop), a running commit or a fresh one."""
    (home.settings.apps_dir / "web.yaml").write_text(
        "name: web\nrepository: {url: /srv/web.git}\nimage: {dockerfile: Dockerfile}\n"
        "environments: {staging: {branches: [develop]}}\n")
    runs = [("m1", "main"), ("d1", "develop"), ("f1", "feature/a"), ("x1", None), ("f2", "feature/b"),
            ("r1", "feature/a"), ("f3", "feature/a"), ("m2", "main")]
    for label, branch in runs:
        home.run(label, {"r1": STARTED, "x1": F}.get(label, S), branch=branch)  # x1: by hand, failed
        home.workspace(label, size=100_000)
    home.workspace("new", size=100_000, age=time.time())  # being set up: no run yet
    sizes = {label: retention.disk_usage(home.settings.workspaces_dir / "web" / sha(label))
             for label, _ in [*runs, ("new", None)]}
    total = sum(sizes.values())
    # Room for everything but two workspaces: f1 (oldest unprotected), then x1 (launched by hand, kept
    # for its failed run).
    budget = total - sizes["f1"] - sizes["x1"] + 10
    lines: list[str] = []
    report = WorkspaceRetention(workspaces_dir=str(home.settings.workspaces_dir), keep_per_branch=5,
                                budget_gb=budget / retention.GB, apps_dir=str(home.settings.apps_dir)).prune(
        home.instance, log=lines.append)
    assert [(r.sha, r.why) for r in report.removed] == [(sha("f1"), retention.OVER_BUDGET),
                                                        (sha("x1"), retention.OVER_BUDGET)]
    assert [r.bytes_freed for r in report.removed] == [sizes["f1"], sizes["x1"]]
    assert home.names() == {sha(x) for x in ("m1", "d1", "f2", "r1", "f3", "m2", "new")}
    assert report.home_bytes == total - sizes["f1"] - sizes["x1"] <= budget
    assert report.kept_bytes[f"web/{sha('f2')}"] == sizes["f2"]
    text = "\n".join(lines)
    assert f"removed workspace web/{sha('f1')} ({sizes['f1'] / 1e6:.1f} MB): the home was over its budget" in text
    assert f"kept workspace web/{sha('m1')} ({sizes['m1'] / 1e6:.1f} MB): one of the last 5 commits of main" in text
    assert f"home: {report.home_bytes / 1e6:.1f} MB kept of a budget of {budget / 1e6:.1f} MB" in text

    # A budget nothing fits: every unprotected workspace goes, oldest first; main's, develop's (an
    # environment's branch), the running one and the fresh one stay, and the report says so.
    lines.clear()
    again = WorkspaceRetention(workspaces_dir=str(home.settings.workspaces_dir), keep_per_branch=5,
                               budget_gb=1e-9, apps_dir=str(home.settings.apps_dir)).prune(
        home.instance, log=lines.append)
    assert [r.sha for r in again.removed] == [sha("f2"), sha("f3")]
    assert home.names() == {sha(x) for x in ("m1", "d1", "r1", "m2", "new")}
    assert again.kept[f"web/{sha('r1')}"] == "a run is queued or running"
    assert "(still over: the rest is protected)" in "\n".join(lines)
    # Without a budget the keep-N rule alone decides, as before.
    assert WorkspaceRetention(workspaces_dir=str(home.settings.workspaces_dir), keep_per_branch=5, budget_gb=0,
                              apps_dir=str(home.settings.apps_dir)).prune(home.instance).removed == []


def test_make_prune_takes_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    dagster_home = tmp_path / "dagster-home"
    dagster_home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    monkeypatch.setenv("SEVENP_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SEVENP_APPS_DIR", str(tmp_path / "apps"))
    monkeypatch.setenv("SEVENP_HOME_BUDGET_GB", "0")
    with dg.DagsterInstance.get() as instance:
        for label in ("b1", "b2"):
            instance.add_run(dg.DagsterRun(job_name="web_ci_job", run_id=str(uuid.uuid4()), status=S,
                                           tags={TAG_APP: "web", TAG_BRANCH: "feature/x", TAG_COMMIT: sha(label)}))
            time.sleep(0.002)
    for label in ("b1", "b2"):
        root = tmp_path / "home" / "workspaces" / "web" / sha(label)
        root.mkdir(parents=True)
        (root / "f").write_bytes(b"x" * 200_000)
        os.utime(root, (OLD, OLD))
    assert retention.main([]) == 0  # $SEVENP_HOME_BUDGET_GB=0: no budget, both kept by keep-N
    assert "removed 0 workspace(s)" in capsys.readouterr().out
    assert retention.main(["--budget-gb", "0.0003"]) == 0  # 300 KB: room for one
    out = capsys.readouterr().out
    assert f"removed workspace web/{sha('b1')}" in out and "the home was over its budget" in out
    assert f"kept workspace web/{sha('b2')} (0.2 MB): one of the last 5 commits of feature/x" in out
    monkeypatch.setenv("SEVENP_HOME_BUDGET_GB", "lots")
    with pytest.raises(ValueError, match="SEVENP_HOME_BUDGET_GB='lots': expected a number of GB"):
        retention.main([])
