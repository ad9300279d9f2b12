"""SARIF output, VEX / allowlist suppression, the severity gate and the license check."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import pytest

from sevenp_pipeline.scanners.licenses import LicensePolicyError, check_licenses
from sevenp_pipeline.scanners.models import Component
from sevenp_pipeline.scanners.sarif import SarifValidationError, to_sarif, validate_sarif
from sevenp_pipeline.scanners.vex import SuppressionError, apply, gate, load_allowlist
from sevenp_pipeline_tests.scanners.conftest import finding

TODAY = dt.date(2025, 6, 1)


def sarif_for(findings):
    return to_sarif(findings, tool_name="sevenp-osv-scan", tool_version="0.1.0",
                    information_uri="https://github.com/7p/sevenp_pipeline", artifact_uri="package-lock.json")


def test_sarif_rules_levels_and_schema():
    findings = [finding(), finding(purl="pkg:npm/lodash@4.17.11", installed_version="4.17.11"),
                finding("GHSA-29mw-wpgm-hmr9", "MEDIUM", score=None), finding("GHSA-low0-0000-abcd", "LOW")]
    doc = sarif_for(findings)
    validate_sarif(doc)
    run = doc["runs"][0]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == [
        "GHSA-p6mc-m468-83gw", "GHSA-29mw-wpgm-hmr9", "GHSA-low0-0000-abcd"]
    rule = run["tool"]["driver"]["rules"][0]
    assert rule["properties"]["security-severity"] == "7.4" and "4.17.19" in rule["help"]["text"]
    assert run["tool"]["driver"]["rules"][1]["properties"]["security-severity"] == "5.5"  # no CVSS: typical score
    assert [r["level"] for r in run["results"]] == ["error", "error", "warning", "note"]
    assert [r["ruleIndex"] for r in run["results"]] == [0, 0, 1, 2]


@pytest.mark.parametrize(("mutate", "path"), [
    (lambda d: d["runs"][0]["results"][0].update(level="fatal"), "$.runs[0].results[0].level"),
    (lambda d: d["runs"][0]["results"][0].pop("message"), "$.runs[0].results[0]"),
    (lambda d: d["runs"][0]["tool"]["driver"].pop("name"), "$.runs[0].tool.driver"),
    (lambda d: d.update(version="2.0.0"), "$.version"),
])
def test_broken_sarif_is_rejected_with_the_json_path(mutate, path):
    doc = copy.deepcopy(sarif_for([finding()]))
    mutate(doc)
    with pytest.raises(SarifValidationError) as err:
        validate_sarif(doc)
    assert path in str(err.value)


def openvex(tmp_path: Path, *statements: dict, name: str = "app.openvex.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps({
        "@context": "https://openvex.dev/ns/v0.2.0", "@id": "https://7p.example/vex/1",
        "author": "7P security", "timestamp": "2025-01-10T00:00:00Z", "version": 1, "statements": list(statements),
    }))
    return path


def test_vex_not_affected_suppresses_and_other_statuses_do_not(tmp_path: Path):
    vex = openvex(
        tmp_path,
        {"vulnerability": {"name": "CVE-2020-8203"}, "products": [{"@id": "pkg:npm/lodash"}],
         "status": "not_affected", "justification": "vulnerable_code_not_in_execute_path"},
        {"vulnerability": {"name": "GHSA-35jh-r3h4-6jhm"}, "products": [{"@id": "pkg:npm/lodash@4.17.15"}],
         "status": "under_investigation"},
    )
    pollution, injection = finding(), finding("GHSA-35jh-r3h4-6jhm", aliases=("CVE-2021-23337",))
    other_pkg = finding(purl="pkg:npm/lodash-es@4.17.15", package="lodash-es")
    result = apply([pollution, injection, other_pkg], vex_documents=[vex], today=TODAY)
    assert [f for f, _ in result.suppressed] == [pollution]
    assert "not_affected (vulnerable_code_not_in_execute_path)" in result.suppressed[0][1]
    assert result.kept == [injection, other_pkg]


def test_vex_latest_statement_wins_and_version_must_match(tmp_path: Path):
    vex = openvex(
        tmp_path,
        {"vulnerability": {"name": "GHSA-p6mc-m468-83gw"}, "products": [{"@id": "pkg:npm/lodash@4.17.15"}],
         "status": "not_affected", "justification": "component_not_present", "timestamp": "2025-01-01T00:00:00Z"},
        {"vulnerability": {"name": "GHSA-p6mc-m468-83gw"}, "products": [{"@id": "pkg:npm/lodash@4.17.15"}],
         "status": "affected", "timestamp": "2025-02-01T00:00:00Z"},
        {"vulnerability": {"name": "CVE-2020-8203"},
         "products": [{"@id": "pkg:oci/api", "subcomponents": [{"@id": "pkg:npm/lodash@4.17.11"}]}],
         "status": "fixed"},
    )
    old = finding(purl="pkg:npm/lodash@4.17.11", installed_version="4.17.11")
    result = apply([finding(), old], vex_documents=[vex], today=TODAY)
    assert result.kept == [finding()]
    assert [f for f, _ in result.suppressed] == [old]


def test_invalid_vex_names_the_file(tmp_path: Path):
    vex = openvex(tmp_path, {"vulnerability": {"name": "CVE-1"}, "products": [{"@id": "pkg:npm/x"}],
                             "status": "not_affected"}, name="bad.openvex.json")
    with pytest.raises(SuppressionError, match=r"bad\.openvex\.json: statements\[0\]: not_affected needs"):
        apply([finding()], vex_documents=[vex])


def test_allowlist_expiry(tmp_path: Path):
    allow = tmp_path / "allowlist.yaml"
    allow.write_text(
        "- id: CVE-2020-8203\n  package: pkg:npm/lodash\n  reason: zipObjectDeep never sees user input\n"
        "  expires: 2025-06-01\n"
        "- id: GHSA-35jh-r3h4-6jhm\n  package: lodash\n  reason: templates are build-time only\n"
        "  expires: 2025-05-31\n"
        "- id: GHSA-29mw-wpgm-hmr9\n  package: express\n  reason: wrong package\n  expires: 2030-01-01\n"
    )
    pollution, injection = finding(), finding("GHSA-35jh-r3h4-6jhm", aliases=())
    redos = finding("GHSA-29mw-wpgm-hmr9", "MEDIUM", aliases=())
    result = apply([pollution, injection, redos], allowlist=allow, today=TODAY)
    assert [f for f, _ in result.suppressed] == [pollution]  # expires today: still valid
    assert "allowlisted until 2025-06-01: zipObjectDeep never sees user input" in result.suppressed[0][1]
    assert result.kept == [injection, redos]
    assert [e.id for e in result.expired_entries] == ["GHSA-35jh-r3h4-6jhm"]


@pytest.mark.parametrize(("text", "message"), [
    ("- id: CVE-2020-8203\n  reason: fine\n", "entry 1 (CVE-2020-8203): missing 'expires'"),
    ("- id: CVE-2020-8203\n  reason: fine\n  expires: soon\n", "not YYYY-MM-DD"),
    ("- id: CVE-2020-8203\n  reason: fine\n  expires: 2025-01-01\n  expiry: x\n", "unknown key"),
    ("id: CVE-2020-8203\n", "must be a YAML list"),
])
def test_invalid_allowlist_names_the_file(tmp_path: Path, text, message):
    path = tmp_path / "security-allowlist.yaml"
    path.write_text(text)
    with pytest.raises(SuppressionError, match=r"security-allowlist\.yaml") as err:
        load_allowlist(path)
    assert message in str(err.value)


def test_gate_threshold():
    findings = [finding(severity=s) for s in ("LOW", "MEDIUM", "HIGH", "CRITICAL", "UNKNOWN")]
    assert [f.severity for f in gate(findings)] == ["HIGH", "CRITICAL", "UNKNOWN"]
    assert [f.severity for f in gate(findings, "critical")] == ["CRITICAL"]
    assert len(gate(findings, "low")) == 5
    with pytest.raises(ValueError, match="not one of"):
        gate(findings, "severe")


def comp(name: str, *licenses: str) -> Component:
    return Component(name, "1.0.0", f"pkg:npm/{name}@1.0.0", "npm", licenses)


def test_license_policy():
    report = check_licenses([comp("a", "MIT"), comp("b", "GPL-3.0-only"), comp("c", "MIT OR GPL-3.0-only"),
                             comp("d", "MIT AND GPL-3.0"), comp("e"), comp("f", "SEE LICENSE IN LICENSE.md")])
    assert [f.component for f in report.allowed] == ["a", "c"]
    assert [f.component for f in report.denied] == ["b", "d"]
    assert "GPL-3.0-only is not on the allowlist" in report.denied[1].reason
    assert [f.component for f in report.unknown] == ["e", "f"]
    assert report.counts_by_license["MIT"] == 1 and not report.ok
    assert check_licenses([comp("a", "MIT")]).ok
    assert check_licenses([comp("b", "GPL-3.0-only")], allow=["MIT", "GPL-3.0-only"]).ok
    assert not check_licenses([comp("a", "MIT")], allow=["MIT"], deny=["MIT"]).ok
    assert check_licenses([comp("e")], unknown="warn").ok
    with pytest.raises(LicensePolicyError, match="not a single SPDX license id"):
        check_licenses([], allow=["MIT OR ISC"])
