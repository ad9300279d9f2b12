"""ECRRegistry against a real moto_server process (API only: no layer blobs, see the class docstring)."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import dagster as dg
import pytest

from sevenp_pipeline.resources.registries.ecr import ECRRegistry
from sevenp_pipeline.resources.registries.role import RegistryError
from sevenp_pipeline_tests.image.conftest import Stack, needs_buildah
from sevenp_pipeline_tests.motoserver import CREDS, free_port, moto_server, needs_moto

pytestmark = [pytest.mark.integration, needs_moto]


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@needs_buildah
def test_push_creates_repository_puts_manifest_and_finds_digest(stack: Stack, moto_endpoint: str) -> None:
    ecr = ECRRegistry(endpoint_url=moto_endpoint, region_name="eu-west-1", upload_layers=False, **CREDS)
    image = stack.builder.local_image(stack.base.local_name)
    exported = stack.builder.export(image=image)
    log: list[str] = []
    result = ecr.push(builder=stack.builder, image=image, repository="sevenp/node-base", tags=["20", "latest"],
                      log=log.append)
    uri = ecr.repository_ref("sevenp/node-base")
    assert uri.endswith(".dkr.ecr.eu-west-1.amazonaws.com/sevenp/node-base")
    # the same manifest bytes as the local registry got: the digests agree across registries
    assert result.digest == exported.manifest_digest == stack.base.digest
    assert result.refs == (f"{uri}@{result.digest}", f"{uri}:20", f"{uri}:latest")
    client = boto3.client("ecr", region_name="eu-west-1", endpoint_url=moto_endpoint, **CREDS)
    repos = client.describe_repositories(repositoryNames=["sevenp/node-base"])["repositories"]
    assert repos[0]["repositoryUri"] == uri
    details = client.describe_images(repositoryName="sevenp/node-base")["imageDetails"]
    assert [d["imageDigest"] for d in details] == [result.digest]
    assert sorted(details[0]["imageTags"]) == ["20", "latest"]
    stored = client.batch_get_image(repositoryName="sevenp/node-base", imageIds=[{"imageTag": "20"}])
    assert stored["images"][0]["imageManifest"].encode() == exported.manifest
    assert ecr.find("sevenp/node-base", "latest") == result.digest
    assert ecr.find("sevenp/node-base", "nope") is None
    assert ecr.find("sevenp/absent", "latest") is None
    # pushing again is idempotent (ECR answers ImageAlreadyExists; that is success)
    assert ecr.push(builder=stack.builder, image=image, repository="sevenp/node-base", tags=["20"]).digest == \
        result.digest


def test_unreachable_endpoint_retries_then_names_the_registry() -> None:
    port = free_port()  # nothing listens here
    ecr = ECRRegistry(endpoint_url=f"http://127.0.0.1:{port}", region_name="us-east-1", max_attempts=2,
                      backoff_seconds=0.05, **CREDS)
    log: list[str] = []
    with pytest.raises(RegistryError, match=rf"ECR http://127\.0\.0\.1:{port} \(us-east-1\) unreachable: .*2 attempts"):
        ecr.retrying("look up sevenp/x:1", lambda: ecr.find("sevenp/x", "1"), log=log.append)
    with pytest.raises(RegistryError, match="unreachable"):
        ecr.find("sevenp/x", "1")


def test_credentials_come_from_env_vars(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> None:
    monkeypatch.setenv("SEVENP_TEST_ECR_KEY", "AKIAEXAMPLE")
    monkeypatch.setenv("SEVENP_TEST_ECR_SECRET", "s3cr3t")
    resource = ECRRegistry(endpoint_url=moto_endpoint, aws_access_key_id=dg.EnvVar("SEVENP_TEST_ECR_KEY"),
                           aws_secret_access_key=dg.EnvVar("SEVENP_TEST_ECR_SECRET"), upload_layers=False)
    with dg.build_resources({"ecr": resource}) as resources:
        ecr = resources.ecr
        assert ecr.aws_access_key_id == "AKIAEXAMPLE" and ecr.aws_secret_access_key == "s3cr3t"
        assert ecr.ecr_client()._request_signer._credentials.access_key == "AKIAEXAMPLE"
        assert ecr.ensure_repository("sevenp/creds").endswith("/sevenp/creds")
