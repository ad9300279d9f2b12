"""Slack notifications through an incoming webhook (spec: ``send_notification``), as Block Kit messages.

The webhook URL is a secret (whoever has it can post to the channel): it comes from
``dg.EnvVar("SEVENP_SLACK_WEBHOOK_URL")`` in the resource set and is never logged; messages about the
webhook say "Slack webhook" and the HTTP status. A notification never fails a run: :meth:`notify`
retries and then returns False.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Literal

import dagster as dg
from pydantic import Field

LogFn = Callable[[str], None]
SLACK_WEBHOOK_ENV = "SEVENP_SLACK_WEBHOOK_URL"
Kind = Literal["deploy_succeeded", "deploy_failed", "rolled_back", "run_failed", "environment_down",
               "environment_recovered"]
KINDS: tuple[str, ...] = ("deploy_succeeded", "deploy_failed", "rolled_back", "run_failed", "environment_down",
                          "environment_recovered")
_ICONS = {"deploy_succeeded": ":white_check_mark:", "deploy_failed": ":x:", "rolled_back": ":rewind:",
          "run_failed": ":red_circle:", "environment_down": ":rotating_light:",
          "environment_recovered": ":large_green_circle:"}
_MAX_FIELDS = 10  # Block Kit: at most 10 fields in a section
_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Notification:
    """What happened, to whom it matters (app, environment, commit) and which run did it."""

    kind: Kind
    app: str
    environment: str
    commit: str
    run_id: str
    title: str
    text: str = ""
    fields: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"notification kind {self.kind!r} is not one of {', '.join(KINDS)}")


def _mrkdwn(text: str) -> str:
    """Slack's three control characters, escaped as its docs ask."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackNotifier(dg.ConfigurableResource):
    """Posts notifications to a Slack incoming webhook, retrying on connection errors, 5xx and 429."""

    webhook_url: str | None = Field(default=None, description="incoming webhook URL (a secret: dg.EnvVar); "
                                                              "None: notifications are skipped")
    ui_url: str = Field(default="http://127.0.0.1:3000", description="base URL of the Dagster UI, for run links")
    attempts: int = Field(default=3, ge=1, le=10, description="tries per notification")
    timeout_seconds: float = Field(default=10, gt=0, description="per request")
    backoff_seconds: float = Field(default=1.0, ge=0, description="wait before the 2nd try; doubles after")
    max_retry_after_seconds: float = Field(default=30, ge=0,
                                           description="a longer Retry-After from Slack is cut to this")

    def run_url(self, run_id: str) -> str:
        return f"{self.ui_url.rstrip('/')}/runs/{run_id}"

    def payload(self, n: Notification) -> dict[str, object]:
        """The Block Kit message: header, text, fields, a button to the run, and a context line."""
        run_url = self.run_url(n.run_id)
        facts = {"App": n.app, "Environment": n.environment, "Commit": f"`{n.commit[:12]}`" if n.commit else "",
                 **n.fields}
        fields = [{"type": "mrkdwn", "text": f"*{_mrkdwn(k)}*\n{_mrkdwn(v)}"}
                  for k, v in facts.items() if v][:_MAX_FIELDS]
        blocks: list[dict[str, object]] = [
            {"type": "header", "text": {"type": "plain_text", "text": f"{_ICONS[n.kind]} {n.title}"[:150],
                                        "emoji": True}},
        ]
        if n.text:
            blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": _mrkdwn(n.text)[:3000]}})
        blocks += [
            {"type": "section", "fields": fields},
            {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open run"},
                                              "url": run_url, "action_id": "open_run"}]},
            {"type": "context", "elements": [{"type": "mrkdwn",
                                              "text": f"sevenp_pipeline · {n.kind} · <{run_url}|run {n.run_id[:8]}>"}]},
        ]
        return {"text": f"{n.title}: {n.app} {n.environment} {n.commit[:12]}".strip(), "blocks": blocks}

    def notify(self, n: Notification, *, log: LogFn | None = None) -> bool:
        """Posts ``n``; True when Slack accepted it. Never raises: failures are logged (without the URL).

        Args:
            n: the notification.
            log: where to say what happened (e.g. ``context.log.info``); default: this module's logger.
        """
        say = log or _logger.info
        if not self.webhook_url:
            say(f"Slack webhook not configured (SEVENP_SLACK_WEBHOOK_URL): {n.kind} notification skipped")
            return False
        try:
            return self._post(n, say)
        except Exception as exc:  # a notifier must never fail the run it reports on
            say(f"Slack webhook: {n.kind} notification not sent: {self._scrub(f'{type(exc).__name__}: {exc}')}")
            return False

    def _post(self, n: Notification, say: LogFn) -> bool:
        body = json.dumps(self.payload(n)).encode()
        problem = ""
        for attempt in range(1, self.attempts + 1):
            request = urllib.request.Request(  # noqa: S310 (the configured https webhook)
                str(self.webhook_url), data=body, method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "sevenp-pipeline"})
            retry_after: float | None = None
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:  # noqa: S310
                    response.read(4096)
                    say(f"Slack webhook: {n.kind} notification sent (HTTP {response.status})")
                    return True
            except urllib.error.HTTPError as exc:
                problem = f"HTTP {exc.code}"
                if exc.code != 429 and exc.code < 500:
                    say(f"Slack webhook refused the {n.kind} notification: {problem} "
                        f"{self._scrub(exc.read(200).decode(errors='replace'))}")
                    return False
                retry_after = _retry_after(exc.headers.get("Retry-After"))
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                problem = f"no answer: {self._scrub(str(getattr(exc, 'reason', exc)))}"
            if attempt < self.attempts:
                wait = self.backoff_seconds * 2 ** (attempt - 1)
                if retry_after is not None:
                    wait = min(retry_after, self.max_retry_after_seconds)
                say(f"Slack webhook: {problem} (attempt {attempt}/{self.attempts}); retrying in {wait:.1f}s")
                time.sleep(wait)
        say(f"Slack webhook: {n.kind} notification not sent after {self.attempts} attempt(s): {problem}")
        return False

    def _scrub(self, text: str) -> str:
        """Removes the webhook URL (and its secret path) from a message that might quote it."""
        url = str(self.webhook_url or "")
        if url:
            text = text.replace(url, "<Slack webhook>")
            path = url.split("://", 1)[-1].partition("/")[2]
            if path:
                text = text.replace(path, "<redacted>")
        return text


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
