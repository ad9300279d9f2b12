"""Supply-chain assets of one commit: SBOM, vulnerability / dependency / license / secret scans,
and signed provenance. Each scan is gated by a blocking asset check; the image is only promoted
(tagged) when all of them pass."""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
import datetime as dt
import functools
import importlib.metadata
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from sevenp_pipeline.asset_helpers import failure, fingerprint, md_table, stage_asset_args
from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.image.records import ImageRecord, SbomRecord, latest_record
from sevenp_pipeline.models import Workspace
from sevenp_pipeline.resources.artifacts import ArtifactStore, sha256_file
from sevenp_pipeline.resources.builders.role import ImageBuilder, ImagePushError
from sevenp_pipeline.resources.launch import LaunchOptions
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.registries.role import Registry
from sevenp_pipeline.resources.registries.transport import SkopeoTransport
from sevenp_pipeline.resources.stage_cache import Manifest, StageResultCache
from sevenp_pipeline.resources.tool_answers import tool_answer
from sevenp_pipeline.resources.workspaces import Workspaces, read_inputs
from sevenp_pipeline.scanners import provenance as prov
from sevenp_pipeline.scanners.advisories import BUNDLED_DB, AdvisoryDatabase, AdvisoryDatabaseError
from sevenp_pipeline.scanners.licenses import DEFAULT_ALLOWED_LICENSES, LicensePolicyError, check_licenses
from sevenp_pipeline.scanners.lockfile import LockfileError, lockfile_components
from sevenp_pipeline.scanners.matcher import match
from sevenp_pipeline.scanners.models import SEVERITIES, Component, Finding
from sevenp_pipeline.scanners.sarif import SarifValidationError, to_sarif, validate_sarif
from sevenp_pipeline.scanners.sbom import SbomError, generate_sbom, read_cyclonedx, syft_binary
from sevenp_pipeline.scanners.secrets_scan import ImageScanError, scan_image_layers, scan_tree
from sevenp_pipeline.scanners.signing import SigningKey
from sevenp_pipeline.scanners.vex import SuppressionError, apply, gate, load_allowlist, load_openvex
from sevenp_pipeline.stages import checked_out
from sevenp_pipeline.stages.cache import decode_check, decode_metadata, load_result, mark_restored, save_result

TOOL_URI = "https://sevenp.example/sevenp_pipeline"
# Bumped when what the SBOM or secret-scan assets record changes: part of their stage-cache keys.
SCAN_CACHE_VERSION = "1"


def cached_result(context: dg.AssetExecutionContext, cache: StageResultCache, launch: LaunchOptions, *,
                  app: str, name: str, key: str,
                  checks: Sequence[str] = ()) -> tuple[Manifest, dict[str, Path]] | None:
    """A stored result of ``name`` for input ``key`` with its verified files, or None (the scan runs)."""
    if not launch.use_stage_cache:
        context.log.info("%s: use_stage_cache is off for this run: running it", name)
        return None
    return load_result(context, cache, app=app, name=name, key=key, checks=checks)


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


@dataclass(frozen=True)
class SecurityAssets:
    """The security family of one app: the SBOM and the assets promotion waits for."""

    sbom: dg.AssetsDefinition
    gates: tuple[dg.AssetsDefinition, ...]  # the four gated scans and the signed provenance

    @property
    def assets(self) -> list[dg.AssetsDefinition]:
        return [self.sbom, *self.gates]

    @property
    def gate_keys(self) -> list[dg.AssetKey]:
        return [key for gate in self.gates for key in gate.keys]


