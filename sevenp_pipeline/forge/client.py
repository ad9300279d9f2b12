"""Commit statuses, deployment statuses and the pull-request comment on GitHub and GitLab, over their
REST APIs.

GitHub: ``POST /repos/{owner}/{repo}/statuses/{sha}`` (states pending, success, failure, error).
GitLab: ``POST /projects/{id}/statuses/{sha}`` (pending, running, success, failed, canceled, skipped),
the project id being the URL-encoded path. The comment: GitHub issue comments (``/issues/{n}/comments``,
edited with ``PATCH /issues/comments/{id}``), GitLab merge-request notes (``/merge_requests/{iid}/notes``,
edited with ``PUT``). Then deployments, code scanning, pull requests, reviews and team membership:
about fifteen endpoints in all. Plain ``urllib``, as the Slack notifier uses, with one request helper
for both forges: the same retries, rate-limit waits and redaction for every call.
PyGithub and python-gitlab would each bring their own retry and paging layers, one per forge, and
neither knows the other's API; the sensors would have to reconcile two error models.

The tokens are secrets: they come from ``dg.EnvVar(SEVENP_GITHUB_TOKEN / SEVENP_GITLAB_TOKEN)`` in the
resource set, go only into the request's header, and no message quotes them. Reporting never
raises: :meth:`ForgeClient.post_status` retries connection errors, 5xx, 429 and GitHub's rate-limit
403s (honouring ``Retry-After`` and ``x-ratelimit-reset``, cut to ``max_retry_after_seconds``) and
returns what happened; a refused token (401, 403) is returned as ``auth`` naming the variable, for
the caller to say once per run.
"""

from __future__ import annotations

import base64
import gzip
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal

import dagster as dg
from pydantic import Field

from sevenp_pipeline.config.models import ForgeSettings

GITHUB_TOKEN_ENV = "SEVENP_GITHUB_TOKEN"  # noqa: S105 (the variable's name)
GITLAB_TOKEN_ENV = "SEVENP_GITLAB_TOKEN"  # noqa: S105
State = Literal["pending", "running", "success", "failure", "error", "skipped"]
_GITHUB_STATE = {"pending": "pending", "running": "pending", "success": "success", "failure": "failure",
                 "error": "error", "skipped": "success"}
_GITLAB_STATE = {"pending": "pending", "running": "running", "success": "success", "failure": "failed",
                 "error": "failed", "skipped": "skipped"}
DeployState = Literal["in_progress", "success", "failure", "error"]
_GITHUB_DEPLOY_STATE = {"in_progress": "in_progress", "success": "success", "failure": "failure", "error": "error"}
_GITLAB_DEPLOY_STATE = {"in_progress": "running", "success": "success", "failure": "failed", "error": "canceled"}
_GITHUB_MAX_DESCRIPTION = 140
_MAX_ANSWER = 4 * 1024 * 1024
_GITLAB_MAX_DESCRIPTION = 255
LogFn = Callable[[str], None]


@dataclass(frozen=True)
class CommitStatus:
    """One context's state on one commit, as the forge shows it beside the commit or pull request."""

    context: str
    state: State
    description: str
    target_url: str


