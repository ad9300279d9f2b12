"""Approvals by forge identity: what the forge says about a commit's pull request and comments, over HTTP
(``forge_api``), read by :func:`find_forge_approval`. The deploy it starts is proven in
``deploy/test_deploy_pipeline.py``."""

from __future__ import annotations

from pathlib import Path

import pytest

from sevenp_pipeline.config import ConfigError, load_app_config
from sevenp_pipeline.config.models import ForgeSettings
from sevenp_pipeline.forge.approvals import ForgeApproval, ForgeTrouble, TeamMembership, find_forge_approval
from sevenp_pipeline.forge.client import ForgeClient
from sevenp_pipeline_tests.forge.forge_api import ForgeAPI
from sevenp_pipeline_tests.httpserver import Answer, Server, http_server

SHA = "c0ffee" + "0" * 34
TOKEN = "glpat-" + "7" * 20


def _ask(api: ForgeAPI, url: str, kind: str, approvers: tuple[str, ...] = ("ada", "grace"),
         warnings: list[str] | None = None) -> ForgeApproval | None:
    forge = ForgeSettings(kind=kind, repository=api.repository, api_url=url if kind == "github" else f"{url}/api/v4")
    client = ForgeClient(github_token=TOKEN, gitlab_token=TOKEN, attempts=2, backoff_seconds=0.1)
    return find_forge_approval(client, forge, sha=SHA, env="production", approvers=approvers,
                               log=lambda _line: None, warn=(warnings if warnings is not None else []).append)


def _membership_asks(server: Server) -> list[str]:
    return [r.path for r in server.requests if "/memberships/" in r.path or "/members/all/" in r.path]


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


SENIORS = "@acme/senior-developers"


def test_github_team_member_review_approves_and_each_member_is_asked_once() -> None:
    api = ForgeAPI(repository="acme/web", token=TOKEN)
    with http_server(api) as server:
        api.teams["acme/senior-developers"] = ["ada"]
        api.pending["acme/senior-developers"] = ["grace"]  # invited, not yet a member
        api.pulls[21] = {"commits": [SHA], "reviews": [("mallory", "APPROVED"), ("grace", "APPROVED"),
                                                       ("ada", "COMMENTED")]}
        api.human_comment(21, "mallory", "/deploy production")
        assert _ask(api, server.url, "github", (SENIORS,)) is None
        # mallory's review and comment, grace's review: one question each; ada's comment asks nothing
        assert sorted(_membership_asks(server)) == ["/orgs/acme/teams/senior-developers/memberships/grace",
                                                    "/orgs/acme/teams/senior-developers/memberships/mallory"]
        api.pulls[21]["reviews"].append(("ada", "APPROVED"))
        assert _ask(api, server.url, "github", (SENIORS,)) == ForgeApproval(
            "ada", "github review on pull request 21 (member of @acme/senior-developers)")
        api.pulls[21]["reviews"].insert(0, ("grace", "APPROVED"))  # a user named outright needs no team
        assert _ask(api, server.url, "github", ("grace", SENIORS)) == ForgeApproval(
            "grace", "github review on pull request 21")


