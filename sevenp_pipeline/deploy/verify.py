"""What must hold before an image is deployed: its commit passed every gate, and its provenance is signed
by our key and vouches for exactly this image digest and commit. A refusal names what failed; nothing
has been touched when it is raised."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from sevenp_pipeline.asset_helpers import partition_metadata
from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.image.records import ImageRecord, RecordError
from sevenp_pipeline.resources.artifacts import ArtifactStore
from sevenp_pipeline.scanners import provenance as prov
from sevenp_pipeline.scanners.signing import SigningKey
from sevenp_pipeline.stages.gates import unmet_gates

PROVENANCE_FILE = "provenance.intoto.json"


class Refused(Exception):
    """A deploy that must not happen (gates, signature, approval); the message says why."""


@dataclass(frozen=True)
class VerifiedImage:
    image: ImageRecord
    keyid: str
    builder_id: str


def failed_checks(instance: dg.DagsterInstance, check_keys: Sequence[dg.AssetCheckKey], sha: str) -> list[str]:
    """Checks of the commit's pipeline that did not pass in the run that last materialized their asset for
    ``sha`` (or never ran there). Checks are recorded per run, so the run of the asset's latest
    materialization of this partition is where its verdict for the commit is read."""
    problems = []
    runs: dict[dg.AssetKey, str | None] = {}
    for key in check_keys:
        name = f"{key.asset_key.to_user_string()}:{key.name}"
        if key.asset_key not in runs:
            records = instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=key.asset_key, asset_partitions=[sha]), limit=1).records
            runs[key.asset_key] = records[0].run_id if records else None
        run_id = runs[key.asset_key]
        if run_id is None:
            problems.append(f"{key.asset_key.to_user_string()} has not run")
            continue
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=200)
        record = next((r for r in history if r.run_id == run_id), None)
        evaluation = record.event.asset_check_evaluation if record is not None and record.event is not None else None
        if record is None:
            problems.append(f"{name} has not run")
        elif evaluation is None or not evaluation.passed:
            problems.append(f"{name} did not pass")
    return problems


def verify_release(instance: dg.DagsterInstance, app: AppConfig, sha: str, *, check_keys: Sequence[dg.AssetCheckKey],
                   signing_key: SigningKey, artifact_store: ArtifactStore) -> VerifiedImage:
    """Raises :class:`Refused` unless ``sha``'s image may be deployed."""
    short = sha[:12]
    if partition_metadata(instance, dg.AssetKey([app.key, "promoted_image"]), sha) is None:
        raise Refused(f"commit {short} was never promoted ({app.key}/promoted_image has not run for it): "
                      "only an image whose pipeline passed every gate is deployed")
    unmet = unmet_gates(instance, app, sha)
    problems = [f"{u.stage} {u.reason}" for u in unmet] + failed_checks(instance, check_keys, sha)
    if problems:
        raise Refused(f"commit {short} did not pass its gates: " + "; ".join(problems[:10]))
    meta = partition_metadata(instance, dg.AssetKey([app.key, ImageRecord.ASSET]), sha)
    if meta is None:
        raise Refused(f"commit {short} has no container_image")
    try:
        image = ImageRecord.from_metadata(meta)
    except RecordError as exc:
        raise Refused(str(exc)) from exc
    path = artifact_store.local_path(app=app.key, sha=sha, name=PROVENANCE_FILE)
    if path is None or not path.is_file():
        raise Refused(f"image {image.ref} is unsigned: no {PROVENANCE_FILE} stored for commit {short}")
    try:
        envelope = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Refused(f"provenance of {short} ({path}) cannot be read: {exc}") from exc
    try:
        public = signing_key.public_pem()
        prov.verify(envelope, public_key_pem=public, expected_subject_digest=image.digest, expected_commit=sha,
                    expected_builder_id=app.provenance.builder_id)
    except prov.ProvenanceError as exc:
        raise Refused(f"provenance of image {image.ref} does not verify: {exc}") from exc
    return VerifiedImage(image=image, keyid=prov.keyid_of(public), builder_id=app.provenance.builder_id)
