"""Frozen records shared by the security scanners: components, advisories, findings and reports."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

SEVERITIES: tuple[str, ...] = ("LOW", "MEDIUM", "HIGH", "CRITICAL")
"""Ordered lowest to highest; ``UNKNOWN`` (no severity in the record) is ranked as HIGH by gates."""


def severity_rank(severity: str) -> int:
    """LOW=0 … CRITICAL=3; UNKNOWN counts as HIGH so a record without a rating never slips a gate."""
    value = severity.upper()
    return SEVERITIES.index(value) if value in SEVERITIES else SEVERITIES.index("HIGH")


@dataclass(frozen=True)
class Component:
    """One package from an SBOM or a lockfile. ``type`` is the purl type (npm, deb, …)."""

    name: str
    version: str
    purl: str
    type: str
    licenses: tuple[str, ...] = ()
    locations: tuple[str, ...] = ()
    dev: bool = False


@dataclass(frozen=True)
class AffectedRange:
    """An OSV range: ``events`` are (kind, version) pairs, kind in introduced/fixed/last_affected/limit."""

    type: str
    events: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class AffectedPackage:
    ecosystem: str
    name: str
    ranges: tuple[AffectedRange, ...] = ()
    versions: tuple[str, ...] = ()
    purl: str = ""

    @property
    def fixed_versions(self) -> tuple[str, ...]:
        return tuple(v for r in self.ranges for kind, v in r.events if kind == "fixed")


@dataclass(frozen=True)
class Advisory:
    """One OSV record, reduced to what matching and reporting need."""

    id: str
    aliases: tuple[str, ...]
    summary: str
    details: str
    severity: str  # CRITICAL | HIGH | MEDIUM | LOW | UNKNOWN
    score: float | None
    cvss_vector: str
    modified: dt.datetime
    affected: tuple[AffectedPackage, ...]
    references: tuple[str, ...] = ()
    path: str = ""
    withdrawn: bool = False

    @property
    def url(self) -> str:
        return f"https://osv.dev/vulnerability/{self.id}"


@dataclass(frozen=True)
class Finding:
    """A component version inside an advisory's affected range. ``source`` names the scanned input."""

    advisory_id: str
    aliases: tuple[str, ...]
    severity: str
    summary: str
    purl: str
    package: str
    installed_version: str
    fixed_versions: tuple[str, ...]
    source: str
    score: float | None = None
    locations: tuple[str, ...] = ()
    url: str = ""

    @property
    def ids(self) -> frozenset[str]:
        return frozenset((self.advisory_id, *self.aliases))


@dataclass(frozen=True)
class Suppression:
    """An allowlist entry: accept ``id`` (for ``package``, if given) until ``expires``, for ``reason``."""

    id: str
    reason: str
    expires: dt.date
    package: str = ""
    source: str = ""


@dataclass(frozen=True)
class LicenseFinding:
    """A component's license verdict: ``status`` is allowed, denied or unknown, with the reason why."""

    component: str
    version: str
    purl: str
    expression: str
    status: str
    reason: str


@dataclass(frozen=True)
class SecretFinding:
    """A likely secret. ``hashed_secret`` is detect-secrets' SHA-1 of the value; the value is never kept."""

    file: str
    line: int
    type: str
    hashed_secret: str


@dataclass(frozen=True)
class SbomResult:
    spdx_path: Path
    cyclonedx_path: Path
    components_by_type: dict[str, int]
    component_count: int
    duration_seconds: float = 0.0


@dataclass(frozen=True)
class LicenseReport:
    allowed: tuple[LicenseFinding, ...]
    denied: tuple[LicenseFinding, ...]
    unknown: tuple[LicenseFinding, ...]
    counts_by_license: dict[str, int]
    unknown_policy: str = "fail"

    @property
    def ok(self) -> bool:
        return not self.denied and (self.unknown_policy != "fail" or not self.unknown)


@dataclass(frozen=True)
class VexResult:
    kept: list[Finding]
    suppressed: list[tuple[Finding, str]]
    expired_entries: list[Suppression] = field(default_factory=list)
