from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessRunner
from sevenp_pipeline.scanners.models import Finding

# A fake AWS key pair in the shape detect-secrets looks for (not a real credential).
FAKE_AWS_KEY_ID = "AKIA" + "Z7Q2MXR4VNT8KLWP"
FAKE_AWS_SECRET = "q8Vd3kT7pL2xR9mN4bZ6" + "wC1yH5jF0sG3aE7uK2tD"
FAKE_CREDENTIALS = (
    "[default]\nregion = eu-west-1\n"
    f"aws_access_key_id = {FAKE_AWS_KEY_ID}\naws_secret_access_key = {FAKE_AWS_SECRET}\n"
)


def osv_record(
    adv_id: str = "GHSA-test-0001-abcd",
    name: str = "left-pad",
    events: list[dict[str, str]] | None = None,
    *,
    ecosystem: str = "npm",
    **extra: Any,
) -> dict[str, Any]:
    rec: dict[str, Any] = {
        "id": adv_id,
        "modified": "2024-05-01T00:00:00Z",
        "summary": f"Test advisory for {name}",
        "affected": [{
            "package": {"ecosystem": ecosystem, "name": name},
            "ranges": [{"type": "SEMVER", "events": events or [{"introduced": "0"}, {"fixed": "1.3.0"}]}],
        }],
        "database_specific": {"severity": "HIGH"},
    }
    rec.update(extra)
    return rec


@pytest.fixture
def write_db(tmp_path: Path) -> Callable[..., Path]:
    def write(*records: dict[str, Any], folder: str = "db") -> Path:
        root = tmp_path / folder
        for rec in records:
            eco = rec["affected"][0]["package"]["ecosystem"]
            (root / eco).mkdir(parents=True, exist_ok=True)
            (root / eco / f"{rec['id']}.json").write_text(json.dumps(rec))
        root.mkdir(exist_ok=True)
        return root

    return write


def finding(adv_id: str = "GHSA-p6mc-m468-83gw", severity: str = "HIGH", **kw: Any) -> Finding:
    base: dict[str, Any] = {
        "advisory_id": adv_id, "aliases": ("CVE-2020-8203",), "severity": severity,
        "summary": "Prototype Pollution in lodash", "purl": "pkg:npm/lodash@4.17.15", "package": "lodash",
        "installed_version": "4.17.15", "fixed_versions": ("4.17.19",), "source": "package-lock.json",
        "score": 7.4, "locations": ("package-lock.json#node_modules/lodash",),
        "url": f"https://osv.dev/vulnerability/{adv_id}",
    }
    base.update(kw)
    return Finding(**base)


@pytest.fixture(scope="session")
def lodash_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real ``npm install lodash@4.17.15`` (from the npm registry), shared by the SBOM tests."""
    # npm is a hard requirement of the pipeline (make system-deps installs it): no skip.
    assert shutil.which("npm"), "npm is not installed: run `make system-deps`"
    project = tmp_path_factory.mktemp("lodash-project")
    (project / "package.json").write_text(json.dumps({"name": "demo", "version": "1.0.0", "license": "MIT"}))
    ProcessRunner().check(ExecuteRequest(
        argv=["npm", "install", "lodash@4.17.15", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=project, label="npm install", timeout_seconds=300,
    ))
    return project
