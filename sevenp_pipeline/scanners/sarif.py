"""Findings as SARIF 2.1.0 (GitHub code scanning's format), validated against the official schema.

The schema file is OASIS's ``sarif-schema-2.1.0.json`` (errata 01, JSON Schema draft-04), bundled
unchanged under ``schemas/`` so validation works offline.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from jsonschema import Draft4Validator

from sevenp_pipeline.scanners.models import Finding

SCHEMA_PATH = Path(__file__).parent / "schemas" / "sarif-schema-2.1.0.json"
SARIF_SCHEMA_URI = "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json"
LEVEL_BY_SEVERITY = {"CRITICAL": "error", "HIGH": "error", "MEDIUM": "warning", "LOW": "note"}
# GitHub reads properties.security-severity as a CVSS-like number; used when a record has no CVSS score.
TYPICAL_SCORE = {"CRITICAL": 9.5, "HIGH": 8.0, "MEDIUM": 5.5, "LOW": 2.0}


class SarifValidationError(Exception):
    """A SARIF document does not conform to the SARIF 2.1.0 schema; the message holds JSON paths."""


def to_sarif(
    findings: Iterable[Finding], *, tool_name: str, tool_version: str, information_uri: str, artifact_uri: str
) -> dict[str, Any]:
    """One run; one rule per advisory (with help text), one result per (advisory, package@version)."""
    findings = list(findings)
    rules: list[dict[str, Any]] = []
    rule_index: dict[str, int] = {}
    for f in findings:
        if f.advisory_id not in rule_index:
            rule_index[f.advisory_id] = len(rules)
            rules.append(_rule(f, [g for g in findings if g.advisory_id == f.advisory_id]))
    results = [_result(f, rule_index[f.advisory_id], artifact_uri) for f in findings]
    return {
        "$schema": SARIF_SCHEMA_URI,
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": tool_name, "version": tool_version, "informationUri": information_uri, "rules": rules,
            }},
            "results": results,
        }],
    }


def _severity(f: Finding) -> str:
    sev = f.severity.upper()
    return sev if sev in LEVEL_BY_SEVERITY else "HIGH"


def _security_severity(f: Finding) -> str:
    return f"{f.score if f.score is not None else TYPICAL_SCORE[_severity(f)]:.1f}"


def _rule(f: Finding, same: list[Finding]) -> dict[str, Any]:
    fixed = sorted({v for g in same for v in g.fixed_versions})
    packages = sorted({g.package for g in same})
    ids = ", ".join((f.advisory_id, *f.aliases))
    text = (f"{f.summary}\n\nAdvisory: {ids}\nPackage(s): {', '.join(packages)}\n"
            f"Fixed in: {', '.join(fixed) or 'no fixed version published'}\nSeverity: {_severity(f)}\n"
            f"Remediation: upgrade to a fixed version, or record a VEX statement / allowlist entry with a reason."
            + (f"\nDetails: {f.url}" if f.url else ""))
    markdown = (f"**{f.summary}**\n\n| | |\n|---|---|\n| Advisory | {ids} |\n| Package | {', '.join(packages)} |\n"
                f"| Fixed in | {', '.join(fixed) or 'none'} |\n| Severity | {_severity(f)} |\n\n"
                + (f"[Advisory details]({f.url})" if f.url else ""))
    rule: dict[str, Any] = {
        "id": f.advisory_id,
        "name": "VulnerableDependency",
        "shortDescription": {"text": f.summary or f.advisory_id},
        "fullDescription": {"text": f"{f.summary} ({ids})"},
        "help": {"text": text, "markdown": markdown},
        "defaultConfiguration": {"level": LEVEL_BY_SEVERITY[_severity(f)]},
        "properties": {
            "security-severity": _security_severity(f),
            "tags": ["security", "vulnerability", "dependency", _severity(f).lower()],
            "precision": "very-high",
        },
    }
    if f.url:
        rule["helpUri"] = f.url
    return rule


def _result(f: Finding, index: int, artifact_uri: str) -> dict[str, Any]:
    fixed = ", ".join(f.fixed_versions) or "no fixed version"
    return {
        "ruleId": f.advisory_id,
        "ruleIndex": index,
        "level": LEVEL_BY_SEVERITY[_severity(f)],
        "message": {"text": f"{f.package}@{f.installed_version} is affected by {f.advisory_id} "
                            f"({_severity(f)}): {f.summary}. Fixed in: {fixed}."},
        "locations": [{
            "physicalLocation": {"artifactLocation": {"uri": artifact_uri}, "region": {"startLine": 1}},
            "logicalLocations": [{"fullyQualifiedName": f.purl, "kind": "package"}],
        }],
        "partialFingerprints": {
            "vulnerableDependency/v1": hashlib.sha256(f"{f.advisory_id}|{f.purl}".encode()).hexdigest(),
        },
        "properties": {
            "purl": f.purl, "installedVersion": f.installed_version, "fixedVersions": list(f.fixed_versions),
            "aliases": list(f.aliases), "packageLocations": list(f.locations), "source": f.source,
            "security-severity": _security_severity(f),
        },
    }


@functools.cache
def _validator() -> Draft4Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    Draft4Validator.check_schema(schema)
    return Draft4Validator(schema)


def validate_sarif(doc: Mapping[str, Any]) -> None:
    """Raises :class:`SarifValidationError` naming the JSON path of each violation (first 10)."""
    errors = sorted(_validator().iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"{e.json_path}: {e.message}" for e in errors[:10]]
        more = f"\n… and {len(errors) - 10} more" if len(errors) > 10 else ""
        raise SarifValidationError("SARIF does not conform to the 2.1.0 schema:\n" + "\n".join(lines) + more)
