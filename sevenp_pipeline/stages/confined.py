"""Removing a stage's stale outputs inside a checkout without following a link the commit planted.

A checkout is a branch's tree: ``reports`` may be a symlink to a folder outside it. Removing
``reports/junit.xml`` by path would then remove a file there, as root. Here each folder on the way is
opened with ``O_NOFOLLOW`` relative to the one before it (directory file descriptors), so a link in
the way stops the walk instead of being followed, and the last component is removed through its
folder's descriptor (``unlink`` and the descriptor-based removal of a folder never follow it either).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath


class LinkInTheWay(Exception):
    """A folder on the way to the path is a link (or not a folder): nothing was removed."""


@contextlib.contextmanager
def _parent_fd(root: Path, rel: str) -> Iterator[tuple[int, str]]:
    """The open folder that holds ``root/rel``'s last component (reached without following a link)."""
    path = PurePosixPath(rel)
    if not path.parts or path.is_absolute() or ".." in path.parts:
        raise ValueError(f"{rel!r} is not a path inside {root}")
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, name in enumerate(path.parts[:-1]):
            try:
                step = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                raise
            except OSError as exc:  # ELOOP: a link; ENOTDIR: a file, or a link to one
                raise LinkInTheWay(f"{'/'.join(path.parts[: i + 1])} is a link or not a folder") from exc
            os.close(fd)
            fd = step
        yield fd, path.parts[-1]
    finally:
        os.close(fd)


def remove_beneath(root: Path, rel: str) -> None:
    """Removes the file, link or folder ``root/rel`` if it is there, never through a link on the way
    (a link as the last component is removed itself, not what it points to).

    Raises :class:`LinkInTheWay` when a folder on the way is a link: nothing is removed, and the
    stage's report is refused where it is read, naming the link.
    """
    try:
        with _parent_fd(root, rel) as (fd, name):
            try:
                info = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except FileNotFoundError:
                return
            if stat.S_ISDIR(info.st_mode):
                _remove_folder(name, fd)
            else:
                os.unlink(name, dir_fd=fd)
    except FileNotFoundError:  # a folder on the way is not there: nothing to remove
        return


def _remove_folder(name: str, parent_fd: int) -> None:
    """``rm -r`` of ``name`` in the open folder ``parent_fd``, descending only through descriptors opened
    with ``O_NOFOLLOW`` (what ``shutil.rmtree(dir_fd=)`` does from Python 3.11 on)."""
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    try:
        with os.scandir(fd) as entries:
            for entry in list(entries):
                if entry.is_dir(follow_symlinks=False):
                    _remove_folder(entry.name, fd)
                else:
                    os.unlink(entry.name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)
