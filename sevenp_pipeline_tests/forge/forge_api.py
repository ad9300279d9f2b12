"""Test helper: the commit-status endpoints of GitHub and GitLab, as their REST docs define them, served
over real HTTP (``httpserver.http_server``). There is no GitHub or GitLab to run here, so this answers
what those endpoints answer, including what they refuse:

- GitHub ``POST /repos/{owner}/{repo}/statuses/{sha}``: Bearer token (401 "Bad credentials"), states
  pending|success|failure|error, description at most 140 characters (422 otherwise), 404 for another
  repository; ``GET …/commits/{sha}/status`` gives the combined status (the latest per context).
- GitHub ``GET …/pulls/{n}`` and GitLab ``GET …/merge_requests/{iid}``: a request of ``pulls`` with its
  ``title`` and base branch (``base.ref``, ``target_branch``); 404 for another number.
- GitLab ``POST /api/v4/projects/{url-encoded path}/statuses/{sha}``: ``PRIVATE-TOKEN`` (401), states
  pending|running|success|failed|canceled|skipped, and 400 "Cannot transition status" when the
  commit's status of that name is already in that state.

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

import base64
import gzip
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

from sevenp_pipeline_tests.httpserver import Answer, Request

_GITHUB = re.compile(r"^/repos/([^/]+)/([^/]+)/statuses/([0-9a-f]{40})$")
_GITHUB_COMBINED = re.compile(r"^/repos/([^/]+)/([^/]+)/commits/([0-9a-f]{40})/status$")
_GITLAB = re.compile(r"^/api/v4/projects/([^/]+)/statuses/([0-9a-f]{40})$")
_GITHUB_DEPLOYMENTS = re.compile(r"^/repos/([^/]+)/([^/]+)/deployments$")
_GITHUB_DEPLOYMENT_STATUSES = re.compile(r"^/repos/([^/]+)/([^/]+)/deployments/([0-9]+)/statuses$")
_GITLAB_DEPLOYMENTS = re.compile(r"^/api/v4/projects/([^/]+)/deployments$")
_GITLAB_DEPLOYMENT = re.compile(r"^/api/v4/projects/([^/]+)/deployments/([0-9]+)$")
GITHUB_DEPLOY_STATES = {"error", "failure", "inactive", "in_progress", "queued", "pending", "success"}
GITLAB_DEPLOY_STATES = {"running", "success", "failed", "canceled"}
_GITHUB_SARIFS = re.compile(r"^/repos/([^/]+)/([^/]+)/code-scanning/sarifs$")
_GITHUB_COMMIT_PULLS = re.compile(r"^/repos/([^/]+)/([^/]+)/commits/([0-9a-f]{40})/pulls$")
_GITHUB_PULL = re.compile(r"^/repos/([^/]+)/([^/]+)/pulls/([0-9]+)$")
_GITLAB_MR = re.compile(r"^/api/v4/projects/([^/]+)/merge_requests/([0-9]+)$")
_GITHUB_REVIEWS = re.compile(r"^/repos/([^/]+)/([^/]+)/pulls/([0-9]+)/reviews$")
_GITHUB_COMMIT_COMMENTS = re.compile(r"^/repos/([^/]+)/([^/]+)/commits/([0-9a-f]{40})/comments$")
_GITLAB_COMMIT_MRS = re.compile(r"^/api/v4/projects/([^/]+)/repository/commits/([0-9a-f]{40})/merge_requests$")
_GITLAB_APPROVALS = re.compile(r"^/api/v4/projects/([^/]+)/merge_requests/([0-9]+)/approvals$")
_GITLAB_COMMIT_COMMENTS = re.compile(r"^/api/v4/projects/([^/]+)/repository/commits/([0-9a-f]{40})/comments$")
_GITHUB_COMMENTS = re.compile(r"^/repos/([^/]+)/([^/]+)/issues/([0-9]+)/comments$")
_GITHUB_COMMENT = re.compile(r"^/repos/([^/]+)/([^/]+)/issues/comments/([0-9]+)$")
_GITLAB_NOTES = re.compile(r"^/api/v4/projects/([^/]+)/merge_requests/([0-9]+)/notes$")
_GITLAB_NOTE = re.compile(r"^/api/v4/projects/([^/]+)/merge_requests/([0-9]+)/notes/([0-9]+)$")
_GITHUB_MEMBERSHIP = re.compile(r"^/orgs/([^/]+)/teams/([^/]+)/memberships/([^/]+)$")
_GITLAB_MEMBER = re.compile(r"^/api/v4/groups/([^/]+)/members/all/([0-9]+)$")
GITHUB_STATES = {"pending", "success", "failure", "error"}
GITLAB_STATES = {"pending", "running", "success", "failed", "canceled", "skipped"}


def _json(status: int, body: object, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})})


@dataclass
class ForgeAPI:
    repository: str
    token: str
    bot: str = "sevenp-bot"  # the login the token belongs to (the pipeline's own comments)
    posts: list[dict[str, str]] = field(default_factory=list)  # every accepted status, in order
    fail_next: list[Answer] = field(default_factory=list)
    comments: dict[int, dict[str, object]] = field(default_factory=dict)  # id -> {"pr", "body", "edits"}
    comment_calls: list[str] = field(default_factory=list)  # "create 7", "edit 1", "list 7"
    # id -> {"environment", "sha", "ref", "states": [state, ...], "environment_url", "log_url"}
    deployments: dict[int, dict[str, object]] = field(default_factory=dict)
    sarifs: list[dict[str, object]] = field(default_factory=list)  # {"commit_sha", "ref", "sarif": the JSON}
    # What people did on the forge: pull/merge requests (the commits they hold, reviews/approvals by login)
    # and comments on commits; comments on a request are `comments` entries with an "author".
    # n -> {"commits", "approved_by", "reviews", "title", "base"}
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    pull_reads: list[int] = field(default_factory=list)  # every GET of one pull/merge request, in order
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
        path = urllib.parse.urlsplit(request.path).path
        if m := _GITHUB.match(path):
            return self._github(request, f"{m[1]}/{m[2]}", m[3])
        if m := _GITHUB_COMBINED.match(path):
            latest = self.latest(m[3])
            return _json(200, {"sha": m[3], "statuses": [{"context": c, **s} for c, s in latest.items()]})
        if m := _GITLAB.match(path):
            return self._gitlab(request, urllib.parse.unquote(m[1]), m[2])
        github = request.headers.get("authorization") == f"Bearer {self.token}"
        gitlab = request.headers.get("private-token") == self.token
        if request.method == "GET" and (m := _GITHUB_COMMIT_PULLS.match(path)):
            return self._read(github, f"{m[1]}/{m[2]}", lambda: [
                {"number": n} for n, p in sorted(self.pulls.items()) if m[3] in p["commits"]])
        if request.method == "GET" and (m := _GITHUB_PULL.match(path)):
            return self._pull(github, f"{m[1]}/{m[2]}", int(m[3]), lambda p: {
                "number": int(m[3]), "title": p.get("title", ""), "state": "open",
                "base": {"ref": p.get("base", "main")}, "head": {"ref": p.get("head", "feature")}})
        if request.method == "GET" and (m := _GITLAB_MR.match(path)):
            return self._pull(gitlab, urllib.parse.unquote(m[1]), int(m[2]), lambda p: {
                "iid": int(m[2]), "title": p.get("title", ""), "state": "opened",
                "target_branch": p.get("base", "main"), "source_branch": p.get("head", "feature")})
        if request.method == "GET" and (m := _GITHUB_REVIEWS.match(path)):
            return self._read(github, f"{m[1]}/{m[2]}", lambda: [
                {"user": {"login": login}, "state": state}
                for login, state in self.pulls.get(int(m[3]), {}).get("reviews", [])])
        if request.method == "GET" and (m := _GITHUB_COMMIT_COMMENTS.match(path)):
            return self._read(github, f"{m[1]}/{m[2]}", lambda: [
                {"user": {"login": login}, "body": body} for login, body in self.commit_comments.get(m[3], [])])
        if request.method == "GET" and (m := _GITLAB_COMMIT_MRS.match(path)):
            return self._read(gitlab, urllib.parse.unquote(m[1]), lambda: [
                {"iid": n} for n, p in sorted(self.pulls.items()) if m[2] in p["commits"]])
        if request.method == "GET" and (m := _GITLAB_APPROVALS.match(path)):
            return self._read(gitlab, urllib.parse.unquote(m[1]), lambda: {"approved_by": [
                {"user": self._gitlab_user(login)} for login in self.pulls.get(int(m[2]), {}).get("approved_by", [])]})
        if request.method == "GET" and (m := _GITLAB_COMMIT_COMMENTS.match(path)):
            return self._read(gitlab, urllib.parse.unquote(m[1]), lambda: [
                {"author": self._gitlab_user(login), "note": body}
                for login, body in self.commit_comments.get(m[2], [])])
        if request.method == "GET" and (m := _GITHUB_MEMBERSHIP.match(path)):
            return self._membership(github, f"{m[1]}/{m[2]}", urllib.parse.unquote(m[3]), "github")
        if request.method == "GET" and (m := _GITLAB_MEMBER.match(path)):
            logins = [login for login, uid in self.user_ids.items() if uid == int(m[2])]
            return self._membership(gitlab, urllib.parse.unquote(m[1]), logins[0] if logins else "", "gitlab")
        if m := _GITHUB_SARIFS.match(path):
            return self._sarif(request, github, f"{m[1]}/{m[2]}")
        if m := _GITHUB_DEPLOYMENTS.match(path):
            return self._deploy(request, github, f"{m[1]}/{m[2]}", None, GITHUB_DEPLOY_STATES)
        if m := _GITHUB_DEPLOYMENT_STATUSES.match(path):
            return self._deploy(request, github, f"{m[1]}/{m[2]}", int(m[3]), GITHUB_DEPLOY_STATES)
        if m := _GITLAB_DEPLOYMENTS.match(path):
            return self._deploy(request, gitlab, urllib.parse.unquote(m[1]), None, GITLAB_DEPLOY_STATES)
        if m := _GITLAB_DEPLOYMENT.match(path):
            return self._deploy(request, gitlab, urllib.parse.unquote(m[1]), int(m[2]), GITLAB_DEPLOY_STATES)
        if m := _GITHUB_COMMENTS.match(path):
            return self._comments(request, github, f"{m[1]}/{m[2]}", int(m[3]))
        if m := _GITHUB_COMMENT.match(path):
            return self._edit(request, github, f"{m[1]}/{m[2]}", int(m[3]), "PATCH")
        if m := _GITLAB_NOTES.match(path):
            return self._comments(request, gitlab, urllib.parse.unquote(m[1]), int(m[2]))
        if m := _GITLAB_NOTE.match(path):
            return self._edit(request, gitlab, urllib.parse.unquote(m[1]), int(m[3]), "PUT")
        return _json(404, {"message": "Not Found"})

    def _read(self, authorized: bool, repository: str, answer) -> Answer:
        if not authorized:
            return _json(401, {"message": "Bad credentials"})
        if repository != self.repository:
            return _json(404, {"message": "Not Found"})
        return _json(200, answer())

    def _pull(self, authorized: bool, repository: str, number: int, answer) -> Answer:
        """GitHub ``GET /pulls/{n}`` (``base.ref``, ``title``), GitLab ``GET /merge_requests/{iid}``
        (``target_branch``, ``title``); 404 for a request that does not exist."""
        self.pull_reads.append(number)
        if authorized and repository == self.repository and number not in self.pulls:
            return _json(404, {"message": "Not Found"})
        return self._read(authorized, repository, lambda: answer(self.pulls[number]))

    def _membership(self, authorized: bool, team: str, login: str, kind: str) -> Answer:
        if not authorized:
            return _json(401, {"message": "Bad credentials"})
        if self.membership_refusal is not None:
            return self.membership_refusal
        if kind == "github":
            state = ("active" if login in self.teams.get(team, []) else
                     "pending" if login in self.pending.get(team, []) else "")
            return (_json(200, {"state": state, "role": "member", "url": ""}) if state
                    else _json(404, {"message": "Not Found"}))
        parents = [team.split("/")[:i] for i in range(1, team.count("/") + 2)]  # inherited from each ancestor
        if login and any(login in self.teams.get("/".join(p), []) for p in parents):
            return _json(200, {"id": self.user_id(login), "username": login, "state": "active", "access_level": 30})
        return _json(404, {"message": "404 Not found"})

    def human_comment(self, number: int, login: str, body: str) -> None:
        """A person's comment on pull/merge request ``number``."""
        self.comments[len(self.comments) + 1] = {"pr": number, "body": body, "edits": 0, "author": login}

    def _sarif(self, request: Request, authorized: bool, repository: str) -> Answer:
        """Code scanning: commit_sha, a full ref, and the SARIF gzip-compressed then base64-encoded."""
        if not authorized:
            return _json(401, {"message": "Bad credentials"})
        if repository != self.repository:
            return _json(404, {"message": "Not Found"})
        body = json.loads(request.body)
        try:
            sarif = json.loads(gzip.decompress(base64.b64decode(body["sarif"], validate=True)))
        except (KeyError, ValueError, OSError):
            return _json(400, {"message": "Invalid request: sarif is not gzip-compressed base64 SARIF"})
        sha_ok = re.fullmatch(r"[0-9a-f]{40}", str(body.get("commit_sha")))
        if not sha_ok or not str(body.get("ref")).startswith("refs/"):
            return _json(422, {"message": "Validation Failed"})
        self.sarifs.append({"commit_sha": body["commit_sha"], "ref": body["ref"], "sarif": sarif})
        return _json(202, {"id": f"sarif-{len(self.sarifs)}"})

    def _deploy(self, request: Request, authorized: bool, repository: str, deployment_id: int | None,
                states: set[str]) -> Answer:
        """GitHub: POST /deployments (ref, environment) creates; POST /deployments/{id}/statuses sets a state.
        GitLab: POST /deployments (environment, sha, ref, status) creates; PUT /deployments/{id} sets status."""
        if not authorized:
            return _json(401, {"message": "Bad credentials"})
        if repository != self.repository:
            return _json(404, {"message": "Not Found"})
        body = json.loads(request.body)
        if deployment_id is None:
            if not body.get("environment") or not (body.get("ref") or body.get("sha")):
                return _json(422, {"message": "Validation Failed"})
            if "status" in body and body["status"] not in states:
                return _json(400, {"error": "status does not have a valid value"})
            new_id = len(self.deployments) + 1
            self.deployments[new_id] = {"environment": body["environment"], "sha": body.get("sha") or body["ref"],
                                        "ref": body.get("ref", ""), "states": [body["status"]] if "status" in body
                                        else [], "environment_url": "", "log_url": ""}
            return _json(201, {"id": new_id})
        if deployment_id not in self.deployments:
            return _json(404, {"message": "Not Found"})
        state = body.get("state") or body.get("status")
        if state not in states:
            return _json(422, {"message": "Validation Failed"})
        deployment = self.deployments[deployment_id]
        deployment["states"] = [*deployment["states"], state]  # type: ignore[misc]
        deployment["environment_url"] = body.get("environment_url", deployment["environment_url"])
        deployment["log_url"] = body.get("log_url", deployment["log_url"])
        return _json(201 if request.method == "POST" else 200, {"id": deployment_id, "state": state})

    def _comments(self, request: Request, authorized: bool, repository: str, number: int) -> Answer:
        if not authorized:
            return _json(401, {"message": "Bad credentials"})
        if repository != self.repository:
            return _json(404, {"message": "Not Found"})
        if request.method == "GET":
            self.comment_calls.append(f"list {number}")
            author = str(self.bot)
            return _json(200, [{"id": i, "body": c["body"], "user": {"login": c.get("author", author)},
                                "author": self._gitlab_user(str(c.get("author", author)))}
                               for i, c in self.comments.items() if c["pr"] == number])
        body = json.loads(request.body).get("body")
        if not body:
            return _json(422, {"message": "Validation Failed"})
        new_id = len(self.comments) + 1
        self.comments[new_id] = {"pr": number, "body": body, "edits": 0}
        self.comment_calls.append(f"create {number}")
        return _json(201, {"id": new_id, "body": body})

    def _edit(self, request: Request, authorized: bool, repository: str, comment_id: int, method: str) -> Answer:
        if not authorized:
            return _json(401, {"message": "Bad credentials"})
        if repository != self.repository or comment_id not in self.comments:
            return _json(404, {"message": "Not Found"})
        if request.method != method:
            return _json(405, {"message": "Method Not Allowed"})
        self.comments[comment_id]["body"] = json.loads(request.body)["body"]
        self.comments[comment_id]["edits"] = int(self.comments[comment_id]["edits"]) + 1
        self.comment_calls.append(f"edit {comment_id}")
        return _json(200, {"id": comment_id})

    def _github(self, request: Request, repository: str, sha: str) -> Answer:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return _json(401, {"message": "Bad credentials"})
        if repository != self.repository:
            return _json(404, {"message": "Not Found"})
        body = json.loads(request.body)
        if body.get("state") not in GITHUB_STATES or len(body.get("description", "")) > 140:
            return _json(422, {"message": "Validation Failed"})
        self.posts.append({"sha": sha, "context": body.get("context", "default"), "state": body["state"],
                           "description": body.get("description", ""), "target_url": body.get("target_url", "")})
        return _json(201, {"state": body["state"]})

    def _gitlab(self, request: Request, project: str, sha: str) -> Answer:
        if request.headers.get("private-token") != self.token:
            return _json(401, {"message": "401 Unauthorized"})
        if project != self.repository:
            return _json(404, {"message": "404 Project Not Found"})
        body = json.loads(request.body)
        state, name = body.get("state"), body.get("name", "default")
        if state not in GITLAB_STATES:
            return _json(400, {"error": "state does not have a valid value"})
        if self.latest(sha).get(name, {}).get("state") == state:
            return _json(400, {"message": f"Cannot transition status via :{state} from :{state}"})
        self.posts.append({"sha": sha, "context": name, "state": state,
                           "description": body.get("description", ""), "target_url": body.get("target_url", "")})
        return _json(201, {"status": state})

    def latest(self, sha: str) -> dict[str, dict[str, str]]:
        """The commit's status per context, as the forge shows it now."""
        out: dict[str, dict[str, str]] = {}
        for post in self.posts:
            if post["sha"] == sha:
                out[post["context"]] = {k: post[k] for k in ("state", "description", "target_url")}
        return out
