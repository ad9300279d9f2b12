"""The container image builder role: build an image from a Dockerfile, push it, look images up.

Assets depend on :class:`ImageBuilder`. :class:`BuildahBuilder` builds daemonless with buildah
(``bud --isolation chroot``, overlay storage, layer cache, docker format so HEALTHCHECK survives)
and is what runs on the pipeline's own machines. :class:`DockerBuilder` drives the ``docker`` CLI
against an engine at ``docker_host`` with the same interface; there is no Docker engine on the
development machines, so it is covered by unit tests at the :class:`ProcessRunner` seam only.

All container tools read the project's own settings (``containers/*.conf`` in the repository,
rendered into ``<home>/containers/`` with the pipeline home filled in) through
``CONTAINERS_CONF``, ``CONTAINERS_STORAGE_CONF`` and ``CONTAINERS_REGISTRIES_CONF`` in the
command env; nothing under ``/etc`` is read for storage or edited.

Pushing *by digest* (``destination_ref`` ending in ``@sha256:...``) works the same for both
builders: the image is first exported to a local ``dir:`` layout (compressed layers, the exact
manifest that will be pushed), whose manifest digest is then known before anything reaches the
registry; ``skopeo copy dir:... docker://repo@digest`` uploads it unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from sevenp_pipeline.config.settings import PROJECT_ROOT
from sevenp_pipeline.locks import file_lock
from sevenp_pipeline.resources.processes import ExecuteRequest, LogFn, Outcome, ProcessError, ProcessRunner

TEMPLATES_DIR = PROJECT_ROOT / "containers"
DOCKER_V2S2 = "application/vnd.docker.distribution.manifest.v2+json"
INPUT_HASH_LABEL = "org.sevenp.inputs-hash"
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


class ImageBuildError(Exception):
    """A build could not run or failed. Names the Dockerfile and carries the build log tail."""

    def __init__(self, message: str, *, dockerfile: Path, log_tail: str = "") -> None:
        super().__init__(f"{message}\n{log_tail}" if log_tail else message)
        self.dockerfile = dockerfile
        self.log_tail = log_tail


class ImagePushError(Exception):
    """A push or export failed; the message names the command, the destination and the output tail."""

    def __init__(self, message: str, *, outcome: Outcome | None = None) -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True)
class BuiltImage:
    """An image in the builder's local store."""

    image_id: str  # 64 hex, the local image id (for docker-format images: the config digest's hex)
    config_digest: str  # sha256:<hex>
    size_bytes: int  # uncompressed layers + config
    layer_count: int
    local_name: str  # e.g. localhost/sevenp/7p-education-api:build-<hash>


@dataclass(frozen=True)
class ExportedImage:
    """An image written to a ``dir:`` layout: exactly the manifest and blobs a registry receives."""

    image_id: str
    manifest_digest: str
    manifest: bytes
    media_type: str
    path: Path


@dataclass(frozen=True)
class RemoteImage:
    """An image as a registry serves it."""

    ref: str
    digest: str  # manifest digest
    media_type: str
    labels: Mapping[str, str]
    layer_count: int


@dataclass(frozen=True)
class ContainerConfig:
    """The project's effective container settings, rendered under the pipeline home."""

    root: Path
    storage_conf: Path
    containers_conf: Path
    registries_conf: Path
    policy: Path

    def env(self) -> dict[str, str]:
        return {
            "CONTAINERS_CONF": str(self.containers_conf),
            "CONTAINERS_STORAGE_CONF": str(self.storage_conf),
            "CONTAINERS_REGISTRIES_CONF": str(self.registries_conf),
            "REGISTRIES_CONFIG_PATH": str(self.registries_conf),  # older c/image spelling
            "BUILDAH_ISOLATION": "chroot",
            "BUILDAH_FORMAT": "docker",
            "TMPDIR": str(self.root / "tmp"),  # layer staging during build/push, not /var/tmp
        }


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
        f'[[registry.mirror]]\nlocation = "{_toml_str(dst)}"\ninsecure = {str(_is_insecure(dst, ())).lower()}\n'
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


