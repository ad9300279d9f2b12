"""The image registry role: where built images are pushed and later found by tag.

Assets depend on :class:`Registry`. Implementations: :class:`~sevenp_pipeline.resources.registries.local.LocalRegistry`
(Debian's ``docker-registry`` on loopback) and :class:`~sevenp_pipeline.resources.registries.ecr.ECRRegistry`
(Amazon ECR through boto3).

Every push goes **by digest first**: the manifest and its blobs are uploaded under
``repo@sha256:...`` (no tag), and tags are written only after that succeeded, each one a single
manifest PUT of a manifest the registry already holds. A registry that goes away midway
therefore never ends up with a tag pointing at a half-uploaded image. Connection failures are
retried with exponential backoff (:meth:`Registry.retrying`); then the error names the registry.
"""

from __future__ import annotations

import contextlib
import re
import socket
import time
import urllib.error
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import dagster as dg
from pydantic import Field

from sevenp_pipeline.resources.builders.role import ImagePushError
from sevenp_pipeline.resources.processes import LogFn

if TYPE_CHECKING:
    from sevenp_pipeline.resources.builders.role import BuiltImage, ImageBuilder

T = TypeVar("T")
MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.index.v1+json",
)
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_REPO_RE = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TRANSIENT = (
    "connection refused", "connection reset", "broken pipe", "i/o timeout", "no route to host",
    "tls handshake timeout", "server misbehaving", "unexpected eof", ": eof", "503 service unavailable",
    "502 bad gateway", "504 gateway", "timed out",
)


class RegistryError(Exception):
    """A registry could not be reached or refused an operation; the message names the registry."""


@dataclass(frozen=True)
class PushResult:
    digest: str  # the manifest digest, sha256:...
    refs: tuple[str, ...]  # repo@digest first, then repo:tag for each tag



def validate_tag(tag: str) -> str:
    if not _TAG_RE.match(tag):
        raise ValueError(f"invalid image tag {tag!r}: [A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}} expected")
    return tag


def validate_repository(name: str) -> str:
    if not _REPO_RE.match(name) or len(name) > 255:
        raise ValueError(f"invalid repository name {name!r}: lowercase path components [a-z0-9._-] expected")
    return name


def is_transient(error: BaseException) -> bool:
    """Connection-level failures worth retrying (not: a missing image, a refused manifest)."""
    if isinstance(error, (ConnectionError, TimeoutError, socket.timeout)):
        return True
    if isinstance(error, urllib.error.URLError) and not isinstance(error, urllib.error.HTTPError):
        return True
    if isinstance(error, urllib.error.HTTPError):
        return error.code in (502, 503, 504)
    with contextlib.suppress(ImportError):
        from botocore.exceptions import (  # noqa: PLC0415
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            ReadTimeoutError,
        )

        if isinstance(error, (ConnectionClosedError, ConnectTimeoutError, EndpointConnectionError,
                              ReadTimeoutError)):
            return True
    text = str(error).lower()
    return isinstance(error, ImagePushError) and any(marker in text for marker in _TRANSIENT)


class Registry(dg.ConfigurableResource, ABC):
    """Stores images by digest and tag."""

    max_attempts: int = Field(default=4, description="tries per registry operation on connection errors")
    backoff_seconds: float = Field(default=0.5, description="first retry delay; doubles each attempt")

    def prepare(self, *, log: LogFn | None = None) -> None:
        """Makes the registry usable before a stage talks to it; a hosted registry needs nothing."""

    def client_env(self) -> dict[str, str]:
        """Env a registry client other than the container tools needs (syft: ``DOCKER_CONFIG``)."""
        return {}

    @abstractmethod
    def describe(self) -> str:
        """Names the registry in messages, e.g. ``local registry 127.0.0.1:5000``."""

    @abstractmethod
    def repository_ref(self, name: str) -> str:
        """The fully qualified reference of repository ``name`` (``host[:port]/name``)."""

    @abstractmethod
    def find(self, repository: str, tag: str) -> str | None:
        """The manifest digest ``repository:tag`` points at, or None when there is no such tag."""

    @abstractmethod
    def _push_digest(self, *, builder: ImageBuilder, image: BuiltImage, repository: str,
                     log: LogFn | None) -> str:
        """Uploads the image under its digest only; returns the digest."""

    @abstractmethod
    def _put_tag(self, *, repository: str, digest: str, tag: str) -> None:
        """Points ``tag`` at a manifest the registry already has."""

    def push(self, *, builder: ImageBuilder, image: BuiltImage, repository: str, tags: Sequence[str],
             log: LogFn | None = None) -> PushResult:
        """Pushes by digest, then adds ``tags``; raises :class:`RegistryError` naming the registry."""
        validate_repository(repository)
        for tag in tags:
            validate_tag(tag)
        digest = self.retrying(
            f"push {image.local_name} to {self.repository_ref(repository)}",
            lambda: self._push_digest(builder=builder, image=image, repository=repository, log=log), log=log,
        )
        if log:
            log(f"pushed {image.local_name} as {self.repository_ref(repository)}@{digest}")
        return self.tag(repository=repository, digest=digest, tags=tags, log=log)

    def tag(self, *, repository: str, digest: str, tags: Sequence[str], log: LogFn | None = None) -> PushResult:
        """Adds ``tags`` to an image the registry already holds under ``digest``."""
        ref = self.repository_ref(repository)
        for tag in tags:
            validate_tag(tag)
            self.retrying(f"tag {ref}@{digest} as {tag}",
                          lambda tag=tag: self._put_tag(repository=repository, digest=digest, tag=tag), log=log)
        if log and tags:
            log(f"tagged {ref}@{digest}: {', '.join(tags)}")
        return PushResult(digest=digest, refs=(f"{ref}@{digest}", *(f"{ref}:{t}" for t in tags)))

    def retrying(self, what: str, action: Callable[[], T], *, log: LogFn | None = None) -> T:
        """Runs ``action``, retrying connection errors with exponential backoff."""
        delay = self.backoff_seconds
        for attempt in range(1, self.max_attempts + 1):
            try:
                return action()
            except RegistryError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise RegistryError(f"{self.describe()}: {what} failed: {exc}") from exc
                if attempt == self.max_attempts:
                    raise RegistryError(
                        f"{self.describe()} unreachable: {what} failed after {attempt} attempts: "
                        f"{_first_line(exc)}"
                    ) from exc
                if log:
                    log(f"{self.describe()}: {what}: attempt {attempt} failed ({_first_line(exc)}); "
                        f"retrying in {delay:.1f}s")
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    key = next((line for line in lines if any(m in line.lower() for m in _TRANSIENT)), lines[0] if lines else "")
    return key[:300] or type(exc).__name__

