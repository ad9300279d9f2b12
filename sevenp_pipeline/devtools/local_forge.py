"""A GitHub-shaped forge on loopback that records what the pipeline posts to it (``make demo FORGE=local``).

There is no GitHub to talk to on a laptop, so this answers the endpoints of GitHub's REST API the forge
sensor uses, as GitHub's docs define them, including what GitHub refuses, and keeps what it accepted:

- ``POST /repos/{owner}/{repo}/statuses/{sha}``: Bearer token (401 "Bad credentials"), states
  pending|success|failure|error, description at most 140 characters (422 otherwise), 404 for another
  repository; ``GET …/commits/{sha}/status`` gives the combined status (the latest per context).
- ``GET …/commits/{sha}/pulls`` (the requests holding the commit) and ``GET …/pulls/{n}`` (``title``,
  ``base.ref``; 404 for a request it does not know): the requests are what ``pulls`` holds.
- Issue comments: ``GET``/``POST …/issues/{n}/comments``, ``PATCH …/issues/comments/{id}``.
- Deployments: ``POST …/deployments`` (ref, environment), ``POST …/deployments/{id}/statuses`` (a state).
- Code scanning: ``POST …/code-scanning/sarifs`` (the SARIF gzip-compressed then base64-encoded).
- ``GET /``: a plain-text page of everything it received (:meth:`LocalForge.report`).

The tests' forge double (``sevenp_pipeline_tests/forge/forge_api.py``) extends it with GitLab, reviews,
memberships and scripted failures. :class:`HTTPService` serves any ``Request -> Answer`` function on a
loopback port in a thread (the tests' HTTP servers are this one too).
"""

from __future__ import annotations

import base64
import gzip
import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)


Responder = Callable[[Request], Answer]


class HTTPService:
    """``respond`` served over HTTP on ``host:port`` (0: a free port) by a thread of this process."""

    def __init__(self, respond: Responder, *, host: str = "127.0.0.1", port: int = 0) -> None:
        def handle(handler: BaseHTTPRequestHandler) -> None:
            length = int(handler.headers.get("Content-Length") or 0)
            answer = respond(Request(handler.command, handler.path,
                                     {k.lower(): v for k, v in handler.headers.items()},
                                     handler.rfile.read(length) if length else b""))
            handler.send_response(answer.status)
            for key, value in answer.headers.items():
                handler.send_header(key, value)
            handler.send_header("Content-Length", str(len(answer.body)))
            handler.end_headers()
            handler.wfile.write(answer.body)

        class Handler(BaseHTTPRequestHandler):
            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = handle

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)  # binds now: a taken port raises OSError here
        self._server.daemon_threads = True
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"http {self.url}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


@contextmanager
def serving(respond: Responder, *, host: str = "127.0.0.1", port: int = 0) -> Iterator[HTTPService]:
    service = HTTPService(respond, host=host, port=port)
    try:
        yield service
    finally:
        service.stop()


def json_answer(status: int, body: object, headers: dict[str, str] | None = None) -> Answer:
    return Answer(status, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})})


def _results(sarif: object) -> int:
    runs = sarif.get("runs", []) if isinstance(sarif, dict) else []
    return sum(len(r.get("results", [])) for r in runs if isinstance(r, dict))


_REPO = r"^/repos/([^/]+)/([^/]+)"
_STATUSES = re.compile(_REPO + r"/statuses/([0-9a-f]{40})$")
_COMBINED = re.compile(_REPO + r"/commits/([0-9a-f]{40})/status$")
_COMMIT_PULLS = re.compile(_REPO + r"/commits/([0-9a-f]{40})/pulls$")
_PULL = re.compile(_REPO + r"/pulls/([0-9]+)$")
_DEPLOYMENTS = re.compile(_REPO + r"/deployments$")
_DEPLOYMENT_STATUSES = re.compile(_REPO + r"/deployments/([0-9]+)/statuses$")
_SARIFS = re.compile(_REPO + r"/code-scanning/sarifs$")
_COMMENTS = re.compile(_REPO + r"/issues/([0-9]+)/comments$")
_COMMENT = re.compile(_REPO + r"/issues/comments/([0-9]+)$")
STATES = {"pending", "success", "failure", "error"}
DEPLOY_STATES = {"error", "failure", "inactive", "in_progress", "queued", "pending", "success"}
FINAL_DEPLOY_STATES = {"error", "failure", "inactive", "success"}


