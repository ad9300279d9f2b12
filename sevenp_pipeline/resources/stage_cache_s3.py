"""The stage result cache and the dependency cache with a second tier in an S3 bucket (``SEVENP_ARTIFACTS=s3``).

A worker keeps what it stores or restores on its own disk (:class:`StageResultCache`, the first tier)
and also puts it in the bucket, so a worker that shares no disk with it restores the same results.
Layout under ``<prefix>/`` in the bucket, content-addressed as on the disk::

    manifests/<app key>/<stage>/<input key>.json   the manifest, put after every blob it names
    blobs/sha256/<digest>                          each kept file once, by the sha256 of its bytes
    deps/<cache key>.tar.gz                        an installed node_modules tree, packed
    deps/<cache key>.json                          its sha256 and size, put after the tarball

Nothing fetched is used before its digest is checked: a corrupt or partial object is a
:class:`CacheError` naming it (a warning, and the stage or the install runs), never a restore of
bad bytes. Retention of the bucket is the bucket's own (a lifecycle rule on ``<prefix>/``); the
local tier is pruned as before. IAM: ``s3:GetObject``, ``s3:PutObject`` on ``<prefix>/*``.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tarfile
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import Field

from sevenp_pipeline.files import ATOMIC_TMP_PREFIX, extract_data, private_dir, write_atomically
from sevenp_pipeline.resources.artifacts import add_normalized, sha256_file
from sevenp_pipeline.resources.registries.aws import AwsResource
from sevenp_pipeline.resources.stage_cache import CachedFile, CacheError, Manifest, StageResultCache

DEPS_FORMAT = 1
TREE = "node_modules"


class S3StageResultCache(StageResultCache, AwsResource):
    """Stage results (and installed dependency trees) on the local disk and in ``bucket`` under ``prefix``."""

    bucket: str = Field(description="the bucket (SEVENP_ARTIFACTS_BUCKET, shared with the artifact store)")
    prefix: str = Field(default="cache", description="key prefix of the caches inside the bucket")

    def s3_client(self) -> Any:
        return self.client("s3")

    def object_key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix.strip("/"), *parts) if p)

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _manifest_key(self, app: str, stage: str, key: str) -> str:
        self.manifest_path(app=app, stage=stage, key=key)  # refuses what is not a cache address
        return self.object_key("manifests", app, stage, f"{key}.json")

    def _blob_key(self, digest: str) -> str:
        self.blob_path(digest)  # refuses what is not a digest
        return self.object_key("blobs", "sha256", digest)

    # -- the stage result cache ------------------------------------------------------------------
    def save(self, manifest: Manifest) -> Path:
        """On the disk (:meth:`StageResultCache.save`), then in the bucket: the blobs the bucket does
        not hold with their size yet, then the manifest, so a manifest there never names a missing blob."""
        path = super().save(manifest)
        try:
            client = self.s3_client()
            for cached in manifest.files:
                blob = self.blob_path(cached.sha256)
                key = self._blob_key(cached.sha256)
                if self._size(client, key) != blob.stat().st_size:
                    client.upload_file(str(blob), self.bucket, key)
            client.put_object(Bucket=self.bucket, Body=manifest.to_json().encode(),
                              Key=self._manifest_key(manifest.app, manifest.stage, manifest.input_key))
        except _errors() as exc:
            raise CacheError(f"stored on this disk ({path}) but not in {self.describe(self.object_key())}: "
                             f"{exc}") from None
        return path

    def load(self, *, app: str, stage: str, key: str) -> Manifest | None:
        """The result on this disk, else the one in the bucket, fetched to this disk once each of its
        blobs is there and verified; None when neither tier has it. CacheError names what is wrong."""
        found = super().load(app=app, stage=stage, key=key)
        if found is not None:
            return found
        path = self.manifest_path(app=app, stage=stage, key=key)
        name = self._manifest_key(app, stage, key)
        text = self._get_text(name)
        if text is None:
            return None
        try:
            manifest = Manifest.from_json(text, path=path)
        except CacheError as exc:
            raise CacheError(f"{self.describe(name)} (fetched as {exc})") from None
        if (manifest.app, manifest.stage, manifest.input_key) != (app, stage, key):
            raise CacheError(f"{self.describe(name)}: holds {manifest.app}/{manifest.stage}/{manifest.input_key}")
        for cached in manifest.files:
            self._fetch_blob(cached)
        data = text.encode()
        write_atomically(path, lambda out: out.write(data))  # later runs on this worker find it here
        return manifest

    def _fetch_blob(self, cached: CachedFile) -> None:
        """Puts the blob on this disk from the bucket unless a verified copy is there already."""
        dest = self.blob_path(cached.sha256)
        if dest.is_file() and sha256_file(dest) == cached.sha256:
            return
        key = self._blob_key(cached.sha256)
        private_dir(dest.parent)
        tmp = dest.with_name(f"{ATOMIC_TMP_PREFIX}{cached.sha256}-{os.getpid()}-{threading.get_ident()}")
        try:
            self._download(key, tmp, what=cached.name)
            actual = sha256_file(tmp)
            if actual != cached.sha256:
                raise CacheError(f"{self.describe(key)} of {cached.name} is corrupt or partial "
                                 f"(its sha256 is {actual})")
            tmp.replace(dest)
        finally:
            tmp.unlink(missing_ok=True)

    # -- the dependency cache --------------------------------------------------------------------
    def put_dependencies(self, *, key: str, tree: Path) -> str | None:
        """Packs ``tree`` (a ``node_modules`` folder) and puts it as ``deps/<key>.tar.gz``, then its
        digest as ``deps/<key>.json``. Returns the tarball's address; CacheError when it cannot."""
        tarball_key, record_key = self._deps_keys(key)
        with tempfile.TemporaryDirectory(prefix="sevenp-deps-") as tmp:
            tarball = Path(tmp) / "deps.tar.gz"
            try:
                digest = pack_tree(tree, tarball)
                record = json.dumps({"format": DEPS_FORMAT, "sha256": digest,
                                     "size": tarball.stat().st_size}).encode()
                client = self.s3_client()
                client.upload_file(str(tarball), self.bucket, tarball_key)
                client.put_object(Bucket=self.bucket, Key=record_key, Body=record)
            except (*_errors(), OSError, tarfile.TarError) as exc:
                raise CacheError(f"{tree} not put in {self.describe(tarball_key)}: {exc}") from None
        return self.describe(tarball_key)

    def fetch_dependencies(self, *, key: str, folder: Path) -> str | None:
        """Unpacks the tree stored for ``key`` as ``folder/node_modules`` once its digest matches the
        recorded one. Returns its address, None when the bucket has none; CacheError naming the object
        when it is corrupt, partial or unreadable (``folder`` is then left without a tree)."""
        tarball_key, record_key = self._deps_keys(key)
        text = self._get_text(record_key)
        if text is None:
            return None
        try:
            record = json.loads(text)
            digest = str(record["sha256"])
        except (ValueError, KeyError, TypeError) as exc:
            raise CacheError(f"{self.describe(record_key)}: not a dependency record ({exc})") from None
        with tempfile.TemporaryDirectory(prefix="sevenp-deps-") as tmp:
            tarball = Path(tmp) / "deps.tar.gz"
            self._download(tarball_key, tarball, what=f"the {TREE} of {key}")
            actual = sha256_file(tarball)
            if actual != digest:
                raise CacheError(f"{self.describe(tarball_key)} is corrupt or partial (its sha256 is {actual}, "
                                 f"{self.describe(record_key)} records {digest})")
            shutil.rmtree(folder, ignore_errors=True)
            private_dir(folder)
            try:
                unpack_tree(tarball, folder)
            except (OSError, tarfile.TarError, CacheError) as exc:
                shutil.rmtree(folder, ignore_errors=True)
                raise CacheError(f"{self.describe(tarball_key)}: cannot be unpacked ({exc})") from None
        return self.describe(tarball_key)

    def _deps_keys(self, key: str) -> tuple[str, str]:
        if not _is_key(key):
            raise ValueError(f"not a dependency cache key: {key!r}")
        return self.object_key("deps", f"{key}.tar.gz"), self.object_key("deps", f"{key}.json")

    # -- the bucket ------------------------------------------------------------------------------
    def _get_text(self, key: str) -> str | None:
        """A small object's text, None when there is none; CacheError when the bucket cannot be read."""
        client = self.s3_client()
        try:
            body = client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                return body.read().decode("utf-8")
            finally:
                body.close()
        except _errors() as exc:
            if _missing(exc):
                return None
            raise CacheError(f"{self.describe(key)}: cannot be read ({exc})") from None
        except UnicodeDecodeError as exc:
            raise CacheError(f"{self.describe(key)}: not text ({exc})") from None

    def _download(self, key: str, dest: Path, *, what: str) -> None:
        try:
            self.s3_client().download_file(self.bucket, key, str(dest))
        except _errors() as exc:
            state = "is missing" if _missing(exc) else f"cannot be read ({exc})"
            raise CacheError(f"{self.describe(key)} of {what} {state}") from None
        dest.chmod(0o600)

    def _size(self, client: Any, key: str) -> int | None:
        try:
            return int(client.head_object(Bucket=self.bucket, Key=key)["ContentLength"])
        except _errors() as exc:
            if _missing(exc):
                return None
            raise


