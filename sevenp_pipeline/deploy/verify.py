"""What must hold before an image is deployed: its commit passed every gate, and its provenance is signed
by our key and vouches for exactly this image digest and commit. A refusal names what failed; nothing
has been touched when it is raised."""

from __future__ import annotations

import json
from dataclasses import dataclass

import dagster as dg

from sevenp_pipeline.asset_helpers import partition_metadata
from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.image.records import ImageRecord, RecordError
from sevenp_pipeline.resources.artifacts import ArtifactStore
from sevenp_pipeline.scanners import provenance as prov
from sevenp_pipeline.scanners.signing import SigningKey
from sevenp_pipeline.verdict import Gates, verdict

PROVENANCE_FILE = "provenance.intoto.json"


class Refused(Exception):
    """A deploy that must not happen (gates, signature, approval); the message says why."""


@dataclass(frozen=True)
class VerifiedImage:
    image: ImageRecord
    keyid: str
    builder_id: str


def verify_release(instance: dg.DagsterInstance, app: AppConfig, sha: str, *, gates: Gates,
                   signing_key: SigningKey, artifact_store: ArtifactStore) -> VerifiedImage:
    """Raises :class:`Refused` unless ``sha``'s image may be deployed."""
    short = sha[:12]
    if partition_metadata(instance, dg.AssetKey([app.key, "promoted_image"]), sha) is None:
        raise Refused(f"commit {short} was never promoted ({app.key}/promoted_image has not run for it): "
                      "only an image whose pipeline passed every gate is deployed")
    # The same verdict promotion read, asked again: a gate re-run since (and failed) refuses the deploy.
    result = verdict(instance, gates, sha)
    if not result.passed:
        raise Refused(f"commit {short} did not pass its gates: {result.describe()}")
    meta = partition_metadata(instance, dg.AssetKey([app.key, ImageRecord.ASSET]), sha)
    if meta is None:
        raise Refused(f"commit {short} has no container_image")
    try:
        image = ImageRecord.from_metadata(meta)
    except RecordError as exc:
        raise Refused(str(exc)) from exc
    try:
        stored = artifact_store.read_bytes(app=app.key, sha=sha, name=PROVENANCE_FILE)
    except OSError as exc:
        raise Refused(f"provenance of {short} ({artifact_store.uri(app=app.key, sha=sha, name=PROVENANCE_FILE)}) "
                      f"cannot be read: {exc}") from exc
    if stored is None:
        raise Refused(f"image {image.ref} is unsigned: no {PROVENANCE_FILE} stored for commit {short}")
    try:
        envelope = json.loads(stored.decode("utf-8"))
    except ValueError as exc:
        raise Refused(f"provenance of {short} ({artifact_store.uri(app=app.key, sha=sha, name=PROVENANCE_FILE)}) "
                      f"cannot be read: {exc}") from exc
    try:
        public = signing_key.public_pem()
        prov.verify(envelope, public_key_pem=public, expected_subject_digest=image.digest, expected_commit=sha,
                    expected_builder_id=app.provenance.builder_id)
    except prov.ProvenanceError as exc:
        raise Refused(f"provenance of image {image.ref} does not verify: {exc}") from exc
    return VerifiedImage(image=image, keyid=prov.keyid_of(public), builder_id=app.provenance.builder_id)
