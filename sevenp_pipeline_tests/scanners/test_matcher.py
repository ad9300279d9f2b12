from __future__ import annotations

import json
from pathlib import Path

import pytest

from sevenp_pipeline.scanners.advisories import BUNDLED_DB, AdvisoryDatabase
from sevenp_pipeline.scanners.lockfile import LockfileError, components_from_lockfile
from sevenp_pipeline.scanners.matcher import match
from sevenp_pipeline.scanners.models import Component
from sevenp_pipeline.scanners.vex import gate
from sevenp_pipeline_tests.conftest import SAMPLE_APP
from sevenp_pipeline_tests.scanners.conftest import osv_record


def npm(name: str, version: str, *locations: str) -> Component:
    scope, _, bare = name.rpartition("/")
    purl = f"pkg:npm/{scope.replace('@', '%40') + '/' if scope else ''}{bare}@{version}"
    return Component(name, version, purl, "npm", locations=locations)


@pytest.fixture(scope="module")
def bundled() -> AdvisoryDatabase:
    return AdvisoryDatabase.load(BUNDLED_DB)


@pytest.mark.parametrize(("name", "version", "expected"), [
    ("lodash", "4.17.15", {"GHSA-p6mc-m468-83gw", "GHSA-35jh-r3h4-6jhm", "GHSA-29mw-wpgm-hmr9"}),
    ("lodash", "4.17.11", {"GHSA-p6mc-m468-83gw", "GHSA-35jh-r3h4-6jhm", "GHSA-29mw-wpgm-hmr9",
                           "GHSA-jf85-cpcp-j695"}),
    ("lodash", "3.6.0", {"GHSA-35jh-r3h4-6jhm", "GHSA-jf85-cpcp-j695"}),  # before 3.7.0 / 4.0.0 introductions
    ("lodash", "4.17.19", {"GHSA-35jh-r3h4-6jhm", "GHSA-29mw-wpgm-hmr9"}),  # fixed is exclusive
    ("lodash", "4.17.21", set()),
    ("minimist", "0.2.3", {"GHSA-xvch-5gv4-984h"}),
    ("minimist", "0.2.4", set()),  # the gap between the two affected intervals
    ("minimist", "1.2.5", {"GHSA-xvch-5gv4-984h"}),
    ("semver", "6.3.0", {"GHSA-c2qf-rxjj-qqgw"}),
    ("semver", "6.3.1", set()),
    ("semver", "7.5.1", {"GHSA-c2qf-rxjj-qqgw"}),
    ("express", "5.0.0-beta.1", {"GHSA-rv95-896h-c2vc"}),  # SemVer pre-release ordering
    ("express", "5.0.0", set()),
    ("express", "4.19.1", {"GHSA-rv95-896h-c2vc"}),
    ("path-to-regexp", "6.2.2", {"GHSA-9wv6-86v2-598j"}),
    ("path-to-regexp", "1.9.0", set()),
])
def test_real_version_ranges(bundled, name, version, expected):
    assert {f.advisory_id for f in match([npm(name, version)], bundled, source="t")} == expected


def test_scoped_names_last_affected_versions_lists_and_dedupe(write_db):
    db = AdvisoryDatabase.load(write_db(
        osv_record("GHSA-aaaa-0000-abcd", "@babel/traverse", [{"introduced": "0"}, {"last_affected": "7.23.1"}]),
        osv_record("GHSA-bbbb-0000-abcd", "left-pad", [{"introduced": "1.0.0"}],  # no fix: open-ended
                   affected=[{"package": {"ecosystem": "npm", "name": "left-pad"},
                              "versions": ["0.0.9"],
                              "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.0.0"}]}]}]),
    ))
    components = [
        npm("@babel/traverse", "7.23.1", "lock#node_modules/@babel/traverse"),
        npm("@babel/traverse", "7.23.1", "lock#node_modules/x/node_modules/@babel/traverse"),
        npm("@babel/traverse", "7.23.2", "lock#node_modules/y/node_modules/@babel/traverse"),
        npm("traverse", "7.0.0"),  # same bare name without the scope: no match
        npm("left-pad", "0.0.9"), npm("left-pad", "0.1.0"), npm("left-pad", "99.0.0"),
    ]
    found = match(components, db, source="lock")
    assert [(f.package, f.installed_version) for f in found] == [
        ("@babel/traverse", "7.23.1"), ("left-pad", "0.0.9"), ("left-pad", "99.0.0")]
    assert found[0].purl == "pkg:npm/%40babel/traverse@7.23.1"
    assert found[0].locations == (
        "lock#node_modules/@babel/traverse", "lock#node_modules/x/node_modules/@babel/traverse")
    assert all(f.source == "lock" for f in found)


def test_withdrawn_advisory_is_not_matched(write_db):
    gone = osv_record("GHSA-gone-0000-abcd", withdrawn="2024-06-01T00:00:00Z")
    db = AdvisoryDatabase.load(write_db(osv_record(), gone))
    assert db.count == 2
    assert [f.advisory_id for f in match([npm("left-pad", "1.0.0")], db, source="t")] == ["GHSA-test-0001-abcd"]


def test_unparsable_version_fails_closed(write_db):
    db = AdvisoryDatabase.load(write_db(osv_record()))
    [f] = match([npm("left-pad", "github:someone/left-pad#abc123")], db, source="t")
    assert "assumed affected" in f.summary
    assert match([npm("other", "github:someone/other#abc")], db, source="t") == []


def test_sample_app_lockfile_is_clean_at_high_threshold(bundled):
    components = components_from_lockfile(SAMPLE_APP / "package-lock.json")
    names = {c.name for c in components}
    assert len(components) > 400
    assert {"semver", "json5", "cross-spawn", "path-to-regexp", "express"} <= names  # matched, not absent
    assert {c.name: c.dev for c in components}["express"] is False
    assert {c.name: c.dev for c in components}["jest"] is True
    findings = match(components, bundled, source="package-lock.json")
    assert gate(findings, "high") == []


def test_lockfile_v1_nested_and_aliases(tmp_path: Path, bundled):
    lock = tmp_path / "package-lock.json"
    lock.write_text(json.dumps({"lockfileVersion": 1, "dependencies": {
        "lodash": {"version": "4.17.20"},
        "@types/node": {"version": "20.1.0", "dev": True},
        "mkdirp": {"version": "0.5.1", "dependencies": {"minimist": {"version": "0.0.8"}}},
        "old-lodash": {"version": "npm:lodash@4.17.4"},
    }}))
    comps = {c.locations[0].split("#")[1]: c for c in components_from_lockfile(lock)}
    assert comps["node_modules/mkdirp/node_modules/minimist"].version == "0.0.8"
    assert comps["node_modules/@types/node"].purl == "pkg:npm/%40types/node@20.1.0"
    assert comps["node_modules/@types/node"].dev is True
    assert comps["node_modules/old-lodash"].purl == "pkg:npm/lodash@4.17.4"
    ids = {(f.package, f.advisory_id) for f in match(comps.values(), bundled, source="lock")}
    assert ("minimist", "GHSA-xvch-5gv4-984h") in ids
    assert ("lodash", "GHSA-jf85-cpcp-j695") in ids  # from the alias, 4.17.4 < 4.17.12


def test_lockfile_errors_name_the_file(tmp_path: Path):
    bad = tmp_path / "package-lock.json"
    bad.write_text(json.dumps({"lockfileVersion": 7}))
    with pytest.raises(LockfileError, match=r"package-lock\.json: unsupported lockfileVersion 7"):
        components_from_lockfile(bad)
