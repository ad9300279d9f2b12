"""Amazon ECR as the image registry, through boto3 (any ``endpoint_url``, e.g. a moto server in tests).

Imported from here, not from the ``registries`` package: only ECR deployments pay for boto3 and dagster-aws.
"""

from __future__ import annotations

import base64
import contextlib
import json
import tempfile
from pathlib import Path
from typing import Any

from pydantic import Field

from sevenp_pipeline.resources.builders.role import BuiltImage, ImageBuilder
from sevenp_pipeline.resources.processes import LogFn
from sevenp_pipeline.resources.registries.aws import AwsResource
from sevenp_pipeline.resources.registries.role import (
    MANIFEST_TYPES,
    Registry,
    RegistryError,
    validate_repository,
    validate_tag,
)
from sevenp_pipeline.resources.registries.transport import SkopeoTransport


class ECRRegistry(Registry, AwsResource):
    """Amazon ECR through boto3 (region, endpoint and credentials: the :class:`AwsResource` fields).

    The manifest comes from the builder's export (the exact bytes a registry receives) and is
    registered with ``put_image(imageManifest=..., imageManifestMediaType=..., imageDigest=...)``,
    first untagged, then once per tag. With ``upload_layers`` (the default, for real ECR) the
    layer and config blobs are uploaded before that with ``skopeo copy`` to ``<uri>@<digest>``
    using a token from ``get_authorization_token``.

    Emulator limitation: moto's ECR is API-only (no ``/v2`` registry endpoint), so against moto
    ``upload_layers`` must be False and **no layer blobs are uploaded**: the emulator holds the
    manifest, digest and tags, but the image cannot be pulled from it. The blob-upload path has
    not been exercised against real ECR on the development machines (no AWS access).
    """

    max_attempts: int = Field(
        default=4, description="tries per registry operation on connection errors, with backoff "
        "(the registry's own retry; boto3's retry handler makes one try so the two do not multiply)",
    )
    upload_layers: bool = Field(default=True, description="upload blobs with skopeo before put_image (real ECR)")
    image_tag_mutability: str = Field(default="MUTABLE", description="for repositories this resource creates")

    def ecr_client(self) -> Any:
        return self.client("ecr", max_attempts=1)

    def describe(self) -> str:
        return f"ECR {self.endpoint_url or 'aws'} ({self.region})"

    def ensure_repository(self, name: str) -> str:
        """Creates repository ``name`` unless it exists; returns its URI."""
        validate_repository(name)
        client = self.ecr_client()

        def create() -> str:
            try:
                created = client.create_repository(repositoryName=name,
                                                   imageTagMutability=self.image_tag_mutability)
                return str(created["repository"]["repositoryUri"])
            except client.exceptions.RepositoryAlreadyExistsException:
                found = client.describe_repositories(repositoryNames=[name])
                return str(found["repositories"][0]["repositoryUri"])

        return self.retrying(f"ensure repository {name}", create)

    def repository_ref(self, name: str) -> str:
        validate_repository(name)
        client = self.ecr_client()

        def lookup() -> str:
            try:
                found = client.describe_repositories(repositoryNames=[name])
                return str(found["repositories"][0]["repositoryUri"])
            except client.exceptions.RepositoryNotFoundException:
                sts = self.client("sts", max_attempts=1)
                account = sts.get_caller_identity()["Account"]
                return f"{account}.dkr.ecr.{self.region}.amazonaws.com/{name}"

        return self.retrying(f"look up repository {name}", lookup)

    def find(self, repository: str, tag: str) -> str | None:
        validate_tag(tag)
        client = self.ecr_client()

        def lookup() -> str | None:
            try:
                found = client.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
            except (client.exceptions.ImageNotFoundException, client.exceptions.RepositoryNotFoundException):
                return None
            details = found.get("imageDetails") or []
            return str(details[0]["imageDigest"]) if details else None

        return self.retrying(f"look up {repository}:{tag}", lookup)

    def _push_digest(self, *, builder: ImageBuilder, image: BuiltImage, repository: str,
                     log: LogFn | None) -> str:
        uri = self.ensure_repository(repository)
        exported = builder.export(image=image, log=log)
        client = self.ecr_client()
        if self.upload_layers:
            self._upload_blobs(client, builder, f"dir:{exported.path}", f"docker://{uri}@{exported.manifest_digest}",
                               log)
        with contextlib.suppress(client.exceptions.ImageAlreadyExistsException):
            client.put_image(repositoryName=repository, imageManifest=exported.manifest.decode(),
                             imageManifestMediaType=exported.media_type, imageDigest=exported.manifest_digest)
        return exported.manifest_digest

    def _upload_blobs(self, client: Any, builder: ImageBuilder, source: str, dest: str, log: LogFn | None) -> None:
        auth = client.get_authorization_token()["authorizationData"][0]
        host = dest.removeprefix("docker://").split("/", 1)[0]
        with tempfile.TemporaryDirectory() as tmp:
            authfile = Path(tmp) / "auth.json"
            authfile.touch(mode=0o600)
            user, _, password = base64.b64decode(auth["authorizationToken"]).decode().partition(":")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            authfile.write_text(json.dumps({"auths": {host: {"auth": token}}}))
            SkopeoTransport(builder).copy(source=source, dest=dest, log=log, label=f"upload to {host}",
                                          extra=["--dest-authfile", str(authfile)])

    def _put_tag(self, *, repository: str, digest: str, tag: str) -> None:
        client = self.ecr_client()
        image = client.batch_get_image(repositoryName=repository, imageIds=[{"imageDigest": digest}],
                                       acceptedMediaTypes=list(MANIFEST_TYPES))
        images = image.get("images") or []
        if not images:
            raise RegistryError(f"{self.describe()}: {repository}@{digest} not found; cannot tag it {tag}")
        manifest = images[0]["imageManifest"]
        media_type = images[0].get("imageManifestMediaType") or json.loads(manifest).get("mediaType")
        with contextlib.suppress(client.exceptions.ImageAlreadyExistsException):
            client.put_image(repositoryName=repository, imageManifest=manifest, imageManifestMediaType=media_type,
                             imageTag=tag, imageDigest=digest)
