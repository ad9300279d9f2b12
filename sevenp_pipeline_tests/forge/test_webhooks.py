"""The webhook receiver over real HTTP (a thread on a free port), apps loaded from YAML, and its spool."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sevenp_pipeline.config import load_app_configs
from sevenp_pipeline.forge.webhooks import MAX_BODY, WebhookEvent, WebhookReceiver, WebhookSpool
from sevenp_pipeline.resources.services import free_port

SECRET = "whsec-test-0123456789abcdef"
LEAKY = "ghp_0000SecretLookingValue1111"  # in a payload: must reach no log line
SHA = "a" * 40
BEFORE = "b" * 40
ZERO = "0" * 40


@dataclass
class Receiver:
    url: str
    spool: WebhookSpool

    def events(self, app: str = "web") -> list[WebhookEvent]:
        return [event for _, event in self.spool.pending(app)]


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    apps_dir = tmp_path / "apps"
    apps_dir.mkdir()
    (apps_dir / "web.yaml").write_text(
        "name: web\nrepository: {url: /srv/web.git}\nforge: {kind: github, repository: acme/web}\n")
    (apps_dir / "shop.yaml").write_text(
        "name: shop-api\nrepository: {url: /srv/shop.git}\nforge: {kind: gitlab, repository: group/sub/shop}\n")
    (apps_dir / "quiet.yaml").write_text("name: quiet\nrepository: {url: /srv/quiet.git}\n")
    spool = WebhookSpool(tmp_path / "home" / "webhooks")
    server = WebhookReceiver(load_app_configs(apps_dir), spool, secret=SECRET).server("127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Receiver(f"http://127.0.0.1:{server.server_address[1]}", spool)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _post(url: str, body: bytes, headers: dict[str, str], method: str = "POST") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body if method == "POST" else None, headers=headers,
                                     method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _github(rx: Receiver, event: str, payload: dict[str, Any] | bytes, *, delivery: str = "d-1",
            secret: str | None = SECRET) -> tuple[int, dict[str, Any]]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": delivery}
    if secret is not None:
        headers["X-Hub-Signature-256"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return _post(f"{rx.url}/webhooks/github", body, headers)


def _gitlab(rx: Receiver, event: str, payload: dict[str, Any], *, token: str = SECRET,
            uuid: str | None = "u-1") -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json", "X-Gitlab-Event": event, "X-Gitlab-Token": token}
    if uuid:
        headers["X-Gitlab-Event-UUID"] = uuid
    return _post(f"{rx.url}/webhooks/gitlab", json.dumps(payload).encode(), headers)


def _push(ref: str = "refs/heads/develop", *, repo: str = "acme/web", after: str = SHA,
          deleted: bool = False) -> dict[str, Any]:
    return {"ref": ref, "after": after, "before": BEFORE, "deleted": deleted,
            "repository": {"full_name": repo}, "head_commit": {"message": f"token {LEAKY}"}}


def test_a_signed_push_is_spooled_once(receiver: Receiver) -> None:
    status, body = _github(receiver, "push", _push())
    assert (status, body["accepted"], body["kind"]) == (202, True, "push")
    [event] = receiver.events()
    assert (event.app, event.kind, event.ref, event.sha, event.before, event.delivery, event.head_branch) == (
        "web", "push", "refs/heads/develop", SHA, BEFORE, "d-1", "develop")
    assert event.received_at == pytest.approx(time.time(), abs=60)

    assert _github(receiver, "push", _push()) == (200, {"duplicate": True})  # the forge redelivers
    assert len(receiver.events()) == 1
    assert _github(receiver, "push", _push(), delivery="d-2")[0] == 202  # another delivery is another event
    assert len(receiver.events()) == 2


def test_case_of_the_repository_does_not_matter_on_github(receiver: Receiver) -> None:
    assert _github(receiver, "push", _push(repo="Acme/Web"))[0] == 202


@pytest.mark.parametrize("secret", ["wrong-secret-0123456789", None])
def test_a_bad_or_missing_signature_is_refused(receiver: Receiver, secret: str | None) -> None:
    status, body = _github(receiver, "push", _push(), secret=secret)
    assert status == 401 and "X-Hub-Signature-256" in body["error"]
    assert receiver.events() == []


def test_a_signature_of_another_body_is_refused(receiver: Receiver) -> None:
    signed = json.dumps(_push()).encode()
    sent = json.dumps(_push(after="c" * 40)).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), signed, hashlib.sha256).hexdigest()
    status, _ = _post(f"{receiver.url}/webhooks/github", sent,
                      {"X-GitHub-Event": "push", "X-GitHub-Delivery": "d-9", "X-Hub-Signature-256": signature})
    assert status == 401 and receiver.events() == []


def test_an_unknown_repository_is_404(receiver: Receiver) -> None:
    status, body = _github(receiver, "push", _push(repo="acme/other"))
    assert (status, body["error"]) == (404, "no app for repository acme/other")


def test_a_malformed_body_is_400(receiver: Receiver) -> None:
    status, body = _github(receiver, "push", b"{not json")
    assert status == 400 and "JSON" in body["error"]
    status, body = _github(receiver, "push", {"repository": {"full_name": "acme/web"}, "after": SHA})
    assert (status, body["error"]) == (400, "missing field ref")
    status, body = _github(receiver, "push", _push(after="not-a-sha"))
    assert (status, body["error"]) == (400, "field after is not a 40-hex commit sha")
    assert receiver.events() == []


def test_a_body_over_1_mib_is_413(receiver: Receiver) -> None:
    payload = _push()
    payload["padding"] = "x" * MAX_BODY
    status, _ = _github(receiver, "push", payload)
    assert status == 413 and receiver.events() == []


def test_only_post_on_the_two_routes(receiver: Receiver) -> None:
    assert _post(f"{receiver.url}/webhooks/github", b"", {}, method="GET")[0] == 405
    assert _post(f"{receiver.url}/webhooks/bitbucket", b"{}", {})[0] == 404
    assert _post(f"{receiver.url}/", b"", {}, method="GET")[0] == 404


def test_tags_deletes_and_other_events(receiver: Receiver) -> None:
    assert _github(receiver, "push", _push("refs/tags/v1.4.0"), delivery="t")[0] == 202
    assert _github(receiver, "push", _push("refs/heads/old", after=ZERO, deleted=True), delivery="del")[0] == 202
    assert _github(receiver, "delete", {"ref": "v0.9", "ref_type": "tag", "repository": {"full_name": "acme/web"}},
                   delivery="del-tag")[0] == 202
    assert _github(receiver, "create", {"ref": "new", "ref_type": "branch",
                                        "repository": {"full_name": "acme/web"}}, delivery="c")[0] == 200
    assert _github(receiver, "ping", {"zen": "Keep it simple."}, delivery="p")[0] == 200
    status, body = _github(receiver, "issues", {"repository": {"full_name": "acme/web"}}, delivery="i")
    assert status == 202 and "issues" in body["ignored"]
    assert [(e.kind, e.ref, e.sha) for e in receiver.events()] == [
        ("tag", "refs/tags/v1.4.0", SHA), ("delete", "refs/heads/old", ""), ("delete", "refs/tags/v0.9", "")]


def _pull_request(action: str) -> dict[str, Any]:
    return {"action": action, "number": 7, "before": BEFORE, "repository": {"full_name": "acme/web"},
            "pull_request": {"head": {"sha": SHA, "ref": "feature/login"}, "base": {"ref": "develop"}}}


def test_a_pull_request_opened_and_closed(receiver: Receiver) -> None:
    assert _github(receiver, "pull_request", _pull_request("opened"), delivery="pr-1")[0] == 202
    assert _github(receiver, "pull_request", _pull_request("labeled"), delivery="pr-2")[0] == 202  # ignored
    assert _github(receiver, "pull_request", _pull_request("closed"), delivery="pr-3")[0] == 202
    opened, closed = receiver.events()
    assert (opened.kind, opened.ref, opened.sha, opened.pr_number, opened.base_branch, opened.head_branch) == (
        "pull_request", "refs/pull/7/head", SHA, 7, "develop", "feature/login")
    assert (closed.kind, closed.ref, closed.sha, closed.pr_number) == ("pr_closed", "refs/pull/7/head", "", 7)


def _gitlab_push(after: str = SHA) -> dict[str, Any]:
    return {"object_kind": "push", "ref": "refs/heads/main", "before": BEFORE, "after": after,
            "checkout_sha": None if after == ZERO else after,
            "project": {"path_with_namespace": "group/sub/shop"}}


def test_a_gitlab_push_needs_the_token(receiver: Receiver) -> None:
    status, body = _gitlab(receiver, "Push Hook", _gitlab_push(), token="wrong-token-0123456789")
    assert status == 401 and "X-Gitlab-Token" in body["error"]
    assert receiver.events("shop_api") == []
    assert _gitlab(receiver, "Push Hook", _gitlab_push())[0] == 202
    assert _gitlab(receiver, "Push Hook", _gitlab_push()) == (200, {"duplicate": True})
    assert _gitlab(receiver, "Push Hook", _gitlab_push(ZERO), uuid="u-2")[0] == 202
    pushed, deleted = receiver.events("shop_api")
    assert (pushed.app, pushed.kind, pushed.ref, pushed.sha, pushed.before, pushed.delivery) == (
        "shop_api", "push", "refs/heads/main", SHA, BEFORE, "u-1")
    assert (deleted.kind, deleted.sha) == ("delete", "")
    assert receiver.events("web") == []


def test_a_gitlab_delivery_without_a_uuid_is_known_by_its_body(receiver: Receiver) -> None:
    assert _gitlab(receiver, "Push Hook", _gitlab_push(), uuid=None)[0] == 202
    assert _gitlab(receiver, "Push Hook", _gitlab_push(), uuid=None)[0] == 200
    [event] = receiver.events("shop_api")
    assert event.delivery.startswith("sha256:")


def test_a_gitlab_tag_and_merge_request(receiver: Receiver) -> None:
    tag = {**_gitlab_push(), "ref": "refs/tags/v2.0.0"}
    assert _gitlab(receiver, "Tag Push Hook", tag, uuid="t")[0] == 202
    merge_request = {"object_kind": "merge_request", "project": {"path_with_namespace": "group/sub/shop"},
                     "object_attributes": {"iid": 3, "action": "open", "source_branch": "feature/cart",
                                           "target_branch": "develop", "last_commit": {"id": SHA}}}
    assert _gitlab(receiver, "Merge Request Hook", merge_request, uuid="mr")[0] == 202
    merge_request["object_attributes"]["action"] = "merge"
    assert _gitlab(receiver, "Merge Request Hook", merge_request, uuid="mr-merged")[0] == 202
    tagged, opened, merged = receiver.events("shop_api")
    assert (tagged.kind, tagged.ref) == ("tag", "refs/tags/v2.0.0")
    assert (opened.kind, opened.ref, opened.sha, opened.pr_number, opened.base_branch, opened.head_branch) == (
        "pull_request", "refs/merge-requests/3/head", SHA, 3, "develop", "feature/cart")
    assert (merged.kind, merged.sha) == ("pr_closed", "")


def test_a_github_route_does_not_serve_a_gitlab_app(receiver: Receiver) -> None:
    payload = _push(repo="group/sub/shop")
    assert _github(receiver, "push", payload)[0] == 404


def test_neither_the_secret_nor_the_payload_is_logged(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        _github(receiver, "push", _push(), delivery="log-1")
        _github(receiver, "push", _push(), delivery="log-2", secret="wrong-secret-0123456789")
        _gitlab(receiver, "Push Hook", _gitlab_push(), token=LEAKY)
        _github(receiver, "push", b'{"ref": "' + LEAKY.encode() + b'"')
    lines = [record.getMessage() for record in caplog.records]
    assert any("push acme/web refs/heads/develop aaaaaaaa: 202" in line for line in lines), lines
    assert any(": 401 X-Hub-Signature-256" in line for line in lines), lines
    assert not [line for line in lines if SECRET in line or LEAKY in line]
    assert SECRET not in repr(WebhookReceiver([], receiver.spool, secret=SECRET))


def test_the_cli_refuses_to_start_without_the_secret(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "SEVENP_WEBHOOK_SECRET"}
    env["SEVENP_HOME"] = str(tmp_path / "home")
    done = subprocess.run([sys.executable, "-m", "sevenp_pipeline.forge.webhooks", "--port", "0"],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "SEVENP_WEBHOOK_SECRET is not set" in done.stderr


def test_the_receiver_refuses_an_empty_secret(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="SEVENP_WEBHOOK_SECRET"):
        WebhookReceiver([], WebhookSpool(tmp_path), secret="")


def _event(delivery: str, app: str = "web") -> WebhookEvent:
    return WebhookEvent(app=app, kind="push", ref="refs/heads/main", sha=SHA, before="", delivery=delivery,
                        received_at=time.time())


def test_the_spool_orders_events_and_reads_after_a_cursor(tmp_path: Path) -> None:
    spool = WebhookSpool(tmp_path / "webhooks")
    assert spool.pending("web") == []
    for delivery in ("one", "two", "three"):
        assert spool.put(_event(delivery))
    assert not spool.put(_event("two"))
    assert spool.put(_event("two", app="other"))  # delivery ids are per app
    names = [name for name, _ in spool.pending("web")]
    assert names == sorted(names) and len(names) == 3
    assert [e.delivery for _, e in spool.pending("web")] == ["one", "two", "three"]
    assert [e.delivery for _, e in spool.pending("web", after=names[0])] == ["two", "three"]
    assert spool.pending("web", after=names[-1]) == []
    assert stat.S_IMODE((tmp_path / "webhooks" / "web").stat().st_mode) == 0o700
    (tmp_path / "webhooks" / "web" / ".tmp-half").write_text("{")  # a writer that died
    (tmp_path / "webhooks" / "web" / "99999999999999999999-broken.json").write_text("{")
    assert [e.delivery for _, e in spool.pending("web")] == ["one", "two", "three"]
    event = WebhookEvent(app="web", kind="pull_request", ref="refs/pull/7/head", sha=SHA, before=BEFORE,
                         delivery="d", pr_number=7, base_branch="develop", head_branch="f", received_at=1.5)
    assert WebhookEvent.from_json(event.to_json()) == event


def test_prune_removes_old_events_and_markers(tmp_path: Path) -> None:
    spool = WebhookSpool(tmp_path / "webhooks")
    spool.put(_event("old"))
    spool.put(_event("new"))
    [(old_name, _), _] = spool.pending("web")
    folder = tmp_path / "webhooks" / "web"
    day_ago = time.time() - 2 * 86400
    old_marker = folder / ".delivered" / hashlib.sha256(b"old").hexdigest()
    for path in (folder / old_name, old_marker):
        os.utime(path, (day_ago, day_ago))
    assert spool.prune() == 2
    assert [e.delivery for _, e in spool.pending("web")] == ["new"]
    assert spool.put(_event("old"))  # its marker went: a delivery that old is new again
    assert not spool.put(_event("new"))


def test_the_cli_spools_into_the_home(tmp_path: Path) -> None:
    apps_dir = tmp_path / "apps"
    apps_dir.mkdir()
    (apps_dir / "web.yaml").write_text(
        "name: web\nrepository: {url: /srv/web.git}\nforge: {kind: github, repository: acme/web}\n")
    port = free_port()
    env = {**os.environ, "SEVENP_WEBHOOK_SECRET": SECRET, "SEVENP_HOME": str(tmp_path / "home"),
           "SEVENP_APPS_DIR": str(apps_dir)}
    process = subprocess.Popen([sys.executable, "-m", "sevenp_pipeline.forge.webhooks", "--port", str(port)],
                               env=env, stderr=subprocess.PIPE, text=True)
    try:
        rx = Receiver(f"http://127.0.0.1:{port}", WebhookSpool(tmp_path / "home" / "webhooks"))
        deadline = time.monotonic() + 30
        while True:
            try:
                status, _ = _github(rx, "push", _push(), delivery="cli-1")
                break
            except urllib.error.URLError:
                assert time.monotonic() < deadline and process.poll() is None, "the receiver did not start"
                time.sleep(0.2)
        assert status == 202
        assert [e.sha for e in rx.events()] == [SHA]
    finally:
        process.terminate()
        _, err = process.communicate(timeout=10)
    assert "push acme/web refs/heads/develop aaaaaaaa: 202" in err and SECRET not in err


def test_docker_compose_runs_the_receiver_on_the_home_the_push_sensors_read() -> None:
    """`docker compose --profile forge up` adds the receiver, writing its spool into the code server's home."""
    import yaml  # noqa: PLC0415

    compose = yaml.safe_load((Path(__file__).parents[2] / "docker" / "compose.yaml").read_text())
    receiver, code = compose["services"]["webhooks"], compose["services"]["code"]
    assert receiver["profiles"] == ["forge"]
    assert receiver["entrypoint"][:3] == ["python", "-m", "sevenp_pipeline.forge.webhooks"]
    assert "SEVENP_WEBHOOK_SECRET" in receiver["environment"]
    # Loopback on the host network: a TLS proxy in front for the forge.
    assert receiver["network_mode"] == "host" and receiver["entrypoint"][3:5] == ["--host", "127.0.0.1"]
    assert set(receiver["volumes"]) & set(code["volumes"]) == {"sevenp-home:/var/lib/sevenp"}
