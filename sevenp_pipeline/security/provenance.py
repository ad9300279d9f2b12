"""provenance: the image's SLSA v1 provenance (an in-toto Statement v1), DSSE-signed and verified."""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
import datetime as dt
import json
from pathlib import Path

import dagster as dg

from sevenp_pipeline.asset_helpers import failure, fingerprint, stage_asset_args
from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.image.records import ImageRecord, SbomRecord, latest_record
from sevenp_pipeline.resources.artifacts import ArtifactStore
from sevenp_pipeline.resources.git import GitClient
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.scanners import provenance as prov
from sevenp_pipeline.scanners.signing import SigningKey
from sevenp_pipeline.security.cache import FAMILY, ScanAssets, security_key, workspace_of
from sevenp_pipeline.triggers.identity import ensure_run_identity


def build_provenance(app: AppConfig, partitions: dg.PartitionsDefinition, image: dg.AssetKey,
                     sbom: dg.AssetKey) -> ScanAssets:
    """``provenance`` of ``image``, naming the ``sbom`` as a byproduct; no gate (a failure to sign fails it)."""

    @dg.asset(**stage_asset_args(app, partitions, security_key(app, "provenance"), FAMILY,
                                 "SLSA v1 provenance of the image (in-toto Statement v1), DSSE-signed.",
                                 kinds=frozenset({"in-toto"})), deps=[image, sbom])
    def provenance(context: dg.AssetExecutionContext, workspaces: Workspaces, artifact_store: ArtifactStore,
                   signing_key: SigningKey, git: GitClient) -> dg.MaterializeResult:
        identity = ensure_run_identity(context, app)
        sha = context.partition_key
        ws = workspace_of(context, workspaces, git, app)
        img = latest_record(context, ImageRecord, image)
        bom = latest_record(context, SbomRecord, sbom)
        run = context.instance.get_run_record_by_id(context.run.run_id)
        started = dt.datetime.fromtimestamp(run.start_time or dt.datetime.now().timestamp(), tz=dt.timezone.utc)
        try:
            statement = prov.build_statement(
                subject_name=img.repository, subject_digest=img.digest, repository_uri=app.repository.url,
                commit_sha=sha, builder_id=app.provenance.builder_id,
                build_type="https://sevenp.example/sevenp_pipeline/container-image/v1",
                external_parameters={"app": app.name, "dockerfile": app.image.dockerfile if app.image else "",
                                     "branch": identity.branch},
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

    return ScanAssets(assets=(provenance,))
