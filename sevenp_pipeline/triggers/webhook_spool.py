"""The hand-off from the webhook receiver (forge/webhooks.py) to the push sensor (triggers/sensors.py):
a spool of accepted deliveries under ``<SEVENP_HOME>/webhooks``, one folder per app."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import dagster as dg
from pydantic import Field

from sevenp_pipeline.files import ATOMIC_TMP_PREFIX, private_dir, write_atomically

log = logging.getLogger(__name__)

DEFAULT_PRUNE_SECONDS = 24 * 3600.0
EventKind = Literal["push", "tag", "pull_request", "delete", "pr_closed"]
_MARKERS = ".delivered"  # per app folder: one empty file per delivery id seen


@dataclass(frozen=True)
class WebhookEvent:
    """One delivery, as the push sensor needs it: which app, which ref moved, and to what.

    ``ref`` is a full ref (``refs/heads/develop``, ``refs/tags/v1.4.0``, ``refs/pull/7/head`` on
    GitHub, ``refs/merge-requests/7/head`` on GitLab); ``sha`` is "" for deletes and closed PRs;
    ``before`` is "" when the forge gave none or all zeros (a new branch).
    """

    app: str
    kind: EventKind
    ref: str
    sha: str
    before: str
    delivery: str
    pr_number: int | None = None
    base_branch: str = ""
    head_branch: str = ""
    received_at: float = 0.0
    title_edited: bool = False  # a pull request's title changed (no push): the forge sensor checks it again

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> WebhookEvent:
        return cls(**json.loads(text))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class WebhookSpool:
    """The hand-off from the receiver to the push sensor: one JSON file per event under
    ``<root>/<app key>/``, named ``<time_ns, zero-padded>-<hash>.json`` so names sort in arrival
    order and the sensor's cursor is the last name it read.

    Two processes share it and neither holds a lock: events are written to a temp file and renamed
    (a reader sees a whole file or none), and a delivery is claimed by creating its marker with
    ``O_CREAT | O_EXCL``, which exactly one of two concurrent redeliveries wins.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def put(self, event: WebhookEvent) -> bool:
        """Writes ``event``; False (writing nothing) when its delivery id was already put for its app."""
        folder = private_dir(self.root / event.app)
        marker = private_dir(folder / _MARKERS) / _digest(event.delivery)
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            return False
        name = f"{time.time_ns():020d}-{_digest(event.delivery)[:12]}.json"
        data = event.to_json().encode()
        try:
            write_atomically(folder / name, lambda out: out.write(data))
        except BaseException:
            marker.unlink(missing_ok=True)  # not received after all: the forge's retry must get through
            raise
        return True

    def pending(self, app_key: str, after: str = "") -> list[tuple[str, WebhookEvent]]:
        """The app's events whose file name sorts after ``after`` ("" = all), oldest first.

        A file that does not parse is skipped with a warning (it cannot become readable later).
        """
        folder = self.root / app_key
        if not folder.is_dir():
            return []
        found = []
        for path in sorted(folder.glob("*.json")):
            if path.name.startswith((".", ATOMIC_TMP_PREFIX)) or path.name <= after:
                continue
            try:
                found.append((path.name, WebhookEvent.from_json(path.read_text())))
            except FileNotFoundError:
                continue  # pruned meanwhile
            except (OSError, ValueError, TypeError) as exc:
                log.warning("webhook spool: skipping %s: %s", path, type(exc).__name__)
        return found

    def prune(self, older_than_seconds: float = DEFAULT_PRUNE_SECONDS) -> int:
        """Removes events and delivery markers older than that; returns how many files went.

        A marker outlives nothing it must: a forge redelivers within hours, not days.
        """
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than_seconds
        removed = 0
        for folder in (p for p in self.root.iterdir() if p.is_dir()):
            for path in [*folder.glob("*.json"), *(folder / _MARKERS).glob("*")]:
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_mtime < cutoff:
                        path.unlink()
                        removed += 1
        return removed


class WebhookInbox(dg.ConfigurableResource):
    """The push sensor's side of the spool: the events the receiver accepted for an app, in order."""

    root: str = Field(description="the spool folder (<SEVENP_HOME>/webhooks)")

    def pending(self, app_key: str, after: str = "") -> list[tuple[str, WebhookEvent]]:
        return WebhookSpool(Path(self.root)).pending(app_key, after)