@dataclass(frozen=True)
class Posted:
    """What came of one post: ``ok``; ``auth`` (the token was refused: stop for this run); ``failed``."""

    outcome: Literal["ok", "auth", "failed"]
    message: str = ""
    answer: object = None  # the forge's JSON answer, when it sent one
    code: int | None = None  # the HTTP status of a refusal (404, 403, ...), when the forge answered one


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class ForgeClient(dg.ConfigurableResource):
    """Posts commit statuses to the forge an app's ``forge:`` section names."""

    github_token: str | None = Field(default=None, description=f"a secret: dg.EnvVar('{GITHUB_TOKEN_ENV}')")
    gitlab_token: str | None = Field(default=None, description=f"a secret: dg.EnvVar('{GITLAB_TOKEN_ENV}')")
    ui_url: str = Field(default="http://127.0.0.1:3000", description="base URL of the Dagster UI, for run links")
    attempts: int = Field(default=4, ge=1, le=10, description="tries per status")
    timeout_seconds: float = Field(default=10, gt=0, description="per request")
    backoff_seconds: float = Field(default=1.0, ge=0, description="wait before the 2nd try; doubles after")
    max_retry_after_seconds: float = Field(default=30, ge=0, description="a longer wait the forge asks for is cut")

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}"

    @staticmethod
    def token_variable(forge: ForgeSettings) -> str:
        return GITHUB_TOKEN_ENV if forge.kind == "github" else GITLAB_TOKEN_ENV

    def post_status(self, forge: ForgeSettings, sha: str, status: CommitStatus, *, log: LogFn) -> Posted:
        """Posts ``status`` on commit ``sha``; never raises."""
        token = self.github_token if forge.kind == "github" else self.gitlab_token
        variable = self.token_variable(forge)
        if not token:
            return Posted("auth", f"{forge.kind} token not set ({variable}): commit statuses are not posted")
        url, body, headers = self._request(forge, sha, status, token)
        try:
            return self._post(url, body, headers, forge, variable, status.context, log)
        except Exception as exc:  # reporting must never fail what it reports on
            return Posted("failed", self._scrub(f"{type(exc).__name__}: {exc}", token))

    def _request(self, forge: ForgeSettings, sha: str, status: CommitStatus,
                 token: str) -> tuple[str, bytes, dict[str, str]]:
        headers = self._headers(forge, token)
        if forge.kind == "github":
            url = f"{forge.base_url}/repos/{self._github_repo(forge)}/statuses/{sha}"
            body = {"state": _GITHUB_STATE[status.state], "context": status.context, "target_url": status.target_url,
                    "description": _clip(status.description, _GITHUB_MAX_DESCRIPTION)}
        else:
            project = urllib.parse.quote(forge.repository, safe="")
            url = f"{forge.base_url}/projects/{project}/statuses/{sha}"
            body = {"state": _GITLAB_STATE[status.state], "name": status.context, "target_url": status.target_url,
                    "description": _clip(status.description, _GITLAB_MAX_DESCRIPTION)}
        return url, json.dumps(body).encode(), headers

    def _post(self, url: str, body: bytes | None, headers: dict[str, str], forge: ForgeSettings, variable: str,
              context: str, log: LogFn, method: str = "POST") -> Posted:
        problem = ""
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(url, data=body, method=method, headers=headers)  # noqa: S310
            wait: float | None = None
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:  # noqa: S310
                    return Posted("ok", answer=_json_or_none(response.read(_MAX_ANSWER)))
            except urllib.error.HTTPError as exc:
                text = exc.read(300).decode(errors="replace")
                problem = f"HTTP {exc.code} {_clip(text, 200)}".strip()
                limited = exc.code == 429 or (exc.code == 403 and _rate_limited(exc.headers, text))
                if limited:
                    wait = _retry_after(exc.headers)
                elif exc.code in (401, 403):
                    return Posted("auth", f"{forge.kind} refused the token in {variable} (HTTP {exc.code}) for "
                                          f"{forge.repository}: commit statuses are not posted for this run",
                                  code=exc.code)
                elif exc.code == 400 and forge.kind == "gitlab" and "transition" in text.lower():
                    return Posted("ok")  # GitLab refuses a status the commit already has
                elif exc.code < 500:
                    return Posted("failed", f"{forge.kind} refused status {context}: {problem}", code=exc.code)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                problem = f"no answer: {getattr(exc, 'reason', exc)}"
            if attempt < self.attempts:
                delay = self.backoff_seconds * 2 ** (attempt - 1) if wait is None else wait
                delay = min(delay, self.max_retry_after_seconds)
                log(f"{forge.kind} status {context}: {problem} (attempt {attempt}/{self.attempts}); "
                    f"retrying in {delay:.1f}s")
                time.sleep(delay)
        return Posted("failed", f"{forge.kind} status {context} not posted after {self.attempts} attempt(s): "
                                f"{problem}")

    def upsert_comment(self, forge: ForgeSettings, number: int, marker: str, body: str, *,
                       known_id: int | None, log: LogFn) -> tuple[Posted, int | None]:
        """Creates or edits the one comment of the pull/merge request ``number`` that carries ``marker``:
        ``known_id`` when the caller has it (and the forge still does: a 404 is a comment deleted), else the
        request's comment holding the marker (found by listing them: a restarted sensor edits its comment,
        it does not add one), else a new one. Returns what happened and the comment's id."""
        token = self.github_token if forge.kind == "github" else self.gitlab_token
        variable = self.token_variable(forge)
        if not token:
            return Posted("auth", f"{forge.kind} token not set ({variable}): no pull request comment"), known_id
        base, headers = self._comments_url(forge, number), self._headers(forge, token)
        payload = json.dumps({"body": body}).encode()
        edit = "PATCH" if forge.kind == "github" else "PUT"

        def edited(comment_id: int) -> Posted:
            url = (f"{forge.base_url}/repos/{self._github_repo(forge)}/issues/comments/{comment_id}"
                   if forge.kind == "github" else f"{base}/{comment_id}")
            return self._post(url, payload, headers, forge, variable, "comment", log, edit)

        try:
            if known_id is not None:
                result = edited(known_id)
                if result.code != 404:
                    return result, known_id
                # Deleted on the forge (or another forge answers there now): found again or written anew.
                log(f"{forge.kind} pull request {number}: comment {known_id} is gone; looking for it again")
            listed = self._post(f"{base}?per_page=100", None, headers, forge, variable, "comments", log, "GET")
            if listed.outcome != "ok":
                return listed, None
            for comment in listed.answer if isinstance(listed.answer, list) else []:
                if isinstance(comment, dict) and marker in str(comment.get("body", "")):
                    return edited(int(comment["id"])), int(comment["id"])
            created = self._post(base, payload, headers, forge, variable, "comment", log)
            new_id = created.answer.get("id") if isinstance(created.answer, dict) else None
            return created, int(new_id) if new_id is not None else None
        except Exception as exc:  # reporting must never fail what it reports on
            return Posted("failed", self._scrub(f"{type(exc).__name__}: {exc}", token)), known_id

    def deployment(self, forge: ForgeSettings, *, deployment_id: int | None, sha: str, ref: str, environment: str,
                   state: DeployState, url: str, log_url: str, description: str,
                   log: LogFn) -> tuple[Posted, int | None]:
        """Creates the forge's deployment of ``sha`` to ``environment`` (once: ``deployment_id`` None) and
        sets its state: GitHub Deployments (``POST /deployments``, then ``/deployments/{id}/statuses``),
        GitLab deployments (``POST /deployments`` with ``status``, then ``PUT /deployments/{id}``)."""
        token = self.github_token if forge.kind == "github" else self.gitlab_token
        variable = self.token_variable(forge)
        if not token:
            return Posted("auth", f"{forge.kind} token not set ({variable}): no deployment status"), deployment_id
        headers = self._headers(forge, token)
        try:
            if forge.kind == "github":
                base = f"{forge.base_url}/repos/{self._github_repo(forge)}/deployments"
                if deployment_id is None:
                    created = self._post(base, json.dumps({
                        "ref": sha, "environment": environment, "auto_merge": False, "required_contexts": [],
                        "description": _clip(description, _GITHUB_MAX_DESCRIPTION),
                        "production_environment": environment == "production"}).encode(),
                        headers, forge, variable, f"deployment {environment}", log)
                    deployment_id = _id_of(created)
                    if created.outcome != "ok" or deployment_id is None:
                        return created, None
                body = {"state": _GITHUB_DEPLOY_STATE[state], "log_url": log_url, "auto_inactive": True,
                        "description": _clip(description, _GITHUB_MAX_DESCRIPTION)}
                if url:
                    body["environment_url"] = url
                posted = self._post(f"{base}/{deployment_id}/statuses", json.dumps(body).encode(), headers, forge,
                                    variable, f"deployment {environment}", log)
                return posted, deployment_id
            base = f"{forge.base_url}/projects/{urllib.parse.quote(forge.repository, safe='')}/deployments"
            if deployment_id is None:
                created = self._post(base, json.dumps({
                    "environment": environment, "sha": sha, "ref": ref, "tag": False,
                    "status": _GITLAB_DEPLOY_STATE[state]}).encode(), headers, forge, variable,
                    f"deployment {environment}", log)
                return created, _id_of(created)
            posted = self._post(f"{base}/{deployment_id}", json.dumps({"status": _GITLAB_DEPLOY_STATE[state]}).encode(),
                                headers, forge, variable, f"deployment {environment}", log, "PUT")
            return posted, deployment_id
        except Exception as exc:  # reporting must never fail what it reports on
            return Posted("failed", self._scrub(f"{type(exc).__name__}: {exc}", token)), deployment_id

    def upload_sarif(self, forge: ForgeSettings, *, sha: str, ref: str, sarif: bytes, log: LogFn) -> Posted:
        """Uploads a SARIF report to GitHub code scanning (``POST /code-scanning/sarifs``: gzip, then
        base64, as the API asks) for ``sha`` on ``ref`` (``refs/heads/…`` or ``refs/pull/N/head``)."""
        token = self.github_token
        if forge.kind != "github":
            return Posted("failed", "SARIF upload is GitHub code scanning only")
        if not token:
            return Posted("auth", f"github token not set ({GITHUB_TOKEN_ENV}): no SARIF upload")
        body = json.dumps({"commit_sha": sha, "ref": ref, "tool_name": "sevenp_pipeline",
                           "sarif": base64.b64encode(gzip.compress(sarif)).decode()}).encode()
        try:
            return self._post(f"{forge.base_url}/repos/{self._github_repo(forge)}/code-scanning/sarifs", body,
                              self._headers(forge, token), forge, GITHUB_TOKEN_ENV, "code scanning", log)
        except Exception as exc:  # reporting must never fail what it reports on
            return Posted("failed", self._scrub(f"{type(exc).__name__}: {exc}", token))

    def get(self, forge: ForgeSettings, path: str, *, log: LogFn) -> Posted:
        """``GET <api>/<repository's prefix>/<path>`` (GitHub ``/repos/o/r/…``, GitLab ``/projects/id/…``):
        the JSON answer in ``answer``; retried like a post, never raises."""
        prefix = (f"repos/{self._github_repo(forge)}" if forge.kind == "github"
                  else f"projects/{urllib.parse.quote(forge.repository, safe='')}")
        return self.get_api(forge, f"{prefix}/{path.lstrip('/')}", log=log)

    def get_api(self, forge: ForgeSettings, path: str, *, log: LogFn) -> Posted:
        """``GET <api>/<path>`` outside the repository (GitHub ``orgs/…``, GitLab ``groups/…``), the caller
        quoting each part of ``path``; a refusal's HTTP status in ``code``. Retried like a post, never raises."""
        token = self.github_token if forge.kind == "github" else self.gitlab_token
        variable = self.token_variable(forge)
        if not token:
            return Posted("auth", f"{forge.kind} token not set ({variable})")
        try:
            return self._post(f"{forge.base_url}/{path.lstrip('/')}", None, self._headers(forge, token), forge,
                              variable, path.split("?", 1)[0], log, "GET")
        except Exception as exc:  # reporting must never fail what it reports on
            return Posted("failed", self._scrub(f"{type(exc).__name__}: {exc}", token))

    @staticmethod
    def _github_repo(forge: ForgeSettings) -> str:
        owner, _, name = forge.repository.partition("/")
        return f"{urllib.parse.quote(owner, safe='')}/{urllib.parse.quote(name, safe='')}"

    def _comments_url(self, forge: ForgeSettings, number: int) -> str:
        if forge.kind == "github":
            return f"{forge.base_url}/repos/{self._github_repo(forge)}/issues/{int(number)}/comments"
        project = urllib.parse.quote(forge.repository, safe="")
        return f"{forge.base_url}/projects/{project}/merge_requests/{int(number)}/notes"

    @staticmethod
    def _headers(forge: ForgeSettings, token: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "User-Agent": "sevenp-pipeline"}
        if forge.kind == "github":
            return headers | {"Authorization": f"Bearer {token}", "Accept": "application/vnd.github+json",
                              "X-GitHub-Api-Version": "2022-11-28"}
        return headers | {"PRIVATE-TOKEN": token}

    @staticmethod
    def _scrub(text: str, token: str) -> str:
        return text.replace(token, "<token>") if token else text


def _id_of(posted: Posted) -> int | None:
    answer = posted.answer
    if posted.outcome == "ok" and isinstance(answer, dict) and isinstance(answer.get("id"), int):
        return answer["id"]
    return None


def _json_or_none(raw: bytes) -> object:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def _rate_limited(headers, text: str) -> bool:
    """GitHub's primary (remaining 0) and secondary ("secondary rate limit", Retry-After) limits are 403s."""
    return (headers.get("x-ratelimit-remaining") == "0" or headers.get("Retry-After") is not None
            or "rate limit" in text.lower())


def _retry_after(headers) -> float | None:
    """Seconds the forge asks to wait: Retry-After (seconds or an HTTP date), else x-ratelimit-reset."""
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    reset = headers.get("x-ratelimit-reset")
    if reset and reset.isdigit():
        return max(0.0, int(reset) - time.time())
    return None
