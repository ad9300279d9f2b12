"""The webhook receiver: GitHub and GitLab tell the pipeline about a push at once, instead of the poll
finding it a minute later.

``python -m sevenp_pipeline.forge.webhooks --host 127.0.0.1 --port P`` runs it (``make dev`` and
``make demo`` start it, on the UI's port + 2, when ``SEVENP_WEBHOOK_SECRET`` is set). Routes, and
nothing else: ``POST /webhooks/github`` and ``POST /webhooks/gitlab``.

The receiver is a separate process from Dagster: it only checks a delivery and writes it to a
:class:`WebhookSpool` (``<home>/webhooks``), which the push sensor reads. It never starts a run
itself, so a forged or replayed request can at worst make the sensor look at a ref it would have
polled anyway. What it checks, in order:

- the size (over 1 MiB: 413, unread), then the secret: GitHub's ``X-Hub-Signature-256`` HMAC of the
  raw body, GitLab's ``X-Gitlab-Token``, both compared in constant time (missing or wrong: 401);
- the JSON and the fields the event needs (400 naming the field), then the app whose ``forge``
  names the payload's repository (404);
- the delivery id: a forge redelivers, and a delivery seen before is answered 200 ``duplicate``.

The secret is read once from the environment; neither it nor a payload body is ever logged: one
line per delivery gives the event, repository, ref, short sha and the outcome.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sevenp_pipeline.config.models import AppConfig
from sevenp_pipeline.files import private_dir
from sevenp_pipeline.triggers.webhook_spool import (
    EventKind,
    WebhookEvent,
    WebhookSpool,
)

log = logging.getLogger(__name__)

SECRET_VARIABLE = "SEVENP_WEBHOOK_SECRET"  # noqa: S105 (the variable's name)
DRAIN_LIMIT = 8 << 20  # a refused body up to this size is read and dropped (see _Handler._discard)
MAX_BODY = 1 << 20  # 1 MiB: a push of many commits is a few hundred KB; above, refused unread
PRUNE_EVERY_SECONDS = 3600.0
ROUTES = {"/webhooks/github": "github", "/webhooks/gitlab": "gitlab"}
_ZERO_SHA = "0" * 40
_SHA = re.compile(r"^[0-9a-f]{40}$")


class BadPayload(ValueError):
    """The payload lacks a field the event needs; the message names it (400)."""


@dataclass(frozen=True)
class Parsed:
    """What a payload says, before the app is known: an event to spool, or why there is none."""

    repository: str
    ref: str = ""
    kind: EventKind | None = None
    sha: str = ""
    before: str = ""
    pr_number: int | None = None
    base_branch: str = ""
    head_branch: str = ""
    ignored: str = ""  # why no event (answered 200 or 202, nothing spooled)
    title_edited: bool = False
    status: int = HTTPStatus.ACCEPTED


def _title_changed(payload: Mapping[str, Any]) -> bool:
    """Both forges list what an edit changed under ``changes`` (GitHub ``changes.title.from``, GitLab
    ``changes.title.previous``); a body or label edit leaves the title check as it was."""
    changes = payload.get("changes")
    return isinstance(changes, Mapping) and "title" in changes


def _field(payload: Mapping[str, Any], dotted: str, kind: type = str) -> Any:
    value: Any = payload
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise BadPayload(f"missing field {dotted}")
        value = value[part]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise BadPayload(f"field {dotted} is not a {kind.__name__}")
    return value


def _sha(payload: Mapping[str, Any], dotted: str) -> str:
    value = _field(payload, dotted)
    if not _SHA.match(value):
        raise BadPayload(f"field {dotted} is not a 40-hex commit sha")
    return "" if value == _ZERO_SHA else value


def _before(payload: Mapping[str, Any], dotted: str) -> str:
    """An optional previous sha: "" when absent or all zeros."""
    try:
        return _sha(payload, dotted)
    except BadPayload:
        return ""


def _ref_event(repository: str, ref: str, sha: str, before: str) -> Parsed:
    """A branch or tag moved (or went: ``sha`` "")."""
    if ref.startswith("refs/heads/"):
        kind: EventKind = "push"
        branch = ref.removeprefix("refs/heads/")
    elif ref.startswith("refs/tags/"):
        kind, branch = "tag", ""
    else:
        return Parsed(repository, ref, ignored=f"ref {ref} is neither a branch nor a tag")
    return Parsed(repository, ref, "delete" if not sha else kind, sha, before, head_branch=branch)


def parse_github(event: str, payload: Mapping[str, Any]) -> Parsed:  # noqa: PLR0911 (one return per event)
    """A GitHub delivery (``X-GitHub-Event``) as an event, or why it starts nothing."""
    if event == "ping":
        repository = payload.get("repository") or {}
        return Parsed(str(repository.get("full_name", "")) if isinstance(repository, Mapping) else "",
                      ignored="pong", status=HTTPStatus.OK)
    repository = _field(payload, "repository.full_name")
    if event == "push":
        ref = _field(payload, "ref")
        deleted = payload.get("deleted") is True
        sha = "" if deleted else _sha(payload, "after")
        return _ref_event(repository, ref, sha, _before(payload, "before"))
    if event == "pull_request":
        action = _field(payload, "action")
        number = _field(payload, "number", int)
        ref = f"refs/pull/{number}/head"
        base, head = _field(payload, "pull_request.base.ref"), _field(payload, "pull_request.head.ref")
        if action == "closed":
            return Parsed(repository, ref, "pr_closed", pr_number=number, base_branch=base, head_branch=head)
        if action not in ("opened", "synchronize", "reopened", "edited"):
            return Parsed(repository, ref, ignored=f"pull_request action {action} starts nothing")
        return Parsed(repository, ref, "pull_request", _sha(payload, "pull_request.head.sha"),
                      _before(payload, "before"), number, base, head,
                      title_edited=action == "edited" and _title_changed(payload))
    if event in ("create", "delete"):
        ref_type = _field(payload, "ref_type")
        if ref_type not in ("branch", "tag"):
            raise BadPayload(f"field ref_type is {ref_type!r}, expected branch or tag")
        ref = ("refs/heads/" if ref_type == "branch" else "refs/tags/") + _field(payload, "ref")
        if event == "create":
            return Parsed(repository, ref, ignored="create: the push event that follows starts the run",
                          status=HTTPStatus.OK)
        return Parsed(repository, ref, "delete", head_branch=ref.removeprefix("refs/heads/")
                      if ref_type == "branch" else "")
    return Parsed(repository, ignored=f"event {event} starts nothing")


def parse_gitlab(event: str, payload: Mapping[str, Any]) -> Parsed:
    """A GitLab delivery (``X-Gitlab-Event``) as an event, or why it starts nothing."""
    repository = _field(payload, "project.path_with_namespace")
    if event in ("Push Hook", "Tag Push Hook"):
        ref = _field(payload, "ref")
        after = payload.get("after") or payload.get("checkout_sha")
        if not after:
            raise BadPayload("missing field after (or checkout_sha)")
        sha = _sha({"after": after}, "after")
        if event == "Tag Push Hook" and not ref.startswith("refs/tags/"):
            raise BadPayload(f"field ref is {ref!r} in a Tag Push Hook")
        return _ref_event(repository, ref, sha, _before(payload, "before"))
    if event == "Merge Request Hook":
        action = _field(payload, "object_attributes.action")
        iid = _field(payload, "object_attributes.iid", int)
        ref = f"refs/merge-requests/{iid}/head"
        base = _field(payload, "object_attributes.target_branch")
        head = _field(payload, "object_attributes.source_branch")
        if action in ("close", "merge"):
            return Parsed(repository, ref, "pr_closed", pr_number=iid, base_branch=base, head_branch=head)
        if action not in ("open", "reopen", "update"):
            return Parsed(repository, ref, ignored=f"merge request action {action} starts nothing")
        return Parsed(repository, ref, "pull_request", _sha(payload, "object_attributes.last_commit.id"),
                      _before(payload, "object_attributes.oldrev"), iid, base, head,
                      title_edited=action == "update" and _title_changed(payload))
    return Parsed(repository, ignored=f"event {event} starts nothing")


class WebhookReceiver:
    """Checks deliveries and spools their events for the apps whose ``forge`` names the repository.

    Two apps built from one repository each get the event.
    """

    def __init__(self, apps: Iterable[AppConfig], spool: WebhookSpool, *, secret: str) -> None:
        if not secret:
            raise ValueError(f"{SECRET_VARIABLE} is not set: the webhook receiver needs the secret "
                             "the forge signs its deliveries with")
        self.apps = [app for app in apps if app.forge.enabled]
        self.spool = spool
        self._secret = secret.encode()
        self._pruned_at = 0.0

    def __repr__(self) -> str:  # no secret in a traceback's locals or a debugger
        return f"WebhookReceiver(apps={[a.name for a in self.apps]}, spool={self.spool.root})"

    def authentic(self, forge: str, headers: Mapping[str, str], body: bytes) -> bool:
        if forge == "github":
            signature = headers.get("X-Hub-Signature-256") or ""
            expected = "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()
            return hmac.compare_digest(signature.encode(), expected.encode())
        token = (headers.get("X-Gitlab-Token") or "").encode()
        return hmac.compare_digest(token, self._secret)

    def apps_for(self, forge: str, repository: str) -> list[AppConfig]:
        wanted = repository.lower()
        return [a for a in self.apps if a.forge.kind == forge and a.forge.repository.lower() == wanted]

    def handle(  # noqa: PLR0911 (one return per outcome, each logged)
            self, forge: str, headers: Mapping[str, str], body: bytes) -> tuple[int, dict[str, Any]]:
        """The answer to one delivery (status and JSON body); logs one line about it."""
        event_header = "X-GitHub-Event" if forge == "github" else "X-Gitlab-Event"
        event = headers.get(event_header) or "-"
        context = {"forge": forge, "event": event, "repository": "-", "ref": "-", "sha": "-"}

        def answer(status: int, outcome: str, reply: dict[str, Any]) -> tuple[int, dict[str, Any]]:
            log.info("webhook %s %s %s %s %s: %d %s", context["forge"], context["event"], context["repository"],
                     context["ref"], context["sha"], status, outcome)
            return status, reply

        if not self.authentic(forge, headers, body):
            what = "X-Hub-Signature-256" if forge == "github" else "X-Gitlab-Token"
            return answer(401, f"{what} missing or wrong", {"error": f"{what} missing or wrong"})
        if event == "-":
            return answer(400, f"no {event_header} header", {"error": f"no {event_header} header"})
        try:
            payload = json.loads(body)
            if not isinstance(payload, dict):
                raise BadPayload("the body is not a JSON object")
            parsed = parse_github(event, payload) if forge == "github" else parse_gitlab(event, payload)
        except json.JSONDecodeError:
            return answer(400, "malformed JSON", {"error": "the body is not valid JSON"})
        except BadPayload as exc:
            return answer(400, str(exc), {"error": str(exc)})
        context.update(repository=parsed.repository or "-", ref=parsed.ref or "-", sha=parsed.sha[:8] or "-")
        if parsed.kind is None:
            return answer(parsed.status, f"ignored ({parsed.ignored})", {"ignored": parsed.ignored})
        apps = self.apps_for(forge, parsed.repository)
        if not apps:
            reason = f"no app for repository {parsed.repository}"
            return answer(404, reason, {"error": reason})
        delivery = _delivery_id(forge, headers, body)
        now = time.time()
        spooled = [app.name for app in apps if self.spool.put(WebhookEvent(
            app=app.key, kind=parsed.kind, ref=parsed.ref, sha=parsed.sha, before=parsed.before,
            delivery=delivery, pr_number=parsed.pr_number, base_branch=parsed.base_branch,
            head_branch=parsed.head_branch, received_at=now, title_edited=parsed.title_edited))]
        if now - self._pruned_at > PRUNE_EVERY_SECONDS:  # a receiver runs for weeks: markers must not pile up
            self._pruned_at = now
            self.spool.prune()
        if not spooled:
            return answer(200, "duplicate delivery", {"duplicate": True})
        return answer(202, f"{parsed.kind} spooled for {', '.join(spooled)}",
                      {"accepted": True, "kind": parsed.kind, "ref": parsed.ref, "apps": spooled})

    def server(self, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
        """A server bound to ``host:port`` (0: any free port); the caller runs ``serve_forever``."""
        receiver = self

        class Handler(_Handler):
            pass

        Handler.receiver = receiver
        server = ThreadingHTTPServer((host, port), Handler)
        server.daemon_threads = True
        return server


def _delivery_id(forge: str, headers: Mapping[str, str], body: bytes) -> str:
    """GitHub's ``X-GitHub-Delivery`` (kept on a redelivery); on GitLab ``Idempotency-Key`` (kept
    across retries, GitLab 17.4+), else ``X-Gitlab-Event-UUID``, else the body's sha256."""
    if forge == "github":
        found = headers.get("X-GitHub-Delivery")
    else:
        found = headers.get("Idempotency-Key") or headers.get("X-Gitlab-Event-UUID")
    return found or "sha256:" + hashlib.sha256(body).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    receiver: WebhookReceiver
    timeout = 15  # seconds a client may take to send its request: a stalled one does not hold a thread
    server_version = "sevenp-webhooks"
    sys_version = ""

    def do_POST(self) -> None:
        forge = ROUTES.get(self.path.split("?", 1)[0])
        self.close_connection = True  # one delivery per connection: a body left unread cannot be misread
        if forge is None:
            self._reply(404, {"error": "not found"})
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._reply(411, {"error": "Content-Length required"})
            return
        if int(length) > MAX_BODY:
            log.info("webhook %s: 413 body of %s bytes refused unread", forge, length)
            self._reply(413, {"error": f"body over {MAX_BODY} bytes"})
            self._discard(int(length))
            return
        body = self.rfile.read(int(length))
        status, reply = self.receiver.handle(forge, self.headers, body)
        self._reply(status, reply)

    def _discard(self, length: int) -> None:
        """Reads and drops a refused body (up to 8 MiB), so closing does not reset the connection
        before the client has read the 413; a larger one is cut off unread."""
        left = length if length <= DRAIN_LIMIT else 0
        with contextlib.suppress(OSError):
            while left > 0 and (chunk := self.rfile.read(min(left, 65536))):
                left -= len(chunk)

    def _not_post(self) -> None:
        if self.path.split("?", 1)[0] not in ROUTES:
            self._reply(404, {"error": "not found"})
        else:
            self._reply(405, {"error": "only POST"}, allow=True)

    do_GET = do_HEAD = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _not_post

    def _reply(self, status: int, reply: dict[str, Any], *, allow: bool = False) -> None:
        data = (json.dumps(reply) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if allow:
            self.send_header("Allow", "POST")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        """Silenced: :meth:`WebhookReceiver.handle` logs one line per delivery, without the query string."""


def serve(apps: Iterable[AppConfig], spool: WebhookSpool, host: str, port: int, secret: str) -> None:
    """Runs the receiver until interrupted."""
    server = WebhookReceiver(apps, spool, secret=secret).server(host, port)
    try:
        server.serve_forever()
    finally:
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    from sevenp_pipeline.config import load_app_directory  # noqa: PLC0415
    from sevenp_pipeline.config.settings import Settings  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m sevenp_pipeline.forge.webhooks",
                                     description="Receive GitHub and GitLab webhooks into the push sensor's spool.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3002)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    secret = os.environ.get(SECRET_VARIABLE, "")
    if not secret:
        print(f"sevenp webhooks: {SECRET_VARIABLE} is not set: the receiver needs the secret the forge "
              "signs its deliveries with (the webhook's secret on GitHub, its secret token on GitLab)",
              file=sys.stderr)
        return 2
    settings = Settings.from_env()
    loaded = load_app_directory(settings.apps_dir)
    for broken in loaded.broken:
        log.warning("not receiving for %s", broken.message.splitlines()[0])
    apps = [app for app in loaded.apps if app.forge.enabled]
    if not apps:
        log.warning("no app in %s has a forge: every delivery will be answered 404", settings.apps_dir)
    spool = WebhookSpool(private_dir(settings.webhooks_dir))
    log.info("receiving webhooks on http://%s:%d/webhooks/{github,gitlab} for %s", args.host, args.port,
             ", ".join(f"{a.name} ({a.forge.kind} {a.forge.repository})" for a in apps) or "no app")
    with contextlib.suppress(KeyboardInterrupt):
        serve(apps, spool, args.host, args.port, secret)
    return 0


if __name__ == "__main__":
    sys.exit(main())
