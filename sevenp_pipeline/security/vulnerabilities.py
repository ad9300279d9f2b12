"""vulnerability_report (the image's SBOM) and dependency_report (the app's lockfile): both matched
against the OSV advisory database, suppressions applied, and gated at the app's severity threshold."""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
import datetime as dt
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from sevenp_pipeline.asset_helpers import failure, fingerprint, gated_result, md_table, stage_asset_args
from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.image.records import ImageRecord, latest_record
from sevenp_pipeline.models import Workspace
from sevenp_pipeline.resources.artifacts import ArtifactStore
from sevenp_pipeline.resources.git import GitClient
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.scanners.advisories import BUNDLED_DB, AdvisoryDatabase, AdvisoryDatabaseError
from sevenp_pipeline.scanners.lockfile import LockfileError, lockfile_components
from sevenp_pipeline.scanners.matcher import match
from sevenp_pipeline.scanners.models import SEVERITIES, Finding
from sevenp_pipeline.scanners.sarif import SarifValidationError, to_sarif, validate_sarif
from sevenp_pipeline.scanners.vex import SuppressionError, apply, gate, load_allowlist, load_openvex
from sevenp_pipeline.security.cache import FAMILY, TOOL_URI, ScanAssets, security_key, workspace_of
from sevenp_pipeline.security.sbom import sbom_components
from sevenp_pipeline.triggers.identity import ensure_run_identity
from sevenp_pipeline.verdict import Gates

NO_BLOCKING_VULNERABILITIES = "no_blocking_vulnerabilities"


@functools.lru_cache(maxsize=4)
def _load_advisories(path: Path, stamp: tuple[int, ...]) -> AdvisoryDatabase:
    """Both vulnerability scans of a run read the same database: load (and validate) it once.
    ``stamp`` changes when the folder is replaced or a record is added, removed or rewritten."""
    return AdvisoryDatabase.load(path)


def _tree_stamp(path: Path) -> tuple[int, ...]:
    try:
        return tuple(p.stat().st_mtime_ns for p in (path, *sorted(path.rglob("*"))))
    except OSError:
        return ()  # missing: load() reports it, naming the folder


def advisory_db(app: AppConfig, workspace_app_dir: Path) -> AdvisoryDatabase:
    sec = app.security
    path = Path(sec.advisories) if sec.advisories else BUNDLED_DB
    if not path.is_absolute():
        path = (workspace_app_dir / path).resolve()
    try:
        return _load_advisories(path, _tree_stamp(path))
    except AdvisoryDatabaseError as exc:
        raise failure(f"advisory database unusable, scan fails closed: {exc}") from exc


def _check_spec(app: AppConfig, name: str, partitions: dg.PartitionsDefinition) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(NO_BLOCKING_VULNERABILITIES, asset=security_key(app, name), blocking=True,
                             description=f"no unsuppressed vulnerability ≥ {app.security.severity_threshold}",
                             partitions_def=partitions)


