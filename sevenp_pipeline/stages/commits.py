"""Conventional Commits (https://www.conventionalcommits.org), as commitlint's config-conventional
checks them: ``type(scope)!: subject`` with a known type, a subject, a bounded header, and a blank
line between header and body. Merge and revert commits made by git itself are not checked."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_TYPES = ("build", "chore", "ci", "docs", "feat", "fix", "perf", "refactor", "revert", "style", "test")
_HEADER = re.compile(r"^(?P<type>[A-Za-z]+)(?:\((?P<scope>[^()\r\n]+)\))?(?P<breaking>!)?: (?P<subject>\S.*)$")
# What commitlint's default `ignores` skips: commits git writes itself.
_IGNORED = (re.compile(r"^Merge (branch|pull request|remote-tracking branch|tag) "), re.compile(r"^Merge [0-9a-f]{7,}"),
            re.compile(r'^Revert ".*"'), re.compile(r"^(fixup|squash|amend)! "))


@dataclass(frozen=True)
class Header:
    """A conventional commit header: ``type(scope)!: subject``."""

    type: str
    scope: str | None
    breaking: bool
    subject: str


def parse_header(header: str) -> Header | None:
    """The parts of a conventional header (any type, lower-cased), or None when it is not one."""
    match = _HEADER.match(header.strip())
    if match is None:
        return None
    return Header(match["type"].lower(), match["scope"], bool(match["breaking"]), match["subject"].strip())


@dataclass(frozen=True)
class Violation:
    sha: str
    header: str
    problem: str


def check_message(  # noqa: PLR0911 (one return per rule reads best)
    message: str, *, types: Sequence[str] = DEFAULT_TYPES, max_header_length: int = 100
) -> str | None:
    """The first problem with one commit message, or None when it conforms (or is ignored)."""
    lines = message.splitlines()
    header = lines[0].strip() if lines else ""
    if any(p.match(header) for p in _IGNORED):
        return None
    if not header:
        return "empty message"
    match = _HEADER.match(header)
    if match is None:
        return "header is not 'type(scope): subject'"
    if match["type"] not in types:
        return f"type '{match['type']}' is not one of {', '.join(types)}"
    if match["type"] != match["type"].lower():
        return "type must be lower-case"
    if len(header) > max_header_length:
        return f"header is {len(header)} characters, at most {max_header_length}"
    if match["subject"].rstrip().endswith("."):
        return "subject must not end with a full stop"
    if len(lines) > 1 and lines[1].strip():
        return "body must be separated from the header by a blank line"
    return None


def check_commits(
    commits: Sequence[tuple[str, str]], *, types: Sequence[str] = DEFAULT_TYPES, max_header_length: int = 100
) -> list[Violation]:
    out = []
    for sha, message in commits:
        problem = check_message(message, types=types, max_header_length=max_header_length)
        if problem:
            out.append(Violation(sha, (message.splitlines() or [""])[0][:120], problem))
    return out
