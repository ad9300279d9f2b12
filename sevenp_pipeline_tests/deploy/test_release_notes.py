"""Release notes from a real git repository: GitClient.commits_between reads the mirror, render groups."""

from __future__ import annotations

from pathlib import Path

import pytest

from sevenp_pipeline.deploy.release_notes import render_release_notes
from sevenp_pipeline.models import CommitInfo
from sevenp_pipeline.resources.git import CommitNotFound, GitClient
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline_tests.gitutil import Remote

pytestmark = pytest.mark.integration


@pytest.fixture
def repo(tmp_path: Path) -> tuple[Remote, GitClient]:
    source = tmp_path / "src"
    source.mkdir()
    (source / "README.md").write_text("app\n")
    remote = Remote(tmp_path, source)
    return remote, GitClient(runner=ProcessRunner(), cache_dir=str(tmp_path / "cache"))


def test_notes_group_the_commits_since_the_previous_release(repo: tuple[Remote, GitClient]) -> None:
    remote, git = repo
    previous = remote.commit("chore: release 1.0", push_to="main")
    shas = {}
    for message in [
        "feat(auth): add login with magic links",
        "fix: handle empty course list",
        "perf(db): index enrolments by student",
        "feat(api)!: drop the v1 endpoints",
        "refactor: split the course service\n\nThe old module did three things.\n\n"
        "BREAKING CHANGE: CourseService.load is now CourseRepository.find\nRefs: #12",
        "docs: explain deploys",
        "Update the readme without a convention",
        "ci: cache npm",
    ]:
        shas[message.splitlines()[0]] = remote.commit(message, push_to="main")
    new = shas["ci: cache npm"]
    git.fetch("app", remote.url)
    commits = git.commits_between("app", new, previous=previous)
    assert [c.subject for c in commits][:2] == ["ci: cache npm", "Update the readme without a convention"]
    assert len(commits) == 8 and previous not in {c.sha for c in commits}
    refactor = next(c for c in commits if c.subject.startswith("refactor"))
    assert "BREAKING CHANGE: CourseService.load" in refactor.body and refactor.body.endswith("Refs: #12")

    notes = render_release_notes("7p-education-api", "staging", previous, new, commits)
    s = {k: v[:7] for k, v in shas.items()}
    assert notes == f"""# 7p-education-api → staging

`{previous[:7]}`..`{new[:7]}` (8 commits)

## ⚠ BREAKING CHANGES

- CourseService.load is now CourseRepository.find (`{s["refactor: split the course service"]}`)
- **api:** drop the v1 endpoints (`{s["feat(api)!: drop the v1 endpoints"]}`)

## Features

- **api:** drop the v1 endpoints (`{s["feat(api)!: drop the v1 endpoints"]}`)
- **auth:** add login with magic links (`{s["feat(auth): add login with magic links"]}`)

## Bug Fixes

- handle empty course list (`{s["fix: handle empty course list"]}`)

## Performance

- **db:** index enrolments by student (`{s["perf(db): index enrolments by student"]}`)

## Documentation

- explain deploys (`{s["docs: explain deploys"]}`)

## Refactoring

- split the course service (`{s["refactor: split the course service"]}`)

## CI

- cache npm (`{s["ci: cache npm"]}`)

## Other

- Update the readme without a convention (`{s["Update the readme without a convention"]}`)
"""


def test_first_release_takes_the_last_n_commits(repo: tuple[Remote, GitClient]) -> None:
    remote, git = repo
    for n in range(4):
        new = remote.commit(f"fix: bug {n}", push_to="main")
    git.fetch("app", remote.url)
    commits = git.commits_between("app", new, previous=None, limit=3)
    assert [c.subject for c in commits] == ["fix: bug 3", "fix: bug 2", "fix: bug 1"]
    notes = render_release_notes("api", "production", None, new, commits)
    assert notes.splitlines()[2] == f"first release, up to `{new[:7]}` (3 commits)"
    assert "## Bug Fixes" in notes and "## ⚠ BREAKING CHANGES" not in notes
    everything = git.commits_between("app", new, previous=None)
    assert [c.subject for c in everything][-1] == "initial import"  # default 50: all 5


def test_unknown_commits_are_refused(repo: tuple[Remote, GitClient]) -> None:
    remote, git = repo
    git.fetch("app", remote.url)
    head = git.ls_remote_heads(remote.url)["main"]
    with pytest.raises(CommitNotFound, match="not in the mirror"):
        git.commits_between("app", head, previous="f" * 40)
    with pytest.raises(CommitNotFound):
        git.commits_between("app", "--all", previous=None)  # not a sha: never reaches git as an option


def test_render_without_git() -> None:
    """Reverts made by git, a revert typed by hand, and an empty range."""
    commits = [
        CommitInfo("a" * 40, "x", "x@e", 'Revert "feat: risky thing"', 0, (), "This reverts commit b."),
        CommitInfo("b" * 40, "x", "x@e", "revert(api): undo the cache", 0, ()),
        CommitInfo("c" * 40, "x", "x@e", "chore!: require node 20", 0, ()),
    ]
    notes = render_release_notes("api", "staging", "d" * 40, "e" * 40, commits)
    assert "## Reverts\n\n- Revert \"feat: risky thing\" (`aaaaaaa`)\n- **api:** undo the cache (`bbbbbbb`)" in notes
    assert "## ⚠ BREAKING CHANGES\n\n- require node 20 (`ccccccc`)" in notes
    assert "## Chores\n\n- require node 20 (`ccccccc`)" in notes
    empty = render_release_notes("api", "staging", "d" * 40, "d" * 40, [])
    assert empty == "# api → staging\n\n`ddddddd`..`ddddddd` (0 commits)\n\nNo changes.\n"


def test_commit_text_is_shown_never_rendered_or_interpreted(repo: tuple[Remote, GitClient]) -> None:
    """A branch's commit text: terminal escapes and bidi overrides are stripped where it is read (logs,
    tags, notes), its HTML is escaped in the markdown notes."""
    remote, git = repo
    previous = remote.commit("chore: release 1.0", push_to="main")
    subject = "feat: <iframe src=javascript:alert(1)></iframe> \x1b[2J\x1b[31mred\u202e\x9bdone"
    new = remote.commit(subject + "\n\nbody \x1b]0;title\x07line\nsecond line", push_to="main")
    git.fetch("app", remote.url)
    (commit,) = git.commits_between("app", new, previous=previous)
    assert commit.subject == "feat: <iframe src=javascript:alert(1)></iframe> [2J[31mreddone"
    assert commit.body == "body ]0;titleline\nsecond line"
    assert git.commit_info("app", new).subject == commit.subject
    notes = render_release_notes("app", "staging", previous, new, [commit])
    assert "&lt;iframe src=javascript:alert(1)&gt;&lt;/iframe&gt;" in notes and "<iframe" not in notes
    assert "\x1b" not in notes
