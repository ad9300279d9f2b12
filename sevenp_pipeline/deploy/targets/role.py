"""The deployer role: put one commit's image live in one environment, or leave the old one serving.

A target gets a :class:`Rollout` (what to deploy, already verified by the deploy asset: signature and
gates) and a ``smoke`` callback (the app's smoke tests, run by the asset in the stage sandbox against
a URL). It returns a :class:`DeployOutcome`: either the new release is live (``ok``), or the old one
kept or got back the traffic (``rolled_back``, with the reason). It raises :class:`DeployError` only
when it could not even start (image not found, podman missing, a port taken, an AWS error before any
change); then too the environment still serves what it served before, and nothing (container,
nginx config, lock) is left behind.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

LogFn = Callable[[str], None]


class DeployError(Exception):
    """A deploy could not be carried out; the message names the environment and what failed.
    The environment keeps serving its previous release."""


class CheckFailed(Exception):
    """A health check or the smoke tests failed (the message is the reason shown to people)."""


@dataclass(frozen=True)
class Release:
    """What runs in an environment: a commit's image, since when, launched by which run."""

    commit: str
    image_ref: str  # repository@sha256:...
    image_digest: str
    since: float  # epoch seconds the release took traffic
    run_id: str
    slot: str  # local: "blue"/"green" container name; ecs: task definition ARN
    endpoint: str = ""  # the release's own URL (local: its loopback port), "" when it has none

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Release:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Rollout:
    """One deploy request. ``env`` is the container's environment (the app's deploy.env), never secrets."""

    app: str  # the app's name
    environment: str
    commit: str
    image_ref: str
    image_digest: str
    run_id: str
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HealthReport:
    url: str
    ok: bool
    attempts: int  # made
    max_attempts: int
    seconds: float
    last_status: int | None  # HTTP status of the last answer (None: no answer)
    last_error: str  # "" when ok

    def summary(self) -> str:
        if self.ok:
            return f"healthy after {self.attempts}/{self.max_attempts} attempt(s), {self.seconds:.1f}s ({self.url})"
        return (f"unhealthy after {self.attempts}/{self.max_attempts} attempt(s), {self.seconds:.1f}s "
                f"({self.url}): {self.last_error}")


@dataclass(frozen=True)
class SmokeReport:
    url: str
    ok: bool
    seconds: float
    command: str
    exit_code: int | None
    tail: str  # redacted output tail

    def summary(self) -> str:
        state = "passed" if self.ok else f"FAILED (exit {self.exit_code})"
        return f"smoke tests {state} in {self.seconds:.1f}s against {self.url}"


@dataclass(frozen=True)
class Probe:
    """One part of a running environment (front door, database, ...): does it answer now, and what failed."""

    name: str
    ok: bool
    detail: str

    def describe(self) -> str:
        return f"{self.name} {'up' if self.ok else 'DOWN'} ({self.detail})"


SmokeFn = Callable[[str], SmokeReport]
"""Runs the app's smoke tests against a base URL; returns the report (never raises on a test failure)."""


@dataclass
class DeployOutcome:
    """What a deploy did. ``ok``: the new release is live. Otherwise ``rolled_back`` says traffic stayed on
    (or returned to) ``live``, the previous release, and ``reason`` says why."""

    environment: str
    ok: bool
    url: str  # the environment's stable URL (front door / load balancer)
    live: Release | None  # what serves now
    previous: Release | None  # what served before this deploy
    health: HealthReport | None = None
    smoke: SmokeReport | None = None
    reason: str = ""
    rolled_back: bool = False
    switch_seconds: float | None = None  # green healthy -> traffic switched (local target)
    steps: list[str] = field(default_factory=list)  # what was done, in order, for the log and metadata

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, sort_keys=True, default=str)


class DeployTarget(ABC):
    """One environment's deployer. Implementations: local (podman + nginx), ecs (boto3)."""

    @abstractmethod
    def deploy(self, rollout: Rollout, *, smoke: SmokeFn | None, log: LogFn) -> DeployOutcome:
        """Put ``rollout`` live, or leave/return traffic to the previous release (``ok=False``)."""

    @abstractmethod
    def current(self) -> Release | None:
        """What the environment serves now (None: nothing deployed yet)."""

    @abstractmethod
    def url(self) -> str:
        """The environment's stable URL."""

    def probe(self) -> list[Probe]:
        """What of the environment answers now ([]: this target does not probe)."""
        return []

    def recover(self, *, log: LogFn) -> list[str]:
        """Starts what is down in a live environment; returns what it did ([]: nothing, or not supported)."""
        return []

    def stop(self, *, log: LogFn) -> None:  # noqa: B027 (optional)
        """Stops everything the environment runs (local target: containers, nginx, servers); data is kept."""
