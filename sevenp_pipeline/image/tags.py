"""Image tags the way the spec's "Extract Metadata" step (docker/metadata-action@v5) makes them.

The spec configures::

    type=ref,event=branch
    type=ref,event=pr
    type=semver,pattern={{version}}
    type=semver,pattern={{major}}.{{minor}}
    type=sha,prefix={{branch}}-

One call describes one event: a pull request when ``pr_number`` is given, a tag push when
``git_tag`` is given, otherwise a branch push. Hence:

- branch push: ``<branch>`` (sanitized), semver tags from ``version`` (package.json), ``<branch>-<sha7>``;
- pull request: ``pr-<n>``, semver tags from ``version``, ``<branch>-<sha7>``;
- tag push: semver tags from ``git_tag`` (else ``version``), ``<branch>-<sha7>`` (``sha-<sha7>`` without a branch).

Semver tags need a valid semantic version (``v`` prefix allowed); pre-releases get ``{{version}}``
but not ``{{major}}.{{minor}}`` (metadata-action's rule). Every tag is a valid Docker tag:
lowercase, ``[a-z0-9._-]`` only (runs of anything else become one ``-``), at most 128 characters,
no leading ``.`` or ``-``. A branch that sanitizes to nothing becomes ``branch-<hash>``. Tags are
data, never shell: ``$(touch pwned)`` becomes ``touch-pwned-``.

Protected tags belong to one branch each, or to none: ``main``, ``master`` and ``develop`` only to the
branch of exactly that name, ``release-X`` only to ``release-X`` or ``release/X``; ``latest``, semver
(``1.4``, ``1.4.2``), ``pr-N``, ``sha-*``, ``inputs-*`` (the orchestrator's build-input tags),
``branch-*`` and a protected branch's commit tags (``main-<sha7>``) to no branch. Any other branch
whose tag would be one of them (``Main``, ``-main``, ``inputs-<hash>``) gets
``<tag>-branch-<hash of its name>`` instead, so it cannot overwrite it.
"""

from __future__ import annotations

import hashlib
import re

MAX_TAG = 128
_PROTECTED = re.compile(r"^(main|master|develop|release-.+)$")  # one branch each
# No branch's: also a protected branch's commit tag (main-<sha7>), which a branch named so would overwrite.
_RESERVED = re.compile(r"^(latest|\d+\.\d+.*|pr-\d+|sha-.*|inputs-.*|branch-.*"
                       r"|(main|master|develop|release-.+)-[0-9a-f]{7})$")
_UNSAFE = re.compile(r"[^a-z0-9._-]+")
_SHA = re.compile(r"^[0-9a-fA-F]{7,64}$")
_SEMVER = re.compile(
    r"^v?(?P<major>0|[1-9]\d*)\.(?P<minor>0|[1-9]\d*)\.(?P<patch>0|[1-9]\d*)"
    r"(?:-(?P<pre>(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+(?P<build>[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$"
)


def sanitize_tag(value: str, *, max_length: int = MAX_TAG) -> str:
    """A valid Docker tag from any text ("" when nothing usable is left)."""
    tag = _UNSAFE.sub("-", value.lower())
    return tag.lstrip(".-")[:max_length]


def _branch_tag(branch: str, max_length: int = MAX_TAG) -> str:
    tag = sanitize_tag(branch, max_length=max_length)
    digest = hashlib.sha256(branch.encode()).hexdigest()
    if not tag:
        return f"branch-{digest[:12]}"
    if is_protected_tag(tag) and not _owns(branch, tag):
        suffix = f"-branch-{digest[:8]}"
        return tag[: max_length - len(suffix)].rstrip(".-") + suffix
    return tag


def is_protected_tag(tag: str) -> bool:
    """A tag no branch may take by a name that merely sanitizes to it (see the module docstring)."""
    return bool(_PROTECTED.match(tag) or _RESERVED.match(tag))


def _owns(branch: str, tag: str) -> bool:
    """Whether ``branch`` is the one branch a protected ``tag`` belongs to."""
    if _RESERVED.match(tag) or not _PROTECTED.match(tag):
        return False  # reserved: nobody's
    if tag.startswith("release-"):
        return branch in (tag, "release/" + tag.removeprefix("release-"))
    return branch == tag


def semver_tags(version: str) -> list[str]:
    """``{{version}}`` and (for releases) ``{{major}}.{{minor}}``; [] for an invalid version."""
    match = _SEMVER.match(version.strip())
    if not match:
        return []
    full = f"{match['major']}.{match['minor']}.{match['patch']}"
    if match["pre"]:
        full += f"-{match['pre']}"
    if match["build"]:
        full += f"+{match['build']}"
    tags = [sanitize_tag(full)]  # "+build" is not allowed in a tag: it becomes "-build"
    if not match["pre"]:
        tags.append(f"{match['major']}.{match['minor']}")
    return tags


def image_tags(
    *, branch: str, sha: str, pr_number: int | None = None, version: str | None = None,
    git_tag: str | None = None, moving: bool = True,
) -> list[str]:
    """The tags for one build, in the spec's order, without duplicates.

    ``moving=False`` (a run that must not move the branch's tags: launched by hand, or of a commit
    that is no longer the branch's head) keeps only the tags bound to this commit: ``<branch>-<sha7>``
    and the ``X.Y.Z`` of a git tag on the commit; not ``<branch>``, ``pr-N``, ``X.Y`` nor a
    package.json version, which other commits of the branch share."""
    if not _SHA.match(sha):
        raise ValueError(f"commit sha {sha!r} is not a hex commit id")
    if pr_number is not None and (isinstance(pr_number, bool) or int(pr_number) <= 0):
        raise ValueError(f"pull request number {pr_number!r} must be a positive integer")
    tags: list[str] = []
    if moving and pr_number is None and git_tag is None and branch:
        tags.append(_branch_tag(branch))
    if moving and pr_number is not None:
        tags.append(f"pr-{int(pr_number)}")
    source = git_tag if git_tag is not None else version
    if source and moving:
        tags += semver_tags(source)
    elif git_tag is not None:
        tags += semver_tags(git_tag)[:1]  # X.Y.Z of the commit's own release tag, not the moving X.Y
    short = sha[:7].lower()
    prefix = _branch_tag(branch, MAX_TAG - len(short) - 1) if branch else "sha"
    tags.append(f"{prefix}-{short}")
    return list(dict.fromkeys(tags))
