"""Release notes for a deploy: the commits since the environment's previous release, as markdown grouped by
Conventional Commit type (the spec's "generate release notes"), breaking changes first."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Protocol

from sevenp_pipeline.stages.commits import parse_header
from sevenp_pipeline.text import md_text

SECTIONS: tuple[tuple[str, str], ...] = (
    ("feat", "Features"), ("fix", "Bug Fixes"), ("perf", "Performance"), ("revert", "Reverts"),
    ("docs", "Documentation"), ("style", "Styles"), ("refactor", "Refactoring"), ("test", "Tests"),
    ("build", "Build"), ("ci", "CI"), ("chore", "Chores"),
)
OTHER = "Other"
# A footer token at the start of a line (the spec allows the hyphenated form too), its text up to the next footer.
_BREAKING = re.compile(r"^BREAKING[ -]CHANGE:\s*(?P<text>.*?)(?=^[\w-]+(?:: | #)|\Z)", re.MULTILINE | re.DOTALL)
_GIT_REVERT = re.compile(r'^Revert "(?P<subject>.*)"$')


class CommitLike(Protocol):
    """What is read of a commit: :class:`~sevenp_pipeline.models.CommitInfo` fits."""

    @property
    def sha(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def body(self) -> str: ...


def _short(sha: str | None) -> str:
    return (sha or "")[:7]


def _line(scope: str | None, text: str, sha: str) -> str:
    """One entry; the commit's words are escaped (its HTML is shown, never rendered)."""
    prefix = f"**{md_text(scope)}:** " if scope else ""
    return f"- {prefix}{md_text(text.strip())} (`{_short(sha)}`)"


def render_release_notes(app_name: str, environment: str, previous_commit: str | None, new_commit: str,
                         commits: Sequence[CommitLike]) -> str:
    """Markdown release notes of ``commits`` (newest first, as ``git log`` gives them).

    Args:
        app_name: the app's name, for the title.
        environment: where the release goes.
        previous_commit: the commit the environment ran before; None for a first release.
        new_commit: the commit being deployed.
        commits: the commits between the two (``GitClient.commits_between``).

    Returns:
        A title, the range, a "BREAKING CHANGES" section when any commit is marked breaking (``!`` in the
        header or a ``BREAKING CHANGE:`` footer), then one section per type in :data:`SECTIONS` order and
        "Other" for messages that are not conventional. Scopes are bold, shas short.
    """
    groups: dict[str, list[str]] = {title: [] for _, title in SECTIONS}
    groups[OTHER] = []
    titles = dict(SECTIONS)
    breaking: list[str] = []
    for commit in commits:
        body = getattr(commit, "body", "") or ""
        header = parse_header(commit.subject)
        reverted = _GIT_REVERT.match(commit.subject.strip())
        if header is not None and header.type in titles:
            groups[titles[header.type]].append(_line(header.scope, header.subject, commit.sha))
        elif reverted:  # git's own revert message
            groups[titles["revert"]].append(_line(None, commit.subject, commit.sha))
        else:
            groups[OTHER].append(_line(None, commit.subject, commit.sha))
        footer = _BREAKING.search(body)
        if footer or (header is not None and header.breaking):
            note = " ".join(footer["text"].split()) if footer and footer["text"].strip() else (
                header.subject if header else commit.subject)
            breaking.append(_line(header.scope if header else None, note, commit.sha))

    count = f"{len(commits)} commit{'s' if len(commits) != 1 else ''}"
    if previous_commit:
        span = f"`{_short(previous_commit)}`..`{_short(new_commit)}` ({count})"
    else:
        span = f"first release, up to `{_short(new_commit)}` ({count})"
    out = [f"# {app_name} → {environment}", "", span]
    if not commits:
        out += ["", "No changes."]
    if breaking:
        out += ["", "## ⚠ BREAKING CHANGES", "", *breaking]
    for title, lines in groups.items():
        if lines:
            out += ["", f"## {title}", "", *lines]
    return "\n".join(out) + "\n"
