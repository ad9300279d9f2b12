"""Test helper: the forge endpoints of GitHub and GitLab, as their REST docs define them, served over
real HTTP (``httpserver.http_server``). There is no GitHub or GitLab to run here, so this answers what
those endpoints answer, including what they refuse. GitHub's statuses, pull requests, comments,
deployments and code scanning are the local forge of ``make demo FORGE=local``
(``sevenp_pipeline.devtools.local_forge.LocalForge``); this adds:

- GitLab ``POST /api/v4/projects/{url-encoded path}/statuses/{sha}``: ``PRIVATE-TOKEN`` (401), states
  pending|running|success|failed|canceled|skipped, and 400 "Cannot transition status" when the
  commit's status of that name is already in that state; ``GET …/merge_requests/{iid}`` (``title``,
  ``target_branch``; 404 for another number), its notes, approvals and deployments.
- GitHub reviews of a pull request and comments on a commit (GitLab: on a commit, its merge requests).
- Memberships, for approvers that are teams: GitHub ``GET /orgs/{org}/teams/{team_slug}/memberships/
  {username}`` (200 ``{"state": "active"|"pending", "role"}``, 404 when not a member), GitLab ``GET
  /api/v4/groups/{url-encoded full path}/members/all/{user_id}`` (200 the member, 404 otherwise; members
  of a parent group are members of its subgroups). ``membership_refusal`` answers 403 instead, as the
  forge does to a token without ``read:org`` / ``read_api``. GitLab names people by id as well:
  ``user_id(login)`` is the id its notes and approvals carry.

``fail_next`` queues answers (a 503, a 429 with Retry-After, a secondary-rate-limit 403) served before
the next real ones.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from dataclasses import dataclass, field

from sevenp_pipeline.devtools.local_forge import Answer, LocalForge, Request, json_answer

_GITLAB = re.compile(r"^/api/v4/projects/([^/]+)/statuses/([0-9a-f]{40})$")
_GITLAB_DEPLOYMENTS = re.compile(r"^/api/v4/projects/([^/]+)/deployments$")
_GITLAB_DEPLOYMENT = re.compile(r"^/api/v4/projects/([^/]+)/deployments/([0-9]+)$")
GITLAB_DEPLOY_STATES = {"running", "success", "failed", "canceled"}
_GITLAB_MR = re.compile(r"^/api/v4/projects/([^/]+)/merge_requests/([0-9]+)$")
_GITHUB_REVIEWS = re.compile(r"^/repos/([^/]+)/([^/]+)/pulls/([0-9]+)/reviews$")
_GITHUB_COMMIT_COMMENTS = re.compile(r"^/repos/([^/]+)/([^/]+)/commits/([0-9a-f]{40})/comments$")
_GITLAB_COMMIT_MRS = re.compile(r"^/api/v4/projects/([^/]+)/repository/commits/([0-9a-f]{40})/merge_requests$")
_GITLAB_APPROVALS = re.compile(r"^/api/v4/projects/([^/]+)/merge_requests/([0-9]+)/approvals$")
_GITLAB_COMMIT_COMMENTS = re.compile(r"^/api/v4/projects/([^/]+)/repository/commits/([0-9a-f]{40})/comments$")
_GITLAB_NOTES = re.compile(r"^/api/v4/projects/([^/]+)/merge_requests/([0-9]+)/notes$")
_GITLAB_NOTE = re.compile(r"^/api/v4/projects/([^/]+)/merge_requests/([0-9]+)/notes/([0-9]+)$")
_GITHUB_MEMBERSHIP = re.compile(r"^/orgs/([^/]+)/teams/([^/]+)/memberships/([^/]+)$")
_GITLAB_MEMBER = re.compile(r"^/api/v4/groups/([^/]+)/members/all/([0-9]+)$")
GITLAB_STATES = {"pending", "running", "success", "failed", "canceled", "skipped"}


@dataclass
class ForgeAPI(LocalForge):
    fail_next: list[Answer] = field(default_factory=list)
    # What people did on the forge besides what LocalForge keeps: reviews and approvals of a request
    # (``pulls[n]["reviews"]``, ``["approved_by"]``) and comments on commits; comments on a request are
    # `comments` entries with an "author".
    commit_comments: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # sha -> [(login, body)]
    # "org/team-slug" (GitHub) or "group/subgroup" (GitLab) -> its members' logins; GitHub: "pending" invitees
    teams: dict[str, list[str]] = field(default_factory=dict)
    pending: dict[str, list[str]] = field(default_factory=dict)
    membership_refusal: Answer | None = None  # e.g. the 403 of a token without read:org
    user_ids: dict[str, int] = field(default_factory=dict)  # login -> GitLab user id (made on first use)

    def user_id(self, login: str) -> int:
        return self.user_ids.setdefault(login, 100 + len(self.user_ids))

    def _gitlab_user(self, login: str) -> dict[str, object]:
        return {"id": self.user_id(login), "username": login}

    def __call__(self, request: Request) -> Answer:
        if self.fail_next:
            return self.fail_next.pop(0)
        return super().__call__(request)

    def route(self, request: Request, path: str) -> Answer | None:
        if m := _GITLAB.match(path):
            return self._gitlab(request, urllib.parse.unquote(m[1]), m[2])
        github = request.headers.get("authorization") == f"Bearer {self.token}"
        gitlab = request.headers.get("private-token") == self.token
        get = request.method == "GET"
        if get and (m := _GITLAB_MR.match(path)):
            return self.pull(gitlab, urllib.parse.unquote(m[1]), int(m[2]), lambda p: {
                "iid": int(m[2]), "title": p.get("title", ""), "state": "opened",
                "target_branch": p.get("base", "main"), "source_branch": p.get("head", "feature")})
        if get and (m := _GITHUB_REVIEWS.match(path)):
            return self.read(github, f"{m[1]}/{m[2]}", lambda: [
                {"user": {"login": login}, "state": state}
                for login, state in self.pulls.get(int(m[3]), {}).get("reviews", [])])
        if get and (m := _GITHUB_COMMIT_COMMENTS.match(path)):
            return self.read(github, f"{m[1]}/{m[2]}", lambda: [
                {"user": {"login": login}, "body": body} for login, body in self.commit_comments.get(m[3], [])])
        if get and (m := _GITLAB_COMMIT_MRS.match(path)):
            return self.read(gitlab, urllib.parse.unquote(m[1]), lambda: [
                {"iid": n} for n, p in sorted(self.pulls.items()) if m[2] in p["commits"]])
        if get and (m := _GITLAB_APPROVALS.match(path)):
            return self.read(gitlab, urllib.parse.unquote(m[1]), lambda: {"approved_by": [
                {"user": self._gitlab_user(login)} for login in self.pulls.get(int(m[2]), {}).get("approved_by", [])]})
        if get and (m := _GITLAB_COMMIT_COMMENTS.match(path)):
            return self.read(gitlab, urllib.parse.unquote(m[1]), lambda: [
                {"author": self._gitlab_user(login), "note": body}
                for login, body in self.commit_comments.get(m[2], [])])
        if get and (m := _GITHUB_MEMBERSHIP.match(path)):
            return self._membership(github, f"{m[1]}/{m[2]}", urllib.parse.unquote(m[3]), "github")
        if get and (m := _GITLAB_MEMBER.match(path)):
            logins = [login for login, uid in self.user_ids.items() if uid == int(m[2])]
            return self._membership(gitlab, urllib.parse.unquote(m[1]), logins[0] if logins else "", "gitlab")
        if m := _GITLAB_DEPLOYMENTS.match(path):
            return self.deploy(request, gitlab, urllib.parse.unquote(m[1]), None, GITLAB_DEPLOY_STATES)
        if m := _GITLAB_DEPLOYMENT.match(path):
            return self.deploy(request, gitlab, urllib.parse.unquote(m[1]), int(m[2]), GITLAB_DEPLOY_STATES)
        if m := _GITLAB_NOTES.match(path):
            return self.comment(request, gitlab, urllib.parse.unquote(m[1]), int(m[2]))
        if m := _GITLAB_NOTE.match(path):
            return self.edit(request, gitlab, urllib.parse.unquote(m[1]), int(m[3]), "PUT")
        return super().route(request, path)

    def comment_json(self, comment_id: int, comment: dict[str, object]) -> dict[str, object]:
        """GitHub's ``user`` and GitLab's ``author`` of a comment (a note on GitLab)."""
        return {**super().comment_json(comment_id, comment),
                "author": self._gitlab_user(str(comment.get("author", self.bot)))}

    def _membership(self, authorized: bool, team: str, login: str, kind: str) -> Answer:
        if not authorized:
            return json_answer(401, {"message": "Bad credentials"})
        if self.membership_refusal is not None:
            return self.membership_refusal
        if kind == "github":
            state = ("active" if login in self.teams.get(team, []) else
                     "pending" if login in self.pending.get(team, []) else "")
            return (json_answer(200, {"state": state, "role": "member", "url": ""}) if state
                    else json_answer(404, {"message": "Not Found"}))
        parents = [team.split("/")[:i] for i in range(1, team.count("/") + 2)]  # inherited from each ancestor
        if login and any(login in self.teams.get("/".join(p), []) for p in parents):
            return json_answer(200, {"id": self.user_id(login), "username": login, "state": "active",
                                     "access_level": 30})
        return json_answer(404, {"message": "404 Not found"})

    def human_comment(self, number: int, login: str, body: str) -> None:
        """A person's comment on pull/merge request ``number``."""
        self.comments[len(self.comments) + 1] = {"pr": number, "body": body, "edits": 0, "author": login}

    def _gitlab(self, request: Request, project: str, sha: str) -> Answer:
        if request.headers.get("private-token") != self.token:
            return json_answer(401, {"message": "401 Unauthorized"})
        if project != self.repository:
            return json_answer(404, {"message": "404 Project Not Found"})
        body = json.loads(request.body)
        state, name = body.get("state"), body.get("name", "default")
        if state not in GITLAB_STATES:
            return json_answer(400, {"error": "state does not have a valid value"})
        if self.latest(sha).get(name, {}).get("state") == state:
            return json_answer(400, {"message": f"Cannot transition status via :{state} from :{state}"})
        self.record(sha, name, body)
        return json_answer(201, {"status": state})