def split_ref(ref: str) -> tuple[str, str, str | None, str | None]:
    """``host[:port]/repo[:tag][@digest]`` → (host, repo, tag, digest). A ref without a host is rejected."""
    rest, _, digest = ref.partition("@")
    host, slash, path = rest.partition("/")
    if not slash or not path or not ("." in host or ":" in host or host == "localhost"):
        raise ValueError(f"image reference {ref!r} must be fully qualified (registry host first)")
    repo, colon, tag = path.rpartition(":")
    if not colon:
        repo, tag = path, ""
    return host, repo, tag or None, digest or None


def _is_insecure(ref_or_host: str, extra: Sequence[str]) -> bool:
    host = ref_or_host.split("/", 1)[0]
    name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
    return name in _LOOPBACK_HOSTS or host in extra or name in extra


# -- the inputs of a build -----------------------------------------------------------------
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


# -- the role ----------------------------------------------------------------------------------
class ImageBuilder(dg.ConfigurableResource, ABC):
    """Builds images from Dockerfiles and pushes them to registries."""

    runner: ProcessRunner
    home: str = Field(description="pipeline home; container settings and storage live in <home>/containers")
    insecure_registries: list[str] = Field(
        default_factory=list, description="plain-HTTP registries besides loopback ones (always insecure)"
    )
    mirrors: dict[str, str] = Field(
        default_factory=dict, description="registry prefix -> mirror location written to registries.conf"
    )
    skopeo: str = Field(default="skopeo", description="skopeo binary (exports, pushes by digest, inspection)")
    build_timeout_seconds: float = Field(default=1800, description="limit for one image build")
    push_timeout_seconds: float = Field(default=900, description="limit for one export or push")

    # -- abstract ------------------------------------------------------------------------------
    @abstractmethod
    def build(
        self, *, context_dir: Path, dockerfile: Path, image_name: str, build_args: Mapping[str, str],
        labels: Mapping[str, str], log: LogFn | None = None,
    ) -> BuiltImage:
        """Builds ``dockerfile`` with ``context_dir`` as context into the local store as ``image_name``."""

    @abstractmethod
    def _push_tagged(self, *, image: BuiltImage, destination_ref: str, log: LogFn | None) -> str:
        """Pushes to ``host/repo:tag``; returns the manifest digest."""

    @abstractmethod
    def _export_dir(self, *, image: BuiltImage, dest: Path, log: LogFn | None) -> None:
        """Writes the image as a ``dir:`` layout with gzip'd layers and a docker v2s2 manifest."""

    @abstractmethod
    def inspect_remote(self, ref: str) -> RemoteImage | None:
        """The image at ``ref`` in its registry, or None when the registry does not have it."""

    # -- shared --------------------------------------------------------------------------------
    @staticmethod
    def checked_dockerfile(context_dir: Path, dockerfile: Path) -> Path:
        """The Dockerfile's absolute path; raises ImageBuildError naming it when it is missing."""
        dockerfile = dockerfile if dockerfile.is_absolute() else context_dir / dockerfile
        if not dockerfile.is_file():
            raise ImageBuildError(f"Dockerfile not found: {dockerfile}", dockerfile=dockerfile)
        return dockerfile

    @staticmethod
    def arg_and_label_flags(build_args: Mapping[str, str], labels: Mapping[str, str]) -> list[str]:
        """``--build-arg K=V`` and ``--label K=V`` in a stable order (both CLIs spell them alike)."""
        flags: list[str] = []
        for key in sorted(build_args):
            flags += ["--build-arg", f"{key}={build_args[key]}"]
        for key in sorted(labels):
            flags += ["--label", f"{key}={labels[key]}"]
        return flags

    def config(self) -> ContainerConfig:
        return render_container_config(home=Path(self.home), insecure_registries=self.insecure_registries,
                                       mirrors=self.mirrors)

    def tls_verify(self, ref: str) -> bool:
        return not _is_insecure(ref, self.insecure_registries)

    def push(self, *, image: BuiltImage, destination_ref: str, log: LogFn | None = None) -> str:
        """Pushes ``image`` to ``destination_ref`` and returns the manifest digest that was pushed.

        ``host/repo@sha256:...`` pushes by digest (nothing is tagged); the digest must be the
        one :meth:`export` reports. ``host/repo:tag`` pushes and tags in one step.
        """
        _, _, _, digest = split_ref(destination_ref)
        if digest is None:
            return self._push_tagged(image=image, destination_ref=destination_ref, log=log)
        exported = self.export(image=image, log=log)
        if exported.manifest_digest != digest:
            raise ImagePushError(
                f"push to {destination_ref}: the image {image.local_name} exports as {exported.manifest_digest}, "
                f"not {digest}"
            )
        self.copy(source=f"dir:{exported.path}", dest=f"docker://{destination_ref}", log=log,
                  label=f"push {destination_ref}")
        return digest

    def export(self, *, image: BuiltImage, log: LogFn | None = None) -> ExportedImage:
        """The image as a registry will receive it (cached per image id under ``<home>/containers/exports``)."""
        cfg = self.config()
        dest = cfg.root / "exports" / image.image_id
        with file_lock(cfg.root / "exports" / f".{image.image_id}.lock", what=f"export of {image.local_name}"):
            if not (dest / "manifest.json").exists():
                staging = Path(tempfile.mkdtemp(prefix=".export-", dir=cfg.root / "exports"))
                try:
                    shutil.rmtree(staging)
                    self._export_dir(image=image, dest=staging, log=log)
                    staging.rename(dest)
                finally:
                    shutil.rmtree(staging, ignore_errors=True)
        manifest = (dest / "manifest.json").read_bytes()
        media_type = json.loads(manifest).get("mediaType", DOCKER_V2S2)
        return ExportedImage(image_id=image.image_id, manifest_digest="sha256:" + hashlib.sha256(manifest).hexdigest(),
                             manifest=manifest, media_type=media_type, path=dest)

    def copy(self, *, source: str, dest: str, log: LogFn | None, label: str,
             extra: Sequence[str] = ()) -> Outcome:
        """``skopeo copy`` between two transports with the project's settings; raises ImagePushError."""
        cfg = self.config()
        argv = [self.skopeo, "--policy", str(cfg.policy), "copy", "--retry-times", "0"]
        if source.startswith("docker://"):
            argv.append(f"--src-tls-verify={str(self.tls_verify(source[9:])).lower()}")
        if dest.startswith("docker://"):
            argv.append(f"--dest-tls-verify={str(self.tls_verify(dest[9:])).lower()}")
        argv += [*extra, source, dest]
        return self.check_tool(argv, label=label, log=log, timeout=self.push_timeout_seconds)

    def run_tool(self, argv: Sequence[str], *, label: str, log: LogFn | None, timeout: float,
                 capture: bool = False, env: Mapping[str, str] | None = None) -> Outcome:
        """Runs a container tool with the project's settings in its env; never raises for an exit code."""
        cfg = self.config()
        request = ExecuteRequest(argv=argv, cwd=cfg.root, label=label, timeout_seconds=timeout,
                                 env={**cfg.env(), **(env or {})}, capture=capture,
                                 log_path=cfg.root / "logs" / f"{_slug(label)}.log")
        try:
            return self.runner.run(request, log=log)
        except ProcessError as exc:  # could not even start (binary missing)
            raise ImagePushError(str(exc)) from exc

    def check_tool(self, argv: Sequence[str], *, label: str, log: LogFn | None, timeout: float,
                   capture: bool = False) -> Outcome:
        """Like :meth:`run_tool`; raises :class:`ImagePushError` with the output tail on failure."""
        outcome = self.run_tool(argv, label=label, log=log, timeout=timeout, capture=capture)
        if not outcome.ok:
            raise ImagePushError(f"{outcome.describe()}\n{outcome.tail_text()}", outcome=outcome)
        return outcome

    def _skopeo_inspect(self, ref: str) -> RemoteImage | None:
        cfg = self.config()
        argv = [self.skopeo, "--policy", str(cfg.policy), "inspect", "--no-tags", "--retry-times", "0",
                f"--tls-verify={str(self.tls_verify(ref)).lower()}", f"docker://{ref}"]
        outcome = self.run_tool(argv, label=f"inspect {ref}", log=None, timeout=120, capture=True)
        text = "\n".join(outcome.output)
        if not outcome.ok:
            if _looks_missing(text):
                return None
            raise ImagePushError(f"{outcome.describe()}\n{outcome.tail_text()}", outcome=outcome)
        data = json.loads(text[text.index("{"):])
        raw = self.run_tool([*argv[:3], "inspect", "--raw", *argv[4:]], label=f"inspect {ref}", log=None,
                            timeout=120, capture=True)
        media_type = json.loads("\n".join(raw.output)).get("mediaType", "") if raw.ok else ""
        return RemoteImage(ref=ref, digest=data["Digest"], media_type=media_type,
                           labels=dict(data.get("Labels") or {}), layer_count=len(data.get("Layers") or []))


