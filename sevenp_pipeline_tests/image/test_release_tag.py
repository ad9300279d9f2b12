"""A feature branch pushes a `v9.9.9` git tag: its image gets no semver tag (round two of the
containment issue found a branch's tag becoming the X.Y.Z image tag users and deploys pull)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sevenp_pipeline.config import load_app_config
from sevenp_pipeline.promotion.assets import _release_tag
from sevenp_pipeline.resources.git import GitClient
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline_tests.gitutil import Remote, git

pytestmark = pytest.mark.integration


def test_a_semver_git_tag_counts_only_on_a_commit_a_release_branch_holds(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "README.md").write_text("app\n")
    remote = Remote(tmp_path, source)
    (tmp_path / "app.yaml").write_text(f"name: app\nrepository: {{url: {remote.url}}}\n")
    app = load_app_config(tmp_path / "app.yaml")
    client = GitClient(runner=ProcessRunner(), cache_dir=str(tmp_path / "cache"))

    git("checkout", "--quiet", "-b", "feature/x", cwd=remote.clone)
    feature = remote.commit("feat: mine", push_to="feature/x")
    git("tag", "v9.9.9", cwd=remote.clone)
    git("checkout", "--quiet", "main", cwd=remote.clone)
    released = remote.commit("chore: release", push_to="main")
    git("tag", "v1.2.3", cwd=remote.clone)
    git("push", "--quiet", "origin", "--tags", cwd=remote.clone)
    client.fetch(app.key, remote.url)

    assert client.tags_at(app.key, feature) == ["v9.9.9"]  # the remote does have the tag
    assert _release_tag(client, app, feature) is None
    assert _release_tag(client, app, released) == "v1.2.3"
