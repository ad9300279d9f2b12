from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from sevenp_pipeline.scanners.advisories import (
    BUNDLED_DB,
    AdvisoryDatabase,
    AdvisoryDatabaseError,
    main,
    update_from_osv_export,
)
from sevenp_pipeline_tests.scanners.conftest import osv_record


def test_bundled_database_loads_with_counts_fingerprint_and_dates():
    db = AdvisoryDatabase.load(BUNDLED_DB)
    assert db.count >= 10
    assert db.ecosystems == {"npm": db.count}
    assert len(db.fingerprint) == 64 and db.fingerprint == AdvisoryDatabase.load(BUNDLED_DB).fingerprint
    assert db.newest_modified.year >= 2024
    by_id = {a.id: a for a in db.advisories}
    lodash = by_id["GHSA-p6mc-m468-83gw"]
    assert lodash.aliases == ("CVE-2020-8203",) and lodash.severity == "HIGH" and lodash.score == 7.4
    assert by_id["GHSA-29mw-wpgm-hmr9"].severity == "MEDIUM"  # GHSA "MODERATE" normalised
    assert {a.id for a in db.for_package("npm", "lodash")} >= {"GHSA-p6mc-m468-83gw", "GHSA-35jh-r3h4-6jhm"}


def test_severity_from_cvss_vector_when_no_ghsa_rating(write_db):
    rec = osv_record(database_specific={},
                     severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}])
    low = osv_record("GHSA-test-0002-abcd", database_specific={},
                     severity=[{"type": "CVSS_V3", "score": "CVSS:3.1/AV:L/AC:H/PR:H/UI:R/S:U/C:L/I:N/A:N"}])
    db = AdvisoryDatabase.load(write_db(rec, low))
    scores = {a.id: (a.severity, a.score) for a in db.advisories}
    assert scores["GHSA-test-0001-abcd"] == ("CRITICAL", 9.8)
    assert scores["GHSA-test-0002-abcd"][0] == "LOW" and scores["GHSA-test-0002-abcd"][1] < 4.0


def test_missing_and_empty_database_fail_closed(tmp_path: Path):
    with pytest.raises(AdvisoryDatabaseError, match="does not exist"):
        AdvisoryDatabase.load(tmp_path / "nope")
    (tmp_path / "empty" / "npm").mkdir(parents=True)
    with pytest.raises(AdvisoryDatabaseError, match=r"empty.*is empty"):
        AdvisoryDatabase.load(tmp_path / "empty")


@pytest.mark.parametrize(("breakage", "message"), [
    (lambda r: "{not json", "invalid JSON"),
    (lambda r: {**r, "id": ""}, "missing required field 'id'"),
    (lambda r: {k: v for k, v in r.items() if k != "affected"}, "'affected'"),
    (lambda r: {**r, "affected": [{"package": {"ecosystem": "npm"}, "versions": ["1.0.0"]}]},
     r"affected\[0\]\.package\.name"),
    (lambda r: {**r, "affected": [{"package": {"ecosystem": "npm", "name": "x"}}]}, "neither 'ranges' nor 'versions'"),
    (lambda r: {**r, "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:X"}]}, "invalid CVSS_V3 vector"),
])
def test_corrupt_record_names_the_file(write_db, breakage, message):
    root = write_db(osv_record(), osv_record("GHSA-test-0009-abcd"))
    broken = breakage(osv_record("GHSA-test-0009-abcd"))
    (root / "npm" / "GHSA-test-0009-abcd.json").write_text(broken if isinstance(broken, str) else json.dumps(broken))
    with pytest.raises(AdvisoryDatabaseError, match=message) as err:
        AdvisoryDatabase.load(root)
    assert "GHSA-test-0009-abcd.json" in str(err.value)


def _export_zip(path: Path, *records: dict | str) -> Path:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, rec in enumerate(records):
            name = f"rec-{i}.json" if isinstance(rec, str) else f"{rec['id']}.json"
            zf.writestr(name, rec if isinstance(rec, str) else json.dumps(rec))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return path


def test_update_from_osv_export_zip_filters_ecosystems_and_swaps(tmp_path: Path, write_db):
    dest = write_db(osv_record("GHSA-old0-0000-abcd"), folder="advisories")
    before = AdvisoryDatabase.load(dest).fingerprint
    export = _export_zip(tmp_path / "npm" / "all.zip", osv_record("GHSA-new1-0000-abcd"),
                         osv_record("GHSA-new2-0000-abcd", "@babel/traverse"),
                         osv_record("PYSEC-2024-1", "requests", ecosystem="PyPI"))
    db = update_from_osv_export(export, dest, ecosystems=("npm",))
    assert {a.id for a in db.advisories} == {"GHSA-new1-0000-abcd", "GHSA-new2-0000-abcd"}
    assert sorted(p.name for p in (dest / "npm").iterdir()) == ["GHSA-new1-0000-abcd.json", "GHSA-new2-0000-abcd.json"]
    assert db.fingerprint != before
    assert not list(tmp_path.glob(".advisories*")), "temp/old folders are cleaned up"
    # the OSV bucket layout: <source>/<ecosystem>/all.zip
    assert update_from_osv_export(tmp_path, dest, ecosystems=("npm",)).fingerprint == db.fingerprint


@pytest.mark.parametrize("bad", ["corrupt-record", "not-a-zip", "no-npm-records"])
def test_failed_update_leaves_the_old_database_intact(tmp_path: Path, write_db, bad):
    dest = write_db(osv_record("GHSA-old0-0000-abcd"), folder="advisories")
    before = AdvisoryDatabase.load(dest).fingerprint
    source = tmp_path / "export.zip"
    if bad == "corrupt-record":
        _export_zip(source, osv_record("GHSA-new1-0000-abcd"), '{"id": "GHSA-bad0-0000-abcd", "affected": [')
    elif bad == "not-a-zip":
        source.write_bytes(b"PK\x03\x04 truncated download")
    else:
        _export_zip(source, osv_record("PYSEC-2024-1", "requests", ecosystem="PyPI"))
    with pytest.raises(AdvisoryDatabaseError) as err:
        update_from_osv_export(source, dest)
    assert "export.zip" in str(err.value) or "empty" in str(err.value)
    assert AdvisoryDatabase.load(dest).fingerprint == before
    assert [p.name for p in (dest / "npm").iterdir()] == ["GHSA-old0-0000-abcd.json"]
    assert not list(tmp_path.glob(".advisories*"))


def test_cli_check_and_update(tmp_path: Path, write_db, capsys):
    assert main(["check", str(BUNDLED_DB)]) == 0
    assert json.loads(capsys.readouterr().out)["ecosystems"] == {"npm": AdvisoryDatabase.load(BUNDLED_DB).count}
    assert main(["check", str(tmp_path / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().err
    export = _export_zip(tmp_path / "all.zip", osv_record())
    assert main(["update", "--source", str(export), "--dest", str(tmp_path / "db")]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 1
    assert main(["update", "--source", "http://example.invalid/all.zip", "--dest", str(tmp_path / "db")]) == 1
    assert "only https" in capsys.readouterr().err
