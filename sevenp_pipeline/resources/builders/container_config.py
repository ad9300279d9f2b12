"""The project's own container settings, rendered under the pipeline home.

Every container tool (buildah, skopeo, docker's skopeo exports) reads ``containers/*.conf`` from the
repository, rendered into ``<home>/containers/`` with the pipeline home filled in, through
``CONTAINERS_CONF``, ``CONTAINERS_STORAGE_CONF`` and ``CONTAINERS_REGISTRIES_CONF`` in the command
env; nothing under ``/etc`` is read for storage or edited.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sevenp_pipeline.config.settings import PROJECT_ROOT
from sevenp_pipeline.locks import file_lock

TEMPLATES_DIR = PROJECT_ROOT / "containers"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


@dataclass(frozen=True)
class ContainerConfig:
    """The project's effective container settings, rendered under the pipeline home."""

    root: Path
    storage_conf: Path
    containers_conf: Path
    registries_conf: Path
    policy: Path

    def env(self) -> dict[str, str]:
        # The local registry's credentials, once LocalRegistry wrote them (buildah refuses an auth file
        # that is not there); never in a build store, whose root must not hold them.
        auth = self.root / "auth" / "config.json"
        return {**({"REGISTRY_AUTH_FILE": str(auth)} if auth.is_file() else {}), **{
            "CONTAINERS_CONF": str(self.containers_conf),
            "CONTAINERS_STORAGE_CONF": str(self.storage_conf),
            "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf),
            "REGISTRIES_CONFIG_PATH": str(self.registries_conf),  # older c/image spelling
            "BUILDAH_ISOLATION": "chroot",
            "BUILDAH_FORMAT": "docker",
            "TMPDIR": str(self.root / "tmp"),  # layer staging during build/push, not /var/tmp
        }}


def render_container_config(
    *, home: Path, templates: Path = TEMPLATES_DIR, insecure_registries: Sequence[str] = (),
    mirrors: Mapping[str, str] | None = None,
) -> ContainerConfig:
    """Fills ``{home}``, ``{insecure_registries}`` and ``{mirrors}`` in the templates into ``<home>/containers``.

    Files are only rewritten when their content changes (atomic replace), under a lock.
    """
    root = home.resolve() / "containers"
    blocks = "\n".join(f'[[registry]]\nlocation = "{_toml_str(r)}"\ninsecure = true\n' for r in insecure_registries)
    mirror_blocks = "\n".join(
        f'[[registry]]\nprefix = "{_toml_str(src)}"\nlocation = "{_toml_str(src)}"\n'
        f'[[registry.mirror]]\nlocation = "{_toml_str(dst)}"\ninsecure = {str(is_insecure(dst, ())).lower()}\n'
        for src, dst in sorted((mirrors or {}).items())
    )
    values = {"{home}": str(home.resolve()), "{insecure_registries}": blocks, "{mirrors}": mirror_blocks}
    out = {}
    with file_lock(root / ".render.lock", what=f"container settings in {root}"):
        for name in ("storage.conf", "containers.conf", "registries.conf", "policy.json"):
            source = templates / name
            if not source.exists():
                raise FileNotFoundError(f"container settings template missing: {source}")
            text = source.read_text()
            for key, value in values.items():
                text = text.replace(key, value)
            dest = root / name
            if not dest.exists() or dest.read_text() != text:
                tmp = dest.with_name(f".{name}.tmp")
                tmp.write_text(text)
                tmp.replace(dest)
            out[name] = dest
        for sub in ("storage", "run", "events", "tmp", "exports", "logs"):
            (root / sub).mkdir(parents=True, exist_ok=True)
    return ContainerConfig(root=root, storage_conf=out["storage.conf"], containers_conf=out["containers.conf"],
                           registries_conf=out["registries.conf"], policy=out["policy.json"])


def _toml_str(value: str) -> str:
    if any(c in value for c in '"\\\n'):
        raise ValueError(f"registry name {value!r} cannot be written to registries.conf")
    return value


def is_insecure(ref_or_host: str, extra: Sequence[str]) -> bool:
    """Loopback registries and those listed in ``extra`` speak plain HTTP."""
    host = ref_or_host.split("/", 1)[0]
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return name in _LOOPBACK_HOSTS or host in extra or name in extra
