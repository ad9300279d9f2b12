"""Where each commit's isolated checkout, logs and dependency cache live, and what a stage's
sandbox sees of them (sevenp_pipeline/sandbox)."""

from __future__ import annotations

import functools
import json
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from sevenp_pipeline.config.models import Limits
from sevenp_pipeline.files import private_dir
from sevenp_pipeline.locks import file_lock
from sevenp_pipeline.models import Workspace
from sevenp_pipeline.sandbox import (
    STAGE_USER,
    Bind,
    Network,
    Overlay,
    SandboxSpec,
    StageUser,
    minimal_env,
    with_resolver,
)

# Hidden from every stage besides the workspace and cache roots: tmp folders shared by the machine.
ALWAYS_PRIVATE = ("/tmp", "/var/tmp", "/dev/shm")


@dataclass(frozen=True)
class StageRoom:
    """A stage's own folders in its commit's workspace: HOME, TMPDIR, its copy-on-write layer over
    node_modules and the report of processes it left behind. Made fresh for every stage run."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def upper(self) -> Path:
        return self.root / "layer" / "upper"

    @property
    def work(self) -> Path:
        return self.root / "layer" / "work"

    @property
    def report(self) -> Path:
        return self.root / "leftovers.jsonl"


class Workspaces(dg.ConfigurableResource):
    """One folder per (app, commit) under ``root``; dependency trees cached by lockfile hash.

    Stages run sandboxed (``sandbox``, on by default) as ``stage_user``: they see their checkout and
    their own HOME/TMPDIR, node_modules through a copy-on-write layer over the cache, and never
    ``root``, ``cache_root``, ``private_paths`` or the machine's /tmp.
    """

    root: str = Field(description="parent of the per-commit workspaces")
    cache_root: str = Field(description="node_modules trees cached by lockfile hash")
    stage_user: str = Field(default=STAGE_USER, description="unprivileged user stages run as (when root)")
    private_paths: list[str] = Field(
        default_factory=list,
        description="more folders stages must not see: the project home, DAGSTER_HOME, the orchestrator's HOME",
    )
    sandbox: bool = Field(default=True, description="false only where namespaces are unavailable: "
                                                    "stages then run with the orchestrator's rights")

    def for_commit(self, *, app: str, sha: str, subdir: str = "") -> Workspace:
        return Workspace(root=Path(self.root) / app / sha, app_subdir=subdir)

    def dependency_cache(self, key: str) -> Path:
        return Path(self.cache_root) / "node_modules" / key

    # -- the sandbox ---------------------------------------------------------------------------
    @property
    def user(self) -> StageUser:
        """Raises SandboxError (naming the fix) when the stage user is missing."""
        return _stage_user(self.stage_user)

    def hand_over(self, path: Path) -> None:
        """Gives a tree (a fresh checkout, an installed node_modules) to the stage user."""
        if self.sandbox:
            self.user.own(path, recursive=True)

    def private(self) -> list[Path]:
        return [Path(p) for p in (self.root, self.cache_root, *self.private_paths, *ALWAYS_PRIVATE)]

    def stage_room(self, workspace: Workspace, stage: str) -> StageRoom:
        """The stage's folders, emptied and recreated (HOME and TMPDIR 0700, owned by the stage user)."""
        room = StageRoom(workspace.root / "stages" / stage)
        shutil.rmtree(room.root, ignore_errors=True)
        for path in (room.home, room.tmp, room.upper, room.work):
            private_dir(path)
        room.upper.chmod(0o755)  # the merged node_modules takes the upper layer's owner and mode
        if self.sandbox:
            self.user.own(room.home, room.tmp, room.upper)
        return room

    def stage_sandbox(
        self, workspace: Workspace, room: StageRoom, *, cwd: Path, node_modules: Path | None,
        network: Network | None = None, limits: Limits | None = None,
    ) -> tuple[SandboxSpec | None, dict[str, str]]:
        """What a stage command sees, and its base environment (see sandbox.minimal_env).

        ``node_modules``: the cached tree the stage reads through its own layer (None for the
        install stage, which writes the checkout's node_modules itself). ``network``: the stage's own
        namespace (default: no forwarded port, no route out). ``limits``: its memory, processes, CPU
        share and largest file (the stage's resolved ``limits:``).
        """
        corepack = workspace.root / "corepack"  # pinned pnpm/yarn, downloaded once per commit
        if not corepack.is_dir():
            private_dir(corepack)  # stages running at once may both create it
            if self.sandbox:
                self.user.own(corepack)
        user = self.user.name if self.sandbox else os.environ.get("USER", "root")
        env = minimal_env(home=room.home, tmpdir=room.tmp, user=user, private=self.private())
        env["COREPACK_HOME"] = str(corepack)
        if not self.sandbox:
            return None, env
        overlays = ()
        if node_modules is not None:
            target = workspace.app_dir / "node_modules"
            target.mkdir(exist_ok=True)
            overlays = (Overlay(lower=node_modules, upper=room.upper, work=room.work, target=target),)
        # TMPDIR is the stage's own folder on disk, seen at /tmp: a short path, as unix sockets
        # need (Chromium's singleton socket under a deep TMPDIR fails "Socket path too long").
        env["TMPDIR"] = "/tmp"
        binds = [Bind(room.tmp, Path("/tmp")), Bind(workspace.src), Bind(room.home), Bind(corepack)]
        # `git clone --shared` reads objects from the app's mirror: readable, not writable.
        binds += [Bind(p, readonly=True) for p in _alternates(workspace.src)]
        network = with_resolver(network or Network(), room.root)
        spec = SandboxSpec(cwd=cwd, report=room.report, binds=tuple(binds), overlays=overlays,
                           hide=tuple(self.private()), uid=self.user.uid, gid=self.user.gid,
                           user_namespace=not self.user.switches, network=network, limits=limits)
        return spec, env