@dataclass
class LocalForge:
    """The GitHub API of one repository (``owner/name``) for one token, and what it accepted."""

    repository: str
    token: str
    bot: str = "sevenp-bot"  # the login the token belongs to (the pipeline's own comments)
    posts: list[dict[str, str]] = field(default_factory=list)  # every accepted status, in order
    comments: dict[int, dict[str, object]] = field(default_factory=dict)  # id -> {"pr", "body", "edits"}
    comment_calls: list[str] = field(default_factory=list)  # "create 7", "edit 1", "list 7"
    # id -> {"environment", "sha", "ref", "states": [state, ...], "environment_url", "log_url"}
    deployments: dict[int, dict[str, object]] = field(default_factory=dict)
    sarifs: list[dict[str, object]] = field(default_factory=list)  # {"commit_sha", "ref", "sarif": the JSON}
    # Pull requests: n -> {"commits": [sha, ...], "title", "base", "head"} (and, for the tests' double,
    # "approved_by", "reviews")
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    pull_reads: list[int] = field(default_factory=list)  # every GET of one pull request, in order
    last_request: float = 0.0  # time.monotonic() of the last request answered

    def __call__(self, request: Request) -> Answer:
        self.last_request = time.monotonic()
        answer = self.route(request, urllib.parse.urlsplit(request.path).path)
        return answer or json_answer(404, {"message": "Not Found"})

    def route(self, request: Request, path: str) -> Answer | None:  # noqa: PLR0911 (one return per endpoint)
        """The answer of a GitHub endpoint this forge has, None for a path it does not know."""
        github = request.headers.get("authorization") == f"Bearer {self.token}"
        get = request.method == "GET"
        if get and path == "/":
            return Answer(200, self.report().encode(), {"Content-Type": "text/plain; charset=utf-8"})
        if m := _STATUSES.match(path):
            return self._status(request, github, f"{m[1]}/{m[2]}", m[3])
        if m := _COMBINED.match(path):
            latest = self.latest(m[3])
            return json_answer(200, {"sha": m[3], "statuses": [{"context": c, **s} for c, s in latest.items()]})
        if get and (m := _COMMIT_PULLS.match(path)):
            return self.read(github, f"{m[1]}/{m[2]}", lambda: [
                {"number": n} for n, p in sorted(self.pulls.items()) if m[3] in p["commits"]])
        if get and (m := _PULL.match(path)):
            return self.pull(github, f"{m[1]}/{m[2]}", int(m[3]), lambda p: {
                "number": int(m[3]), "title": p.get("title", ""), "state": "open",
                "base": {"ref": p.get("base", "main")}, "head": {"ref": p.get("head", "feature")}})
        if m := _SARIFS.match(path):
            return self._sarif(request, github, f"{m[1]}/{m[2]}")
        if m := _DEPLOYMENTS.match(path):
            return self.deploy(request, github, f"{m[1]}/{m[2]}", None, DEPLOY_STATES)
        if m := _DEPLOYMENT_STATUSES.match(path):
            return self.deploy(request, github, f"{m[1]}/{m[2]}", int(m[3]), DEPLOY_STATES)
        if m := _COMMENTS.match(path):
            return self.comment(request, github, f"{m[1]}/{m[2]}", int(m[3]))
        if m := _COMMENT.match(path):
            return self.edit(request, github, f"{m[1]}/{m[2]}", int(m[3]), "PATCH")
        return None

    def read(self, authorized: bool, repository: str, answer: Callable[[], object]) -> Answer:
        if not authorized:
            return json_answer(401, {"message": "Bad credentials"})
        if repository != self.repository:
            return json_answer(404, {"message": "Not Found"})
        return json_answer(200, answer())

    def pull(self, authorized: bool, repository: str, number: int,
             answer: Callable[[dict[str, Any]], object]) -> Answer:
        """One pull (or merge) request as ``answer`` shapes it; 404 for a request that does not exist."""
        self.pull_reads.append(number)
        if authorized and repository == self.repository and number not in self.pulls:
            return json_answer(404, {"message": "Not Found"})
        return self.read(authorized, repository, lambda: answer(self.pulls[number]))

    def _status(self, request: Request, authorized: bool, repository: str, sha: str) -> Answer:
        if not authorized:
            return json_answer(401, {"message": "Bad credentials"})
        if repository != self.repository:
            return json_answer(404, {"message": "Not Found"})
        body = json.loads(request.body)
        if body.get("state") not in STATES or len(body.get("description", "")) > 140:
            return json_answer(422, {"message": "Validation Failed"})
        self.record(sha, body.get("context", "default"), body)
        return json_answer(201, {"state": body["state"]})

    def record(self, sha: str, context: str, body: dict[str, Any]) -> None:
        self.posts.append({"sha": sha, "context": context, "state": body["state"],
                           "description": body.get("description", ""), "target_url": body.get("target_url", "")})

    def _sarif(self, request: Request, authorized: bool, repository: str) -> Answer:
        """Code scanning: commit_sha, a full ref, and the SARIF gzip-compressed then base64-encoded."""
        if not authorized:
            return json_answer(401, {"message": "Bad credentials"})
        if repository != self.repository:
            return json_answer(404, {"message": "Not Found"})
        body = json.loads(request.body)
        try:
            sarif = json.loads(gzip.decompress(base64.b64decode(body["sarif"], validate=True)))
        except (KeyError, ValueError, OSError):
            return json_answer(400, {"message": "Invalid request: sarif is not gzip-compressed base64 SARIF"})
        sha_ok = re.fullmatch(r"[0-9a-f]{40}", str(body.get("commit_sha")))
        if not sha_ok or not str(body.get("ref")).startswith("refs/"):
            return json_answer(422, {"message": "Validation Failed"})
        self.sarifs.append({"commit_sha": body["commit_sha"], "ref": body["ref"], "sarif": sarif})
        return json_answer(202, {"id": f"sarif-{len(self.sarifs)}"})

    def deploy(self, request: Request, authorized: bool, repository: str,  # noqa: PLR0911 (one per refusal)
               deployment_id: int | None, states: set[str]) -> Answer:
        """GitHub: POST /deployments (ref, environment) creates; POST /deployments/{id}/statuses sets a state.
        GitLab: POST /deployments (environment, sha, ref, status) creates; PUT /deployments/{id} sets status."""
        if not authorized:
            return json_answer(401, {"message": "Bad credentials"})
        if repository != self.repository:
            return json_answer(404, {"message": "Not Found"})
        body = json.loads(request.body)
        if deployment_id is None:
            if not body.get("environment") or not (body.get("ref") or body.get("sha")):
                return json_answer(422, {"message": "Validation Failed"})
            if "status" in body and body["status"] not in states:
                return json_answer(400, {"error": "status does not have a valid value"})
            new_id = len(self.deployments) + 1
            self.deployments[new_id] = {"environment": body["environment"], "sha": body.get("sha") or body["ref"],
                                        "ref": body.get("ref", ""), "states": [body["status"]] if "status" in body
                                        else [], "environment_url": "", "log_url": ""}
            return json_answer(201, {"id": new_id})
        if deployment_id not in self.deployments:
            return json_answer(404, {"message": "Not Found"})
        state = body.get("state") or body.get("status")
        if state not in states:
            return json_answer(422, {"message": "Validation Failed"})
        deployment = self.deployments[deployment_id]
        deployment["states"] = [*deployment["states"], state]  # type: ignore[misc]
        deployment["environment_url"] = body.get("environment_url", deployment["environment_url"])
        deployment["log_url"] = body.get("log_url", deployment["log_url"])
        return json_answer(201 if request.method == "POST" else 200, {"id": deployment_id, "state": state})

    def comment_json(self, comment_id: int, comment: dict[str, object]) -> dict[str, object]:
        """A comment as the list of a request's comments shows it."""
        return {"id": comment_id, "body": comment["body"], "user": {"login": comment.get("author", self.bot)}}

    def comment(self, request: Request, authorized: bool, repository: str, number: int) -> Answer:
        """Lists (GET) or creates (POST) the comments of request ``number``."""
        if not authorized:
            return json_answer(401, {"message": "Bad credentials"})
        if repository != self.repository:
            return json_answer(404, {"message": "Not Found"})
        if request.method == "GET":
            self.comment_calls.append(f"list {number}")
            return json_answer(200, [self.comment_json(i, c) for i, c in list(self.comments.items())
                                     if c["pr"] == number])
        body = json.loads(request.body).get("body")
        if not body:
            return json_answer(422, {"message": "Validation Failed"})
        new_id = len(self.comments) + 1
        self.comments[new_id] = {"pr": number, "body": body, "edits": 0}
        self.comment_calls.append(f"create {number}")
        return json_answer(201, {"id": new_id, "body": body})

    def edit(self, request: Request, authorized: bool, repository: str, comment_id: int, method: str) -> Answer:
        if not authorized:
            return json_answer(401, {"message": "Bad credentials"})
        if repository != self.repository or comment_id not in self.comments:
            return json_answer(404, {"message": "Not Found"})
        if request.method != method:
            return json_answer(405, {"message": "Method Not Allowed"})
        self.comments[comment_id]["body"] = json.loads(request.body)["body"]
        self.comments[comment_id]["edits"] = int(self.comments[comment_id]["edits"]) + 1  # type: ignore[call-overload]
        self.comment_calls.append(f"edit {comment_id}")
        return json_answer(200, {"id": comment_id})

    def latest(self, sha: str) -> dict[str, dict[str, str]]:
        """The commit's status per context, as the forge shows it now."""
        out: dict[str, dict[str, str]] = {}
        for post in list(self.posts):
            if post["sha"] == sha:
                out[post["context"]] = {k: post[k] for k in ("state", "description", "target_url")}
        return out

    def comments_on(self, number: int) -> list[dict[str, object]]:
        return [c for c in list(self.comments.values()) if c["pr"] == number]

    def report(self, shas: list[str] | None = None) -> str:
        """What the forge received, as text: per commit each context's latest state and description, the
        deployments, the SARIF uploads and each pull request's comments. ``shas``: only those commits."""
        commits = list(dict.fromkeys(p["sha"] for p in list(self.posts)))
        commits = [s for s in commits if shas is None or s in shas]
        lines = [f"Local forge (GitHub API) of {self.repository}: {len(self.posts)} status post(s), "
                 f"{len(self.comments)} comment(s), {len(self.deployments)} deployment(s), "
                 f"{len(self.sarifs)} SARIF upload(s)"]
        for sha in commits:
            latest = self.latest(sha)
            width = max(len(c) for c in latest)
            lines += ["", f"commit {sha[:12]}: {len(latest)} context(s)"]
            lines += [f"  {c.ljust(width)}  {s['state']:<8} {s['description']}" for c, s in latest.items()]
        deployments = [f"deployment {n}: {d['environment']} of {str(d['sha'])[:12]}: "
                       + " → ".join(map(str, d["states"])) + (f" ({d['environment_url']})" if d["environment_url"]
                                                              else "")
                       for n, d in list(self.deployments.items()) if shas is None or d["sha"] in shas]
        uploads = [f"code scanning: SARIF of {str(u['commit_sha'])[:12]} on {u['ref']}, "
                   f"{_results(u['sarif'])} result(s)"
                   for u in list(self.sarifs) if shas is None or u["commit_sha"] in shas]
        lines += ["", *deployments, *uploads] if deployments or uploads else []
        for number, pull in sorted(self.pulls.items()):
            lines += ["", f"pull request #{number} {pull.get('title', '')!r} ({pull.get('head', '?')} → "
                          f"{pull.get('base', '?')})"]
            for comment in self.comments_on(number):
                lines += [f"  comment (edited {comment['edits']} time(s)):",
                          *(f"    {line}" for line in str(comment["body"]).splitlines())]
        return "\n".join(lines) + "\n"
