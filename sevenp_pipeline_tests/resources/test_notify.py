"""SlackNotifier against a real loopback HTTP server playing Slack's incoming webhook."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import dagster as dg
import pytest

from sevenp_pipeline.resources.notify import Notification, SlackNotifier
from sevenp_pipeline_tests.httpserver import Answer, Request, Server, http_server
from sevenp_pipeline_tests.motoserver import free_port

SECRET_PATH = "/services/T0SECRET1/B0SECRET2/xoxbS3cr3tW3bh00kT0k3n"
RUN_ID = "0f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b"


def _notification(**overrides: object) -> Notification:
    values: dict[str, object] = {
        "kind": "rolled_back", "app": "7p-education-api", "environment": "staging", "commit": "a" * 40,
        "run_id": RUN_ID, "title": "Staging deploy rolled back",
        "text": "health check failed: <html> & more", "fields": {"Reason": "HTTP 503", "Image": "api@sha256:ab"},
    }
    values.update(overrides)
    return Notification(**values)  # type: ignore[arg-type]


@pytest.fixture
def slack() -> Iterator[Server]:
    with http_server(lambda _req: Answer(200, b"ok")) as server:
        yield server


def _notifier(server_url: str, **kwargs: object) -> SlackNotifier:
    values: dict[str, object] = {"webhook_url": server_url + SECRET_PATH, "ui_url": "http://dagster.example:3000/",
                                 "backoff_seconds": 0.01, "timeout_seconds": 2}
    values.update(kwargs)
    return SlackNotifier(**values)  # type: ignore[arg-type]


def test_posts_block_kit_json_with_a_link_to_the_run(slack: Server) -> None:
    log: list[str] = []
    assert _notifier(slack.url).notify(_notification(), log=log.append) is True
    [request] = slack.requests
    assert (request.method, request.path) == ("POST", SECRET_PATH)
    assert request.headers["content-type"] == "application/json"
    payload = json.loads(request.body)
    run_url = f"http://dagster.example:3000/runs/{RUN_ID}"
    assert payload["text"] == "Staging deploy rolled back: 7p-education-api staging aaaaaaaaaaaa"
    kinds = [b["type"] for b in payload["blocks"]]
    assert kinds == ["header", "section", "section", "actions", "context"]
    header, text, facts, actions, context = payload["blocks"]
    assert header["text"] == {"type": "plain_text", "text": ":rewind: Staging deploy rolled back", "emoji": True}
    assert text["text"]["text"] == "health check failed: &lt;html&gt; &amp; more"  # Slack's escaping
    assert [f["text"] for f in facts["fields"]] == [
        "*App*\n7p-education-api", "*Environment*\nstaging", "*Commit*\n`aaaaaaaaaaaa`", "*Reason*\nHTTP 503",
        "*Image*\napi@sha256:ab"]
    assert actions["elements"][0]["url"] == run_url
    assert actions["elements"][0]["text"]["text"] == "Open run"
    assert f"<{run_url}|run 0f1e2d3c>" in context["elements"][0]["text"]
    assert log == ["Slack webhook: rolled_back notification sent (HTTP 200)"]


def test_retries_after_a_500_then_succeeds(slack: Server) -> None:
    answers = iter([Answer(500, b"oops"), Answer(200, b"ok")])
    slack.respond = lambda _req: next(answers)
    log: list[str] = []
    assert _notifier(slack.url).notify(_notification(), log=log.append) is True
    assert len(slack.requests) == 2 and slack.requests[0].body == slack.requests[1].body
    assert log[0] == "Slack webhook: HTTP 500 (attempt 1/3); retrying in 0.0s"
    assert log[-1].endswith("sent (HTTP 200)")


def test_honours_retry_after_on_429_within_the_cap(slack: Server) -> None:
    answers = iter([Answer(429, b"rate_limited", {"Retry-After": "0.3"}), Answer(200, b"ok")])
    slack.respond = lambda _req: next(answers)
    started = time.monotonic()
    assert _notifier(slack.url).notify(_notification(), log=lambda _line: None) is True
    assert 0.3 <= time.monotonic() - started < 2
    slack.respond = lambda _req: Answer(429, b"rate_limited", {"Retry-After": "3600"})
    started = time.monotonic()
    log: list[str] = []
    capped = _notifier(slack.url, attempts=2, max_retry_after_seconds=0.2)
    assert capped.notify(_notification(), log=log.append) is False
    assert time.monotonic() - started < 2  # an hour's Retry-After is cut to the cap
    assert "retrying in 0.2s" in log[0]


def test_always_500_returns_false_in_bounded_time(slack: Server) -> None:
    slack.respond = lambda _req: Answer(503, b"down")
    log: list[str] = []
    started = time.monotonic()
    assert _notifier(slack.url, attempts=3).notify(_notification(), log=log.append) is False
    assert time.monotonic() - started < 2
    assert len(slack.requests) == 3
    assert log[-1] == "Slack webhook: rolled_back notification not sent after 3 attempt(s): HTTP 503"


def test_a_4xx_is_not_retried(slack: Server) -> None:
    slack.respond = lambda _req: Answer(404, b"no_service")
    log: list[str] = []
    assert _notifier(slack.url).notify(_notification(), log=log.append) is False
    assert len(slack.requests) == 1
    assert log == ["Slack webhook refused the rolled_back notification: HTTP 404 no_service"]


def test_unreachable_webhook_returns_false() -> None:
    log: list[str] = []
    notifier = _notifier(f"http://127.0.0.1:{free_port()}", attempts=2)
    assert notifier.notify(_notification(), log=log.append) is False
    assert "no answer" in log[-1] and "after 2 attempt(s)" in log[-1]


def test_no_webhook_configured_is_one_info_line() -> None:
    log: list[str] = []
    assert SlackNotifier().notify(_notification(kind="deploy_succeeded"), log=log.append) is False
    assert log == ["Slack webhook not configured (SEVENP_SLACK_WEBHOOK_URL): deploy_succeeded notification skipped"]


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="not one of deploy_succeeded"):
        _notification(kind="deployed")


def test_the_webhook_url_never_reaches_the_log(slack: Server, monkeypatch: pytest.MonkeyPatch,
                                               capfd: pytest.CaptureFixture[str]) -> None:
    """Every path that logs: success, retry, refusal (Slack echoing the URL back), unreachable, an exception."""
    def echo(request: Request) -> Answer:
        return Answer(400, f"invalid_payload for {slack.url}{request.path}".encode())

    monkeypatch.setenv("SEVENP_TEST_SLACK_URL", slack.url + SECRET_PATH)
    log: list[str] = []
    with dg.build_resources({"slack": SlackNotifier(webhook_url=dg.EnvVar("SEVENP_TEST_SLACK_URL"),
                                                    backoff_seconds=0.01)}) as resources:
        notifier = resources.slack
        assert notifier.webhook_url == slack.url + SECRET_PATH
        for respond in (lambda _req: Answer(200), lambda _req: Answer(502), echo):
            slack.respond = respond
            notifier.notify(_notification(), log=log.append)
    unreachable = f"http://127.0.0.1:{free_port()}{SECRET_PATH}"
    SlackNotifier(webhook_url=unreachable, attempts=1).notify(_notification(), log=log.append)
    bad = SlackNotifier(webhook_url="notaurl" + SECRET_PATH, attempts=1)  # urllib raises ValueError quoting it
    assert bad.notify(_notification(), log=log.append) is False
    captured = capfd.readouterr()
    text = "\n".join(log) + captured.out + captured.err
    assert "HTTP 502" in text and "HTTP 400" in text and "no answer" in text and "ValueError" in text
    for secret in ("T0SECRET1", "B0SECRET2", "xoxbS3cr3tW3bh00kT0k3n"):
        assert secret not in text