def _looks_missing(text: str) -> bool:
    lowered = text.lower()
    return any(s in lowered for s in ("manifest unknown", "name unknown", "not found", "404"))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80]


def _read_digest_file(path: Path, what: str) -> str:
    try:
        digest = path.read_text().strip()
    except OSError as exc:
        raise ImagePushError(f"{what}: no digest file written at {path}") from exc
    if not _DIGEST_RE.match(digest):
        raise ImagePushError(f"{what}: unexpected digest {digest!r} in {path}")
    return digest


class BuildahBuilder(ImageBuilder):
    """Daemonless builds with buildah (chroot isolation, overlay storage, layer cache, docker format)."""

    buildah: str = Field(default="buildah", description="buildah binary")
    jobs: int = Field(default=2, description="build stages run in parallel (buildah bud --jobs)")

    def buildah_argv(self) -> list[str]:
        """``buildah`` with the global options every call uses."""
        return [self.buildah, "--storage-driver", "overlay"]

    def build(
        self, *, context_dir: Path, dockerfile: Path, image_name: str, build_args: Mapping[str, str],
        labels: Mapping[str, str], log: LogFn | None = None,
    ) -> BuiltImage:
        dockerfile = self.checked_dockerfile(context_dir, dockerfile)
        if not context_dir.is_dir():
            raise ImageBuildError(f"build context {context_dir} for {dockerfile} is not a directory",
                                  dockerfile=dockerfile)
        cfg = self.config()
        with tempfile.TemporaryDirectory(dir=cfg.root / "tmp") as tmp:
            iidfile = Path(tmp) / "iid"
            argv = [*self.buildah_argv(), "bud", "--isolation", "chroot", "--layers", "--format", "docker",
                    "--signature-policy", str(cfg.policy), "--jobs", str(self.jobs), "--iidfile", str(iidfile)]
            base_refs = [v for k, v in build_args.items() if k.upper().endswith("IMAGE")]
            if any(not self.tls_verify(r) for r in base_refs if "/" in r):
                argv.append("--tls-verify=false")
            argv += self.arg_and_label_flags(build_args, labels)
            argv += ["-f", str(dockerfile), "-t", image_name, str(context_dir)]
            outcome = self.run_tool(argv, label=f"build {image_name}", log=log, timeout=self.build_timeout_seconds)
            if not outcome.ok:
                raise ImageBuildError(
                    f"building {dockerfile} failed: {outcome.describe()}", dockerfile=dockerfile,
                    log_tail=outcome.tail_text(40),
                )
            image_id = iidfile.read_text().strip().removeprefix("sha256:")
        return self.local_image(image_id)

    def local_image(self, name_or_id: str) -> BuiltImage:
        """The local image ``name_or_id`` as a :class:`BuiltImage` (raises ImagePushError if absent)."""
        outcome = self.check_tool([*self.buildah_argv(), "inspect", "--type", "image", name_or_id],
                                  label=f"inspect {name_or_id}", log=None, timeout=120, capture=True)
        data = json.loads("\n".join(outcome.output))
        manifest = json.loads(data["Manifest"])
        names = [n for n in (data.get("FromImage"), name_or_id) if n]
        layers = manifest.get("layers") or []
        return BuiltImage(
            image_id=data["FromImageID"],
            config_digest=manifest["config"]["digest"],
            size_bytes=sum(int(layer["size"]) for layer in layers) + int(manifest["config"]["size"]),
            layer_count=len(layers),
            local_name=names[0],
        )

    def has_local(self, name: str) -> bool:
        outcome = self.run_tool([*self.buildah_argv(), "inspect", "--type", "image", name], label=f"inspect {name}",
                                log=None, timeout=120)
        return outcome.ok

    def _export_dir(self, *, image: BuiltImage, dest: Path, log: LogFn | None) -> None:
        policy = str(self.config().policy)
        self.check_tool([*self.buildah_argv(), "push", "--format", "v2s2", "--signature-policy", policy,
                         image.image_id, f"dir:{dest}"], label=f"export {image.local_name}", log=log,
                        timeout=self.push_timeout_seconds)

    def _push_tagged(self, *, image: BuiltImage, destination_ref: str, log: LogFn | None) -> str:
        cfg = self.config()
        with tempfile.TemporaryDirectory(dir=cfg.root / "tmp") as tmp:
            digestfile = Path(tmp) / "digest"
            self.check_tool([*self.buildah_argv(), "push", "--format", "v2s2", "--retry", "0",
                             f"--tls-verify={str(self.tls_verify(destination_ref)).lower()}",
                             "--signature-policy", str(cfg.policy), "--digestfile", str(digestfile),
                             image.image_id, f"docker://{destination_ref}"],
                            label=f"push {destination_ref}", log=log, timeout=self.push_timeout_seconds)
            return _read_digest_file(digestfile, f"push {destination_ref}")

    def inspect_remote(self, ref: str) -> RemoteImage | None:
        return self._skopeo_inspect(ref)


