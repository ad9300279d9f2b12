"""files.extract_data: tarfile's ``data`` filter, and the same refusals on a Python without it (the run
image's Debian 3.11.2, where ``extractall(filter=...)`` is a TypeError)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from sevenp_pipeline.files import extract_data


def _tarball(tmp_path: Path, *members: tuple[str, str, str]) -> Path:
    """Members as (name, kind, link target or file text); kind: file | dir | sym | lnk."""
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w") as tar:
        for name, kind, extra in members:
            info = tarfile.TarInfo(name)
            info.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
                         "lnk": tarfile.LNKTYPE}[kind]
            info.mode = 0o4777 if kind == "file" else 0o755
            data = extra.encode() if kind == "file" else b""
            if kind in ("sym", "lnk"):
                info.linkname = extra
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return path


@pytest.fixture(params=["filter", "no filter"])
def without_filters(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    if request.param == "no filter":
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    return request.param == "no filter"


def test_a_tree_with_links_inside_unpacks(tmp_path: Path, without_filters: bool) -> None:
    tarball = _tarball(tmp_path, ("node_modules", "dir", ""), ("node_modules/a", "dir", ""),
                       ("node_modules/a/bin.js", "file", "run"), ("node_modules/.bin", "dir", ""),
                       ("node_modules/.bin/a", "sym", "../a/bin.js"),
                       ("node_modules/b.js", "lnk", "node_modules/a/bin.js"))
    dest = tmp_path / "out"
    dest.mkdir()
    with tarfile.open(tarball) as tar:
        extract_data(tar, dest)
    assert (dest / "node_modules/.bin/a").read_text() == "run" and (dest / "node_modules/b.js").read_text() == "run"
    assert (dest / "node_modules/a/bin.js").stat().st_mode & 0o7777 == 0o755  # no set-id, no group/other write


@pytest.mark.parametrize("member", [("../escape", "file", "x"),
                                    ("node_modules/up", "sym", "../../x"), ("node_modules/root", "sym", "/etc/passwd"),
                                    ("node_modules/hard", "lnk", "../outside")])
def test_what_leaves_the_destination_is_refused(tmp_path: Path, without_filters: bool,
                                                member: tuple[str, str, str]) -> None:
    tarball = _tarball(tmp_path, ("node_modules", "dir", ""), member)
    dest = tmp_path / "out"
    dest.mkdir()
    with tarfile.open(tarball) as tar, pytest.raises(tarfile.TarError):
        extract_data(tar, dest)
    assert not (tmp_path / "escape").exists() and not (tmp_path / "x").exists()
