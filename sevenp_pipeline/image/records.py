"""What one stage hands the next: typed records stored as an asset's materialization metadata.

``container_image`` writes an :class:`ImageRecord`, ``sbom`` an :class:`SbomRecord`; the scans,
provenance and promoted_image (and later deploy and rollback) read them back with
:func:`latest_record`, so each metadata key is spelled in one place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

import dagster as dg

from sevenp_pipeline.asset_helpers import failure, partition_metadata


class RecordError(ValueError):
    """An asset's metadata does not hold the record its readers expect (names the asset and the key)."""


def _required(metadata: Mapping[str, Any], key: str, asset: str) -> Any:
    if key not in metadata or metadata[key] is None:
        raise RecordError(f"{asset}: materialization metadata has no {key!r}: re-materialize {asset}")
    return metadata[key]


@dataclass(frozen=True)
class ImageRecord:
    """The app image as pushed: where it is, what it was built from, whether it was reused."""

    ASSET: ClassVar[str] = "container_image"

    repository: str  # host[:port]/name in the registry
    digest: str  # manifest digest, sha256:...
    ref: str  # repository@digest: what every later stage pulls
    input_hash: str  # sha256 of the build inputs (also the inputs-<hash> tag)
    size_bytes: int | None  # uncompressed layers + config; None when reused (not built in this run)
    layers: int
    reused: bool  # an image with the same inputs was already in the registry; nothing was built
    base_image: str
    registry: str  # the registry's description, e.g. "local registry 127.0.0.1:5000"
    refs: tuple[str, ...] = ()  # every ref written (repo@digest, repo:tag...)

    def to_metadata(self) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "repository": self.repository, "digest": self.digest, "image_ref": self.ref,
            "input_hash": self.input_hash, "layer_count": self.layers, "reused": self.reused,
            "base_image": self.base_image, "registry": self.registry, "refs": dg.MetadataValue.json(list(self.refs)),
        }
        if self.size_bytes is not None:
            meta["size_bytes"] = self.size_bytes
        return meta

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], *, asset: str = ASSET) -> ImageRecord:
        """Reads the record back; raises :class:`RecordError` naming ``asset`` and the missing key."""
        size = metadata.get("size_bytes")
        return cls(
            repository=str(_required(metadata, "repository", asset)),
            digest=str(_required(metadata, "digest", asset)),
            ref=str(_required(metadata, "image_ref", asset)),
            input_hash=str(_required(metadata, "input_hash", asset)),
            size_bytes=int(size) if size is not None else None,
            layers=int(_required(metadata, "layer_count", asset)),
            reused=bool(_required(metadata, "reused", asset)),
            base_image=str(_required(metadata, "base_image", asset)),
            registry=str(_required(metadata, "registry", asset)),
            refs=tuple(metadata.get("refs") or ()),
        )


@dataclass(frozen=True)
class SbomRecord:
    """The image's SBOM documents: where they are (workspace path, stored artifact) and their digests."""

    ASSET: ClassVar[str] = "sbom"

    image_digest: str  # the image the SBOM describes
    spdx_path: str  # SPDX 2.3 JSON in the commit's workspace
    spdx_uri: str  # the stored artifact
    spdx_sha256: str
    cyclonedx_path: str  # CycloneDX 1.6 JSON in the commit's workspace
    cyclonedx_uri: str
    cyclonedx_sha256: str
    component_count: int

    def to_metadata(self) -> dict[str, Any]:
        return {
            "image_digest": self.image_digest, "component_count": self.component_count,
            "spdx_path": self.spdx_path, "spdx": dg.MetadataValue.url(self.spdx_uri), "spdx_sha256": self.spdx_sha256,
            "cyclonedx_path": self.cyclonedx_path, "cyclonedx": dg.MetadataValue.url(self.cyclonedx_uri),
            "cyclonedx_sha256": self.cyclonedx_sha256,
        }

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], *, asset: str = ASSET) -> SbomRecord:
        """Reads the record back; raises :class:`RecordError` naming ``asset`` and the missing key."""
        return cls(**{name: _required(metadata, key, asset) for name, key in (
            ("image_digest", "image_digest"), ("spdx_path", "spdx_path"), ("spdx_uri", "spdx"),
            ("spdx_sha256", "spdx_sha256"), ("cyclonedx_path", "cyclonedx_path"), ("cyclonedx_uri", "cyclonedx"),
            ("cyclonedx_sha256", "cyclonedx_sha256"), ("component_count", "component_count"),
        )})


class _Record(Protocol):
    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], *, asset: str = ...) -> Any: ...


R = TypeVar("R", bound=_Record)


def recorded_digests(instance: dg.DagsterInstance, key: dg.AssetKey, input_hash: str, *,
                     limit: int = 1000) -> set[str]:
    """The image digests ``key`` (a ``container_image``) recorded for ``input_hash`` in its last ``limit``
    materializations, on any commit: the images the pipeline itself built (or reused) from those inputs."""
    result = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=limit)
    digests = set()
    for record in result.records:
        mat = record.asset_materialization
        meta = mat.metadata if mat is not None else {}
        if "input_hash" in meta and "digest" in meta and meta["input_hash"].value == input_hash:
            digests.add(str(meta["digest"].value))
    return digests


def latest_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dict[str, Any]:
    """Metadata of the latest materialization of ``key`` for this commit (raises naming the asset)."""
    meta = partition_metadata(context.instance, key, context.partition_key)
    if meta is None:
        raise failure(f"{context.asset_key.to_user_string()}: {key.to_user_string()} has no materialization "
                      f"for commit {context.partition_key[:12]}: materialize it first")
    return meta


def latest_record(context: dg.AssetExecutionContext, record: type[R], key: dg.AssetKey) -> R:
    """The record ``key`` wrote for this commit; a missing materialization or key fails the step, naming both."""
    try:
        return record.from_metadata(latest_metadata(context, key), asset=key.to_user_string())
    except RecordError as exc:
        raise failure(f"{context.asset_key.to_user_string()}: {exc}") from exc
