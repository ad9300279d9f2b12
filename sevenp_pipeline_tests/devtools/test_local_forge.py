"""`make demo FORGE=local`: the local forge served over HTTP, the forge status sensor posting a pull
request's run to it as the daemon would, and what the demo writes and refuses before anything starts.
(The whole demo needs the real stack and minutes: it is run by hand, see the README.)"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import dagster as dg
import pytest
import yaml

from sevenp_pipeline.config import load_app_configs
from sevenp_pipeline.devtools import demo
from sevenp_pipeline.devtools.local_forge import LocalForge, serving
from sevenp_pipeline.forge.sensor import forge_sensor_name
from sevenp_pipeline_tests.gitutil import git

REPO = "sevenp-demo/tiny-app"
TOKEN = "demo_" + "ab" * 20


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_forge_sensor_reports_a_pull_request_to_the_local_forge(make_pipeline, monkeypatch) -> None:
    monkeypatch.setenv(demo.GITHUB_TOKEN_ENV, TOKEN)
    api = LocalForge(repository=REPO, token=TOKEN)
    with serving(api) as service:
        pipeline = make_pipeline(f"forge:\n  kind: github\n  api_url: {service.url}\n  repository: {REPO}\n"
                                 "stages:\n  commit_messages: {enabled: true}\n")
        sha = pipeline.remote.commit("feat: a change", push_to=None)
        git("push", "--quiet", "--force", "origin", f"{sha}:refs/pull/1/head", cwd=pipeline.remote.clone)
        api.pulls[1] = {"commits": [sha], "title": "feat: a change", "base": "develop", "head": "feature/x"}
        tags = {"sevenp/pr": "1", "sevenp/ref": "refs/pull/1/head", "sevenp/trigger": "pull_request",
                "sevenp/branch": "", "sevenp/commit": sha, "sevenp/app": pipeline.app.name}
        run = pipeline.materialize(sha, "source_checkout,node_dependencies,lint_report", tags=tags)
        assert run.success
        cursor = _tick(pipeline, None)

        latest = api.latest(sha)
        assert latest["sevenp/pipeline"]["state"] == "success"
        assert latest["sevenp/lint_report"]["state"] == "success"
        assert latest["sevenp/pr-title"]["state"] == "success"
        assert api.pull_reads == [1]
        (comment,) = api.comments_on(1)
        assert f"the pipeline passed on `{sha[:12]}`" in str(comment["body"])
        # What the demo prints is the page the forge serves: per commit each context, then the comment.
        status, page = _get(f"{service.url}/")
        assert status == 200 and page == api.report()
        assert f"commit {sha[:12]}:" in page
        assert any(line.split()[:2] == ["sevenp/pipeline", "success"] for line in page.splitlines())
        assert "pull request #1 'feat: a change' (feature/x → develop)" in page
        assert f"    ### ✅ {pipeline.app.name}: the pipeline passed on `{sha[:12]}`" in page
        assert api.report(shas=["0" * 40]).count("commit ") == 0
        # As GitHub: the combined status, and refusals of a wrong token or another repository.
        status, body = _get(f"{service.url}/repos/{REPO}/commits/{sha}/status")
        assert status == 200 and {s["context"] for s in json.loads(body)["statuses"]} == set(latest)
        assert _get(f"{service.url}/repos/{REPO}/pulls/1", token="wrong")[0] == 401
        assert _get(f"{service.url}/repos/other/repo/pulls/1", token=TOKEN)[0] == 404
        assert _get(f"{service.url}/repos/{REPO}/pulls/2", token=TOKEN)[0] == 404
        assert _get(f"{service.url}/nowhere")[0] == 404

        # A comment the forge no longer has (deleted there, or a new local forge behind the same sensor
        # cursor, as in the next `make demo FORGE=local`) is written anew, not refused tick after tick.
        api.comments.clear()
        again = pipeline.materialize(sha, "source_checkout", tags=tags)
        _tick(pipeline, cursor)
        (comment,) = api.comments_on(1)
        assert again.run_id in str(comment["body"]) and api.comment_calls[-2:] == ["list 1", "create 1"]


def _tick(pipeline, cursor: str | None) -> str | None:
    defs = pipeline.defs
    sensor = defs.resolve_sensor_def(forge_sensor_name(pipeline.app))
    with dg.build_sensor_context(instance=pipeline.instance, cursor=cursor, resources=defs.resources,
                                 definitions=defs) as context:
        return sensor(context).cursor


def test_the_demo_config_points_the_sample_app_at_the_forge(tmp_path: Path) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    sample = Path(demo.PROJECT_ROOT, "apps", f"{demo.APP}.yaml")
    (apps / sample.name).write_text(sample.read_text())
    other = "name: other-app\nrepository: {url: ../remotes/other.git}\n"
    (apps / "other.yaml").write_text(other)
    written = demo.forge_apps_dir(apps, tmp_path / "home", "http://127.0.0.1:3003")
    assert written == tmp_path / "home" / "demo-forge" / "apps"
    raw = yaml.safe_load((written / sample.name).read_text())
    assert raw["forge"] == {"kind": "github", "api_url": "http://127.0.0.1:3003", "repository": demo.FORGE_REPOSITORY}
    assert raw["repository"]["url"] == "${SEVENP_HOME}/remotes/7p-education-api.git"
    # Another app is as it was, its relative remote still found from the new folder.
    assert yaml.safe_load((written / "other.yaml").read_text()) == {
        "name": "other-app", "repository": {"url": str(tmp_path / "remotes" / "other.git")}}
    loaded = {a.name: a for a in load_app_configs(written, variables={"SEVENP_HOME": str(tmp_path)})}
    original = load_app_configs(apps, variables={"SEVENP_HOME": str(tmp_path)})[0]
    assert loaded[demo.APP].model_dump(exclude={"forge"}) == original.model_dump(exclude={"forge"})
    assert loaded[demo.APP].forge.kind == "github" and loaded["other-app"].forge.kind == "none"

    (apps / sample.name).unlink()
    with pytest.raises(demo.DevStackError, match="no app named 7p-education-api"):
        demo.forge_apps_dir(apps, tmp_path / "home", "http://127.0.0.1:3003")


def test_a_forge_the_demo_does_not_have_is_refused_before_anything_starts(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SEVENP_HOME", str(tmp_path / "home"))
    with pytest.raises(SystemExit) as exited:
        demo.main(["--forge", "github", "--no-ui"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "--forge 'github' (FORGE=github): the demo's forge is 'local'" in error
    assert not (tmp_path / "home").exists()
