"""Approvals by forge identity: what the forge says about a commit's pull request and comments, over HTTP
(``forge_api``), read by :func:`find_forge_approval`. The deploy it starts is proven in
``deploy/test_deploy_pipeline.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from sevenp_pipeline.config import ConfigError, load_app_config
from sevenp_pipeline.config.models import ForgeSettings
from sevenp_pipeline.forge.approvals import ForgeApproval, ForgeTrouble, find_forge_approval
from sevenp_pipeline.forge.client import ForgeClient
from sevenp_pipeline_tests.forge.forge_api import ForgeAPI
from sevenp_pipeline_tests.httpserver import Answer, http_server

SHA = "c0ffee" + "0" * 34
TOKEN = "glpat-" + "7" * 20


def _ask(api: ForgeAPI, url: str, kind: str) -> ForgeApproval | None:
    forge = ForgeSettings(kind=kind, repository=api.repository, api_url=url if kind == "github" else f"{url}/api/v4")
    client = ForgeClient(github_token=TOKEN, gitlab_token=TOKEN, attempts=2, backoff_seconds=0.1)
    return find_forge_approval(client, forge, sha=SHA, env="production", approvers=["ada", "grace"],
                               log=lambda _line: None)


def test_github_review_or_deploy_comment_by_an_approver() -> None:
    api = ForgeAPI(repository="acme/web", token=TOKEN)
    with http_server(api) as server:
        assert _ask(api, server.url, "github") is None  # no pull request holds the commit
        api.pulls[12] = {"commits": [SHA], "reviews": [("mallory", "APPROVED"), ("ada", "COMMENTED")]}
        assert _ask(api, server.url, "github") is None  # approved, but not by an approver
        api.human_comment(12, "mallory", "/deploy production")  # anyone can type it: the forge says who did
        api.human_comment(12, "grace", "/deploy staging")  # another environment
        api.commit_comments[SHA] = [("ada", "looks good, /deploy production later")]  # not a command
        assert _ask(api, server.url, "github") is None
        api.human_comment(12, "Grace", "/deploy production")
        assert _ask(api, server.url, "github") == ForgeApproval("Grace", "github comment '/deploy production' "
                                                                         "on pull request 12")
        api.pulls[12]["reviews"].append(("ada", "APPROVED"))
        assert _ask(api, server.url, "github") == ForgeApproval("ada", "github review on pull request 12")
        api.pulls.clear()
        api.commit_comments[SHA].append(("ada", "/deploy production"))
        assert _ask(api, server.url, "github") == ForgeApproval("ada", f"github comment '/deploy production' on "
                                                                       f"commit {SHA[:12]}")


def test_gitlab_approval_or_note_by_an_approver_and_a_forge_that_is_down() -> None:
    api = ForgeAPI(repository="acme/web", token=TOKEN)
    with http_server(api) as server:
        api.pulls[3] = {"commits": [SHA], "approved_by": ["mallory"]}
        assert _ask(api, server.url, "gitlab") is None
        api.human_comment(3, "grace", "/deploy production please")
        assert _ask(api, server.url, "gitlab") == ForgeApproval("grace", "gitlab comment '/deploy production' "
                                                                         "on merge request 3")
        api.pulls[3]["approved_by"].append("ada")
        assert _ask(api, server.url, "gitlab") == ForgeApproval("ada", "gitlab approval of merge request 3")
        api.fail_next = [Answer(503, b"down")] * 2
        with pytest.raises(ForgeTrouble, match="503"):
            _ask(api, server.url, "gitlab")


@pytest.mark.parametrize(("environments", "error"), [
    ("production: {approval: manual, approvers: [ada]}", r"environments\.production\.approvers: .*need a forge"),
    ("staging: {approvers: [ada]}", r"environments\.staging.*approval: manual"),
    ("production: {approval: manual, approvers: ['a b']}", r"not forge user names"),
])
def test_bad_approvers_are_named(tmp_path: Path, environments: str, error: str) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(f"name: web\nrepository: {{url: x}}\nimage: {{}}\nenvironments:\n  {environments}\n")
    with pytest.raises(ConfigError, match=rf"app\.yaml: .*{error}"):
        load_app_config(path)
