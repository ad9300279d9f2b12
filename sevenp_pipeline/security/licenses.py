"""license_report: the licenses of the image's components against the app's allow/deny lists."""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
from collections.abc import Iterator
from typing import Any

import dagster as dg

from sevenp_pipeline.asset_helpers import failure, gated_result, md_table, stage_asset_args
from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.scanners.licenses import DEFAULT_ALLOWED_LICENSES, LicensePolicyError, check_licenses
from sevenp_pipeline.security.cache import FAMILY, ScanAssets, security_key
from sevenp_pipeline.security.sbom import sbom_components
from sevenp_pipeline.triggers.identity import ensure_run_identity
from sevenp_pipeline.verdict import Gates


def build_license_report(app: AppConfig, partitions: dg.PartitionsDefinition, sbom: dg.AssetKey) -> ScanAssets:
    """``license_report`` of the components ``sbom`` lists under ``security.licenses.paths``."""
    key = security_key(app, "license_report")
    check = dg.AssetCheckSpec("licenses_allowed", asset=key, blocking=True,
                              description="every license is on the allowlist", partitions_def=partitions)

    @dg.asset(**stage_asset_args(app, partitions, key, FAMILY,
                                 "Licenses of the image's components against the allowlist (license-checker).",
                                 kinds=frozenset({"spdx"})), deps=[sbom], check_specs=[check])
    def license_report(context: dg.AssetExecutionContext) -> Iterator[Any]:
        ensure_run_identity(context, app)
        policy = app.security.licenses
        roots = tuple(p.rstrip("/") + "/" for p in policy.paths)
        everything = sbom_components(context, app)
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
        yield from gated_result(
            context,
            metadata={
                "checked": len(components), "outside_paths": len(everything) - len(components),
                "allowed": len(report.allowed), "denied": len(report.denied), "unknown": len(report.unknown),
                "by_license": dg.MetadataValue.md(md_table(["license", "components"], sorted(
                    ([k, v] for k, v in report.counts_by_license.items()), key=lambda r: -r[1]))),
                "problems": dg.MetadataValue.md(md_table(["component", "version", "license", "status", "why"], [
                    [f.component, f.version, f.expression, f.status, f.reason] for f in problems])),
            },
            checks=[dg.AssetCheckResult(
                check_name=check.name, passed=report.ok, severity=dg.AssetCheckSeverity.ERROR,
                description=f"{len(report.denied)} denied, {len(report.unknown)} unknown "
                            f"(unknown policy: {policy.unknown})")],
        )

    return ScanAssets(assets=(license_report,), gates=Gates.of([check], FAMILY))
