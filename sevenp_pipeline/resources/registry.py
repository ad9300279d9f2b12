"""The image registry role: where built images are pushed and later found by tag.

Assets depend on :class:`Registry`. :class:`LocalRegistry` runs Debian's ``docker-registry``
(distribution 2.8) on loopback as long-lived shared state under the pipeline home: it outlives a
run, so later runs find the images of earlier ones. :class:`ECRRegistry` talks to Amazon ECR
with boto3 (any ``endpoint_url``, e.g. a moto server in tests).

Every push goes **by digest first**: the manifest and its blobs are uploaded under
``repo@sha256:...`` (no tag), and tags are written only after that succeeded, each one a single
manifest PUT of a manifest the registry already holds. A registry that goes away midway
therefore never ends up with a tag pointing at a half-uploaded image. Connection failures are
retried with exponential backoff; then the error names the registry.

:func:`publish_image` is the build-or-reuse step: it hashes the build's inputs, looks for an
``inputs-<hash>`` tag in the registry and, when found, only adds the new tags (no build, no push).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import signal
import socket
import tempfile
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
from pydantic import Field

from sevenp_pipeline.locks import file_lock
from sevenp_pipeline.resources.builder import (
    INPUT_HASH_LABEL,
    BuiltImage,
    ImageBuilder,
    ImagePushError,
    build_input_hash,
    split_ref,
)
from sevenp_pipeline.resources.processes import ExecuteRequest, LogFn, ProcessRunner, RunningProcess

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


@dataclass(frozen=True)
class PublishedImage:
    """The outcome of :func:`publish_image`."""

    digest: str
    refs: tuple[str, ...]
    input_hash: str
    reused: bool  # True: an image with the same inputs was already in the registry; nothing was built
    image: BuiltImage | None  # the local image when it was built in this call


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


# -- the local registry -------------------------------------------------------------------------
@dataclass(frozen=True)
class RegistryState:
    pid: int
    port: int
    config: str


# servers started by this process, so stop() can reap them (no zombie left looking alive)
_STARTED: dict[int, RunningProcess] = {}


class LocalRegistry(Registry):
    """Debian's ``docker-registry`` on loopback, shared by all runs on this machine.

    ``ensure_running()`` starts it (or finds it running) and records pid and port in
    ``<home>/registry/state.json``; the port is kept across restarts so stored references stay
    valid. The server is not tied to the run that started it; ``stop()`` ends it.
    """

    runner: ProcessRunner
    home: str = Field(description="pipeline home; the registry keeps config, data and state in <home>/registry")
    host: str = Field(default="127.0.0.1", description="loopback address the registry listens on")
    port: int = Field(default=0, description="0: a free port picked on first start and kept in the state file")
    binary: str = Field(default="docker-registry", description="distribution 2.x registry binary")
    startup_timeout_seconds: float = Field(default=20, description="how long to wait for GET /v2/ after start")
    http_timeout_seconds: float = Field(default=10, description="timeout of one registry API request")

    # -- where things are ------------------------------------------------------------------------
    @property
    def root(self) -> Path:
        return Path(self.home).resolve() / "registry"

    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yml"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def read_state(self) -> RegistryState | None:
        try:
            data = json.loads(self.state_path.read_text())
            return RegistryState(pid=int(data["pid"]), port=int(data["port"]), config=str(data["config"]))
        except (OSError, ValueError, KeyError):
            return None

    def address(self) -> str:
        """``host:port`` of the registry (from the state file when it was started before)."""
        state = self.read_state()
        port = state.port if state else self.port
        if not port:
            raise RegistryError(f"local registry under {self.root}: not started yet (call ensure_running())")
        return f"{self.host}:{port}"

    def describe(self) -> str:
        try:
            return f"local registry {self.address()}"
        except RegistryError:
            return f"local registry under {self.root}"

    def repository_ref(self, name: str) -> str:
        return f"{self.address()}/{validate_repository(name)}"

    # -- lifecycle ---------------------------------------------------------------------------------
    def healthy(self) -> bool:
        try:
            with self._request("GET", "/v2/", timeout=2) as response:
                return response.status == 200
        except (OSError, RegistryError):
            return False

    def running_pid(self) -> int | None:
        state = self.read_state()
        if state and _pid_serves(state.pid, state.config):
            return state.pid
        return None

    def prepare(self, *, log: LogFn | None = None) -> None:
        """Shared state that outlives runs: started here when it is not running."""
        self.ensure_running(log=log)

    def ensure_running(self, *, log: LogFn | None = None) -> str:
        """Starts the registry unless it already answers; returns ``host:port``. Idempotent."""
        with file_lock(self.root / ".lock", what=f"local registry under {self.root}", timeout=120):
            state = self.read_state()
            if state and _pid_serves(state.pid, state.config) and self.healthy():
                return self.address()
            if state and _pid_serves(state.pid, state.config):  # alive but not answering: replace it
                _terminate(state.pid)
            port = (state.port if state else 0) or self.port or _free_port(self.host)
            self._write_config(port)
            server = self.runner.start(ExecuteRequest(
                argv=[self.binary, "serve", str(self.config_path)], cwd=self.root, label="docker-registry",
                log_path=self.log_path, timeout_seconds=float("inf"),
            ))
            _STARTED[server.pid] = server
            self._write_state(RegistryState(pid=server.pid, port=port, config=str(self.config_path)))
            deadline = time.monotonic() + self.startup_timeout_seconds
            while time.monotonic() < deadline:
                if not server.alive():
                    _STARTED.pop(server.pid, None)
                    raise RegistryError(
                        f"local registry {self.host}:{port} exited at startup (log {self.log_path}): "
                        f"{_tail(self.log_path)}"
                    )
                if self.healthy():
                    if log:
                        log(f"local registry listening on {self.host}:{port} (pid {server.pid}, data "
                            f"{self.root / 'data'})")
                    return f"{self.host}:{port}"
                time.sleep(0.05)
            server.stop()
            _STARTED.pop(server.pid, None)
            raise RegistryError(f"local registry {self.host}:{port} not answering GET /v2/ after "
                                f"{self.startup_timeout_seconds:.0f}s: {_tail(self.log_path)}")

    def stop(self) -> bool:
        """Stops the registry if it runs; the data and the port stay for the next start."""
        with file_lock(self.root / ".lock", what=f"local registry under {self.root}", timeout=120):
            state = self.read_state()
            if state is None:
                return False
            server = _STARTED.pop(state.pid, None)
            if server is not None:
                server.stop()
                return True
            if _pid_serves(state.pid, state.config):
                _terminate(state.pid)
                return True
            return False

    def _write_config(self, port: int) -> None:
        data = self.root / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(data)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
            },
            "http": {"addr": f"{self.host}:{port}", "headers": {"X-Content-Type-Options": ["nosniff"]}},
            "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
        }
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config, indent=2))  # YAML is a superset of JSON
        tmp.replace(self.config_path)

    def _write_state(self, state: RegistryState) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"pid": state.pid, "port": state.port, "config": state.config}))
        tmp.replace(self.state_path)

    # -- registry API ------------------------------------------------------------------------------
    def _request(self, method: str, path: str, *, data: bytes | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None) -> Any:
        url = f"http://{self.address()}{path}"
        request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
        return urllib.request.urlopen(request, timeout=timeout or self.http_timeout_seconds)  # noqa: S310

    def find(self, repository: str, tag: str) -> str | None:
        validate_repository(repository)
        validate_tag(tag)

        def head() -> str | None:
            try:
                with self._request("HEAD", f"/v2/{repository}/manifests/{tag}",
                                   headers={"Accept": ", ".join(MANIFEST_TYPES)}) as response:
                    return response.headers.get("Docker-Content-Digest")
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                raise

        return self.retrying(f"look up {self.repository_ref(repository)}:{tag}", head)

    def tags(self, repository: str) -> list[str]:
        """All tags of ``repository`` (empty when it does not exist)."""
        def fetch() -> list[str]:
            try:
                with self._request("GET", f"/v2/{validate_repository(repository)}/tags/list") as response:
                    return sorted(json.loads(response.read()).get("tags") or [])
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return []
                raise

        return self.retrying(f"list tags of {repository}", fetch)

    def _push_digest(self, *, builder: ImageBuilder, image: BuiltImage, repository: str,
                     log: LogFn | None) -> str:
        exported = builder.export(image=image, log=log)
        ref = f"{self.repository_ref(repository)}@{exported.manifest_digest}"
        return builder.push(image=image, destination_ref=ref, log=log)

    def _put_tag(self, *, repository: str, digest: str, tag: str) -> None:
        with self._request("GET", f"/v2/{repository}/manifests/{digest}",
                           headers={"Accept": ", ".join(MANIFEST_TYPES)}) as response:
            manifest = response.read()
            media_type = response.headers.get("Content-Type", MANIFEST_TYPES[0])
        with self._request("PUT", f"/v2/{repository}/manifests/{tag}", data=manifest,
                           headers={"Content-Type": media_type}) as response:
            written = response.headers.get("Docker-Content-Digest")
        if written != digest:
            raise RegistryError(f"{self.describe()}: tag {repository}:{tag} got digest {written}, expected {digest}")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _pid_serves(pid: int, config: str) -> bool:
    """True when ``pid`` is a live (not zombie) process whose command line names ``config``."""
    proc = Path(f"/proc/{pid}")
    try:
        cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        stat = (proc / "stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    return config.encode() in cmdline


def _terminate(pid: int, grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL: a registry started by an earlier process (we cannot wait() on it)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists() or _zombie(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- Amazon ECR -----------------------------------------------------------------------------------
class ECRRegistry(Registry):
    """Amazon ECR through boto3.

    The manifest comes from the builder's export (the exact bytes a registry receives) and is
    registered with ``put_image(imageManifest=..., imageManifestMediaType=..., imageDigest=...)``,
    first untagged, then once per tag. With ``upload_layers`` (the default, for real ECR) the
    layer and config blobs are uploaded before that with ``skopeo copy`` to ``<uri>@<digest>``
    using a token from ``get_authorization_token``.

    Emulator limitation: moto's ECR is API-only (no ``/v2`` registry endpoint), so against moto
    ``upload_layers`` must be False and **no layer blobs are uploaded**: the emulator holds the
    manifest, digest and tags, but the image cannot be pulled from it. The blob-upload path has
    not been exercised against real ECR on the development machines (no AWS access).
    """

    region: str = Field(default="us-east-1", description="AWS region")
    endpoint_url: str | None = Field(default=None, description="ECR API endpoint (e.g. a moto server); None: AWS")
    aws_access_key_id: str | None = Field(default=None, description="access key (dg.EnvVar); None: default chain")
    aws_secret_access_key: str | None = Field(default=None, description="secret key (dg.EnvVar)")
    aws_session_token: str | None = Field(default=None, description="session token (dg.EnvVar), optional")
    upload_layers: bool = Field(default=True, description="upload blobs with skopeo before put_image (real ECR)")
    image_tag_mutability: str = Field(default="MUTABLE", description="for repositories this resource creates")
    connect_timeout_seconds: float = Field(default=5, description="boto3 connect timeout")

    def client(self) -> Any:
        import boto3  # noqa: PLC0415 (boto3 takes ~0.3 s to import; only ECR users pay it)
        from botocore.config import Config  # noqa: PLC0415

        return boto3.client(
            "ecr", region_name=self.region, endpoint_url=self.endpoint_url,
            aws_access_key_id=self.aws_access_key_id, aws_secret_access_key=self.aws_secret_access_key,
            aws_session_token=self.aws_session_token,
            config=Config(retries={"max_attempts": 1, "mode": "standard"},
                          connect_timeout=self.connect_timeout_seconds, read_timeout=60),
        )

    def describe(self) -> str:
        return f"ECR {self.endpoint_url or 'aws'} ({self.region})"

    def ensure_repository(self, name: str) -> str:
        """Creates repository ``name`` unless it exists; returns its URI."""
        validate_repository(name)
        client = self.client()

        def create() -> str:
            try:
                created = client.create_repository(repositoryName=name,
                                                   imageTagMutability=self.image_tag_mutability)
                return str(created["repository"]["repositoryUri"])
            except client.exceptions.RepositoryAlreadyExistsException:
                found = client.describe_repositories(repositoryNames=[name])
                return str(found["repositories"][0]["repositoryUri"])

        return self.retrying(f"ensure repository {name}", create)

    def repository_ref(self, name: str) -> str:
        validate_repository(name)
        client = self.client()

        def lookup() -> str:
            try:
                found = client.describe_repositories(repositoryNames=[name])
                return str(found["repositories"][0]["repositoryUri"])
            except client.exceptions.RepositoryNotFoundException:
                import boto3  # noqa: PLC0415

                sts = boto3.client("sts", region_name=self.region, endpoint_url=self.endpoint_url,
                                   aws_access_key_id=self.aws_access_key_id,
                                   aws_secret_access_key=self.aws_secret_access_key,
                                   aws_session_token=self.aws_session_token)
                account = sts.get_caller_identity()["Account"]
                return f"{account}.dkr.ecr.{self.region}.amazonaws.com/{name}"

        return self.retrying(f"look up repository {name}", lookup)

    def find(self, repository: str, tag: str) -> str | None:
        validate_tag(tag)
        client = self.client()

        def lookup() -> str | None:
            try:
                found = client.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}])
            except (client.exceptions.ImageNotFoundException, client.exceptions.RepositoryNotFoundException):
                return None
            details = found.get("imageDetails") or []
            return str(details[0]["imageDigest"]) if details else None

        return self.retrying(f"look up {repository}:{tag}", lookup)

    def _push_digest(self, *, builder: ImageBuilder, image: BuiltImage, repository: str,
                     log: LogFn | None) -> str:
        uri = self.ensure_repository(repository)
        exported = builder.export(image=image, log=log)
        client = self.client()
        if self.upload_layers:
            self._upload_blobs(client, builder, f"dir:{exported.path}", f"docker://{uri}@{exported.manifest_digest}",
                               log)
        with contextlib.suppress(client.exceptions.ImageAlreadyExistsException):
            client.put_image(repositoryName=repository, imageManifest=exported.manifest.decode(),
                             imageManifestMediaType=exported.media_type, imageDigest=exported.manifest_digest)
        return exported.manifest_digest

    def _upload_blobs(self, client: Any, builder: ImageBuilder, source: str, dest: str, log: LogFn | None) -> None:
        auth = client.get_authorization_token()["authorizationData"][0]
        host = dest.removeprefix("docker://").split("/", 1)[0]
        with tempfile.TemporaryDirectory() as tmp:
            authfile = Path(tmp) / "auth.json"
            authfile.touch(mode=0o600)
            user, _, password = base64.b64decode(auth["authorizationToken"]).decode().partition(":")
            token = base64.b64encode(f"{user}:{password}".encode()).decode()
            authfile.write_text(json.dumps({"auths": {host: {"auth": token}}}))
            builder.copy(source=source, dest=dest, log=log, label=f"upload to {host}",
                         extra=["--dest-authfile", str(authfile)])

    def _put_tag(self, *, repository: str, digest: str, tag: str) -> None:
        client = self.client()
        image = client.batch_get_image(repositoryName=repository, imageIds=[{"imageDigest": digest}],
                                       acceptedMediaTypes=list(MANIFEST_TYPES))
        images = image.get("images") or []
        if not images:
            raise RegistryError(f"{self.describe()}: {repository}@{digest} not found; cannot tag it {tag}")
        manifest = images[0]["imageManifest"]
        media_type = images[0].get("imageManifestMediaType") or json.loads(manifest).get("mediaType")
        with contextlib.suppress(client.exceptions.ImageAlreadyExistsException):
            client.put_image(repositoryName=repository, imageManifest=manifest, imageManifestMediaType=media_type,
                             imageTag=tag, imageDigest=digest)


# -- build or reuse -------------------------------------------------------------------------------
def publish_image(
    *, builder: ImageBuilder, registry: Registry, context_dir: Path, dockerfile: Path, repository: str,
    tags: Sequence[str], build_args: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None,
    log: LogFn | None = None,
) -> PublishedImage:
    """Builds and pushes unless the registry already holds an image built from the same inputs.

    The inputs hash covers the Dockerfile, the context (after .dockerignore), build args, labels
    and the digests of base images named in ``*IMAGE`` build args (resolved in their registry, so
    a moved base tag means a rebuild). The image carries it as label ``org.sevenp.inputs-hash``
    and tag ``inputs-<hash[:40]>``; finding that tag means: add ``tags``, nothing else.
    """
    build_args = dict(build_args or {})
    labels = dict(labels or {})
    dockerfile = builder.checked_dockerfile(context_dir, dockerfile)
    base_digests: dict[str, str] = {}
    for key, value in sorted(build_args.items()):
        if not key.upper().endswith("IMAGE"):
            continue
        try:
            split_ref(value)
        except ValueError:
            continue  # a short name (e.g. node:20): not resolvable here, hashed by name only
        remote = builder.inspect_remote(value)
        if remote is not None:
            base_digests[key] = remote.digest
    input_hash = build_input_hash(context_dir=context_dir, dockerfile=dockerfile, build_args=build_args,
                                  labels=labels, base_digests=base_digests)
    input_tag = f"inputs-{input_hash[:40]}"
    all_tags = [*dict.fromkeys([*tags, input_tag])]
    found = registry.find(repository, input_tag)
    if found:
        if log:
            log(f"{registry.repository_ref(repository)}:{input_tag} exists ({found}): same inputs, not rebuilt")
        result = registry.tag(repository=repository, digest=found, tags=[t for t in all_tags if t != input_tag],
                              log=log)
        return PublishedImage(digest=found, refs=(*result.refs, f"{registry.repository_ref(repository)}:{input_tag}"),
                              input_hash=input_hash, reused=True, image=None)
    image = builder.build(context_dir=context_dir, dockerfile=dockerfile,
                          image_name=f"localhost/{repository}:{input_tag}", build_args=build_args,
                          labels={**labels, INPUT_HASH_LABEL: input_hash}, log=log)
    result = registry.push(builder=builder, image=image, repository=repository, tags=all_tags, log=log)
    return PublishedImage(digest=result.digest, refs=result.refs, input_hash=input_hash, reused=False, image=image)