def vulnerability_result(context: dg.AssetExecutionContext, app: AppConfig, findings: list[Finding], ws: Workspace,
                         db: AdvisoryDatabase, store: ArtifactStore, name: str, check: str,
                         artifact_uri: str) -> Iterator[Any]:
    """The scan's findings after suppressions, as SARIF, metadata and the gate's result (a blocking
    finding fails the step: asset_helpers.gated_result)."""
    sec = app.security
    app_dir = ws.app_dir
    try:
        vex_docs = [load_openvex(app_dir / p) for p in sec.vex]
        allow = load_allowlist(app_dir / sec.allowlist) if sec.allowlist else []
        result = apply(findings, vex_documents=vex_docs, allowlist=allow, today=dt.date.today())
    except SuppressionError as exc:
        raise failure(f"{name}: {exc}") from exc
    for entry in result.expired_entries:
        context.log.warning("allowlist entry %s expired on %s (%s): it no longer suppresses anything",
                            entry.id, entry.expires, entry.source)
    blocking = gate(result.kept, sec.severity_threshold)
    sarif = to_sarif(result.kept, tool_name="sevenp-osv-matcher", tool_version="1", information_uri=TOOL_URI,
                     artifact_uri=artifact_uri)
    try:
        validate_sarif(sarif)
    except SarifValidationError as exc:
        raise failure(f"{name}: produced SARIF is invalid: {exc}") from exc
    sarif_path = ws.root / "reports" / f"{name}.sarif"
    sarif_path.parent.mkdir(parents=True, exist_ok=True)
    sarif_path.write_text(json.dumps(sarif, indent=2))
    counts = {s.lower(): sum(1 for f in result.kept if f.severity.upper() == s) for s in SEVERITIES}
    counts["unknown"] = sum(1 for f in result.kept if f.severity.upper() not in SEVERITIES)
    rows = [[f.advisory_id, f.severity, f"{f.package}@{f.installed_version}", ", ".join(f.fixed_versions),
             f.summary] for f in sorted(result.kept, key=lambda f: f.severity)]
    yield from gated_result(
        context,
        data_version=fingerprint(sorted((f.advisory_id, f.purl) for f in result.kept),
                                 db.fingerprint, [str(s) for s in result.suppressed]),
        metadata={
            **{f"vulnerabilities_{k}": v for k, v in counts.items()},
            "vulnerabilities_total": len(result.kept),
            "suppressed": len(result.suppressed),
            "blocking": len(blocking),
            "advisory_records": db.count,
            "advisory_db_fingerprint": db.fingerprint[:16],
            "sarif": dg.MetadataValue.url(store.put_file(app=app.key, sha=context.partition_key,
                                                         name=f"reports/{name}.sarif", path=sarif_path)),
            "findings": dg.MetadataValue.md(md_table(["advisory", "severity", "package", "fixed in", "summary"],
                                                     rows)),
            "suppressions": dg.MetadataValue.md(md_table(
                ["advisory", "package", "reason"],
                [[f.advisory_id, f.package, why] for f, why in result.suppressed])),
        },
        checks=[dg.AssetCheckResult(
            check_name=check, passed=not blocking, severity=dg.AssetCheckSeverity.ERROR,
            description=(f"{len(blocking)} finding(s) at or above {sec.severity_threshold}: "
                         + ", ".join(sorted({f.advisory_id for f in blocking})[:10])) if blocking
            else f"no unsuppressed finding at or above {sec.severity_threshold}",
            metadata={"blocking": len(blocking), "threshold": sec.severity_threshold})],
    )


def build_vulnerability_report(app: AppConfig, partitions: dg.PartitionsDefinition, image: dg.AssetKey,
                               sbom: dg.AssetKey) -> ScanAssets:
    """``vulnerability_report``: the image's SBOM against the advisories."""
    check = _check_spec(app, "vulnerability_report", partitions)

    @dg.asset(**stage_asset_args(app, partitions, security_key(app, "vulnerability_report"), FAMILY,
                                 "The image SBOM matched against the OSV advisory database; SARIF 2.1.0.",
                                 kinds=frozenset({"osv"})), deps=[sbom], check_specs=[check])
    def vulnerability_report(context: dg.AssetExecutionContext, workspaces: Workspaces,
                             artifact_store: ArtifactStore, git: GitClient) -> Iterator[Any]:
        ensure_run_identity(context, app)
        ws = workspace_of(context, workspaces, git, app)
        db = advisory_db(app, ws.app_dir)
        img = latest_record(context, ImageRecord, image)
        findings = match(sbom_components(context, app), db, source="image")
        yield from vulnerability_result(context, app, findings, ws, db, artifact_store, "vulnerability_report",
                                    check.name, img.ref)

    return ScanAssets(assets=(vulnerability_report,), gates=Gates.of([check], FAMILY))


def build_dependency_report(app: AppConfig, partitions: dg.PartitionsDefinition, deps: dg.AssetKey) -> ScanAssets:
    """``dependency_report``: the app's lockfile, read after the install stage ``deps``, against the advisories."""
    check = _check_spec(app, "dependency_report", partitions)

    @dg.asset(**stage_asset_args(app, partitions, security_key(app, "dependency_report"), FAMILY,
                                 "The app's lockfile (npm, pnpm or yarn) matched against the OSV advisory "
                                 "database (the spec's OWASP dependency check).", kinds=frozenset({"osv"})),
              deps=[deps], check_specs=[check])
    def dependency_report(context: dg.AssetExecutionContext, workspaces: Workspaces,
                          artifact_store: ArtifactStore, git: GitClient) -> Iterator[Any]:
        ensure_run_identity(context, app)
        ws = workspace_of(context, workspaces, git, app)
        try:
            lockfile, components = lockfile_components(ws.app_dir)
        except LockfileError as exc:
            raise failure(f"dependency_report: {exc}: nothing to check, failing closed") from exc
        db = advisory_db(app, ws.app_dir)
        findings = match(components, db, source="lockfile")
        yield from vulnerability_result(context, app, findings, ws, db, artifact_store, "dependency_report",
                                    check.name, lockfile.name)

    return ScanAssets(assets=(dependency_report,), gates=Gates.of([check], FAMILY))