def build_security_assets(
    app: AppConfig,
    partitions: dg.PartitionsDefinition,
    image: dg.AssetKey,
    checkout: dg.AssetKey,
    deps: dg.AssetKey,
) -> SecurityAssets:
    """sbom → vulnerability_report, license_report; dependency_report; secret_scan; provenance.

    Args:
        image: the container_image asset the scans read (its :class:`ImageRecord`).
        checkout: the source checkout (secret scan of the tree).
        deps: the install stage: dependency_report reads the app's lockfile after it.
    """
    sec = app.security

    def key(name: str) -> dg.AssetKey:
        return dg.AssetKey([app.key, name])

    def workspace_of(workspaces: Workspaces, sha: str) -> Workspace:
        return checked_out(workspaces, app, sha, stage="security scan")

    def advisory_db(workspace_app_dir: Path) -> AdvisoryDatabase:
        path = Path(sec.advisories) if sec.advisories else BUNDLED_DB
        if not path.is_absolute():
            path = (workspace_app_dir / path).resolve()
        try:
            return _load_advisories(path, _tree_stamp(path))
        except AdvisoryDatabaseError as exc:
            raise failure(f"advisory database unusable, scan fails closed: {exc}") from exc

    def vulnerability_result(context, findings: list[Finding], ws, db: AdvisoryDatabase,
                             store: ArtifactStore, name: str, check: str, artifact_uri: str) -> dg.MaterializeResult:
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
        return dg.MaterializeResult(
            data_version=dg.DataVersion(fingerprint(sorted((f.advisory_id, f.purl) for f in result.kept),
                                                    db.fingerprint, [str(s) for s in result.suppressed])),
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
            check_results=[dg.AssetCheckResult(
                check_name=check, passed=not blocking, severity=dg.AssetCheckSeverity.ERROR,
                description=(f"{len(blocking)} finding(s) at or above {sec.severity_threshold}: "
                             + ", ".join(sorted({f.advisory_id for f in blocking})[:10])) if blocking
                else f"no unsuppressed finding at or above {sec.severity_threshold}",
                metadata={"blocking": len(blocking), "threshold": sec.severity_threshold})],
        )

    vuln_check = dg.AssetCheckSpec("no_blocking_vulnerabilities", asset=key("vulnerability_report"), blocking=True,
                                   description=f"no unsuppressed vulnerability ≥ {sec.severity_threshold}")
    dep_check = dg.AssetCheckSpec("no_blocking_vulnerabilities", asset=key("dependency_report"), blocking=True,
                                  description=f"no unsuppressed vulnerability ≥ {sec.severity_threshold}")
    license_check = dg.AssetCheckSpec("licenses_allowed", asset=key("license_report"), blocking=True,
                                      description="every license is on the allowlist")
    secret_check = dg.AssetCheckSpec("no_secrets", asset=key("secret_scan"), blocking=True,
                                     description="no committed secret in the source tree or the image")

    @dg.asset(**stage_asset_args(app, partitions, key("sbom"), "security",
                                 "SBOM of the pushed image by syft: SPDX 2.3 and CycloneDX 1.6 JSON.",
                                 kinds=frozenset({"syft"})), deps=[image])
    def sbom(context: dg.AssetExecutionContext, process_runner: ProcessRunner, workspaces: Workspaces,
             artifact_store: ArtifactStore, registry: Registry, stage_cache: StageResultCache,
             launch_options: LaunchOptions) -> dg.MaterializeResult:
        ws = workspace_of(workspaces, context.partition_key)
        img = latest_record(context, ImageRecord, image)
        # The SBOM describes the image: the same digest, scanned by the same syft, gives the same SBOM.
        cache_key = fingerprint(SCAN_CACHE_VERSION, "sbom", img.digest,
                                tool_answer(process_runner, [syft_binary(), "version"], Path("/")))
        cached = cached_result(context, stage_cache, launch_options, app=app.key, name="sbom", key=cache_key)
        if cached is not None:
            return restored_sbom(context, ws, artifact_store, stage_cache, img, *cached)
        registry.prepare(log=context.log.info)
        try:
            result = generate_sbom(process_runner, f"registry:{img.ref}", ws.root / "sbom", env=registry.client_env())
        except SbomError as exc:
            raise failure(f"sbom: {exc}") from exc
        uris = {p.name: artifact_store.put_file(app=app.key, sha=context.partition_key, name=f"sbom/{p.name}", path=p)
                for p in (result.spdx_path, result.cyclonedx_path)}
        record = SbomRecord(
            image_digest=img.digest, component_count=result.component_count,
            spdx_path=str(result.spdx_path), spdx_uri=uris[result.spdx_path.name],
            spdx_sha256=sha256_file(result.spdx_path),
            cyclonedx_path=str(result.cyclonedx_path), cyclonedx_uri=uris[result.cyclonedx_path.name],
            cyclonedx_sha256=sha256_file(result.cyclonedx_path),
        )
        metadata = {
            **record.to_metadata(),
            **{f"components_{k}": v for k, v in result.components_by_type.items()},
            "image": img.ref,
            "syft_seconds": round(result.duration_seconds, 2),
        }
        data_version = fingerprint(img.digest, "syft")
        # The cache's blobs are hard links to the stored files (replaced only by a rename), never to the
        # workspace's, which syft writes in place on the next run of this commit.
        stored = {p.name: artifact_store.local_path(app=app.key, sha=context.partition_key, name=f"sbom/{p.name}")
                  for p in (result.spdx_path, result.cyclonedx_path)}
        if all(stored.values()):
            save_result(context, stage_cache, app=app.key, name="sbom", key=cache_key, data_version=data_version,
                        metadata=metadata, files={name: (path, uris[name]) for name, path in stored.items()})
        else:
            context.log.warning("sbom: not stored in the stage cache: the artifact store has no local copy")
        return dg.MaterializeResult(data_version=dg.DataVersion(data_version), metadata=metadata)

    def restored_sbom(context: dg.AssetExecutionContext, ws: Workspace, store: ArtifactStore,
                      stage_cache: StageResultCache, img: ImageRecord, manifest: Manifest,
                      blobs: dict[str, Path]) -> dg.MaterializeResult:
        """The SBOM of the same image from an earlier commit: its documents copied into this commit's
        workspace and artifacts, where the scans downstream read them."""
        out = ws.root / "sbom"
        out.mkdir(parents=True, exist_ok=True)
        uris = {}
        for cached in manifest.files:
            dest = out / Path(cached.name).name
            shutil.copyfile(blobs[cached.name], dest)
            uris[cached.uri] = store.put_file(app=app.key, sha=context.partition_key, name=f"sbom/{dest.name}",
                                              path=dest)
        metadata = decode_metadata(manifest.metadata, uris)
        for field_name in ("spdx_path", "cyclonedx_path"):
            metadata[field_name] = str(out / Path(str(metadata[field_name])).name)
        return dg.MaterializeResult(
            data_version=dg.DataVersion(manifest.data_version),
            metadata={**metadata, "image": img.ref, **mark_restored(context, stage_cache, manifest, name="sbom")})

    def sbom_components(context: dg.AssetExecutionContext) -> list[Component]:
        bom = latest_record(context, SbomRecord, key("sbom"))
        path = Path(bom.cyclonedx_path)
        if not path.exists() or sha256_file(path) != bom.cyclonedx_sha256:
            raise failure(f"{context.asset_key.to_user_string()}: the SBOM {path} is missing or changed since "
                          f"{app.key}/sbom materialized: materialize sbom again")
        return read_cyclonedx(path)

    @dg.asset(**stage_asset_args(app, partitions, key("vulnerability_report"), "security",
                                 "The image SBOM matched against the OSV advisory database; SARIF 2.1.0.",
                                 kinds=frozenset({"osv"})), deps=[sbom], check_specs=[vuln_check])
    def vulnerability_report(context: dg.AssetExecutionContext, workspaces: Workspaces,
                             artifact_store: ArtifactStore) -> dg.MaterializeResult:
        ws = workspace_of(workspaces, context.partition_key)
        db = advisory_db(ws.app_dir)
        img = latest_record(context, ImageRecord, image)
        findings = match(sbom_components(context), db, source="image")
        return vulnerability_result(context, findings, ws, db, artifact_store, "vulnerability_report",
                                    vuln_check.name, img.ref)

    @dg.asset(**stage_asset_args(app, partitions, key("dependency_report"), "security",
                                 "The app's lockfile (npm, pnpm or yarn) matched against the OSV advisory "
                                 "database (the spec's OWASP dependency check).", kinds=frozenset({"osv"})),
              deps=[deps], check_specs=[dep_check])
    def dependency_report(context: dg.AssetExecutionContext, workspaces: Workspaces,
                          artifact_store: ArtifactStore) -> dg.MaterializeResult:
        ws = workspace_of(workspaces, context.partition_key)
        try:
            lockfile, components = lockfile_components(ws.app_dir)
        except LockfileError as exc:
            raise failure(f"dependency_report: {exc}: nothing to check, failing closed") from exc
        db = advisory_db(ws.app_dir)
        findings = match(components, db, source="lockfile")
        return vulnerability_result(context, findings, ws, db, artifact_store, "dependency_report",
                                    dep_check.name, lockfile.name)

    @dg.asset(**stage_asset_args(app, partitions, key("license_report"), "security",
                                 "Licenses of the image's components against the allowlist (license-checker).",
                                 kinds=frozenset({"spdx"})), deps=[sbom], check_specs=[license_check])
    def license_report(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        policy = sec.licenses
        roots = tuple(p.rstrip("/") + "/" for p in policy.paths)
        everything = sbom_components(context)
        components = [c for c in everything if any(loc.startswith(roots) for loc in c.locations)]
        if not components:
            raise failure(f"license_report: none of the image's {len(everything)} components lies under "
                          f"{', '.join(policy.paths)} (security.licenses.paths): nothing checked, failing closed")
        try:
            report = check_licenses(components, allow=policy.allow or DEFAULT_ALLOWED_LICENSES, deny=policy.deny,
                                    unknown=policy.unknown)
        except LicensePolicyError as exc:
            raise failure(f"license_report: security.licenses: {exc}") from exc
        problems = [*report.denied, *(report.unknown if policy.unknown == "fail" else ())]
        return dg.MaterializeResult(
            metadata={
                "checked": len(components), "outside_paths": len(everything) - len(components),
                "allowed": len(report.allowed), "denied": len(report.denied), "unknown": len(report.unknown),
                "by_license": dg.MetadataValue.md(md_table(["license", "components"], sorted(
                    ([k, v] for k, v in report.counts_by_license.items()), key=lambda r: -r[1]))),
                "problems": dg.MetadataValue.md(md_table(["component", "version", "license", "status", "why"], [
                    [f.component, f.version, f.expression, f.status, f.reason] for f in problems])),
            },
            check_results=[dg.AssetCheckResult(
                check_name=license_check.name, passed=report.ok, severity=dg.AssetCheckSeverity.ERROR,
                description=f"{len(report.denied)} denied, {len(report.unknown)} unknown "
                            f"(unknown policy: {policy.unknown})")],
        )

    @dg.asset(**stage_asset_args(app, partitions, key("secret_scan"), "security",
                                 "Committed secrets in the source tree and the image layers (detect-secrets).",
                                 kinds=frozenset({"detect-secrets"})), deps=[checkout, image],
              check_specs=[secret_check])
    def secret_scan(context: dg.AssetExecutionContext, workspaces: Workspaces,
                    image_builder: ImageBuilder, registry: Registry, stage_cache: StageResultCache,
                    launch_options: LaunchOptions) -> dg.MaterializeResult:
        ws = workspace_of(workspaces, context.partition_key)
        img = latest_record(context, ImageRecord, image)
        # What it scans: the commit's tree (the checkout) and the image's layers.
        tree = read_inputs(ws).get("tree")
        cache_key = fingerprint(SCAN_CACHE_VERSION, "secret_scan", img.digest, tree, sec.secrets.image_paths,
                                importlib.metadata.version("detect-secrets"))
        cached = cached_result(context, stage_cache, launch_options, app=app.key, name="secret_scan",
                               key=cache_key, checks=[secret_check.name]) if tree else None
        if cached is not None:
            manifest = cached[0]
            note = f"restored from {manifest.commit[:12]}"
            return dg.MaterializeResult(
                data_version=dg.DataVersion(manifest.data_version),
                metadata={**decode_metadata(manifest.metadata, {}),
                          **mark_restored(context, stage_cache, manifest, name="secret_scan")},
                check_results=[decode_check(c, note=note) for c in manifest.checks])
        registry.prepare(log=context.log.info)
        layout = ws.root / "image-oci"
        shutil.rmtree(layout, ignore_errors=True)
        try:
            SkopeoTransport(image_builder).copy(source=f"docker://{img.ref}", dest=f"oci:{layout}:scan", log=None,
                                                label="export image for the secret scan")
            in_image = scan_image_layers(layout, paths=sec.secrets.image_paths)
        except (ImagePushError, ImageScanError) as exc:
            raise failure(f"secret_scan: {exc}") from exc
        finally:
            shutil.rmtree(layout, ignore_errors=True)
        in_source = scan_tree(ws.app_dir)
        rows = [["source", f.file, f.line, f.type] for f in in_source]
        rows += [["image", f.file, f.line, f.type] for f in in_image]
        found = len(rows)
        metadata = {"secrets_in_source": len(in_source), "secrets_in_image": len(in_image),
                    "image_paths": dg.MetadataValue.json(sec.secrets.image_paths),
                    "findings": dg.MetadataValue.md(md_table(["where", "file", "line", "type"], rows))}
        checks = [dg.AssetCheckResult(
            check_name=secret_check.name, passed=found == 0, severity=dg.AssetCheckSeverity.ERROR,
            description=f"{found} likely secret(s) found" if found else "no secrets found",
            metadata={"found": found})]
        data_version = fingerprint(cache_key, found)
        if tree:  # only a clean result is stored: a finding is looked at again on the next commit
            save_result(context, stage_cache, app=app.key, name="secret_scan", key=cache_key,
                        data_version=data_version, metadata=metadata, checks=checks)
        return dg.MaterializeResult(data_version=dg.DataVersion(data_version), metadata=metadata,
                                    check_results=checks)

    @dg.asset(**stage_asset_args(app, partitions, key("provenance"), "security",
                                 "SLSA v1 provenance of the image (in-toto Statement v1), DSSE-signed.",
                                 kinds=frozenset({"in-toto"})), deps=[image, sbom])
    def provenance(context: dg.AssetExecutionContext, workspaces: Workspaces, artifact_store: ArtifactStore,
                   signing_key: SigningKey) -> dg.MaterializeResult:
        sha = context.partition_key
        ws = workspace_of(workspaces, sha)
        img = latest_record(context, ImageRecord, image)
        bom = latest_record(context, SbomRecord, key("sbom"))
        run = context.instance.get_run_record_by_id(context.run.run_id)
        started = dt.datetime.fromtimestamp(run.start_time or dt.datetime.now().timestamp(), tz=dt.timezone.utc)
        try:
            statement = prov.build_statement(
                subject_name=img.repository, subject_digest=img.digest, repository_uri=app.repository.url,
                commit_sha=sha, builder_id=app.provenance.builder_id,
                build_type="https://sevenp.example/sevenp_pipeline/container-image/v1",
                external_parameters={"app": app.name, "dockerfile": app.image.dockerfile if app.image else "",
                                     "branch": context.run.tags.get("sevenp/branch", "")},
                internal_parameters={"input_hash": img.input_hash, "base_image": img.base_image,
                                     "registry": img.registry},
                byproducts=[prov.resource_descriptor(Path(bom.cyclonedx_path).name, bom.cyclonedx_sha256,
                                                     media_type="application/vnd.cyclonedx+json")],
                started_at=started, finished_at=dt.datetime.now(tz=dt.timezone.utc), invocation_id=context.run.run_id,
            )
            envelope = signing_key.sign(statement)
            public = signing_key.public_pem()
            prov.verify(envelope, public_key_pem=public, expected_subject_digest=img.digest, expected_commit=sha)
        except prov.ProvenanceError as exc:
            raise failure(f"provenance: {exc}") from exc
        path = ws.root / "provenance.intoto.json"
        path.write_text(json.dumps(envelope, indent=2, sort_keys=True))
        keyid = prov.keyid_of(public)
        return dg.MaterializeResult(
            data_version=dg.DataVersion(fingerprint(img.digest, sha, bom.cyclonedx_sha256, keyid)),
            metadata={"subject": img.ref, "keyid": keyid,
                      "predicate_type": statement["predicateType"],
                      "envelope": dg.MetadataValue.url(artifact_store.put_file(
                          app=app.key, sha=sha, name="provenance.intoto.json", path=path))},
        )

    return SecurityAssets(sbom=sbom, gates=(vulnerability_report, dependency_report, license_report, secret_scan,
                                            provenance))

