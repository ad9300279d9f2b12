"""Git: remote heads for the push sensor, a bare mirror per app, isolated checkouts per commit."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import dagster as dg
from pydantic import Field

from sevenp_pipeline.locks import file_lock
from sevenp_pipeline.models import CommitInfo, Workspace
from sevenp_pipeline.resources.processes import ExecuteRequest, LogFn, ProcessRunner
from sevenp_pipeline.text import printable

_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
# Never let git prompt for credentials or use a pager in a pipeline.
# git's id of the empty tree: every file of a commit differs from it.
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_PAGER": "cat", "GIT_ASKPASS": "/bin/false", "LC_ALL": "C"}


class GitError(Exception):
    """A git command failed; the message names the remote or commit and git's own words."""


class CommitNotFound(GitError):
    """The remote answered but does not have the commit: trying again will not help."""


def is_sha(value: str) -> bool:
    return bool(_SHA.match(value))


class GitClient(dg.ConfigurableResource):
    """Runs git through the process runner; never through a shell."""

    runner: ProcessRunner
    cache_dir: str = Field(description="where bare mirrors of the app remotes are kept")
    timeout_seconds: float = Field(default=300, description="per git command (fetch, clone)")

    def _git(
        self, args: list[str], *, cwd: Path, label: str, timeout: float | None = None, log: LogFn | None = None
    ) -> str:
        outcome = self.runner.run(
            ExecuteRequest(
                argv=["git", *args],
                cwd=cwd,
                label=label,
                env=GIT_ENV,
                timeout_seconds=timeout or self.timeout_seconds,
                capture=True,
            ),
            log=log,
        )
        if not outcome.ok:
            raise GitError(f"{outcome.describe()}: {outcome.tail_text(8)}")
        return "\n".join(outcome.output)

    def ls_remote_heads(self, url: str, *, timeout: float = 30) -> dict[str, str]:
        """Returns ``{branch: sha}`` for every head of the remote."""
        try:
            out = self._git(["ls-remote", "--heads", "--", url], cwd=Path("/"), label="git ls-remote",
                            timeout=timeout)
        except GitError as exc:
            raise GitError(f"cannot list the heads of remote {url}: {exc}") from exc
        heads: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if ref.startswith("refs/heads/") and is_sha(sha):
                heads[ref.removeprefix("refs/heads/")] = sha
        return heads

    def ls_remote_refs(self, url: str, *, timeout: float = 30) -> dict[str, str]:
        """Returns ``{ref: commit sha}`` for every ref of the remote (heads, tags, pull/merge requests);
        an annotated tag maps to the commit it points at (its peeled ``^{}`` line)."""
        try:
            out = self._git(["ls-remote", "--", url], cwd=Path("/"), label="git ls-remote", timeout=timeout)
        except GitError as exc:
            raise GitError(f"cannot list the refs of remote {url}: {exc}") from exc
        refs: dict[str, str] = {}
        for line in out.splitlines():
            sha, _, ref = line.partition("\t")
            if not ref.startswith("refs/") or not is_sha(sha):
                continue
            if ref.endswith("^{}"):
                refs[ref.removesuffix("^{}")] = sha  # the peeled line follows its tag's: it wins
            else:
                refs.setdefault(ref, sha)
        return refs

    def mirror_path(self, app_key: str) -> Path:
        return Path(self.cache_dir) / "git" / f"{app_key}.git"

    def fetch(self, app_key: str, url: str, *, log: LogFn | None = None) -> Path:
        """Creates or updates the bare mirror of ``url`` for ``app_key``."""
        mirror = self.mirror_path(app_key)
        with file_lock(mirror.with_suffix(".lock"), what=f"git mirror {mirror}"):
            if not (mirror / "HEAD").exists():
                shutil.rmtree(mirror, ignore_errors=True)
                mirror.parent.mkdir(parents=True, exist_ok=True)
                self._git(["clone", "--mirror", "--quiet", "--", url, str(mirror)],
                          cwd=mirror.parent, label="git clone", log=log)
            else:
                self._git(["remote", "set-url", "origin", "--", url], cwd=mirror, label="git remote")
                self._git(["fetch", "--prune", "--quiet", "origin"], cwd=mirror, label="git fetch", log=log)
        return mirror

    def has_commit(self, app_key: str, sha: str) -> bool:
        mirror = self.mirror_path(app_key)
        if not (mirror / "HEAD").exists():
            return False
        try:
            self._git(["cat-file", "-e", f"{sha}^{{commit}}"], cwd=mirror, label="git cat-file")
        except GitError:
            return False
        return True

    def ensure_commit(self, app_key: str, url: str, sha: str, *, log: LogFn | None = None) -> Path:
        if not is_sha(sha):
            raise CommitNotFound(f"partition key {sha!r} is not a full commit SHA")
        if not self.has_commit(app_key, sha):
            self.fetch(app_key, url, log=log)
            if not self.has_commit(app_key, sha):
                raise CommitNotFound(f"commit {sha} is not on remote {url} (was the branch force-pushed?)")
        return self.mirror_path(app_key)

    def commit_info(self, app_key: str, sha: str) -> CommitInfo:
        out = self._git(
            ["show", "-s", "--format=%H%x1f%an%x1f%ae%x1f%ct%x1f%P%x1f%s", sha],
            cwd=self.mirror_path(app_key),
            label="git show",
        )
        full, author, email, ts, parents, subject = out.splitlines()[-1].split("\x1f", 5)
        return CommitInfo(full, printable(author), printable(email), printable(subject), int(ts),
                          tuple(parents.split()))

    def tree_hash(self, app_key: str, sha: str, subdir: str = "") -> str:
        """The git tree id of the app folder: equal trees mean equal sources."""
        spec = f"{sha}:{subdir}" if subdir else f"{sha}^{{tree}}"
        return self._git(["rev-parse", spec], cwd=self.mirror_path(app_key), label="git rev-parse").strip()

    def files_matching(
        self, app_key: str, sha: str, patterns: list[str], *, subdir: str = ""
    ) -> list[tuple[str, str, str]]:
        """``[(path, mode, object id)]`` of the files of ``sha`` under ``subdir`` that match any of ``patterns``
        (git glob pathspecs relative to ``subdir``: ``src/**``, ``*.config.*``; ``*`` stops at ``/``),
        with paths relative to ``subdir``, sorted. A diff against the empty tree: ``ls-tree`` takes no
        glob magic, ``diff-tree`` does."""
        prefix = f"{subdir.strip('/')}/" if subdir.strip("/") else ""
        specs = [f":(glob){prefix}{p}" for p in patterns]
        out = self._git(["diff-tree", "-r", "-z", "--no-renames", "--raw", "--no-commit-id", EMPTY_TREE, sha,
                         "--", *specs], cwd=self.mirror_path(app_key), label="git diff-tree")
        fields = out.split("\x00")
        if fields and not fields[-1].strip():
            fields.pop()  # after the last NUL
        files = []
        for meta, path in zip(fields[0::2], fields[1::2], strict=False):
            parts = meta.strip().split()
            if len(fields) % 2 or len(parts) < 5 or not parts[0].startswith(":") or not path.startswith(prefix):
                raise GitError(f"unexpected output of git diff-tree for {sha[:12]}: {meta!r} {path!r}")
            files.append((path[len(prefix):], parts[1], parts[3]))
        return sorted(files)

    def branches_containing(self, app_key: str, url: str, sha: str, *, allowed: Callable[[str], bool]) -> list[str]:
        """The remote's branches, among those ``allowed`` accepts, whose head contains ``sha`` now.

        Asked of the remote itself (``ls-remote``, then a fetch for the objects), never of run tags or
        launch options, which anyone who launches a run sets.
        """
        heads = {b: h for b, h in self.ls_remote_heads(url).items() if allowed(b)}
        if not heads:
            return []
        self.fetch(app_key, url)
        found = []
        for branch, head in sorted(heads.items()):
            if head == sha or (self.has_commit(app_key, head) and self._is_ancestor(app_key, sha, head)):
                found.append(branch)
        return found

    def _is_ancestor(self, app_key: str, ancestor: str, descendant: str) -> bool:
        outcome = self.runner.run(ExecuteRequest(
            argv=["git", "merge-base", "--is-ancestor", ancestor, descendant], cwd=self.mirror_path(app_key),
            label="git merge-base", env=GIT_ENV, timeout_seconds=self.timeout_seconds, capture=True))
        if outcome.exit_code not in (0, 1):
            raise GitError(f"{outcome.describe()}: {outcome.tail_text(8)}")
        return outcome.exit_code == 0

    def tags_at(self, app_key: str, sha: str) -> list[str]:
        """Tags of the remote that point at ``sha`` (the mirror keeps every tag)."""
        out = self._git(["tag", "--points-at", sha], cwd=self.mirror_path(app_key), label="git tag")
        return [t for t in out.splitlines() if t.strip()]

    def pushed_commits(
        self, app_key: str, sha: str, *, before: str | None, others: list[str], limit: int = 200
    ) -> list[tuple[str, str]]:
        """``[(sha, message)]`` of the commits a push brought, newest first: ``before..sha`` when the
        branch's previous head is known, else the commits no other known head has (a new branch)."""
        exclude = [f"^{before}"] if before and is_sha(before) and self.has_commit(app_key, before) else [
            f"^{o}" for o in others if is_sha(o) and o != sha and self.has_commit(app_key, o)]
        out = self._git(["log", f"--max-count={limit}", "--format=%H%x1f%B%x1e", sha, *exclude, "--"],
                        cwd=self.mirror_path(app_key), label="git log")
        commits = []
        for entry in out.split("\x1e"):
            if "\x1f" in entry:
                full, message = entry.strip("\n").split("\x1f", 1)
                commits.append((full.strip(), message.strip()))
        return commits

    def commits_between(self, app_key: str, new: str, *, previous: str | None, limit: int = 50,
                        merges: bool = False) -> list[CommitInfo]:
        """The commits of ``previous..new`` in the app's mirror, newest first, with their whole message
        (``body`` holds footers such as ``BREAKING CHANGE:``). ``previous`` None (a first release): the last
        ``limit`` commits up to ``new``. Merge commits are left out unless ``merges``.

        Raises:
            CommitNotFound: ``new`` or ``previous`` is not in the mirror (fetch first).
        """
        for sha in (new, previous):
            if sha is not None and not (is_sha(sha) and self.has_commit(app_key, sha)):
                raise CommitNotFound(f"commit {sha!r} is not in the mirror of {app_key}")
        revisions = [f"{previous}..{new}"] if previous else [f"--max-count={limit}", new]
        out = self._git(["log", *([] if merges else ["--no-merges"]),
                         "--format=%H%x1f%an%x1f%ae%x1f%ct%x1f%P%x1f%s%x1f%b%x1e", *revisions, "--"],
                        cwd=self.mirror_path(app_key), label="git log")
        commits = []
        for entry in out.split("\x1e"):
            if entry.count("\x1f") >= 6:
                full, author, email, ts, parents, subject, body = entry.lstrip("\n").split("\x1f", 6)
                commits.append(CommitInfo(full, printable(author), printable(email), printable(subject), int(ts),
                                          tuple(parents.split()), printable(body.strip("\n"), multiline=True)))
        return commits

    def changed_files(self, app_key: str, sha: str) -> list[str]:
        out = self._git(
            ["diff-tree", "--root", "--no-commit-id", "--name-only", "-r", "-z", sha],
            cwd=self.mirror_path(app_key),
            label="git diff-tree",
        )
        return [f for f in out.split("\x00") if f.strip()]

    def checkout(self, app_key: str, url: str, sha: str, workspace: Workspace, *, log: LogFn | None = None) -> None:
        """An isolated working tree of exactly ``sha`` (idempotent: a finished checkout is kept)."""
        mirror = self.ensure_commit(app_key, url, sha, log=log)
        with file_lock(workspace.root.with_suffix(".lock"), what=f"workspace {workspace.root}"):
            if workspace.is_checked_out:
                return
            shutil.rmtree(workspace.src, ignore_errors=True)
            workspace.root.mkdir(parents=True, exist_ok=True)
            self._git(["clone", "--quiet", "--shared", "--no-checkout", "--", str(mirror), str(workspace.src)],
                      cwd=workspace.root, label="git clone", log=log)
            self._git(["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", sha],
                      cwd=workspace.src, label="git checkout", log=log)
            workspace.ready_marker.write_text(sha + "\n")