def _errors() -> tuple[type[Exception], ...]:
    from boto3.exceptions import Boto3Error  # noqa: PLC0415 (boto3: S3 deployments only)
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    return ClientError, BotoCoreError, Boto3Error


def _missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code")) in ("404", "NoSuchKey", "NotFound")


def _is_key(key: str) -> bool:
    return 16 <= len(key) <= 128 and all(c in "0123456789abcdef" for c in key)


def _tree_paths(source: Path) -> Iterator[Path]:
    """``source`` and everything under it, parents first, by name; links are entries, never followed."""
    yield source
    for top, dirs, files in os.walk(source, followlinks=False):
        dirs.sort()
        for name in sorted([*dirs, *files]):
            yield Path(top, name)


def pack_tree(source: Path, dest: Path) -> str:
    """A gzip'd tar of ``source`` as ``node_modules/...``: sorted entries, zeroed times and owners, streamed
    (a tree can be large), modes and links kept. Returns its sha256."""
    with dest.open("wb") as out, gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _tree_paths(source):
            add_normalized(tar, path, str(Path(TREE) / path.relative_to(source)))
    return sha256_file(dest)


def unpack_tree(tarball: Path, folder: Path) -> None:
    """Unpacks a :func:`pack_tree` tarball into ``folder`` (``folder/node_modules``): nothing outside it,
    no link leaving it (tarfile's ``data`` filter)."""
    with tarfile.open(tarball, "r:gz") as tar:
        strays = [n for n in tar.getnames() if n != TREE and not n.startswith(TREE + "/")]
        if strays:
            raise CacheError(f"holds {strays[0]!r}, outside {TREE}/")
        extract_data(tar, folder)
