"""copy_context: what a build in a user namespace reads instead of the checkout itself."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sevenp_pipeline.resources.builders.context import copy_context

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to the store's uid needs root")

OWNER = 2_000_000


def test_the_copy_keeps_modes_and_links_follows_no_link_and_honours_dockerignore(tmp_path: Path) -> None:
    host = tmp_path / "host-secret"
    host.write_text("the host's\n")
    ctx = tmp_path / "ctx"
    (ctx / "src" / "private").mkdir(parents=True)
    (ctx / "src" / "private").chmod(0o750)
    (ctx / "src" / "app.js").write_text("module.exports = 1;\n")
    (ctx / "run.sh").write_text("#!/bin/sh\n")
    (ctx / "run.sh").chmod(0o755)
    (ctx / "node_modules" / "x").mkdir(parents=True)
    (ctx / "node_modules" / "x" / "index.js").write_text("ignored\n")
    (ctx / ".dockerignore").write_text("node_modules\n")
    (ctx / "leak").symlink_to(host)  # a branch's link to a host file
    (ctx / "src" / "alias.js").symlink_to("app.js")
    dest = tmp_path / "copy"
    assert copy_context(ctx, dest, owner=OWNER) == 3  # .dockerignore, run.sh, src/app.js: files, not links
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        ".dockerignore", "leak", "run.sh", "src", "src/alias.js", "src/app.js", "src/private"]
    assert (dest / "leak").is_symlink() and os.readlink(dest / "leak") == str(host)  # a link, not the content
    assert os.readlink(dest / "src" / "alias.js") == "app.js"
    assert stat.S_IMODE((dest / "src" / "private").stat().st_mode) == 0o750
    assert stat.S_IMODE((dest / "run.sh").stat().st_mode) == 0o755
    mode = stat.S_IMODE((ctx / "src" / "app.js").stat().st_mode)
    assert stat.S_IMODE((dest / "src" / "app.js").stat().st_mode) == mode
    assert {p.lstat().st_uid for p in [dest, *dest.rglob("*")]} == {OWNER}
