"""After a pipeline run on the tiny app, every artifact link in the metadata is an http URL of the
artifact server, and fetching it through the server returns the stored report: the JUnit XML, the
stage's log, and istanbul's HTML coverage report (kept as a tree, linked as ``coverage_html``)."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import pytest

from sevenp_pipeline_tests.artifact_http import serve_artifacts
from sevenp_pipeline_tests.conftest import Pipeline
from sevenp_pipeline_tests.results import artifact_file, metadata_of

pytestmark = pytest.mark.integration

# The tiny app's test runner, then what istanbul's lcov reporter leaves beside the summary: an HTML
# tree (index, a page per source file, its stylesheet) and, from a hostile branch, a link out of it.
HTML_TESTS_JS = """\
const fs = require("fs");
const dir = "coverage/unit/lcov-report";
fs.mkdirSync(dir + "/src", { recursive: true });
fs.writeFileSync(dir + "/index.html", '<html><head><link rel="stylesheet" href="base.css"></head>' +
  '<body>All files 90% <a href="src/math.js.html">math.js</a></body></html>');
fs.writeFileSync(dir + "/base.css", "body { font-family: sans-serif; }\\n");
fs.writeFileSync(dir + "/src/math.js.html", "<html><body>exports.add = (a, b) =&gt; a + b;</body></html>");
fs.symlinkSync("/etc/hostname", dir + "/leak.html");
process.argv[2] = "unit";
require("./test.js");
"""

CONFIG = """\
stages:
  html_tests:
    kind: test
    command: [node, scripts/html-tests.js]
    junit: reports/junit/unit.xml
    coverage: coverage/unit/coverage-summary.json
    needs: [node_dependencies]
"""


def test_artifact_links_are_http_and_the_server_returns_the_reports(make_pipeline) -> None:
    pipe: Pipeline = make_pipeline(CONFIG)
    pipe.remote.write("scripts/html-tests.js", HTML_TESTS_JS)
    sha = pipe.remote.commit("test: an html coverage report")
    with serve_artifacts(pipe.settings.artifacts_dir) as served:
        pipe.settings = dataclasses.replace(pipe.settings, artifacts_url=served.url)
        result = pipe.materialize(sha, "source_checkout,node_dependencies,html_tests")
        assert result.success
        meta = metadata_of(result, "html_tests")
        prefix = f"{served.url}/{pipe.key}/{sha}/"
        for key in ("junit", "log", "coverage_html"):
            assert str(meta[key]).startswith(prefix), (key, meta[key])
        links = [str(v) for e in result.get_asset_materialization_events()
                 for v in e.materialization.metadata.values()]
        assert not [v for v in links if "file://" in v]

        junit = served.get(urlsplit(meta["junit"]).path)
        assert junit.status == 200 and junit.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert junit.body == artifact_file(pipe.settings, meta["junit"]).read_bytes()
        cases = ET.fromstring(junit.body).iter("testcase")
        assert len(list(cases)) == meta["tests"] == 3

        log = served.get(urlsplit(meta["log"]).path)
        assert log.status == 200 and "Tests: 0 failed, 3 passed, 3 total" in log.text

        page = served.get(urlsplit(meta["coverage_html"]).path)
        assert meta["coverage_html"] == f"{prefix}coverage-html/html_tests/index.html"
        assert page.status == 200 and page.headers["Content-Type"] == "text/html; charset=utf-8"
        assert page.headers["Content-Security-Policy"] == "sandbox" and "All files 90%" in page.text
        base = f"/{pipe.key}/{sha}/coverage-html/html_tests/"
        assert served.get(base + "base.css").headers["Content-Type"] == "text/css; charset=utf-8"
        assert "exports.add" in served.get(base + "src/math.js.html").text
        assert served.get(base + "leak.html").status == 404  # the link out was not kept

        index = served.get(f"/{pipe.key}/{sha}/").text
        for name in ("reports/html_tests.xml", "logs/html_tests.log", "coverage-html/html_tests/index.html",
                     "coverage-html/html_tests/src/math.js.html"):
            assert f'href="{name}"' in index, name
