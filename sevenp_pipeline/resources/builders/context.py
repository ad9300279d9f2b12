"""The inputs of a build: the context after ``.dockerignore`` and the hash that says "same inputs".

An equal :func:`build_input_hash` means an image already pushed under it can be reused instead of
rebuilt (``publish_image`` in the image stage looks it up in the registry).
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex on a relative path.

    ``*`` never crosses ``/``; a pattern matching a directory excludes everything below it.
    """
    pattern = pattern.strip().lstrip("/").rstrip("/")
    pattern = os.path.normpath(pattern) if pattern else pattern
    out = ""
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
            continue
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(char, re.escape(char))
        i += 1
    return re.compile(f"^{out}(?:/.*)?$")


def dockerignore_filter(context_dir: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """The context's .dockerignore as ordered (exclude?, regex) rules; later rules win."""
    path = context_dir / ".dockerignore"
    rules: list[tuple[bool, re.Pattern[str]]] = []
    if path.exists():
        for raw in path.read_text().splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            negate = line.startswith("!")
            rules.append((not negate, _ignore_regex(line[1:] if negate else line)))
    return rules


def _ignored(rel: str, rules: Sequence[tuple[bool, re.Pattern[str]]]) -> bool:
    excluded = False
    for exclude, regex in rules:
        if regex.match(rel):
            excluded = exclude
    return excluded


def build_input_hash(
    *, context_dir: Path, dockerfile: Path, build_args: Mapping[str, str], labels: Mapping[str, str],
    base_digests: Mapping[str, str] | None = None,
) -> str:
    """sha256 over what a build reads: the Dockerfile, every file the context sends (after
    .dockerignore), build args, labels and the resolved digests of the base images.

    Equal hashes mean an equal build input, so an image already pushed under the hash can be reused.
    Ignored files are skipped only when a rule matches them, so an unknown pattern errs on the side of
    rebuilding, never of reusing a stale image.
    """
    digest = hashlib.sha256()

    def feed(*parts: str | bytes) -> None:
        for part in parts:
            data = part.encode() if isinstance(part, str) else part
            digest.update(len(data).to_bytes(8, "big"))
            digest.update(data)

    feed("sevenp-image-inputs-v1", dockerfile.read_bytes())
    rules = dockerignore_filter(context_dir)
    prune = not any(not exclude for exclude, _ in rules)  # a "!" rule may re-include below an ignored dir
    for top, dirs, files in os.walk(context_dir):
        base = Path(top)
        dirs.sort()
        if prune:
            dirs[:] = [d for d in dirs if not _ignored((base / d).relative_to(context_dir).as_posix(), rules)]
        for name in sorted(files) + [d for d in dirs if (base / d).is_symlink()]:
            path = base / name
            rel = path.relative_to(context_dir).as_posix()
            if _ignored(rel, rules):
                continue
            if path.is_symlink():
                feed("link", rel, str(path.readlink()))
            elif path.is_file():
                mode = "x" if os.access(path, os.X_OK) else "-"
                feed("file", rel, mode, hashlib.sha256(path.read_bytes()).digest())
    for kind, mapping in (("arg", build_args), ("label", labels), ("base", base_digests or {})):
        for key in sorted(mapping):
            feed(kind, key, mapping[key])
    return digest.hexdigest()


_ARG = re.compile(r"^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?", re.I)
_FROM = re.compile(r"^\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", re.I)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def base_image_refs(dockerfile: Path, build_args: Mapping[str, str]) -> list[str]:
    """The images a Dockerfile's FROM lines pull, with build args (and the ARG defaults before the
    first FROM) substituted; earlier stages' names and ``scratch`` are not images. A reference still
    holding an unknown variable is left out: the build itself reports it."""
    args: dict[str, str] = {}
    stages: set[str] = set()
    refs: list[str] = []
    seen_from = False
    text = dockerfile.read_text(encoding="utf-8", errors="replace").replace("\\\n", " ")
    for line in text.splitlines():
        if not seen_from and (arg := _ARG.match(line)):
            args[arg.group(1)] = build_args.get(arg.group(1), arg.group(2) or "")
            continue
        found = _FROM.match(line)
        if not found:
            continue
        seen_from = True
        ref = _substitute(found.group(1), {**args, **build_args})
        if ref and "$" not in ref and ref.lower() != "scratch" and ref not in stages and ref not in refs:
            refs.append(ref)
        if found.group(2):
            stages.add(found.group(2))
    return refs


def _substitute(text: str, values: Mapping[str, str]) -> str:
    return _VAR.sub(lambda m: values.get(m.group(1) or m.group(3) or "", m.group(2) or ""), text)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def copy_context(context_dir: Path, dest: Path, *, owner: int) -> int:
    """Copies the build context (after .dockerignore) to the new folder ``dest``, owned by ``owner``
    with the checkout's modes (``COPY`` keeps them): what a build in a user namespace reads (the
    checkout itself may be private to the stage user).

    The checkout is a branch's tree that a concurrent stage may still change: every folder is opened
    with ``O_NOFOLLOW`` through its parent's descriptor and every file is opened with ``O_NOFOLLOW``, so
    a link planted (or swapped in) there is copied as a link, never followed to a host file. Pipes,
    sockets and devices are left out. Returns the number of files copied."""
    rules = dockerignore_filter(context_dir)
    prune = not any(not exclude for exclude, _ in rules)
    dest.mkdir()
    os.chown(dest, owner, owner)
    dest.chmod(stat.S_IMODE(context_dir.stat().st_mode) & 0o777)  # COPY keeps modes: the checkout's, not our umask's
    count = 0

    def walk(src_fd: int, dst_fd: int, rel: str) -> None:
        nonlocal count
        with os.scandir(src_fd) as scan:
            entries = sorted(scan, key=lambda e: e.name)
        for entry in entries:
            child = f"{rel}/{entry.name}" if rel else entry.name
            info = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(info.st_mode):
                if prune and _ignored(child, rules):
                    continue
                os.mkdir(entry.name, 0o700, dir_fd=dst_fd)
                sub_dst = os.open(entry.name, _DIR_FLAGS, dir_fd=dst_fd)
                try:
                    os.fchown(sub_dst, owner, owner)
                    os.fchmod(sub_dst, info.st_mode & 0o777)
                    sub_src = os.open(entry.name, _DIR_FLAGS, dir_fd=src_fd)  # a link swapped in: ELOOP, no copy
                except OSError:
                    os.close(sub_dst)
                    raise
                try:
                    walk(sub_src, sub_dst, child)
                finally:
                    os.close(sub_src)
                    os.close(sub_dst)
            elif _ignored(child, rules):
                continue
            elif stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(entry.name, dir_fd=src_fd), entry.name, dir_fd=dst_fd)
                os.chown(entry.name, owner, owner, dir_fd=dst_fd, follow_symlinks=False)
            elif stat.S_ISREG(info.st_mode):
                _copy_file(entry.name, src_fd, dst_fd, owner)
                count += 1

    src = os.open(context_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    dst = os.open(dest, _DIR_FLAGS)
    try:
        walk(src, dst, "")
    finally:
        os.close(src)
        os.close(dst)
    return count


def _copy_file(name: str, src_fd: int, dst_fd: int, owner: int) -> None:
    try:
        fin = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=src_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # became a link since it was listed: never followed
            return
        raise
    try:
        info = os.fstat(fin)
        if not stat.S_ISREG(info.st_mode):
            return
        mode = info.st_mode & 0o777  # as in the checkout (fchmod below: not masked by the umask)
        fout = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                       dir_fd=dst_fd)
        try:
            while os.sendfile(fout, fin, None, 1 << 24):
                pass
            os.fchmod(fout, mode)
            os.fchown(fout, owner, owner)
        finally:
            os.close(fout)
    finally:
        os.close(fin)
