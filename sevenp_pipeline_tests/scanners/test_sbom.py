from __future__ import annotations

import json
from pathlib import Path

import pytest

from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.scanners.advisories import BUNDLED_DB, AdvisoryDatabase
from sevenp_pipeline.scanners.licenses import check_licenses
from sevenp_pipeline.scanners.matcher import match
from sevenp_pipeline.scanners.sarif import to_sarif, validate_sarif
from sevenp_pipeline.scanners.sbom import SbomError, generate_sbom, read_cyclonedx
from sevenp_pipeline.scanners.vex import gate

pytestmark = pytest.mark.integration


def test_syft_sbom_of_real_npm_install_finds_lodash_advisories(lodash_project: Path, tmp_path: Path):
    result = generate_sbom(ProcessRunner(), f"dir:{lodash_project}", tmp_path / "sbom")
    spdx = json.loads(result.spdx_path.read_text())
    assert spdx["spdxVersion"] == "SPDX-2.3"
    assert any(p["name"] == "lodash" and p.get("versionInfo") == "4.17.15" for p in spdx["packages"])
    assert json.loads(result.cyclonedx_path.read_text())["specVersion"] == "1.6"
    assert result.components_by_type.get("npm", 0) >= 1 and result.component_count >= 1

    components = read_cyclonedx(result.cyclonedx_path)
    [lodash] = [c for c in components if c.name == "lodash"]
    assert (lodash.version, lodash.purl, lodash.licenses) == ("4.17.15", "pkg:npm/lodash@4.17.15", ("MIT",))
    assert lodash.locations and lodash.locations[0].endswith("package-lock.json")

    findings = match(components, AdvisoryDatabase.load(BUNDLED_DB), source=str(result.cyclonedx_path))
    ids = {f.advisory_id for f in findings}
    assert {"GHSA-p6mc-m468-83gw", "GHSA-35jh-r3h4-6jhm"} <= ids
    assert {f.advisory_id for f in gate(findings, "high")} == {"GHSA-p6mc-m468-83gw", "GHSA-35jh-r3h4-6jhm"}
    assert check_licenses(components).ok

    sarif = to_sarif(findings, tool_name="sevenp-osv-scan", tool_version="1", information_uri="https://osv.dev",
                     artifact_uri="package-lock.json")
    validate_sarif(sarif)
    assert len(sarif["runs"][0]["results"]) == len(findings)


def test_failing_syft_raises_with_the_output_tail(tmp_path: Path):
    with pytest.raises(SbomError) as err:
        generate_sbom(ProcessRunner(), f"dir:{tmp_path / 'does-not-exist'}", tmp_path / "out")
    assert "exited with code" in str(err.value) and "does-not-exist" in str(err.value)
    with pytest.raises(SbomError, match="must start with"):
        generate_sbom(ProcessRunner(), str(tmp_path), tmp_path / "out")


def test_read_cyclonedx_licenses_and_scoped_names(tmp_path: Path):
    doc = {"bomFormat": "CycloneDX", "specVersion": "1.6", "components": [
        {"type": "library", "group": "@babel", "name": "core", "version": "7.0.0",
         "purl": "pkg:npm/%40babel/core@7.0.0", "licenses": [{"expression": "MIT OR Apache-2.0"}]},
        {"type": "library", "name": "libc6", "version": "2.36-9", "purl": "pkg:deb/debian/libc6@2.36-9",
         "licenses": [{"license": {"id": "LGPL-2.1-only"}}, {"license": {"name": "GPL-2"}}]},
    ]}
    path = tmp_path / "bom.json"
    path.write_text(json.dumps(doc))
    babel, libc = read_cyclonedx(path)
    assert (babel.name, babel.type, babel.licenses) == ("@babel/core", "npm", ("MIT OR Apache-2.0",))
    assert (libc.type, libc.licenses) == ("deb", ("LGPL-2.1-only", "GPL-2"))
    path.write_text("{}")
    with pytest.raises(SbomError, match="not a CycloneDX"):
        read_cyclonedx(path)
