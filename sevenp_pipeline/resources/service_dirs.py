"""Where the test servers' folders live, and who owns each one.

The folders sit under the project home (``<home>/services``), one ``svc-*`` folder per
``TestServices.provide()``, so two pipeline instances on one machine never share them. The servers
run as an unprivileged user that must traverse to its folder: the services root and its parent
(the home) get the search bit for others (0711: no listing), the ``svc-*`` folders are 0700 and
owned by that user. If a folder above the home does not let that user through (a 0700 home
directory), the root falls back to a per-instance folder under the system temp dir.

Each ``svc-*`` folder records its owner (pid, the pid's start time, the boot id). A run worker
killed with SIGKILL takes its servers with it (parent-death signal) but leaves its folder; the next
``provide()`` removes folders whose owner is gone, and a reused pid does not keep one alive.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import json
import os
import pwd
import shutil
import stat
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

OWNER_FILE = "owner.json"
# sun_path is 108 bytes with its NUL: PostgreSQL refuses a longer socket path.
MAX_SOCKET_PATH = 107
PG_SOCKET_NAME = ".s.PGSQL.65535"  # the longest name PostgreSQL gives its socket
# A folder with no owner record is one being set up (the record follows mkdtemp at once) or one
# left by an older version: only the second is this old.
UNOWNED_GRACE_SECONDS = 600


@dataclass(frozen=True)
class Owner:
    """A process, told apart from a later one with the same pid by its start time and the boot."""

    pid: int
    start_ticks: int
    boot_id: str

    @classmethod
    def current(cls) -> Owner:
        pid = os.getpid()
        return cls(pid=pid, start_ticks=_start_ticks(pid) or 0, boot_id=_boot_id())

    def alive(self) -> bool:
        return self.boot_id == _boot_id() and _start_ticks(self.pid) == self.start_ticks


def _start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat: when the process started, in clock ticks since boot."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] == "Z" else int(fields[19])


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def record_owner(folder: Path, owner: Owner | None = None) -> None:
    (folder / OWNER_FILE).write_text(json.dumps(asdict(owner or Owner.current())))


def read_owner(folder: Path) -> Owner | None:
    try:
        data = json.loads((folder / OWNER_FILE).read_text())
        return Owner(pid=int(data["pid"]), start_ticks=int(data["start_ticks"]), boot_id=str(data["boot_id"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def remove_abandoned(root: Path, *, now: float | None = None) -> list[Path]:
    """Removes the ``svc-*`` folders under ``root`` whose owner process is gone; returns them."""
    now = time.time() if now is None else now
    removed = []
    for folder in sorted(root.glob("svc-*")):
        if not folder.is_dir():
            continue
        owner = read_owner(folder)
        if owner is not None and owner.alive():
            continue
        if owner is None:
            try:
                if now - folder.stat().st_mtime < UNOWNED_GRACE_SECONDS:
                    continue
            except OSError:
                continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _traversable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """Whether ``user`` may search every folder from / down to ``path``."""
    groups = {user.pw_gid, *(g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem)}
    for folder in [*reversed(path.parents), path]:
        try:
            info = folder.stat()
        except OSError:
            return False
        if user.pw_uid == 0:
            continue
        if info.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif info.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


def _open_for_traversal(folder: Path) -> None:
    """Adds the search bit for group and others (never read or write) to a folder we own."""
    with contextlib.suppress(OSError):
        mode = stat.S_IMODE(folder.stat().st_mode)
        if mode & 0o011 != 0o011:
            folder.chmod(mode | 0o011)


def services_root(configured: Path, user: str | None) -> Path:
    """The folder for the ``svc-*`` folders: ``configured`` (created 0711, its parent opened for
    traversal) when ``user`` can reach it, else a per-instance folder under the system temp dir."""
    configured.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        configured.chmod(0o711)  # the folder names (svc-*, templates) are nobody else's business
    if user is None:  # the servers run as this process: nothing to open
        return configured
    entry = pwd.getpwnam(user)
    _open_for_traversal(configured.parent)
    if _traversable_by(configured, entry):
        return configured
    digest = hashlib.sha256(str(configured).encode()).hexdigest()[:12]
    fallback = Path(tempfile.gettempdir()) / f"sevenp-services-{digest}"
    fallback.mkdir(mode=0o711, exist_ok=True)
    info = fallback.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():  # a name others could have taken
        raise PermissionError(f"{fallback}: not a folder owned by this user; remove it ({user} cannot reach "
                              f"{configured}, so the test servers' folders go there)")
    _open_for_traversal(fallback)
    return fallback


def socket_dir_fits(folder: Path) -> bool:
    return len(os.fsencode(folder / PG_SOCKET_NAME)) <= MAX_SOCKET_PATH
