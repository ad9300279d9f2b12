"""One container stack per pytest session (and for benchmarks): a pipeline home with its own container
storage and local registry, and the Node base image bootstrapped from the host. The image tests and
the deploy tests share it (the bootstrap is the slow part); benchmarks build their own with
:func:`container_stack`. Also the deploy tests' small app images (v1, v2, broken)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sevenp_pipeline.image.assets import publish_image
from sevenp_pipeline.resources.base_image import BaseImage, NodeBaseImage
from sevenp_pipeline.resources.builders.buildah import BuildahBuilder
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.registries.local import LocalRegistry

DEPLOY_APP = Path(__file__).resolve().parent / "fixtures" / "deploy-app"
DEPLOY_REPOSITORY = "sevenp/deploy-test"

needs_buildah = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("buildah") or not shutil.which("skopeo")
    or not shutil.which("docker-registry"),
    reason="needs root, buildah, skopeo and docker-registry (Debian packages buildah skopeo docker-registry)",
)
TIMINGS: dict[str, float] = {}


@dataclass
class Stack:
    home: Path
    runner: ProcessRunner
    builder: BuildahBuilder
    registry: LocalRegistry
    base: BaseImage
    base_image: NodeBaseImage


@contextlib.contextmanager
def container_stack(prefix: str = "sevenp-stack-", log: Callable[[str], None] | None = None) -> Iterator[Stack]:
    """A fresh home (outside pytest's 0700 tmp tree: the deploy target's PostgreSQL runs as the
    ``postgres`` user under it), its registry and base image; everything removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix=prefix))
    home.chmod(0o711)
    runner = ProcessRunner()
    builder = BuildahBuilder(runner=runner, home=str(home))
    registry = LocalRegistry(runner=runner, home=str(home))
    try:
        registry.ensure_running()
        base_image = NodeBaseImage(runner=runner, home=str(home), busybox=shutil.which("busybox") or "/bin/busybox")
        started = time.monotonic()
        base = base_image.ensure(builder=builder, registry=registry, log=log)
        TIMINGS["base bootstrap (cold, incl. push)"] = time.monotonic() - started
        yield Stack(home=home, runner=runner, builder=builder, registry=registry, base=base, base_image=base_image)
    finally:
        registry.stop()
        if (home / "containers").exists():
            argv = builder.buildah_argv()
            builder.run_tool([*argv, "rm", "--all"], label="cleanup", log=None, timeout=300)
            builder.run_tool([*argv, "rmi", "--all", "--force"], label="cleanup", log=None, timeout=300)
        shutil.rmtree(home, ignore_errors=True)


@dataclass(frozen=True)
class TestImage:
    __test__ = False

    version: str
    ref: str  # repository@sha256:...
    digest: str


@dataclass(frozen=True)
class DeployImages:
    v1: TestImage
    v2: TestImage
    broken: TestImage  # /health answers 500


def publish_deploy_images(stack: Stack, log: Callable[[str], None] | None = None) -> DeployImages:
    """The deploy tests' app (fixtures/deploy-app: node's http module, no npm packages) as v1, v2 and a
    broken v3 whose /health answers 500, pushed to the stack's registry."""
    assert stack.base.ref is not None
    started = time.monotonic()
    made = {}
    for version, health in (("v1", "200"), ("v2", "200"), ("broken", "500")):
        published = publish_image(
            builder=stack.builder, registry=stack.registry, context_dir=DEPLOY_APP,
            dockerfile=DEPLOY_APP / "Dockerfile", repository=DEPLOY_REPOSITORY, tags=[version],
            build_args={"BASE_IMAGE": stack.base.ref, "APP_VERSION": version, "HEALTH_STATUS": health},
            log=log,
        )
        ref = f"{stack.registry.repository_ref(DEPLOY_REPOSITORY)}@{published.digest}"
        made[version] = TestImage(version=version, ref=ref, digest=published.digest)
    TIMINGS["deploy test images v1+v2+broken"] = time.monotonic() - started
    return DeployImages(**made)
