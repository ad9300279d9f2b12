"""The artifact store role: where reports, logs and build outputs of each commit are kept.

Assets depend on :class:`ArtifactStore`; :class:`LocalArtifactStore` keeps files under the
pipeline home and links them as ``<base_url>/<app>/<sha>/<name>``, the read-only artifact server's
address (resources/artifact_server.py; ``file://`` links do not open from the Dagster UI).
:class:`~sevenp_pipeline.resources.artifacts_s3.S3ArtifactStore` keeps them in an S3 bucket (no
artifact state on one machine's disk) with the same links: the artifact server then serves the
bucket through this role's read methods.

Callers read artifacts back only through the role (``read_bytes``, ``exists``, ``local_copy``),
never through ``local_path``, which is None for a store without local files.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
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


def add_normalized(tar: tarfile.TarFile, path: Path, arcname: str) -> None:
    """``path`` into ``tar`` as ``arcname`` with nothing of when or by whom it was made (times, owners
    zeroed): the same tree packs to the same bytes on any machine. Modes and links are kept."""
    info = tar.gettarinfo(str(path), arcname=arcname)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if info.isfile():
        with path.open("rb") as handle:
            tar.addfile(info, handle)
    else:
        tar.addfile(info)


def deterministic_tarball(source: Path, dest: Path, *, arcname: str) -> str:
    """A gzip'd tar of ``source`` with sorted entries, zeroed times and owners.

    The same tree always gives the same bytes, so the sha256 identifies the content.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        paths = [source, *sorted(source.rglob("*"))]
        for path in paths:
            add_normalized(tar, path, str(Path(arcname) / path.relative_to(source)))
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


def check_folder(app: str, sha: str) -> None:
    """``app`` and ``sha`` are plain names (one path segment each)."""
    if any(part in ("", ".", "..") or "/" in part or "\\" in part or "\x00" in part for part in (app, sha)):
        raise ValueError(f"artifact folder {app!r}/{sha!r} is not a plain app and commit")


def check_name(name: str) -> str:
    """``name`` as relative ``/``-separated plain names (no ``..``, ``.``, empty name, absolute path,
    backslash or NUL): it cannot leave its commit in any store."""
    parts = name.split("/")
    if not name or any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
        raise ValueError(f"artifact name {name!r} escapes the store")
    return name


@dataclass(frozen=True)
class Entry:
    """One stored artifact of a commit: its name (``/``-separated, relative to the commit) and size."""

    name: str
    size: int


@dataclass(frozen=True)
class Opened:
    """A stored artifact being read: its size and its bytes in chunks (``close`` when not read to the end)."""

    size: int
    chunks: Iterator[bytes]

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()


def folders(folder: Path, *, newest_first: bool) -> list[str]:
    """The real folders in ``folder`` (no symlinks): by name, or newest first (their mtime: when the
    commit's first artifact was stored)."""
    found = []
    with os.scandir(folder) as it:
        for entry in it:
            if entry.is_dir(follow_symlinks=False):
                found.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
    if newest_first:
        return [n for _, n in sorted(found, key=lambda t: (-t[0], t[1]))]
    return sorted(n for _, n in found)


def entries(folder: Path) -> Iterator[Entry]:
    """Every regular file under a commit's folder (no symlinks, no files being written)."""
    for top, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not Path(top, d).is_symlink()]
        for name in files:
            info = os.lstat(Path(top, name))
            if stat.S_ISREG(info.st_mode) and not name.endswith(".tmp"):
                yield Entry(Path(top, name).relative_to(folder).as_posix(), info.st_size)


def _chunks(path: Path, size: int = 1 << 20) -> Iterator[bytes]:
    with path.open("rb") as handle:
        yield from iter(lambda: handle.read(size), b"")


class ArtifactStore(dg.ConfigurableResource, ABC):
    """Keeps a commit's artifacts under ``<app>/<sha>/<name>`` and returns a URI for each.

    Besides storing, it reads them back (``read_bytes``, ``open``, ``exists``, ``local_copy``) and
    lists them (``apps``, ``commits``, ``artifacts``) for the artifact server's pages, whatever the
    store keeps them on. Every method refuses a name that would leave its commit (``ValueError``).
    """

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
        """Where a stored artifact is on this machine's disk, or None when it is not stored or the
        store keeps no local files (S3). Only for keeping one copy of the bytes (hard links)."""

    @abstractmethod
    def open(self, *, app: str, sha: str, name: str) -> Opened | None:
        """The stored artifact's size and bytes, streamed; None when it is not stored."""

    def read_bytes(self, *, app: str, sha: str, name: str) -> bytes | None:
        """The stored artifact's bytes, or None when it is not stored."""
        opened = self.open(app=app, sha=sha, name=name)
        if opened is None:
            return None
        try:
            return b"".join(opened.chunks)
        finally:
            opened.close()

    def exists(self, *, app: str, sha: str, name: str) -> bool:
        opened = self.open(app=app, sha=sha, name=name)
        if opened is not None:
            opened.close()
        return opened is not None

    def local_copy(self, *, app: str, sha: str, name: str, folder: Path) -> Path | None:
        """The artifact as a local file: the stored file itself when the store is on this disk, else
        a copy written into ``folder`` (the caller's, e.g. a temporary folder); None when not stored."""
        path = self.local_path(app=app, sha=sha, name=name)
        if path is not None:
            return path
        opened = self.open(app=app, sha=sha, name=name)
        if opened is None:
            return None
        dest = Path(folder) / check_name(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open_private(dest, append=False) as out:
                for chunk in opened.chunks:
                    out.write(chunk)
        finally:
            opened.close()
        return dest

    @abstractmethod
    def apps(self) -> list[str]:
        """The apps with stored artifacts, by name."""

    @abstractmethod
    def commits(self, app: str) -> list[str]:
        """The app's commits with stored artifacts, newest first (when their first artifact was stored)."""

    @abstractmethod
    def artifacts(self, app: str, sha: str) -> list[Entry]:
        """The commit's stored artifacts, by name."""


class LocalArtifactStore(ArtifactStore):
    """Artifacts on the local disk, under the pipeline home."""

    root: str = Field(description="root folder of the store")
    base_url: str = Field(default=DEFAULT_ARTIFACTS_URL,
                          description="where the artifact server serves ``root`` (SEVENP_ARTIFACTS_URL); links "
                                      "are <base_url>/<app>/<sha>/<name>")

    def _path(self, app: str, sha: str, name: str) -> Path:
        """Where ``name`` of the commit is kept: always inside the commit's own folder."""
        check_folder(app, sha)
        check_name(name)
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

    def open(self, *, app: str, sha: str, name: str) -> Opened | None:
        path = self.local_path(app=app, sha=sha, name=name)
        if path is None or not path.is_file():
            return None
        return Opened(size=path.stat().st_size, chunks=_chunks(path))

    def _folder(self, *parts: str) -> Path | None:
        """``root/<parts>`` when it is a real folder (no symlink on the way), else None."""
        path = Path(self.root)
        for part in parts:
            path = path / part
            if path.is_symlink():
                return None
        return path if path.is_dir() else None

    def apps(self) -> list[str]:
        root = self._folder()
        return folders(root, newest_first=False) if root else []

    def commits(self, app: str) -> list[str]:
        check_folder(app, "sha")
        folder = self._folder(app)
        return folders(folder, newest_first=True) if folder else []

    def artifacts(self, app: str, sha: str) -> list[Entry]:
        check_folder(app, sha)
        folder = self._folder(app, sha)
        return sorted(entries(folder), key=lambda e: e.name) if folder else []
