"""Secret scanning with detect-secrets over a source tree and over a container image's files.

Findings carry the file, line, detector and detect-secrets' SHA-1 of the value; the plaintext is
dropped as soon as a detector returns it. Image layers (OCI layout folder, OCI archive or docker
archive) are applied in order into a temp dir, honouring whiteouts, extracting only regular files
under the configured paths: no entry is written outside the temp dir and no link is recreated.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from detect_secrets import SecretsCollection
from detect_secrets.settings import default_settings

from sevenp_pipeline.scanners.models import SecretFinding

SKIP_DIRS = (".git", "node_modules")
MAX_FILE_BYTES = 5_000_000
WHITEOUT, OPAQUE = ".wh.", ".wh..wh..opq"
LayerOpener = Callable[[], contextlib.AbstractContextManager[IO[bytes]]]


class ImageScanError(Exception):
    """The image archive cannot be read, or a layer holds an entry that would escape the tree."""


def scan_tree(root: str | Path, *, skip_dirs: Iterable[str] = SKIP_DIRS) -> list[SecretFinding]:
    """Scans every text file under ``root`` (not in ``skip_dirs``, not binary, at most 5 MB)."""
    base = Path(root)
    skip = set(skip_dirs)
    files = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in skip)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink() or not path.is_file() or _is_binary(path):
                continue
            files.append(path.relative_to(base).as_posix())
    collection = SecretsCollection(root=str(base))
    with default_settings():
        for rel in files:
            collection.scan_file(rel)
    findings = {
        SecretFinding(file=Path(filename).as_posix(), line=secret.line_number, type=secret.type,
                      hashed_secret=secret.secret_hash)
        for filename, secret in collection
    }
    return sorted(findings, key=lambda f: (f.file, f.line, f.type))


def _is_binary(path: Path) -> bool:
    if path.stat().st_size > MAX_FILE_BYTES:
        return True
    with path.open("rb") as fh:
        return b"\0" in fh.read(8192)


def scan_image_layers(
    image: str | Path, *, paths: Iterable[str] = ("app",), skip_dirs: Iterable[str] = SKIP_DIRS
) -> list[SecretFinding]:
    """Scans the files under ``paths`` (image-root relative, e.g. ``app``) of the image's final filesystem."""
    roots = tuple(p.strip("/") for p in paths)
    skip = tuple(skip_dirs)

    def wanted(rel: str) -> bool:
        return any(rel == r or rel.startswith(f"{r}/") or not r for r in roots) and not set(rel.split("/")) & set(skip)

    with tempfile.TemporaryDirectory(prefix="sevenp-image-secrets-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        rootfs.mkdir()
        for label, opener in _layers(Path(image)):
            with opener() as raw:
                try:
                    with tarfile.open(fileobj=raw, mode="r|*") as layer:
                        _apply_layer(layer, label, rootfs, wanted, roots)
                except tarfile.TarError as exc:
                    raise ImageScanError(f"{image}: layer {label} is not a readable tar: {exc}") from exc
        return scan_tree(rootfs, skip_dirs=skip)


def _layers(image: Path) -> list[tuple[str, LayerOpener]]:
    """Layer blobs bottom-up, from an OCI layout (folder or tar) or a docker-archive (folder or tar)."""
    if image.is_dir():
        def read_dir(name: str) -> bytes:
            return _inside(image, name).read_bytes()

        def open_dir(name: str) -> LayerOpener:
            return lambda: _inside(image, name).open("rb")

        return _layer_list(read_dir, open_dir, lambda n: _inside(image, n).is_file(), image)
    if not tarfile.is_tarfile(image):
        raise ImageScanError(f"{image}: not an OCI layout folder, OCI archive or docker archive")
    with tarfile.open(image) as outer:
        members = {_norm(m.name): m for m in outer.getmembers() if m.isfile()}

    def read_tar(name: str) -> bytes:
        with tarfile.open(image) as outer, _member(outer, members, name) as fh:
            return fh.read()

    @contextlib.contextmanager
    def open_tar_member(name: str) -> Iterator[IO[bytes]]:
        with tarfile.open(image) as outer, _member(outer, members, name) as fh:
            yield fh

    return _layer_list(read_tar, lambda n: lambda: open_tar_member(n), lambda n: n in members, image)


def _member(outer: tarfile.TarFile, members: dict[str, tarfile.TarInfo], name: str) -> IO[bytes]:
    fh = outer.extractfile(members[name]) if name in members else None
    if fh is None:
        raise ImageScanError(f"{outer.name}: missing {name}")
    return fh


def _layer_list(
    read: Callable[[str], bytes], opener: Callable[[str], LayerOpener], exists: Callable[[str], bool], image: Path
) -> list[tuple[str, LayerOpener]]:
    try:
        if exists("index.json"):
            manifest = _oci_manifest(read, json.loads(read("index.json")), image)
            names = [_blob(layer["digest"]) for layer in manifest["layers"]]
            for layer in manifest["layers"]:
                if "zstd" in str(layer.get("mediaType", "")):
                    raise ImageScanError(f"{image}: zstd-compressed layer {layer['digest']} is not supported")
        elif exists("manifest.json"):
            names = [_norm(n) for n in json.loads(read("manifest.json"))[0]["Layers"]]
        else:
            raise ImageScanError(f"{image}: neither index.json (OCI) nor manifest.json (docker archive) found")
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ImageScanError(f"{image}: malformed image manifest: {exc!r}") from exc
    return [(name, opener(name)) for name in names]


def _oci_manifest(read: Callable[[str], bytes], index: dict[str, Any], image: Path) -> dict[str, Any]:
    """Follows nested indexes to one image manifest, preferring linux/amd64."""
    for _ in range(4):
        entries = index.get("manifests") or []
        if not entries:
            raise ImageScanError(f"{image}: OCI index lists no manifests")
        amd64 = [m for m in entries if (m.get("platform") or {}).get("architecture") == "amd64"]
        chosen = (amd64 or entries)[0]
        doc = json.loads(read(_blob(chosen["digest"])))
        if "layers" in doc:
            return doc
        index = doc
    raise ImageScanError(f"{image}: OCI index nesting too deep")


def _blob(digest: str) -> str:
    algorithm, _, hexdigest = digest.partition(":")
    if not algorithm.isalnum() or not hexdigest.isalnum():
        raise ImageScanError(f"invalid digest {digest!r}")
    return f"blobs/{algorithm}/{hexdigest}"


def _inside(base: Path, name: str) -> Path:
    path = (base / name).resolve()
    if not path.is_relative_to(base.resolve()):
        raise ImageScanError(f"{base}: {name} points outside the image folder")
    return path


def _norm(name: str) -> str:
    return name.removeprefix("./").lstrip("/")


def _safe_rel(name: str, label: str) -> str:
    """Image-root relative path; a leading ``/`` is dropped (as tar does), ``..`` is refused."""
    rel = posixpath.normpath("/" + _norm(name)).lstrip("/") if name not in ("", ".", "./") else ""
    if ".." in name.split("/") or (rel and ".." in rel.split("/")):
        raise ImageScanError(f"layer {label}: entry {name!r} escapes the image root")
    return rel


def _apply_layer(
    layer: tarfile.TarFile, label: str, rootfs: Path, wanted: Callable[[str], bool], roots: tuple[str, ...]
) -> None:
    written: set[str] = set()  # whiteouts only hide lower layers, never this layer's own files
    for member in layer:
        rel = _safe_rel(member.name, label)
        if not rel:
            continue
        parent, base = posixpath.split(rel)
        if base == OPAQUE:
            _clear(rootfs, parent, written, keep_self=True)
            continue
        if base.startswith(WHITEOUT):
            target = posixpath.join(parent, base[len(WHITEOUT):])
            if wanted(target) or any(r.startswith(f"{target}/") for r in roots):
                _clear(rootfs, target, written, keep_self=False)
            continue
        if not wanted(rel):
            continue
        dest = rootfs / rel
        if member.isdir():
            if dest.exists() and not dest.is_dir():
                dest.unlink()
            dest.mkdir(parents=True, exist_ok=True)
        elif member.isfile():
            _replace_with_file(dest)
            source = layer.extractfile(member)
            if source is not None:
                with source, dest.open("wb") as out:
                    shutil.copyfileobj(source, out)
            written.add(rel)
        elif member.islnk():
            target = rootfs / _safe_rel(member.linkname, label)
            if target.is_file() and not target.is_symlink():
                _replace_with_file(dest)
                shutil.copyfile(target, dest)
                written.add(rel)
        # symlinks, devices and fifos are never recreated: nothing to scan, and links could escape


def _replace_with_file(dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_dir():
        shutil.rmtree(dest)
    else:
        dest.unlink(missing_ok=True)


def _clear(rootfs: Path, rel: str, written: set[str], *, keep_self: bool) -> None:
    """Deletes ``rel`` (for an opaque dir: its children) as left by lower layers."""
    path = rootfs / rel if rel else rootfs
    if not path.exists() and not path.is_symlink():
        return
    for victim in list(path.iterdir()) if keep_self and path.is_dir() else [path]:
        _remove_lower(rootfs, victim, written)


def _remove_lower(rootfs: Path, victim: Path, written: set[str]) -> None:
    vrel = victim.relative_to(rootfs).as_posix()
    if vrel in written:
        return
    if victim.is_dir() and not victim.is_symlink():
        if any(w.startswith(f"{vrel}/") for w in written):
            for child in list(victim.iterdir()):
                _remove_lower(rootfs, child, written)
        else:
            shutil.rmtree(victim)
    else:
        victim.unlink()
