"""The read-only artifact server, through a real uvicorn on a loopback port and raw HTTP requests
(sevenp_pipeline_tests/artifact_http.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import dagster as dg
import pytest

from sevenp_pipeline.asset_helpers import failure
from sevenp_pipeline.resources.artifact_server import INLINE_LIMIT
from sevenp_pipeline.resources.artifacts import LocalArtifactStore
from sevenp_pipeline.resources.processes import Outcome
from sevenp_pipeline_tests.artifact_http import Reply, Served, serve_artifacts

APP, SHA, OTHER = "web", "a" * 40, "b" * 40
SECRET = "the-secret-outside-the-store"
JUNIT = '<?xml version="1.0"?><testsuites tests="1"><testsuite name="unit" tests="1"/></testsuites>\n'


def _write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    return path


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    """A store with two commits of one app, a secret next to (outside) it, and the server on it."""
    root = tmp_path / "store"
    _write(tmp_path / "secret.txt", SECRET)
    _write(tmp_path / "outside" / "secret.txt", SECRET)
    commit = root / APP / SHA
    _write(commit / "reports" / "unit_test_results.xml", JUNIT)
    _write(commit / "logs" / "unit_test_results.log", "PASS src/lib/pricing.test.ts\n")
    _write(commit / "coverage-html" / "index.html", "<html><script>alert(1)</script><p>92%</p></html>")
    _write(commit / "build_artifact-dist.tar.gz", b"\x1f\x8b\x08\x00fake-gzip")
    _write(root / APP / OTHER / "reports" / "unit_test_results.xml", JUNIT.replace("unit", "other"))
    os.utime(root / APP / SHA, (time.time() - 3600, time.time() - 3600))  # the older commit
    with serve_artifacts(root) as served:
        yield served


def _refused(reply: Reply) -> None:
    assert reply.status == 404, (reply.status, reply.text[:200])
    assert SECRET not in reply.text
    assert reply.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", [
    "/../secret.txt",
    "/web/../../secret.txt",
    f"/web/{SHA}/../../../secret.txt",
    f"/web/{SHA}/reports/../../{OTHER}/reports/unit_test_results.xml",
    f"/web/{SHA}/%2e%2e/%2e%2e/%2e%2e/secret.txt",
    f"/web/{SHA}/%2E%2E/%2E%2E/%2E%2E/secret.txt",
    f"/web/{SHA}/..%2f..%2f..%2fsecret.txt",
    f"/web/{SHA}/..%2F..%2F..%2Fsecret.txt",
    f"/web/{SHA}/..%5c..%5c..%5csecret.txt",
    f"/web/{SHA}/reports%2funit_test_results.xml",  # an encoded slash, even to a real file
    f"/web/{SHA}/./reports/unit_test_results.xml",
    "//etc/passwd",
    f"/web/{SHA}//etc/passwd",
    f"/web/{SHA}/reports/unit_test_results.xml%00.txt",
    "/%2e%2e/secret.txt",
    "/..",
])
def test_traversal_in_every_spelling_is_refused(served: Served, path: str) -> None:
    _refused(served.get(path))


def test_absolute_form_and_dot_segments_outside_never_reach_the_disk(served: Served) -> None:
    _refused(served.get(str(served.root.parent / "secret.txt")))  # "/tmp/.../secret.txt": not an app
    _refused(served.get("/../"))


def test_a_symlink_out_of_the_store_is_refused(served: Served) -> None:
    commit = served.root / APP / SHA
    (commit / "reports" / "evil.txt").symlink_to(served.root.parent / "secret.txt")
    (commit / "linked").symlink_to(served.root.parent / "outside", target_is_directory=True)
    (served.root / "linkedapp").symlink_to(served.root.parent / "outside", target_is_directory=True)
    _refused(served.get(f"/web/{SHA}/reports/evil.txt"))
    _refused(served.get(f"/web/{SHA}/linked/secret.txt"))
    _refused(served.get("/linkedapp/"))
    index = served.get(f"/web/{SHA}/")
    assert index.status == 200
    assert "evil.txt" not in index.text and "linked" not in index.text
    assert "linkedapp" not in served.get("/").text


def test_a_symlink_to_another_commits_file_is_refused(served: Served) -> None:
    other = served.root / APP / OTHER
    (other / "reports" / "copied.xml").symlink_to(served.root / APP / SHA / "reports" / "unit_test_results.xml")
    (served.root / APP / ("c" * 40)).symlink_to(other, target_is_directory=True)
    _refused(served.get(f"/web/{OTHER}/reports/copied.xml"))
    _refused(served.get(f"/web/{'c' * 40}/"))
    _refused(served.get(f"/web/{'c' * 40}/reports/unit_test_results.xml"))
    assert "c" * 40 not in served.get("/web/").text


def test_no_folder_below_a_commit_is_listed(served: Served) -> None:
    _refused(served.get(f"/web/{SHA}/reports/"))
    _refused(served.get(f"/web/{SHA}/reports"))
    _refused(served.get(f"/web/{SHA}/coverage-html/"))
    _refused(served.get("/web/nope/"))
    _refused(served.get(f"/web/{SHA}/missing.txt"))


def test_a_text_report_renders_inline(served: Served) -> None:
    reply = served.get(f"/web/{SHA}/reports/unit_test_results.xml")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "attachment" not in (reply.headers["Content-Disposition"] or "")
    assert reply.text == JUNIT
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    log = served.get(f"/web/{SHA}/logs/unit_test_results.log")
    assert (log.status, log.headers["Content-Type"], log.text) == (200, "text/plain; charset=utf-8",
                                                                    "PASS src/lib/pricing.test.ts\n")


def test_a_tarball_downloads_as_an_attachment(served: Served) -> None:
    reply = served.get(f"/web/{SHA}/build_artifact-dist.tar.gz")
    assert reply.status == 200
    assert reply.headers["Content-Disposition"].startswith("attachment")
    assert "build_artifact-dist.tar.gz" in reply.headers["Content-Disposition"]
    assert reply.body == b"\x1f\x8b\x08\x00fake-gzip"


def test_a_large_text_file_downloads(served: Served) -> None:
    big = served.root / APP / SHA / "logs" / "flood.log"
    with big.open("wb") as handle:
        handle.truncate(INLINE_LIMIT + 1)
    reply = served.get(f"/web/{SHA}/logs/flood.log", method="HEAD")
    assert reply.status == 200 and reply.body == b""
    assert reply.headers["Content-Disposition"].startswith("attachment")
    assert int(reply.headers["Content-Length"]) == INLINE_LIMIT + 1


def test_html_is_sandboxed(served: Served) -> None:
    reply = served.get(f"/web/{SHA}/coverage-html/index.html")
    assert reply.status == 200
    assert reply.headers["Content-Type"] == "text/html; charset=utf-8"
    assert reply.headers["Content-Security-Policy"] == "sandbox"
    assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert "<p>92%</p>" in reply.text


def test_the_index_page_lists_the_commits_files(served: Served) -> None:
    reply = served.get(f"/web/{SHA}/")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("text/html")
    for name in ("reports/unit_test_results.xml", "logs/unit_test_results.log", "coverage-html/index.html",
                 "build_artifact-dist.tar.gz"):
        assert f'href="{name}"' in reply.text, name
    assert f"{len(JUNIT)} B" in reply.text
    assert "other" not in reply.text  # the other commit's report is not this commit's
    moved = served.get(f"/web/{SHA}")  # relative links need the slash
    assert (moved.status, moved.headers["Location"]) == (308, f"{SHA}/")


def test_apps_and_commits_newest_first(served: Served) -> None:
    assert 'href="web/"' in served.get("/").text
    commits = served.get("/web/").text
    assert commits.index(OTHER) < commits.index(SHA)


def test_only_get_and_head(served: Served) -> None:
    for method in ("POST", "PUT", "DELETE"):
        reply = served.get(f"/web/{SHA}/reports/unit_test_results.xml", method=method)
        assert reply.status == 405, method
        assert reply.headers["X-Content-Type-Options"] == "nosniff"
    assert (served.root / APP / SHA / "reports" / "unit_test_results.xml").read_text() == JUNIT


def test_the_store_links_each_artifact_through_the_server(served: Served, tmp_path: Path) -> None:
    store = LocalArtifactStore(root=str(served.root), base_url=f"http://127.0.0.1:{served.port}/")
    source = _write(tmp_path / "in.txt", "odd name\n")
    uri = store.put_file(app=APP, sha=SHA, name="reports/a b#1?.txt", path=source)
    assert uri == f"http://127.0.0.1:{served.port}/web/{SHA}/reports/a%20b%231%3F.txt"
    assert uri == store.uri(app=APP, sha=SHA, name="reports/a b#1?.txt")
    reply = served.get(urlsplit(uri).path)
    assert (reply.status, reply.text) == (200, "odd name\n")
    with pytest.raises(ValueError, match="escapes the store"):
        store.uri(app=APP, sha=SHA, name=f"../{OTHER}/x")  # another commit's folder: not this commit's
    with pytest.raises(ValueError, match="escapes the store"):  # refused as the S3 store refuses it
        store.uri(app=APP, sha=SHA, name="reports/./x/../y.txt")


def test_a_step_failure_keeps_the_stages_http_log_link(tmp_path: Path) -> None:
    outcome = Outcome(label="lint", command="npm run lint", exit_code=1, started=0.0, ended=1.0, tail=("boom",),
                      log_path=tmp_path / "lint.log")
    link = dg.MetadataValue.url(f"http://127.0.0.1:3001/web/{SHA}/logs/lint.log")
    assert failure("lint failed", outcome, log=link).metadata["log"] == link
    assert failure("lint failed", outcome).metadata["log"] == dg.MetadataValue.path(str(tmp_path / "lint.log"))
