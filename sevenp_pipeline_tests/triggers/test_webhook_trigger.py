"""A webhook delivery, received over real HTTP by the receiver, starts the push sensor's run at its next
tick, without waiting for the poll; the poll stays the fallback and never starts the same run twice."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dagster as dg
from dagster._core.remote_origin import InProcessCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.test_utils import create_run_for_test
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin

from sevenp_pipeline.forge.webhooks import WebhookReceiver
from sevenp_pipeline.triggers.tags import TAG_APP, TAG_BRANCH, TAG_COMMIT, TAG_PR, TAG_PR_BASE, TAG_PR_HEAD, TAG_TRIGGER
from sevenp_pipeline.triggers.webhook_spool import WebhookEvent, WebhookSpool
from sevenp_pipeline_tests.conftest import Pipeline
from sevenp_pipeline_tests.gitutil import git

SECRET = "whsec-trigger-test-0123456789"
REPO = "acme/hooked"
CONFIG = f"forge: {{kind: github, repository: {REPO}}}\ntrigger: {{poll_interval_seconds: 3600}}\n"


@contextmanager
def _receiver(pipe: Pipeline) -> Iterator[str]:
    server = WebhookReceiver([pipe.app], WebhookSpool(pipe.settings.webhooks_dir), secret=SECRET).server()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/webhooks/github"
    finally:
        server.shutdown()
        server.server_close()


def _deliver(url: str, event: str, payload: dict[str, Any], delivery: str) -> int:
    body = json.dumps(payload).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": signature})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status


def _push(branch: str, sha: str, before: str = "0" * 40) -> dict[str, Any]:
    return {"ref": f"refs/heads/{branch}", "after": sha, "before": before, "repository": {"full_name": REPO}}


def _pull_request(action: str, number: int, sha: str) -> dict[str, Any]:
    return {"action": action, "number": number, "repository": {"full_name": REPO},
            "pull_request": {"head": {"sha": sha, "ref": "feature/login"}, "base": {"ref": "main"}}}


def _queued_instance() -> dg.DagsterInstance:
    return dg.instance_for_test(overrides={"run_coordinator": {
        "module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}})


def test_webhook_deliveries_start_runs_before_the_poll_and_a_closed_pull_request_cancels_its_run(
        make_pipeline) -> None:
    pipe = make_pipeline(CONFIG, name="hooked-app")
    sensor_name = f"{pipe.key}_git_push_sensor"
    defs = pipe.defs
    assert defs.resolve_sensor_def(sensor_name).minimum_interval_seconds == 1  # deliveries are read every second
    with _queued_instance() as instance, _receiver(pipe) as url:
        def tick(cursor: str | None) -> dg.SensorResult:
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=defs.resources,
                                         definitions=defs) as context:
                return defs.resolve_sensor_def(sensor_name)(context)

        cursor = tick(None).cursor
        sha = pipe.remote.commit("feat: pushed")  # to develop
        quiet = tick(cursor)  # the poll is an hour away: without a delivery, nothing yet
        assert quiet.run_requests == []

        assert _deliver(url, "push", _push("develop", sha), "d-1") == 202
        pushed = tick(quiet.cursor)
        assert [r.run_key for r in pushed.run_requests] == [f"develop@{sha}"]
        request = pushed.run_requests[0]
        assert (request.tags[TAG_BRANCH], request.tags[TAG_COMMIT], request.tags[TAG_TRIGGER]) == (
            "develop", sha, "push")
        assert pushed.dynamic_partitions_requests[0].partition_keys == [sha]
        assert tick(pushed.cursor).run_requests == []  # a delivery is read once

        # A pull request: its run names the base and head branches the delivery gave.
        head = pipe.remote.commit("feat: login", push_to=None)
        git("push", "--quiet", "origin", f"{head}:refs/pull/12/head", cwd=pipe.remote.clone)
        assert _deliver(url, "pull_request", _pull_request("opened", 12, head), "d-2") == 202
        opened = tick(pushed.cursor)
        [pr_run] = opened.run_requests
        assert pr_run.run_key == f"pr-12@{head}"
        assert (pr_run.tags[TAG_PR], pr_run.tags[TAG_PR_BASE], pr_run.tags[TAG_PR_HEAD], pr_run.tags[TAG_BRANCH]) == (
            "12", "main", "feature/login", "")

        # The poll, when it comes, starts neither again.
        polled_cursor = json.dumps({**json.loads(opened.cursor), "polled_at": 0})
        polled = tick(polled_cursor)
        assert polled.run_requests == [] and json.loads(polled.cursor)["polled_at"] > 0

        # Closing the request cancels its run still waiting in the queue; another request's run stays.
        job = f"{pipe.key}_ci_job"
        origin = RemoteJobOrigin(repository_origin=RemoteRepositoryOrigin(
            code_location_origin=InProcessCodeLocationOrigin(LoadableTargetOrigin(python_file=__file__)),
            repository_name="__repository__"), job_name=job)
        waiting, other = (create_run_for_test(
            instance, job_name=job, status=dg.DagsterRunStatus.QUEUED, remote_job_origin=origin,
            tags={TAG_APP: pipe.app.name, TAG_BRANCH: "", TAG_COMMIT: head, TAG_PR: number,
                  "dagster/sensor_name": sensor_name}).run_id for number in ("12", "13"))
        assert _deliver(url, "pull_request", _pull_request("closed", 12, head), "d-3") == 202
        closed = tick(polled.cursor)
        assert closed.run_requests == []
        assert instance.get_run_by_id(waiting).status == dg.DagsterRunStatus.CANCELED
        assert instance.get_run_by_id(other).status == dg.DagsterRunStatus.QUEUED

        # A delivery naming a commit the remote no longer has (force-pushed away) starts nothing,
        # and is not read again.
        assert _deliver(url, "push", _push("develop", "f" * 40, sha), "d-4") == 202
        gone = tick(closed.cursor)
        assert gone.run_requests == []
        assert tick(gone.cursor).run_requests == []


def test_without_a_forge_the_spool_is_not_read(make_pipeline) -> None:
    """An app with no forge: events spooled under its key (left by an old config) are not read, and its
    sensor ticks once per poll interval, polling every time."""
    pipe = make_pipeline("trigger: {poll_interval_seconds: 3600}\n", name="unhooked-app")
    defs = pipe.defs
    sensor = defs.resolve_sensor_def(f"{pipe.key}_git_push_sensor")
    assert sensor.minimum_interval_seconds == 3600
    spool = WebhookSpool(pipe.settings.webhooks_dir)
    assert spool.put(WebhookEvent(app=pipe.key, kind="push", ref="refs/heads/develop", sha="f" * 40, before="",
                                  delivery="old-1"))

    def tick(cursor: str | None) -> dg.SensorResult:
        with dg.build_sensor_context(instance=pipe.instance, cursor=cursor, resources=defs.resources,
                                     definitions=defs) as context:
            return sensor(context)

    baseline = tick(None)
    sha = pipe.remote.commit("feat: polled")
    polled = tick(baseline.cursor)
    assert [r.run_key for r in polled.run_requests] == [f"develop@{sha}"]
    assert json.loads(polled.cursor)["webhook_after"] == ""
