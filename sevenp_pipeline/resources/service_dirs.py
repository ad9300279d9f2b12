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

The record is there for the folder's whole life, so a folder without one is a folder whose removal
was interrupted: a folder is set up under a hidden name (``.svc-new-*``) and renamed to ``svc-*``
once its record is written, and it is removed with its record last. (Removing it in directory order,
a worker killed mid-removal could leave ``pgdata`` without the record, and the janitor took such a
folder for one still being set up: the leak after a killed run worker.)
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

from sevenp_pipeline.files import private_dir

OWNER_FILE = "owner.json"
PREFIX = "svc-"
SETUP_PREFIX = ".svc-new-"  # a folder being set up: renamed to svc-* once its owner is recorded
# sun_path is 108 bytes with its NUL: PostgreSQL refuses a longer socket path.
MAX_SOCKET_PATH = 107
PG_SOCKET_NAME = ".s.PGSQL.65535"  # the longest name PostgreSQL gives its socket
# A folder still under its setup name this long was left by a process killed while setting it up.
SETUP_GRACE_SECONDS = 600


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


def make_service_dir(root: Path) -> Path:
    """A new 0700 ``svc-*`` folder under ``root``, owned by this process from the moment it has that name."""
    staging = Path(tempfile.mkdtemp(prefix=SETUP_PREFIX, dir=root))
    record_owner(staging)
    folder = root / (PREFIX + staging.name.removeprefix(SETUP_PREFIX))
    staging.rename(folder)
    return folder


def remove_service_dir(folder: Path, *, attempts: int = 3) -> None:
    """Removes an ``svc-*`` folder, its owner record last. Raises OSError naming what is left when it
    cannot (a process still writing into it: tried ``attempts`` times, 0.2 s apart)."""
    errors: list[str] = []

    def note(_function: object, path: str, exc_info: tuple) -> None:
        if not isinstance(exc_info[1], FileNotFoundError):  # removed by a concurrent janitor meanwhile
            errors.append(f"{path}: {exc_info[1]}")

    for attempt in range(attempts):
        errors.clear()
        try:
            entries = [e for e in folder.iterdir() if e.name != OWNER_FILE]
        except FileNotFoundError:
            return
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, onerror=note)
            else:
                with contextlib.suppress(FileNotFoundError):
                    entry.unlink()
        if not errors:
            (folder / OWNER_FILE).unlink(missing_ok=True)
            try:
                folder.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError as exc:  # something was created meanwhile
                errors.append(f"{folder}: {exc}")
        if attempt + 1 < attempts:
            time.sleep(0.2)
    raise OSError(f"service folder {folder} not removed: {'; '.join(errors[:3])}")


def remove_abandoned(root: Path, *, now: float | None = None) -> tuple[list[Path], list[str]]:
    """Removes the ``svc-*`` folders under ``root`` whose owner process is gone or whose removal was
    interrupted (no owner record), and setup folders left by a process killed while making one.
    Returns the folders removed and, for each that could not be, why."""
    now = time.time() if now is None else now
    removed: list[Path] = []
    failed: list[str] = []
    for folder in sorted(root.glob(PREFIX + "*")):
        if not folder.is_dir():
            continue
        owner = read_owner(folder)
        if owner is not None and owner.alive():
            continue
        try:
            remove_service_dir(folder)
        except OSError as exc:
            failed.append(str(exc))
            continue
        removed.append(folder)
    for staging in sorted(root.glob(SETUP_PREFIX + "*")):
        try:
            if now - staging.stat().st_mtime < SETUP_GRACE_SECONDS:
                continue
        except OSError:
            continue
        shutil.rmtree(staging, ignore_errors=True)
        if staging.exists():
            failed.append(f"setup folder {staging} not removed")
        else:
            removed.append(staging)
    return removed, failed


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
    private_dir(configured)
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
    private_dir(fallback)
    info = fallback.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():  # a name others could have taken
        raise PermissionError(f"{fallback}: not a folder owned by this user; remove it ({user} cannot reach "
                              f"{configured}, so the test servers' folders go there)")
    fallback.chmod(0o711)
    return fallback


def socket_dir_fits(folder: Path) -> bool:
    return len(os.fsencode(folder / PG_SOCKET_NAME)) <= MAX_SOCKET_PATH
