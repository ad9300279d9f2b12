"""The stage result cache: what a stage that passed every gate produced, by (app, stage, input key).

It lives under the pipeline home's cache folder, not in the per-commit workspaces, so it survives
workspace retention. Layout under ``root``::

    manifests/<app key>/<stage>/<input key>.json   one per key: where the result came from (commit,
                                                   run), its data version, metadata, check results,
                                                   the kept files and the output folders
    blobs/sha256/<digest>                          each kept file once, by the sha256 of its bytes: a
                                                   hard link to the artifact store's file (no second
                                                   copy of its bytes), a copy across filesystems

Every file is written to a temporary name in its folder and renamed over the target (``os.replace``),
so two runs storing the same key at once leave one whole manifest, never a mix. A manifest's mtime
is the last time it was stored or restored: :meth:`StageResultCache.prune` drops manifests unused for
a while, then the blobs no manifest names. What the cache holds was redacted when the stage kept it.

With the S3 artifact store the resource set picks
:class:`~sevenp_pipeline.resources.stage_cache_s3.S3StageResultCache`: the same, with a second tier
in the bucket that a worker sharing no disk with this one restores from.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from sevenp_pipeline.files import ATOMIC_TMP_PREFIX, private_dir, write_atomically
from sevenp_pipeline.resources.artifacts import sha256_file

MANIFEST_FORMAT = 1
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_KEY = re.compile(r"^[0-9a-f]{16,64}$")
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


class CacheError(Exception):
    """A cache entry is missing a part or is corrupt; the message names the file and what is wrong."""


@dataclass(frozen=True)
class CachedFile:
    """A file the stage kept in the artifact store: its name there, its content, its URI then."""

    name: str
    sha256: str
    uri: str


@dataclass(frozen=True)
class CachedOutput:
    """A folder of the app the stage produced for later stages (``dist``), packed as a kept file."""

    path: str  # relative to the app folder
    file: str  # the name of the kept tarball among ``files``


@dataclass(frozen=True)
class Manifest:
    """One stored stage result. ``metadata`` and ``checks`` are already serialised (JSON values)."""

    app: str
    stage: str
    input_key: str
    commit: str
    run_id: str
    created: float
    data_version: str
    metadata: dict[str, Any]
    checks: list[dict[str, Any]]
    files: tuple[CachedFile, ...] = ()
    outputs: tuple[CachedOutput, ...] = ()
    path: Path | None = field(default=None, compare=False)  # where it was read from

    def to_json(self) -> str:
        return json.dumps({
            "format": MANIFEST_FORMAT, "app": self.app, "stage": self.stage, "input_key": self.input_key,
            "commit": self.commit, "run_id": self.run_id, "created": self.created,
            "data_version": self.data_version, "metadata": self.metadata, "checks": self.checks,
            "files": [{"name": f.name, "sha256": f.sha256, "uri": f.uri} for f in self.files],
            "outputs": [{"path": o.path, "file": o.file} for o in self.outputs],
        }, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, *, path: Path) -> Manifest:
        """Raises CacheError naming ``path`` and the part that is wrong."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise CacheError(f"{path}: not valid JSON ({exc}); truncated or corrupt") from None
        try:
            if data.get("format") != MANIFEST_FORMAT:
                raise CacheError(f"{path}: format {data.get('format')!r}, expected {MANIFEST_FORMAT}")
            files = tuple(CachedFile(str(f["name"]), str(f["sha256"]), str(f["uri"])) for f in data["files"])
            outputs = tuple(CachedOutput(str(o["path"]), str(o["file"])) for o in data["outputs"])
            manifest = cls(app=str(data["app"]), stage=str(data["stage"]), input_key=str(data["input_key"]),
                           commit=str(data["commit"]), run_id=str(data["run_id"]), created=float(data["created"]),
                           data_version=str(data["data_version"]), metadata=dict(data["metadata"]),
                           checks=list(data["checks"]), files=files, outputs=outputs, path=path)
        except CacheError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CacheError(f"{path}: missing or malformed field ({type(exc).__name__}: {exc})") from None
        bad = [f.sha256 for f in files if not _DIGEST.match(f.sha256)]
        if bad:
            raise CacheError(f"{path}: not a sha256 digest: {bad[0]!r}")
        names = {f.name for f in files}
        missing = [o.file for o in outputs if o.file not in names]
        if missing:
            raise CacheError(f"{path}: output {missing[0]!r} is not among its files")
        return manifest


@dataclass(frozen=True)
class CachePruneReport:
    manifests_removed: int = 0
    blobs_removed: int = 0
    bytes_freed: int = 0
    manifests_kept: int = 0


