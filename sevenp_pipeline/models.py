"""Frozen records passed between resources and assets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    author: str
    email: str
    subject: str
    committed_at: int
    parents: tuple[str, ...]
    body: str = ""  # the message after the subject (footers such as BREAKING CHANGE:); "" when not read


@dataclass(frozen=True)
class Workspace:
    """The per-commit folders a run works in: an isolated checkout, reports and logs."""

    root: Path
    app_subdir: str = ""

    @property
    def src(self) -> Path:
        return self.root / "src"

    @property
    def app_dir(self) -> Path:
        return self.src / self.app_subdir if self.app_subdir else self.src

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def ready_marker(self) -> Path:
        return self.root / "checkout.done"

    @property
    def is_checked_out(self) -> bool:
        return self.ready_marker.exists()


@dataclass(frozen=True)
class TestCase:
    suite: str
    name: str
    message: str
    location: str = ""  # file:line of the first stack frame in the app's own code, as the runner wrote it


@dataclass(frozen=True)
class TestSummary:
    tests: int
    passed: int
    failed: int
    errors: int
    skipped: int
    duration: float
    failures: tuple[TestCase, ...]

    @property
    def ok(self) -> bool:
        return self.failed == 0 and self.errors == 0 and self.tests > 0


@dataclass(frozen=True)
class Coverage:
    lines: float
    statements: float
    branches: float
    functions: float

    def metric(self, name: str) -> float:
        return float(getattr(self, name))


@dataclass(frozen=True)
class PerformanceSummary:
    requests: int
    requests_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    non_2xx: int
    tool: str = ""
