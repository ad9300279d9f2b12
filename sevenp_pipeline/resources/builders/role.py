"""The container image builder role: build an image from a Dockerfile, export it, push it by tag.

Assets depend on :class:`ImageBuilder`. :class:`~sevenp_pipeline.resources.builders.buildah.BuildahBuilder`
builds daemonless with buildah (``bud --isolation chroot``, overlay storage, layer cache, docker format so
HEALTHCHECK survives) and is what runs on the pipeline's own machines.
:class:`~sevenp_pipeline.resources.builders.docker.DockerBuilder` drives the ``docker`` CLI against an
engine at ``docker_host`` with the same interface; there is no Docker engine on the development
machines, so it is covered by unit tests at the :class:`ProcessRunner` seam only.

Pushing *by digest* is not the builder's job: :meth:`ImageBuilder.export` writes the image to a local
``dir:`` layout (compressed layers, the exact manifest that will be pushed), whose manifest digest is
then known before anything reaches a registry; the registry role uploads that layout unchanged through
:class:`~sevenp_pipeline.resources.registries.transport.SkopeoTransport`.
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

from sevenp_pipeline.config.models import Limits
from sevenp_pipeline.files import read_untrusted_text
from sevenp_pipeline.locks import file_lock
from sevenp_pipeline.resources.builders.container_config import ContainerConfig, is_insecure, render_container_config
from sevenp_pipeline.resources.processes import ExecuteRequest, LogFn, Outcome, ProcessError, ProcessRunner
from sevenp_pipeline.sandbox import SandboxSpec

DOCKER_V2S2 = "application/vnd.docker.distribution.manifest.v2+json"
INPUT_HASH_LABEL = "org.sevenp.inputs-hash"
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
    store: str = ""  # the build store's key (see builders/stores.py); "" = the builder's own store


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
        labels: Mapping[str, str], log: LogFn | None = None, trusted: bool = False, limits: Limits | None = None,
    ) -> BuiltImage:
        """Builds ``dockerfile`` with ``context_dir`` as context into the local store as ``image_name``.

        ``trusted``: a branch that deploys holds the commit; a builder that keeps stores per trust
        domain never builds it beside untrusted code (see builders/stores.py). ``limits``: the app's
        (``AppConfig.limits_of(None)``; None: the defaults) memory, processes, CPU share and largest
        file of the build and its RUN steps."""

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
        return not is_insecure(ref, self.insecure_registries)

    def push(self, *, image: BuiltImage, destination_ref: str, log: LogFn | None = None) -> str:
        """Pushes and tags ``image`` as ``host/repo:tag`` with the builder's own CLI; returns the manifest digest.

        Pushing by digest (no tag) goes through the registry role, which uploads :meth:`export` unchanged.
        """
        _, _, tag, digest = split_ref(destination_ref)
        if digest is not None or tag is None:
            raise ValueError(f"{destination_ref}: ImageBuilder.push needs host/repo:tag; "
                             "push by digest with Registry.push (the exported layout through SkopeoTransport)")
        return self._push_tagged(image=image, destination_ref=destination_ref, log=log)

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

    def run_tool(self, argv: Sequence[str], *, label: str, log: LogFn | None, timeout: float,
                 capture: bool = False, env: Mapping[str, str] | None = None,
                 sandbox: SandboxSpec | None = None, settings: Mapping[str, str] | None = None) -> Outcome:
        """Runs a container tool with the project's settings in its env; never raises for an exit code.
        With ``sandbox`` (a build running a branch's Dockerfile), it gets none of the orchestrator's
        environment, only PATH, the locale and the container settings: ``settings`` when given (a
        build store's, instead of the builder's own)."""
        cfg = self.config()
        base = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "LANG": "C.UTF-8"} if sandbox else {}
        request = ExecuteRequest(argv=argv, cwd=cfg.root, label=label, timeout_seconds=timeout,
                                 env={**base, **(cfg.env() if settings is None else settings), **(env or {})},
                                 capture=capture, sandbox=sandbox,
                                 inherit_env=sandbox is None, log_path=cfg.root / "logs" / f"{_slug(label)}.log")
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


def looks_missing(text: str) -> bool:
    lowered = text.lower()
    return any(s in lowered for s in ("manifest unknown", "name unknown", "not found", "404"))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:80]


def read_digest_file(path: Path, what: str) -> str:
    try:
        digest = read_untrusted_text(path, limit=256).strip()  # a build store's root may have written it
    except OSError as exc:
        raise ImagePushError(f"{what}: no digest file written at {path}") from exc
    if not _DIGEST_RE.match(digest):
        raise ImagePushError(f"{what}: unexpected digest {digest[:80]!r} in {path}")
    return digest
