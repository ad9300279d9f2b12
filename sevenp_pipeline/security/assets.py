"""Supply-chain assets of one commit: SBOM, vulnerability / dependency / license / secret scans,
and signed provenance, one module each. Each scan is gated by a blocking asset check, registered
in the app's gates; the image is only promoted (tagged) when all of them pass."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.family import Family
from sevenp_pipeline.security.licenses import build_license_report
from sevenp_pipeline.security.provenance import build_provenance
from sevenp_pipeline.security.sbom import build_sbom
from sevenp_pipeline.security.secrets import build_secret_scan
from sevenp_pipeline.security.vulnerabilities import build_dependency_report, build_vulnerability_report
from sevenp_pipeline.verdict import Gates


@dataclass(frozen=True)
class SecurityAssets:
    """The security family of one app: the SBOM, the assets promotion waits for, and their gates."""

    sbom: dg.AssetsDefinition
    scans: tuple[dg.AssetsDefinition, ...]  # the four gated scans and the signed provenance
    gates: Gates

    @property
    def assets(self) -> list[dg.AssetsDefinition]:
        return [self.sbom, *self.scans]

    @property
    def gate_keys(self) -> list[dg.AssetKey]:
        return [key for scan in self.scans for key in scan.keys]


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
    (sbom,) = build_sbom(app, partitions, image).assets
    parts = [build_vulnerability_report(app, partitions, image, sbom.key),
             build_dependency_report(app, partitions, deps),
             build_license_report(app, partitions, sbom.key),
             build_secret_scan(app, partitions, checkout, image),
             build_provenance(app, partitions, image, sbom.key)]
    gates = Gates()
    for part in parts:
        gates += part.gates
    return SecurityAssets(sbom=sbom, scans=tuple(a for part in parts for a in part.assets), gates=gates)


def build_security_family(app: AppConfig, partitions: dg.PartitionsDefinition, image: dg.AssetKey,
                          checkout: dg.AssetKey, deps: dg.AssetKey) -> Family:
    """The security family with its gates; promotion waits for its scans and the provenance."""
    security = build_security_assets(app, partitions, image, checkout, deps)
    return Family(dg.Definitions(assets=security.assets), gates=security.gates, outputs=tuple(security.gate_keys))
