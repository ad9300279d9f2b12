"""Private files: the pipeline home, logs and artifacts are readable by the pipeline's user only.

A log or a report can still hold what the redactor could not recognise, so other local users get
no access: folders 0700, files 0600. Dagster's own files (compute logs, the SQLite event log) are
created without a mode, so the processes that write them run with :data:`PRIVATE_UMASK`.

That umask also masks every mode given to ``mkdir``: ``Path.mkdir`` asked for 0o755 creates 0700 in the
orchestrator. A folder another user must enter (the stage user, a server's user) is made with
:func:`shared_dir`, which sets its mode explicitly.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

PRIVATE_UMASK = 0o077
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
# The home itself: other users may pass through (the test-database user to <home>/services), never
# list it; everything in it is 0700/0600.
HOME_DIR_MODE = 0o711
ATOMIC_TMP_PREFIX = ".tmp-"  # temp files of write_atomically (a writer that died leaves one behind)


def use_private_umask() -> None:
    """From now on this process and its children create folders 0700 and files 0600."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: Path, *, mode: int = PRIVATE_DIR_MODE) -> Path:
    """``mkdir -p`` that creates each missing folder 0700 (or ``mode``), whatever the umask
    (``Path.mkdir`` gives missing parents the default mode). Existing folders keep theirs."""
    missing = []
    parent = path
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made by a concurrent run meanwhile
            # Created never wider than ``mode`` whatever the umask, then set to exactly ``mode`` (mkdir's
            # mode is masked by the umask). The one mkdir with a mode: every other folder comes from here.
            os.mkdir(folder, mode)  # noqa: PTH102
            folder.chmod(mode)
    return path


def shared_dir(path: Path, *, mode: int = 0o755) -> Path:
    """``mkdir -p`` for a folder another user must enter: the folders it creates, and ``path`` itself
    even when it existed (made by an earlier run under another umask), get ``mode`` explicitly."""
    private_dir(path, mode=mode)
    if stat.S_IMODE(path.stat().st_mode) != mode:
        path.chmod(mode)
    return path


def open_private(path: Path, *, append: bool = True) -> BinaryIO:
    """Opens ``path`` for writing bytes, created 0600 (an existing file of ours is set to 0600)."""
    private_dir(path.parent)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, PRIVATE_FILE_MODE)
    with contextlib.suppress(PermissionError):  # a file another user owns keeps its mode
        os.fchmod(fd, PRIVATE_FILE_MODE)
    return os.fdopen(fd, "ab" if append else "wb")


def write_atomically(dest: Path, write: Callable[[BinaryIO], object]) -> None:
    """``write(handle)`` into a private temp file next to ``dest``, then renames it over ``dest``: a reader
    (or a crash) sees the old file or the new one, never half of one, and concurrent writers cannot mix."""
    private_dir(dest.parent)
    fd, name = tempfile.mkstemp(prefix=ATOMIC_TMP_PREFIX, dir=dest.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            os.fchmod(out.fileno(), PRIVATE_FILE_MODE)
            write(out)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(dest)  # os.replace: atomic within the folder
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_json_state(path: Path) -> dict[str, Any]:
    """A state file written with :func:`write_json_state`; {} when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json_state(path: Path, state: dict[str, Any]) -> None:
    data = json.dumps(state, indent=2, sort_keys=True).encode()
    write_atomically(path, lambda out: out.write(data))


def read_untrusted_text(path: Path, *, limit: int = 4096) -> str:
    """A small file written by a process we do not trust (a build's store root): never through a
    link, only a regular file, at most ``limit`` bytes. Raises OSError (ELOOP for a link) otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        return os.read(fd, limit).decode("utf-8", "replace")
    finally:
        os.close(fd)


def read_text_inside(path: Path, root: Path, *, limit: int = 64 << 20) -> str:
    """A checkout's file, read as root without leaving ``root``: a link (anywhere on the way) may point
    only inside it, and the file is opened by its resolved path with ``O_NOFOLLOW``. Raises OSError
    naming the link otherwise (a branch's ``package.json -> /etc/...``)."""
    resolved = path.resolve()
    base = root.resolve()
    if resolved != base and base not in resolved.parents:
        raise OSError(f"{path} leads out of {root} (to {resolved})")
    fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        with os.fdopen(os.dup(fd), "rb") as handle:
            data = handle.read(limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise OSError(f"{path} is larger than {limit >> 20} MiB")
    return data.decode("utf-8")


def extract_data(tar: tarfile.TarFile, dest: Path) -> None:
    """``tar.extractall(dest, filter="data")``, also on a Python without extraction filters (Debian
    bookworm's 3.11.2, the run image's: they came with 3.11.4). There the same refusals are made here
    first: no absolute or ``..`` name, no link leaving ``dest``, no device or FIFO (each a
    ``tarfile.ExtractError``); modes lose set-id bits and group/other write, owners are not restored."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    root = dest.resolve()

    def inside(path: Path) -> bool:
        return path.resolve().is_relative_to(root)

    members = tar.getmembers()
    for member in members:
        target = root / member.name
        if Path(member.name).is_absolute() or ".." in Path(member.name).parts or not inside(target):
            raise tarfile.ExtractError(f"{member.name!r} is outside the destination")
        if member.isdev():
            raise tarfile.ExtractError(f"{member.name!r} is a device or FIFO")
        link = target.parent / member.linkname if member.issym() else root / member.linkname
        if (member.issym() or member.islnk()) and (Path(member.linkname).is_absolute() or not inside(link)):
            raise tarfile.ExtractError(f"{member.name!r} links outside the destination")
        member.mode = (member.mode & 0o755) | (0o600 if member.isfile() else 0)
        member.uid = member.gid = os.getuid()
        member.uname = member.gname = ""
    tar.extractall(root, members=members, numeric_owner=True)  # noqa: S202 (each member checked above)
