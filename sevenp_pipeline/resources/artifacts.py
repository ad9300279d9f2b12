"""The artifact store role: where reports, logs and build outputs of each commit are kept.

Assets depend on :class:`ArtifactStore`; :class:`LocalArtifactStore` keeps files under the
pipeline home and links them as ``<base_url>/<app>/<sha>/<name>``, the read-only artifact server's
address (resources/artifact_server.py; ``file://`` links do not open from the Dagster UI). An S3
implementation (same interface, dagster-aws) comes with the at-scale issue.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import shutil
import tarfile
from abc import ABC, abstractmethod
from pathlib import Path
from urllib.parse import quote

import dagster as dg
from pydantic import Field

from sevenp_pipeline.config.settings import DEFAULT_ARTIFACTS_URL
from sevenp_pipeline.files import PRIVATE_FILE_MODE, open_private, private_dir


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def deterministic_tarball(source: Path, dest: Path, *, arcname: str) -> str:
    """A gzip'd tar of ``source`` with sorted entries, zeroed times and owners.

    The same tree always gives the same bytes, so the sha256 identifies the content.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = [source, *sorted(source.rglob("*"))]
        for path in paths:
            info = tar.gettarinfo(str(path), arcname=str(Path(arcname) / path.relative_to(source)))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isfile():
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    dest.unlink(missing_ok=True)  # a new file: the last one may be linked from the store and the stage cache
    with dest.open("wb") as out, gzip.GzipFile(fileobj=out, mode="wb", mtime=0, filename="") as gz:
        gz.write(raw.getvalue())
    return sha256_file(dest)


def _hard_link(source: Path, dest: Path) -> bool:
    """Links ``dest`` to ``source``'s bytes; False when they cannot share them (another filesystem)."""
    try:
        os.link(source, dest, follow_symlinks=False)
    except OSError:
        with contextlib.suppress(OSError):
            dest.unlink()
        return False
    return True


class ArtifactStore(dg.ConfigurableResource, ABC):
    """Keeps a commit's artifacts under ``<app>/<sha>/<name>`` and returns a URI for each."""

    @abstractmethod
    def put_file(self, *, app: str, sha: str, name: str, path: Path, link: bool = False) -> str:
        """Stores ``path`` as ``name`` for the commit and returns its URI. ``link``: ``path`` is a file
        only the orchestrator writes and never changes in place (a log, a tarball, a stage cache blob):
        the store may keep it as is (a hard link) instead of a second copy of its bytes."""

    def uri(self, *, app: str, sha: str, name: str) -> str:
        """The URI ``put_file`` returns for ``name`` (the artifact need not be stored yet)."""
        return f"{app}/{sha}/{name}"

    @abstractmethod
    def local_path(self, *, app: str, sha: str, name: str) -> Path | None:
        """Where a stored artifact can be read locally, or None when it is not stored."""


class LocalArtifactStore(ArtifactStore):
    """Artifacts on the local disk, under the pipeline home."""

    root: str = Field(description="root folder of the store")
    base_url: str = Field(default=DEFAULT_ARTIFACTS_URL,
                          description="where the artifact server serves ``root`` (SEVENP_ARTIFACTS_URL); links "
                                      "are <base_url>/<app>/<sha>/<name>")

    def _path(self, app: str, sha: str, name: str) -> Path:
        """Where ``name`` of the commit is kept: always inside the commit's own folder."""
        if any(part in ("", ".", "..") or "/" in part for part in (app, sha)):
            raise ValueError(f"artifact folder {app!r}/{sha!r} is not a plain app and commit")
        commit = (Path(self.root) / app / sha).resolve()
        path = (commit / name).resolve()
        if commit not in path.parents:
            raise ValueError(f"artifact name {name!r} escapes the store")
        return path

    def put_file(self, *, app: str, sha: str, name: str, path: Path, link: bool = False) -> str:
        """Copies ``path`` into the store, 0600 in folders 0700 (a report can quote a secret); with
        ``link``, a hard link to it when both are on one filesystem (one copy of the bytes on disk).
        The stored name is always replaced by a rename, never written in place: a file linked from
        elsewhere (the stage cache) keeps its bytes."""
        dest = self._path(app, sha, name)
        private_dir(dest.parent)
        if path.resolve() != dest:
            tmp = dest.with_name(dest.name + ".tmp")
            tmp.unlink(missing_ok=True)
            if not (link and _hard_link(path, tmp)):
                with path.open("rb") as source, open_private(tmp, append=False) as copy:
                    shutil.copyfileobj(source, copy)
            tmp.chmod(PRIVATE_FILE_MODE)
            tmp.replace(dest)
        else:
            dest.chmod(PRIVATE_FILE_MODE)
        return self.uri(app=app, sha=sha, name=name)

    def uri(self, *, app: str, sha: str, name: str) -> str:
        """``<base_url>/<app>/<sha>/<name>``, each path segment percent-encoded (a name may hold
        spaces, ``#`` or ``?``); refused like ``put_file`` when it would escape the store."""
        path = self._path(app, sha, name)
        segments = path.relative_to(Path(self.root).resolve()).parts  # normalised: no "." or ".." left
        return self.base_url.rstrip("/") + "/" + "/".join(quote(s, safe="") for s in segments)

    def local_path(self, *, app: str, sha: str, name: str) -> Path | None:
        path = self._path(app, sha, name)
        return path if path.exists() else None