@functools.lru_cache(maxsize=8)
def _stage_user(name: str) -> StageUser:
    return StageUser.resolve(name)  # a failure is not cached: creating the user fixes it


def _alternates(src: Path) -> list[Path]:
    path = src / ".git" / "objects" / "info" / "alternates"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError:
        return []
    return [Path(line) for line in lines if line.strip() and Path(line).is_dir()]


def disk_usage(path: Path) -> int:
    """Bytes ``path``'s tree takes on disk (allocated blocks; a hard-linked file counted once), walked
    with ``os.scandir`` without following links or leaving the filesystem (an overlay mounted inside
    is not the tree's). A folder that vanishes meanwhile counts as empty."""
    try:
        top = os.lstat(path)
    except FileNotFoundError:
        return 0
    seen: set[tuple[int, int]] = set()
    total = top.st_blocks * 512
    folders = [path] if stat.S_ISDIR(top.st_mode) else []
    while folders:
        try:
            entries = os.scandir(folders.pop())
        except OSError:
            continue
        with entries:
            for entry in entries:
                try:
                    info = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                is_dir = entry.is_dir(follow_symlinks=False)
                if is_dir and info.st_dev != top.st_dev:
                    continue  # a mount point
                if info.st_nlink > 1 and not is_dir:
                    if (info.st_dev, info.st_ino) in seen:
                        continue
                    seen.add((info.st_dev, info.st_ino))
                total += info.st_blocks * 512
                if is_dir:
                    folders.append(Path(entry.path))
    return total


def read_inputs(workspace: Workspace) -> dict[str, Any]:
    """What earlier stages recorded about their inputs (tree hash, lockfile hash, node_modules)."""
    path = workspace.root / "inputs.json"
    return json.loads(path.read_text()) if path.exists() else {}


def record_inputs(workspace: Workspace, **values: Any) -> None:
    """Adds ``values`` to the workspace's inputs. Stages running at once (threads, or another run of
    the commit) take turns, and a reader never sees a half-written file."""
    path = workspace.root / "inputs.json"
    with file_lock(workspace.root / ".inputs.lock", what=f"inputs of {workspace.root}"):
        data = read_inputs(workspace)
        data.update(values)
        fd, tmp = tempfile.mkstemp(prefix=".inputs-", suffix=".tmp", dir=workspace.root)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(json.dumps(data, indent=2, sort_keys=True))
            Path(tmp).replace(path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