def test_a_refused_membership_question_approves_nothing_and_names_the_permission() -> None:
    api = ForgeAPI(repository="acme/web", token=TOKEN)
    with http_server(api) as server:
        api.teams["acme/senior-developers"] = ["ada", "grace"]
        api.membership_refusal = Answer(403, b'{"message": "Resource not accessible by personal access token"}')
        api.pulls[21] = {"commits": [SHA], "reviews": [("ada", "APPROVED"), ("grace", "APPROVED")]}
        warnings: list[str] = []
        assert _ask(api, server.url, "github", (SENIORS,), warnings) is None
        (warning,) = warnings  # one warning, one question: the token cannot read any member of the team
        assert len(_membership_asks(server)) == 1
        assert "@acme/senior-developers" in warning and "SEVENP_GITHUB_TOKEN" in warning
        assert "read:org" in warning and "Members: read" in warning and TOKEN not in warning
        api.human_comment(21, "hopper", "/deploy production")  # a user named outright still approves
        assert _ask(api, server.url, "github", (SENIORS, "hopper")) == ForgeApproval(
            "hopper", "github comment '/deploy production' on pull request 21")
        # The forge down is not "not a member": the tick is skipped and asked again.
        api.membership_refusal, api.fail_next = None, [Answer(503, b"down")] * 2
        forge = ForgeSettings(kind="github", repository=api.repository, api_url=server.url)
        teams = TeamMembership(ForgeClient(github_token=TOKEN, attempts=2, backoff_seconds=0.1), forge,
                               log=lambda _line: None)
        with pytest.raises(ForgeTrouble, match="503"):
            teams.is_member("acme/senior-developers", "ada", None)
        assert teams.is_member("acme/senior-developers", "ada", None)  # not cached: asked again


def test_gitlab_group_member_approves_with_a_deploy_note() -> None:
    api = ForgeAPI(repository="acme/web", token=TOKEN)
    with http_server(api) as server:
        api.teams["acme"] = ["grace"]  # a member of the parent group is a member of acme/platform
        api.pulls[3] = {"commits": [SHA], "approved_by": ["mallory"]}
        api.human_comment(3, "mallory", "/deploy production")
        assert _ask(api, server.url, "gitlab", ("@acme/platform",)) is None
        assert _membership_asks(server) == [f"/api/v4/groups/acme%2Fplatform/members/all/{api.user_id('mallory')}"]
        api.human_comment(3, "grace", "/deploy production")
        assert _ask(api, server.url, "gitlab", ("@acme/platform",)) == ForgeApproval(
            "grace", "gitlab comment '/deploy production' on merge request 3 (member of @acme/platform)")
        assert _membership_asks(server)[-1] == f"/api/v4/groups/acme%2Fplatform/members/all/{api.user_id('grace')}"
        api.membership_refusal = Answer(403, b'{"message": "403 Forbidden"}')
        warnings: list[str] = []
        assert _ask(api, server.url, "gitlab", ("@acme/platform",), warnings) is None
        assert len(warnings) == 1 and "read_api" in warnings[0] and "SEVENP_GITLAB_TOKEN" in warnings[0]


@pytest.mark.parametrize(("approvers", "kind", "error"), [
    ("['@acme/']", "github", r"environments\.production\.approvers: not forge user names or teams: \['@acme/'\]"),
    ("['@acme/senior devs']", "github", r"environments\.production\.approvers: not forge user names or teams"),
    ("['@']", "gitlab", r"environments\.production\.approvers: not forge user names or teams"),
    ("['@acme']", "github", r".*environments\.production\.approvers: \['@acme'\]: a GitHub team is @org/team-slug"),
    ("['@acme/infra/oncall']", "github", r".*environments\.production\.approvers: .*a GitHub team is @org/team-slug"),
])
def test_bad_teams_are_named(tmp_path: Path, approvers: str, kind: str, error: str) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(f"name: web\nrepository: {{url: x}}\nimage: {{}}\nforge: {{kind: {kind}, repository: acme/web}}\n"
                    f"environments:\n  production: {{approval: manual, approvers: {approvers}}}\n")
    with pytest.raises(ConfigError, match=rf"app\.yaml: {error}"):
        load_app_config(path)


def test_teams_and_groups_that_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    for kind, approvers in (("github", "[ada, '@acme/senior-developers']"),
                            ("gitlab", "['@acme', '@acme/infra/on-call', grace]")):
        path.write_text(f"name: web\nrepository: {{url: x}}\nimage: {{}}\n"
                        f"forge: {{kind: {kind}, repository: acme/web}}\n"
                        f"environments:\n  production: {{approval: manual, approvers: {approvers}}}\n")
        assert load_app_config(path).environments["production"].approvers[-1] in ("@acme/senior-developers", "grace")


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
