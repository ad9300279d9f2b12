"""Build stores: where a branch's Dockerfile is built, as root of a user namespace of its own.

buildah runs as root inside a user namespace whose root is an unprivileged host uid, with a container
store owned by that uid. A RUN step that leaves buildah's chroot (the classic ``chroot`` +
``chdir("..")`` escape) is then that uid on the host: it cannot read a file that is not
world-readable (the signing key, the orchestrator's home) nor write one it does not own.

What it does own is its store: the layer cache of every build in it. So builds get a store (and a
uid range) per trust domain: one app's builds never share a store with another app's, and the
commits no deploy branch holds (feature branches) never share one with those that deploy. A feature
branch that escapes its chroot can poison only the cache of its own app's other feature branches.

Stores are numbered in ``<home>/containers/builds/stores.json`` (key → number, under a lock); store
``n`` lives in ``builds/<n>/containers/`` and its root is host uid ``uid_base + n * 65536``.
Its settings files are root's (0644), so a build can read but never change them.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sevenp_pipeline.files import private_dir
from sevenp_pipeline.locks import file_lock
from sevenp_pipeline.resources.builders.container_config import ContainerConfig, render_container_config

USERNS_SIZE = 65536
_OWNED = ("storage", "run", "tmp", "exports", "events", "home")  # what buildah writes, owned by the store's root
_CONF = ("storage.conf", "containers.conf", "registries.conf", "policy.json")
_MAX_STORES = 4096


@dataclass(frozen=True)
class BuildStore:
    """One trust domain's container store and the host uid its user namespace's root maps to."""

    key: str
    number: int
    uid: int
    config: ContainerConfig

    @property
    def home(self) -> Path:
        """The folder bound into the build's sandbox (``<home>/containers/builds/<n>``)."""
        return self.config.root.parent

    @property
    def userns(self) -> tuple[int, int]:
        return (self.uid, USERNS_SIZE)

    def env(self) -> dict[str, str]:
        # HOME: buildah keeps its CNI lock under ~/.config; the orchestrator's HOME is not the store's.
        return {**self.config.env(), "HOME": str(self.config.root / "home")}


def store_key(repository: str, trusted: bool) -> str:
    """The trust domain of a build: its image repository, and whether a deploy branch holds the commit."""
    return f"{repository}#{'trusted' if trusted else 'untrusted'}"


def build_store(
    *, home: Path, key: str, uid_base: int, insecure_registries: Sequence[str] = (),
    mirrors: dict[str, str] | None = None,
) -> BuildStore:
    """The store for ``key``, made on first use: numbered, rendered, and owned by its uid."""
    builds = home.resolve() / "containers" / "builds"
    private_dir(builds, mode=0o711)
    index = builds / "stores.json"
    with file_lock(builds / ".stores.lock", what=f"build stores in {builds}"):
        try:
            numbers: dict[str, int] = json.loads(index.read_text())
        except FileNotFoundError:
            numbers = {}
        except ValueError as exc:
            raise ValueError(f"{index}: not JSON ({exc}); it maps build-store keys to numbers") from exc
        number = numbers.get(key)
        if number is None:
            number = max(numbers.values(), default=-1) + 1
            if number >= _MAX_STORES:
                raise ValueError(f"{index}: {number} build stores; remove unused ones (and their folders)")
            numbers[key] = number
            tmp = index.with_suffix(".tmp")
            tmp.write_text(json.dumps(numbers, indent=2, sort_keys=True))
            tmp.replace(index)
    uid = uid_base + number * USERNS_SIZE
    store_home = builds / f"{number:04d}"
    private_dir(store_home, mode=0o755)
    (store_home / "README").write_text(f"build store {number}: {_plain(key)}; root inside = host uid {uid}\n")
    config = render_container_config(home=store_home, insecure_registries=insecure_registries, mirrors=mirrors)
    config.root.chmod(0o755)
    for name in _CONF:
        (config.root / name).chmod(0o644)
    for name in _OWNED:
        path = config.root / name
        path.mkdir(exist_ok=True)
        if path.stat().st_uid != uid:
            os.chown(path, uid, uid)
            path.chmod(0o700)
    return BuildStore(key=key, number=number, uid=uid, config=config)


def _plain(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._/#@-]", "_", text)
