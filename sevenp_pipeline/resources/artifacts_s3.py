"""The artifact store in an S3 bucket (``SEVENP_ARTIFACTS=s3``), so no artifact state needs one machine's disk.

Imported from here, not from ``artifacts``: only S3 deployments pay for boto3 and dagster-aws.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
from pydantic import Field

from sevenp_pipeline.config.settings import DEFAULT_ARTIFACTS_URL, Settings
from sevenp_pipeline.resources.artifacts import ArtifactStore, Entry, Opened, check_folder, check_name
from sevenp_pipeline.resources.registries.aws import AwsResource

CHUNK = 1 << 20
_MISSING = ("404", "NoSuchKey", "NotFound")


class S3ArtifactStore(ArtifactStore, AwsResource):
    """Artifacts as objects ``<prefix>/<app>/<sha>/<name>`` in ``bucket`` (region, endpoint and
    credentials: the :class:`AwsResource` fields; IAM: ``s3:PutObject`` and ``s3:GetObject`` on
    ``<prefix>/*``, ``s3:ListBucket`` on the bucket for ``<prefix>/``).

    Links are ``<base_url>/<app>/<sha>/<name>``, like the local store's: the artifact server
    (``SEVENP_ARTIFACTS=s3`` there too) serves them from the bucket, so a link in an asset's
    metadata never expires (a presigned URL would, within a week at most).
    """

    bucket: str = Field(description="the bucket (SEVENP_ARTIFACTS_BUCKET)")
    prefix: str = Field(default="artifacts", description="key prefix inside the bucket (SEVENP_ARTIFACTS_PREFIX); "
                                                         "empty: the bucket's top")
    base_url: str = Field(default=DEFAULT_ARTIFACTS_URL,
                          description="where the artifact server serves the store (SEVENP_ARTIFACTS_URL); links "
                                      "are <base_url>/<app>/<sha>/<name>")

    def s3_client(self) -> Any:
        return self.client("s3")

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self._key()}"

    def _key(self, *parts: str) -> str:
        """``<prefix>/<parts...>`` (no leading slash; a trailing one for a folder's listing)."""
        head = self.prefix.strip("/")
        return "/".join(p for p in (head, *parts) if p)

    def key(self, *, app: str, sha: str, name: str) -> str:
        """The object key of ``name`` of the commit, refused when it would leave the commit."""
        check_folder(app, sha)
        return self._key(app, sha, check_name(name))

    def put_file(self, *, app: str, sha: str, name: str, path: Path, link: bool = False) -> str:
        """Uploads ``path`` (``link`` does not apply: the bucket always holds its own copy)."""
        self.s3_client().upload_file(str(path), self.bucket, self.key(app=app, sha=sha, name=name))
        return self.uri(app=app, sha=sha, name=name)

    def uri(self, *, app: str, sha: str, name: str) -> str:
        self.key(app=app, sha=sha, name=name)
        segments = [app, sha, *name.split("/")]
        return self.base_url.rstrip("/") + "/" + "/".join(quote(s, safe="") for s in segments)

    def local_path(self, *, app: str, sha: str, name: str) -> Path | None:
        self.key(app=app, sha=sha, name=name)
        return None  # nothing on this machine's disk

    def open(self, *, app: str, sha: str, name: str) -> Opened | None:
        client = self.s3_client()
        try:
            found = client.get_object(Bucket=self.bucket, Key=self.key(app=app, sha=sha, name=name))
        except client.exceptions.NoSuchKey:
            return None
        body = found["Body"]

        def chunks() -> Iterator[bytes]:
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()

        return Opened(size=int(found["ContentLength"]), chunks=chunks())

    def exists(self, *, app: str, sha: str, name: str) -> bool:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            self.s3_client().head_object(Bucket=self.bucket, Key=self.key(app=app, sha=sha, name=name))
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in _MISSING:
                return False
            raise
        return True

    def local_copy(self, *, app: str, sha: str, name: str, folder: Path) -> Path | None:
        if not self.exists(app=app, sha=sha, name=name):
            return None
        dest = Path(folder) / check_name(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.s3_client().download_file(self.bucket, self.key(app=app, sha=sha, name=name), str(dest))
        dest.chmod(0o600)
        return dest

    def _pages(self, prefix: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        paginator = self.s3_client().get_paginator("list_objects_v2")
        yield from paginator.paginate(Bucket=self.bucket, Prefix=prefix, **kwargs)

    def apps(self) -> list[str]:
        top = self._key() + "/" if self._key() else ""
        names = [p["Prefix"][len(top):].rstrip("/")
                 for page in self._pages(top, Delimiter="/") for p in page.get("CommonPrefixes", [])]
        return sorted(n for n in names if _plain(n))

    def commits(self, app: str) -> list[str]:
        """Newest first by the time of each commit's oldest object (every object of the app is listed)."""
        check_folder(app, "sha")
        top = self._key(app) + "/"
        first: dict[str, float] = {}
        for page in self._pages(top):
            for item in page.get("Contents", []):
                sha = item["Key"][len(top):].split("/", 1)[0]
                when = item["LastModified"].timestamp()
                first[sha] = min(when, first.get(sha, when))
        return [s for s, _ in sorted(first.items(), key=lambda t: (-t[1], t[0])) if _plain(s)]

    def artifacts(self, app: str, sha: str) -> list[Entry]:
        check_folder(app, sha)
        top = self._key(app, sha) + "/"
        found = [Entry(item["Key"][len(top):], int(item["Size"]))
                 for page in self._pages(top) for item in page.get("Contents", [])]
        return sorted((e for e in found if _valid(e.name)), key=lambda e: e.name)


def _plain(name: str) -> bool:
    return _valid(name) and "/" not in name


def _valid(name: str) -> bool:
    try:
        check_name(name)
    except ValueError:
        return False
    return True


def s3_artifact_store(settings: Settings) -> S3ArtifactStore:
    """The S3 store of ``settings`` (``SEVENP_ARTIFACTS=s3``); AWS keys as ``dg.EnvVar`` when set, else
    boto3's default chain (profile, instance role)."""
    if not settings.artifacts_bucket:
        raise ValueError("SEVENP_ARTIFACTS=s3 needs SEVENP_ARTIFACTS_BUCKET (the bucket the artifacts go to)")

    def secret(name: str) -> dg.EnvVar | None:
        return dg.EnvVar(name) if settings.secret_is_set(name) else None

    return S3ArtifactStore(
        bucket=settings.artifacts_bucket, prefix=settings.artifacts_prefix, base_url=settings.artifacts_url,
        region_name=settings.aws_region, endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=secret("AWS_ACCESS_KEY_ID"), aws_secret_access_key=secret("AWS_SECRET_ACCESS_KEY"),
        aws_session_token=secret("AWS_SESSION_TOKEN"))
