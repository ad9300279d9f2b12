"""The records stages hand each other: written as metadata by one asset, read back by the next."""

# No `from __future__ import annotations`: Dagster reads the context annotations.
import dagster as dg
import pytest

from sevenp_pipeline.image.records import ImageRecord, RecordError, SbomRecord, latest_record

IMAGE = ImageRecord(
    repository="127.0.0.1:5000/sevenp/app", digest="sha256:" + "a" * 64,
    ref="127.0.0.1:5000/sevenp/app@sha256:" + "a" * 64, input_hash="b" * 64, size_bytes=None, layers=7,
    reused=True, base_image="127.0.0.1:5000/sevenp/node-base:20", registry="local registry 127.0.0.1:5000",
    refs=("127.0.0.1:5000/sevenp/app@sha256:" + "a" * 64, "127.0.0.1:5000/sevenp/app:inputs-bbbb"),
)
SBOM = SbomRecord(image_digest=IMAGE.digest, spdx_path="/w/sbom/sbom.spdx.json", spdx_uri="file:///a/sbom.spdx.json",
                  spdx_sha256="c" * 64, cyclonedx_path="/w/sbom/sbom.cyclonedx.json",
                  cyclonedx_uri="file:///a/sbom.cyclonedx.json", cyclonedx_sha256="d" * 64, component_count=312)


def test_records_round_trip_through_a_materialization() -> None:
    partitions = dg.StaticPartitionsDefinition(["abc123"])
    seen: dict[str, object] = {}

    @dg.asset(partitions_def=partitions)
    def container_image() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata=IMAGE.to_metadata())

    @dg.asset(partitions_def=partitions)
    def sbom() -> dg.MaterializeResult:
        return dg.MaterializeResult(metadata={**SBOM.to_metadata(), "syft_seconds": 1.5})

    @dg.asset(partitions_def=partitions, deps=[container_image, sbom])
    def reader(context: dg.AssetExecutionContext) -> None:
        seen["image"] = latest_record(context, ImageRecord, container_image.key)
        seen["sbom"] = latest_record(context, SbomRecord, sbom.key)

    instance = dg.DagsterInstance.ephemeral()
    assert dg.materialize([container_image, sbom, reader], partition_key="abc123", instance=instance).success
    assert seen == {"image": IMAGE, "sbom": SBOM}


def test_a_missing_key_names_the_asset_and_the_key() -> None:
    metadata = {k: v for k, v in IMAGE.to_metadata().items() if k != "input_hash"}
    with pytest.raises(RecordError, match=r"app/container_image: materialization metadata has no 'input_hash'"):
        ImageRecord.from_metadata(metadata, asset="app/container_image")
    metadata = {k: v for k, v in SBOM.to_metadata().items() if k != "cyclonedx_sha256"}
    with pytest.raises(RecordError, match=r"^sbom: materialization metadata has no 'cyclonedx_sha256'"):
        SbomRecord.from_metadata(metadata)


def test_a_reader_without_the_upstream_fails_naming_it() -> None:
    partitions = dg.StaticPartitionsDefinition(["abc123"])

    @dg.asset(partitions_def=partitions)
    def promoted(context: dg.AssetExecutionContext) -> None:
        latest_record(context, ImageRecord, dg.AssetKey(["app", "container_image"]))

    result = dg.materialize([promoted], partition_key="abc123", raise_on_error=False)
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data
    assert "app/container_image has no materialization for commit abc123" in failure.user_failure_data.description