class DockerBuilder(ImageBuilder):
    """The same interface through the ``docker`` CLI against the engine at ``docker_host``.

    Not runnable on the project's development machines (no Docker engine): its tests drive it with
    a fake :class:`ProcessRunner`. Exports use ``docker save`` + ``skopeo copy docker-archive:``,
    so pushing by digest needs skopeo on the machine running the CLI.
    """

    docker: str = Field(default="docker", description="docker CLI binary")
    docker_host: str = Field(default="unix:///var/run/docker.sock", description="DOCKER_HOST of the engine")

    def _docker_env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.docker_host, "DOCKER_BUILDKIT": "1"}

    def _docker(self, argv: Sequence[str], *, label: str, log: LogFn | None, timeout: float,
                capture: bool = False) -> Outcome:
        return self.run_tool([self.docker, *argv], label=label, log=log, timeout=timeout, capture=capture,
                             env=self._docker_env())

    def build(
        self, *, context_dir: Path, dockerfile: Path, image_name: str, build_args: Mapping[str, str],
        labels: Mapping[str, str], log: LogFn | None = None,
    ) -> BuiltImage:
        dockerfile = self.checked_dockerfile(context_dir, dockerfile)
        cfg = self.config()
        with tempfile.TemporaryDirectory(dir=cfg.root / "tmp") as tmp:
            iidfile = Path(tmp) / "iid"
            argv = ["build", "--progress", "plain", "--iidfile", str(iidfile)]
            argv += self.arg_and_label_flags(build_args, labels)
            argv += ["-f", str(dockerfile), "-t", image_name, str(context_dir)]
            outcome = self._docker(argv, label=f"build {image_name}", log=log, timeout=self.build_timeout_seconds)
            if not outcome.ok:
                raise ImageBuildError(f"building {dockerfile} failed: {outcome.describe()}",
                                      dockerfile=dockerfile, log_tail=outcome.tail_text(40))
            if not iidfile.exists():
                raise ImageBuildError(f"building {dockerfile}: docker wrote no image id", dockerfile=dockerfile)
            image_id = iidfile.read_text().strip()
        return self._local_image(image_id, image_name)

    def _local_image(self, image_id: str, name: str) -> BuiltImage:
        outcome = self._docker(["image", "inspect", image_id], label=f"inspect {name}", log=None,
                               timeout=120, capture=True)
        if not outcome.ok:
            raise ImagePushError(f"{outcome.describe()}\n{outcome.tail_text()}", outcome=outcome)
        data = json.loads("\n".join(outcome.output))[0]
        return BuiltImage(
            image_id=data["Id"].removeprefix("sha256:"),
            config_digest=data["Id"],
            size_bytes=int(data.get("Size", 0)),
            layer_count=len(data.get("RootFS", {}).get("Layers") or []),
            local_name=name,
        )

    def _export_dir(self, *, image: BuiltImage, dest: Path, log: LogFn | None) -> None:
        cfg = self.config()
        with tempfile.TemporaryDirectory(dir=cfg.root / "tmp") as tmp:
            archive = Path(tmp) / "image.tar"
            outcome = self._docker(["save", "-o", str(archive), image.local_name],
                                   label=f"save {image.local_name}", log=log, timeout=self.push_timeout_seconds)
            if not outcome.ok:
                raise ImagePushError(f"{outcome.describe()}\n{outcome.tail_text()}", outcome=outcome)
            self.copy(source=f"docker-archive:{archive}", dest=f"dir:{dest}", log=log,
                      label=f"export {image.local_name}", extra=["--format", "v2s2", "--dest-compress"])

    def _push_tagged(self, *, image: BuiltImage, destination_ref: str, log: LogFn | None) -> str:
        tagged = self._docker(["tag", image.image_id, destination_ref], label=f"tag {destination_ref}", log=log,
                              timeout=120)
        if not tagged.ok:
            raise ImagePushError(f"{tagged.describe()}\n{tagged.tail_text()}", outcome=tagged)
        outcome = self._docker(["push", destination_ref], label=f"push {destination_ref}", log=log,
                               timeout=self.push_timeout_seconds, capture=True)
        if not outcome.ok:
            raise ImagePushError(f"{outcome.describe()}\n{outcome.tail_text()}", outcome=outcome)
        found = re.findall(r"digest: (sha256:[0-9a-f]{64})", "\n".join(outcome.output))
        if not found:
            raise ImagePushError(f"push {destination_ref}: docker reported no digest\n{outcome.tail_text()}")
        return found[-1]

    def inspect_remote(self, ref: str) -> RemoteImage | None:
        argv = ["manifest", "inspect", "--verbose"]
        if not self.tls_verify(ref):
            argv.append("--insecure")
        outcome = self._docker([*argv, ref], label=f"inspect {ref}", log=None, timeout=120, capture=True)
        text = "\n".join(outcome.output)
        if not outcome.ok:
            if _looks_missing(text) or "no such manifest" in text.lower():
                return None
            raise ImagePushError(f"{outcome.describe()}\n{outcome.tail_text()}", outcome=outcome)
        data = json.loads(text)
        data = data[0] if isinstance(data, list) else data
        manifest = data.get("SchemaV2Manifest") or data.get("OCIManifest") or {}
        return RemoteImage(ref=ref, digest=data["Descriptor"]["digest"],
                           media_type=data["Descriptor"].get("mediaType", ""), labels={},
                           layer_count=len(manifest.get("layers") or []))