class StageResultCache(dg.ConfigurableResource):
    """Stage results by input key, on the local disk under the pipeline home (layout: module docstring)."""

    root: str = Field(description="the cache folder: manifests/ and blobs/ below it")

    # -- paths -------------------------------------------------------------------------------------
    def manifest_path(self, *, app: str, stage: str, key: str) -> Path:
        if not (_NAME.match(app) and _NAME.match(stage) and _KEY.match(key)):
            raise ValueError(f"not a cache address: {app!r} / {stage!r} / {key!r}")
        return Path(self.root) / "manifests" / app / stage / f"{key}.json"

    def blob_path(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        return Path(self.root) / "blobs" / "sha256" / digest

    # -- writing -----------------------------------------------------------------------------------
    def put_blob(self, path: Path) -> str:
        """Stores ``path``'s bytes once, by digest, and returns the digest. An existing blob whose
        content no longer matches its name (a disk error) is replaced.

        ``path`` is a file of the artifact store (written once, replaced only by a rename): the blob
        is a hard link to it, so a kept file's bytes are on disk once however many commits and
        cache entries name them; a copy only where a link cannot be made (another filesystem)."""
        digest = sha256_file(path)
        dest = self.blob_path(digest)
        if dest.is_file() and sha256_file(dest) == digest:
            return digest
        private_dir(dest.parent)
        tmp = dest.with_name(f"{ATOMIC_TMP_PREFIX}{digest}-{os.getpid()}-{threading.get_ident()}")
        try:
            os.link(path, tmp, follow_symlinks=False)
        except OSError:
            with path.open("rb") as source:
                write_atomically(dest, lambda out: shutil.copyfileobj(source, out))
            return digest
        tmp.replace(dest)
        return digest

    def save(self, manifest: Manifest) -> Path:
        """Writes the manifest (after its blobs): a temp file in the same folder, then a rename."""
        missing = [f.name for f in manifest.files if not self.blob_path(f.sha256).is_file()]
        if missing:
            raise CacheError(f"blobs of {missing} are not stored; the manifest would point at nothing")
        dest = self.manifest_path(app=manifest.app, stage=manifest.stage, key=manifest.input_key)
        text = manifest.to_json().encode()
        write_atomically(dest, lambda out: out.write(text))
        return dest

    # -- reading -----------------------------------------------------------------------------------
    def load(self, *, app: str, stage: str, key: str) -> Manifest | None:
        """The stored result, None when there is none; CacheError when the manifest is unusable."""
        path = self.manifest_path(app=app, stage=stage, key=key)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as exc:
            raise CacheError(f"{path}: cannot be read ({exc})") from None
        manifest = Manifest.from_json(text, path=path)
        if (manifest.app, manifest.stage, manifest.input_key) != (app, stage, key):
            raise CacheError(f"{path}: holds {manifest.app}/{manifest.stage}/{manifest.input_key}, not this key")
        return manifest

    def verified_blobs(self, manifest: Manifest) -> dict[str, Path]:
        """``{file name: blob path}`` once every blob exists and its bytes hash to its name."""
        found = {}
        for cached in manifest.files:
            blob = self.blob_path(cached.sha256)
            if not blob.is_file():
                raise CacheError(f"blob {blob} of {cached.name} is missing")
            actual = sha256_file(blob)
            if actual != cached.sha256:
                raise CacheError(f"blob {blob} of {cached.name} is corrupt (its sha256 is {actual})")
            found[cached.name] = blob
        return found

    def touch(self, manifest: Manifest) -> None:
        """Marks the manifest used now: retention keeps what is restored."""
        if manifest.path is not None:
            with contextlib.suppress(OSError):
                os.utime(manifest.path)

    # -- the dependency cache's second tier -------------------------------------------------------
    def put_dependencies(self, *, key: str, tree: Path) -> str | None:
        """Keeps an installed ``node_modules`` tree (the dependency cache, resources/workspaces.py)
        where other workers find it; returns where. On the local disk alone it already is: None."""
        del key, tree
        return None

    def fetch_dependencies(self, *, key: str, folder: Path) -> str | None:
        """Puts the tree kept for ``key`` as ``folder/node_modules``; returns where it came from, None
        when there is none (on the local disk alone: never). CacheError when it is corrupt."""
        del key, folder
        return None

    # -- retention ---------------------------------------------------------------------------------
    def prune(self, *, unused_for_seconds: float, blob_grace_seconds: float = 3600, now: float | None = None,
              dry_run: bool = False) -> CachePruneReport:
        """Removes manifests not stored or restored for ``unused_for_seconds`` (and unreadable ones),
        then the blobs no remaining manifest names. A blob or temp file younger than
        ``blob_grace_seconds`` stays: a run may be storing its manifest right now."""
        now = time.time() if now is None else now
        root = Path(self.root)
        removed_manifests = removed_blobs = freed = kept = 0
        referenced: set[str] = set()
        for path in sorted((root / "manifests").glob("*/*/*.json")):
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            stale = now - info.st_mtime > unused_for_seconds
            if not stale:
                try:
                    manifest = Manifest.from_json(path.read_text(encoding="utf-8"), path=path)
                    referenced.update(f.sha256 for f in manifest.files)
                    kept += 1
                    continue
                except (CacheError, OSError, UnicodeDecodeError):
                    pass  # unusable: a restore would ignore it too
            removed_manifests += 1
            freed += info.st_size
            if not dry_run:
                path.unlink(missing_ok=True)
        leftovers = (root / "manifests").glob(f"*/*/{ATOMIC_TMP_PREFIX}*")  # a writer that died mid-write
        for path in sorted([*(root / "blobs" / "sha256").glob("*"), *leftovers]):
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            if path.name in referenced or now - info.st_mtime <= blob_grace_seconds:
                continue
            removed_blobs += 1
            freed += info.st_size
            if not dry_run:
                path.unlink(missing_ok=True)
        return CachePruneReport(manifests_removed=removed_manifests, blobs_removed=removed_blobs,
                                bytes_freed=freed, manifests_kept=kept)
