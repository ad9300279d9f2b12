"""Test helper: a real bare remote and a working clone to commit and push from."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

GIT_ID = {
    "GIT_AUTHOR_NAME": "Ada Tester",
    "GIT_AUTHOR_EMAIL": "ada@example.com",
    "GIT_COMMITTER_NAME": "Ada Tester",
    "GIT_COMMITTER_EMAIL": "ada@example.com",
}


def git(*args: str, cwd: Path) -> str:
    env = {**os.environ, **GIT_ID}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


class Remote:
    """A bare repository (the 'remote') and a clone of it to change and push."""

    def __init__(self, root: Path, source: Path, name: str = "app") -> None:
        self.url = str(root / f"{name}.git")
        self.clone = root / f"{name}-work"
        git("init", "--quiet", "--bare", "--initial-branch=main", self.url, cwd=root)
        shutil.copytree(source, self.clone, ignore=shutil.ignore_patterns("node_modules", "dist", "coverage",
                                                                            "reports", "docs"))
        git("init", "--quiet", "--initial-branch=main", cwd=self.clone)
        git("remote", "add", "origin", self.url, cwd=self.clone)
        self.commit("initial import", push_to="main")

    def write(self, rel: str, text: str) -> None:
        path = self.clone / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def commit(self, message: str, push_to: str | None = "develop") -> str:
        """Commits everything in the clone and (by default) pushes it to ``push_to``."""
        git("add", "-A", cwd=self.clone)
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.clone)
        if push_to:
            self.push(push_to)
        return git("rev-parse", "HEAD", cwd=self.clone)

    def push(self, branch: str) -> str:
        git("push", "--quiet", "--force", "origin", f"HEAD:refs/heads/{branch}", cwd=self.clone)
        return git("rev-parse", "HEAD", cwd=self.clone)
