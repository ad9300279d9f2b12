"""Commit statuses: real pipeline runs of the tiny app, the forge status sensor evaluated as the daemon
would, and the GitHub/GitLab status endpoints over HTTP (``forge_api``)."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import pytest

from sevenp_pipeline.config import ConfigError, load_app_config
from sevenp_pipeline.devtools.stage_table import StageRow
from sevenp_pipeline.forge.sensor import forge_sensor_name
from sevenp_pipeline.forge.statuses import run_statuses
from sevenp_pipeline_tests.conftest import Pipeline
from sevenp_pipeline_tests.forge.forge_api import ForgeAPI
from sevenp_pipeline_tests.gitutil import git
from sevenp_pipeline_tests.httpserver import Answer, Server, http_server

REPO = "acme/tiny-app"


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    value = "ghp_" + secrets.token_hex(18)
    monkeypatch.setenv("SEVENP_GITHUB_TOKEN", value)
    monkeypatch.setenv("SEVENP_GITLAB_TOKEN", value)
    return value


@pytest.fixture
def forge_server(token: str) -> Iterator[tuple[Server, ForgeAPI]]:
    api = ForgeAPI(repository=REPO, token=token)
    with http_server(api) as server:
        yield server, api


def _forge_pipeline(make_pipeline: Callable[..., Pipeline], server: Server, kind: str = "github") -> Pipeline:
    base = server.url if kind == "github" else f"{server.url}/api/v4"
    return make_pipeline(f"forge:\n  kind: {kind}\n  api_url: {base}\n  repository: {REPO}\n")


def _tick(pipeline: Pipeline, cursor: str | None) -> dg.SensorResult:
    defs = pipeline.defs
    sensor = defs.resolve_sensor_def(forge_sensor_name(pipeline.app))
    with dg.build_sensor_context(instance=pipeline.instance, cursor=cursor, resources=defs.resources,
                                 definitions=defs) as context:
        result = sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_a_failed_and_a_passing_commit_on_github(make_pipeline, forge_server, token: str,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    server, api = forge_server
    pipeline = _forge_pipeline(make_pipeline, server)
    pipeline.remote.write("src/old.js", "var x = 1;\nmodule.exports = x;\n")
    bad = pipeline.remote.commit("use var")
    failed = pipeline.materialize(bad)
    assert not failed.success

    first = _tick(pipeline, None)
    shown = api.latest(bad)
    run_url = f"http://127.0.0.1:3000/runs/{failed.run_id}"
    lint_failed = "gate no_lint_errors failed: 1 lint problems, at most 0 allowed"
    assert shown["sevenp/lint_report"] == {"state": "failure", "description": lint_failed, "target_url": run_url}
    assert shown["sevenp/source_checkout"]["state"] == "success"
    # What never ran because lint failed is not green and not pending: a required check stays red.
    assert shown["sevenp/unit_test_results"] == {"state": "error", "description": "not run: a stage it needs failed",
                                                 "target_url": run_url}
    assert shown["code-quality"]["state"] == "failure"
    assert shown["code-quality"]["description"].startswith("1 of ")
    assert "lint_report: gate no_lint_errors failed: 1 lint problems" in shown["code-quality"]["description"]
    assert shown["testing"]["state"] == "failure"
    assert shown["sevenp/pipeline"]["state"] == "failure"
    assert shown["sevenp/pipeline"]["description"].startswith("failed: lint_report: gate no_lint_errors failed")
    assert all(len(s["description"]) <= 140 for s in shown.values())
    posted = len(api.posts)
    assert posted == len(shown)  # one post per context: nothing posted twice

    again = _tick(pipeline, first.cursor)
    assert len(api.posts) == posted and again.skip_reason.skip_message == "no status changed"

    pipeline.remote.write("src/old.js", "const x = 1;\nmodule.exports = x;\n")
    good = pipeline.remote.commit("fix: const")
    passed = pipeline.materialize(good)
    assert passed.success
    _tick(pipeline, again.cursor)
    shown = api.latest(good)
    assert {c: s["state"] for c, s in shown.items() if c in ("code-quality", "testing", "sevenp/pipeline")} == {
        "code-quality": "success", "testing": "success", "sevenp/pipeline": "success"}
    assert shown["sevenp/unit_test_results"]["description"].startswith("3 passed"), shown["sevenp/unit_test_results"]
    # An optional stage that does not apply is not a failure: GitHub has no "skipped", so success saying so.
    assert shown["sevenp/e2e_test_results"]["state"] == "success"
    assert shown["sevenp/e2e_test_results"]["description"].startswith("skipped")
    assert not any(s["state"] != "success" for s in shown.values()), shown
    # The token went only into the Authorization header: not into the runs' or the sensor's logs.
    logged = "".join(capfd.readouterr())
    assert "lint_report" in logged and token not in logged
    assert token not in first.cursor and token not in json.dumps(api.posts)


def test_gitlab_statuses_and_a_refused_token(make_pipeline, forge_server, token: str,
                                             capfd: pytest.CaptureFixture[str]) -> None:
    server, api = forge_server
    pipeline = _forge_pipeline(make_pipeline, server, kind="gitlab")
    sha = pipeline.remote.push("develop")
    run = pipeline.materialize(sha, "source_checkout,node_dependencies,lint_report")
    assert run.success

    api.token = "another-token"  # the forge no longer accepts ours
    capfd.readouterr()
    refused = _tick(pipeline, None)
    assert len(server.requests) == 1 and api.posts == []  # one refusal, then this run is left alone
    _tick(pipeline, refused.cursor)
    assert len(server.requests) == 1
    logged = "".join(capfd.readouterr())
    warnings = [line for line in logged.splitlines() if "refused the token" in line]
    assert len(warnings) == 1 and "SEVENP_GITLAB_TOKEN" in warnings[0] and "WARNING" in warnings[0], logged

    api.token = token
    other = pipeline.materialize(sha, "source_checkout,node_dependencies,lint_report")
    _tick(pipeline, refused.cursor)
    shown = api.latest(sha)
    assert {c: s["state"] for c, s in shown.items()} == {
        "sevenp/source_checkout": "success", "sevenp/node_dependencies": "success", "sevenp/lint_report": "success",
        "code-quality": "success",
        "sevenp/pipeline": "success"}
    assert shown["sevenp/pipeline"]["target_url"].endswith(f"/runs/{other.run_id}")
    assert token not in "".join(capfd.readouterr())


def test_a_forge_that_is_down_or_throttles_loses_no_status(make_pipeline, forge_server) -> None:
    server, api = forge_server
    pipeline = _forge_pipeline(make_pipeline, server)
    sha = pipeline.remote.push("develop")
    assert pipeline.materialize(sha, "source_checkout").success

    api.fail_next = [Answer(503, b"unavailable")] * 4  # every attempt of the first status
    down = _tick(pipeline, None)
    assert "stopped: github status" in down.skip_reason.skip_message and api.posts == []
    # Throttled: a 429 with Retry-After, then GitHub's secondary rate limit (a 403): waited out, not lost.
    api.fail_next = [Answer(429, b"{}", {"Retry-After": "1"}),
                     Answer(403, b'{"message": "You have exceeded a secondary rate limit"}', {"Retry-After": "1"})]
    back = _tick(pipeline, down.cursor)
    assert back.skip_reason.skip_message == "2 status(es) posted"
    assert {c: s["state"] for c, s in api.latest(sha).items()} == {
        "sevenp/source_checkout": "success", "sevenp/pipeline": "success"}


def _pr_run_tags(pipeline: Pipeline, sha: str, number: str) -> dict[str, str]:
    """The commit pushed as pull request ``number``'s head, and its run's tags as the push sensor sets them."""
    git("push", "--quiet", "--force", "origin", f"{sha}:refs/pull/{number}/head", cwd=pipeline.remote.clone)
    return {"sevenp/pr": number, "sevenp/ref": f"refs/pull/{number}/head", "sevenp/trigger": "pull_request",
            "sevenp/branch": "", "sevenp/commit": sha, "sevenp/app": pipeline.app.name,
            "dagster/sensor_name": f"{pipeline.key}_git_push_sensor"}


@pytest.mark.parametrize("kind", ["github", "gitlab"])
def test_a_pull_request_keeps_one_comment_edited_run_after_run(make_pipeline, forge_server, kind: str) -> None:
    server, api = forge_server
    pipeline = _forge_pipeline(make_pipeline, server, kind=kind)
    pipeline.remote.write("src/old.js", "var x = 1;\nmodule.exports = x;\n")
    bad = pipeline.remote.commit("feat: var", push_to=None)
    failed = pipeline.materialize(bad, "source_checkout,node_dependencies,lint_report",
                                  tags=_pr_run_tags(pipeline, bad, "7"))
    assert not failed.success
    first = _tick(pipeline, None)
    (comment,) = api.comments.values()
    assert comment["pr"] == 7 and comment["edits"] == 0
    body = str(comment["body"])
    assert f"the pipeline failed on `{bad[:12]}`" in body and f"/runs/{failed.run_id}" in body
    assert "| lint_report | ❌ failure | gate no_lint_errors failed: 1 lint problems, at most 0 allowed |" in body
    assert "❌ `code-quality`" in body

    pipeline.remote.write("src/old.js", "const x = 1;\nmodule.exports = x;\n")
    good = pipeline.remote.commit("fix: const", push_to=None)
    passed = pipeline.materialize(good, "source_checkout,node_dependencies,lint_report",
                                  tags=_pr_run_tags(pipeline, good, "7"))
    assert passed.success
    second = _tick(pipeline, first.cursor)
    (comment,) = api.comments.values()  # the same comment, edited: no second one
    assert comment["edits"] == 1 and f"the pipeline passed on `{good[:12]}`" in str(comment["body"])
    assert "| lint_report | ✅ success |" in str(comment["body"])
    # A sensor that lost its cursor finds its comment again by the marker and edits it.
    again = pipeline.materialize(good, "source_checkout", tags=_pr_run_tags(pipeline, good, "7"))
    _tick(pipeline, json.dumps({"since": json.loads(second.cursor)["since"]}))
    assert len(api.comments) == 1 and api.comments[1]["edits"] == 2 and again.run_id in str(api.comments[1]["body"])
    assert api.comment_calls.count("create 7") == 1


_UNIT = "source_checkout,node_dependencies,lint_report,security_lint_report,format_report,type_check_report," \
        "unit_test_results"


@pytest.mark.parametrize("kind", ["github", "gitlab"])
def test_a_pull_request_against_main_and_its_title(make_pipeline, forge_server, kind: str) -> None:
    server, api = forge_server
    base = f"{server.url}/api/v4" if kind == "gitlab" else server.url
    pipeline = make_pipeline(f"forge:\n  kind: {kind}\n  api_url: {base}\n  repository: {REPO}\n"
                             "stages:\n  commit_messages: {enabled: true}\n")
    main = pipeline.remote.push("main")
    on_main = pipeline.materialize(main, _UNIT)
    assert on_main.success and pipeline.instance.get_run_by_id(on_main.run_id).tags["sevenp/branch"] == "main"

    pipeline.remote.write("coverage-pct.txt", "85")
    head = pipeline.remote.commit("test: less", push_to=None)
    api.pulls[7] = {"commits": [head], "title": "Lower the coverage", "base": "main"}
    first = pipeline.materialize(head, _UNIT, tags=_pr_run_tags(pipeline, head, "7"))
    assert first.success
    ticked = _tick(pipeline, None)
    body = str(api.comments[1]["body"])
    assert (f"**Against `main`** ([run {on_main.run_id[:8]}](http://127.0.0.1:3000/runs/{on_main.run_id}) "
            f"of `{main[:12]}`):\n- coverage 85% (\u22125.0 against main)") in body, body
    assert "Title: ❌ the title is not a conventional commit: header is not 'type(scope): subject'" in body
    shown = api.latest(head)
    assert shown["sevenp/pr-title"]["state"] == ("failure" if kind == "github" else "failed")
    assert shown["code-quality"]["state"] == shown["sevenp/pr-title"]["state"]
    assert "pr-title: the title is not a conventional commit" in shown["code-quality"]["description"]
    assert api.pull_reads == [7]
    # The poll-started run knew only the number: the forge's answer names its branches on the run.
    first_tags = pipeline.instance.get_run_by_id(first.run_id).tags
    assert (first_tags["sevenp/pr-base"], first_tags["sevenp/pr-head"]) == ("main", "feature")
    _tick(pipeline, ticked.cursor)
    assert api.pull_reads == [7]  # asked once, kept in the cursor
    assert json.loads(ticked.cursor)["pulls"]["7"]["title"] == "Lower the coverage"

    # The title fixed, the next push checks it again; a base named by the webhook has no run to compare with.
    api.pulls[7]["title"] = "test: lower the coverage"
    tags = _pr_run_tags(pipeline, head, "7") | {"sevenp/pr-base": "release"}
    again = pipeline.materialize(head, _UNIT, tags=tags)
    _tick(pipeline, ticked.cursor)
    assert api.pull_reads == [7, 7]
    assert api.latest(head)["sevenp/pr-title"]["state"] == "success"
    assert api.latest(head)["code-quality"]["state"] == "success"
    body = str(api.comments[1]["body"])
    assert again.run_id in body and "**Against `release`**: no run of release to compare with." in body
    assert pipeline.instance.get_run_by_id(again.run_id).tags["sevenp/pr-base"] == "release"  # a webhook's stays
    assert "Title: ✅ the title is a conventional commit" in body


def test_a_request_the_forge_does_not_know_still_gets_its_comment(make_pipeline, forge_server) -> None:
    server, api = forge_server
    pipeline = _forge_pipeline(make_pipeline, server)
    sha = pipeline.remote.commit("feat: x", push_to=None)
    run = pipeline.materialize(sha, "source_checkout", tags=_pr_run_tags(pipeline, sha, "9"))
    assert run.success
    result = _tick(pipeline, None)
    assert api.pull_reads == [9] and "pr-title" not in json.dumps(api.posts)
    assert "status(es) posted" in result.skip_reason.skip_message
    assert len(api.comments) == 1 and "Title:" not in str(api.comments[1]["body"])
    _tick(pipeline, result.cursor)
    assert api.pull_reads == [9]  # asked again only after a minute


def _run(status: dg.DagsterRunStatus) -> dg.DagsterRun:
    return dg.DagsterRun(job_name="tiny_app_ci_job", run_id="r" * 8, status=status)


def test_statuses_while_a_run_is_in_progress_and_after_a_cancel(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(f"name: web\nrepository: {{url: x}}\nforge: {{kind: github, repository: {REPO}}}\n")
    app = load_app_config(path)
    rows = [StageRow("source_checkout", "SUCCESS", 1.0, "3 changed files"),
            StageRow("lint_report", "IN_PROGRESS", None, ""),
            StageRow("unit_test_results", "NOT RUN", None, "")]
    started = run_statuses(app, _run(dg.DagsterRunStatus.STARTED), rows, "u")
    live = {s.context: (s.state, s.description) for s in started}
    assert live["sevenp/lint_report"] == ("running", "running")
    assert live["sevenp/unit_test_results"] == ("pending", "waiting for the stages it needs")
    assert live["code-quality"][0] == "pending" and live["testing"][0] == "pending"
    assert live["sevenp/pipeline"] == ("pending", "running: 1 of 3 stages done")
    canceled = run_statuses(app, _run(dg.DagsterRunStatus.CANCELED), rows, "u")
    gone = {s.context: (s.state, s.description) for s in canceled}
    assert gone["sevenp/lint_report"] == ("error", "stopped before it finished")
    assert gone["sevenp/unit_test_results"] == ("error", "not run: the run was canceled")
    assert gone["sevenp/pipeline"] == ("error", "canceled")


@pytest.mark.parametrize(("forge", "error"), [
    ("{kind: github}", r"forge: .*repository: '' is not a github repository path"),
    ("{kind: bitbucket, repository: a/b}", r"forge\.kind: "),
    ("{kind: github, repository: a/b, contexts: {testing: [unit_tests]}}",
     r"forge.contexts.testing: no stage named 'unit_tests'"),
    ("{kind: gitlab, repository: a/b, api_url: 'gitlab.local'}", r"forge\.api_url: .*not an http"),
])
def test_bad_forge_settings_are_named(tmp_path: Path, forge: str, error: str) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(f"name: web\nrepository: {{url: x}}\nforge: {forge}\n")
    with pytest.raises(ConfigError, match=rf"app\.yaml: .*{error}"):
        load_app_config(path)


def _title_edit(kind: str, head: str, title: str, *, changed: str) -> tuple[dict[str, str], bytes]:
    """The delivery GitHub (``edited``) or GitLab (``update``) sends when a request's ``changed`` was edited."""
    if kind == "github":
        body = {"action": "edited", "number": 7, "changes": {changed: {"from": "old"}},
                "pull_request": {"title": title, "head": {"sha": head, "ref": "feature"}, "base": {"ref": "main"}},
                "repository": {"full_name": REPO}}
        return {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": secrets.token_hex(8)}, json.dumps(body).encode()
    body = {"object_kind": "merge_request", "project": {"path_with_namespace": REPO},
            "changes": {changed: {"previous": "old", "current": title}},
            "object_attributes": {"action": "update", "iid": 7, "title": title, "target_branch": "main",
                                  "source_branch": "feature", "last_commit": {"id": head}, "oldrev": None}}
    return {"X-Gitlab-Event": "Merge Request Hook"}, json.dumps(body).encode()


@pytest.mark.parametrize("kind", ["github", "gitlab"])
def test_a_title_edited_without_a_push_is_checked_again(make_pipeline, forge_server, kind: str) -> None:
    from sevenp_pipeline.forge.webhooks import WebhookReceiver  # noqa: PLC0415
    from sevenp_pipeline.triggers.webhook_spool import WebhookSpool  # noqa: PLC0415

    server, api = forge_server
    base = f"{server.url}/api/v4" if kind == "gitlab" else server.url
    pipeline = make_pipeline(f"forge:\n  kind: {kind}\n  api_url: {base}\n  repository: {REPO}\n"
                             "stages:\n  commit_messages: {enabled: true}\n")
    head = pipeline.remote.commit("feat: x", push_to=None)
    api.pulls[7] = {"commits": [head], "title": "Fix the thing", "base": "main"}
    run = pipeline.materialize(head, "source_checkout", tags=_pr_run_tags(pipeline, head, "7"))
    assert run.success
    ticked = _tick(pipeline, None)
    failed = "failure" if kind == "github" else "failed"
    assert api.latest(head)["sevenp/pr-title"]["state"] == failed and api.pull_reads == [7]

    receiver = WebhookReceiver([pipeline.app], WebhookSpool(Path(pipeline.defs.resources["webhook_inbox"].root)),
                               secret="s" * 32)
    headers, body = _title_edit(kind, head, "fix: the thing", changed="description")
    if kind == "github":
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(b"s" * 32, body, hashlib.sha256).hexdigest()
    else:
        headers["X-Gitlab-Token"] = "s" * 32
    assert receiver.handle(kind, headers, body)[0] == 202
    api.pulls[7]["title"] = "fix: the thing"
    ticked = _tick(pipeline, ticked.cursor)  # a description edit: the title check stands, nothing is asked
    assert api.pull_reads == [7] and api.latest(head)["sevenp/pr-title"]["state"] == failed

    headers, body = _title_edit(kind, head, "fix: the thing", changed="title")
    if kind == "github":
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(b"s" * 32, body, hashlib.sha256).hexdigest()
    else:
        headers["X-Gitlab-Token"] = "s" * 32
    assert receiver.handle(kind, headers, body)[0] == 202
    ticked = _tick(pipeline, ticked.cursor)
    assert api.pull_reads == [7, 7], "the edited title was not asked for"
    assert api.latest(head)["sevenp/pr-title"]["state"] == "success"
    assert "Title: ✅ the title is a conventional commit" in str(api.comments[1]["body"])
    assert len(pipeline.instance.get_runs()) == 1  # no new run: only the check and the comment
    _tick(pipeline, ticked.cursor)
    assert api.pull_reads == [7, 7]  # the edit is read once
