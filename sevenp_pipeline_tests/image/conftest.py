"""Session fixtures for the image tests: one pipeline home with its own container storage and a
local registry, the bootstrapped base image and one build+push of the sample app (each measured)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sevenp_pipeline.image.assets import PublishedImage, publish_image
from sevenp_pipeline.resources.base_image import BaseImage, NodeBaseImage
from sevenp_pipeline.resources.builders.buildah import BuildahBuilder
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.registries.local import LocalRegistry

SAMPLE_APP = Path(__file__).resolve().parents[2] / "examples" / "7p-education-api"
APP_REPOSITORY = "sevenp/7p-education-api"

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


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("images-home")
    runner = ProcessRunner()
    builder = BuildahBuilder(runner=runner, home=str(home))
    registry = LocalRegistry(runner=runner, home=str(home))
    registry.ensure_running()
    try:
        base_image = NodeBaseImage(runner=runner, home=str(home), busybox=shutil.which("busybox") or "/bin/busybox")
        started = time.monotonic()
        base = base_image.ensure(builder=builder, registry=registry)
        TIMINGS["base bootstrap (cold, incl. push)"] = time.monotonic() - started
        yield Stack(home=home, runner=runner, builder=builder, registry=registry, base=base, base_image=base_image)
    finally:
        registry.stop()
        argv = builder.buildah_argv()
        builder.run_tool([*argv, "rm", "--all"], label="cleanup", log=None, timeout=300)
        builder.run_tool([*argv, "rmi", "--all", "--force"], label="cleanup", log=None, timeout=300)
        shutil.rmtree(home / "containers", ignore_errors=True)  # ~0.5 GB of layers and exports
        shutil.rmtree(home / "registry" / "data", ignore_errors=True)


@dataclass
class SampleBuild:
    first: PublishedImage
    log: list[str]
    seconds: float


def publish_sample(stack: Stack, tags: list[str], log: list[str]) -> PublishedImage:
    assert stack.base.ref is not None
    return publish_image(
        builder=stack.builder, registry=stack.registry, context_dir=SAMPLE_APP, dockerfile=SAMPLE_APP / "Dockerfile",
        repository=APP_REPOSITORY, tags=tags, build_args={"BASE_IMAGE": stack.base.ref},
        labels={"org.opencontainers.image.source": "examples/7p-education-api"}, log=log.append,
    )


@pytest.fixture(scope="session")
def sample(stack: Stack) -> SampleBuild:
    log: list[str] = []
    started = time.monotonic()
    first = publish_sample(stack, ["develop", "develop-1111111"], log)
    seconds = time.monotonic() - started
    TIMINGS["sample app build+push (cold)"] = seconds
    return SampleBuild(first=first, log=log, seconds=seconds)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.write_sep("-", "container image timings")
        for name, seconds in TIMINGS.items():
            unit = "" if "MB" in name else " s"
            terminalreporter.write_line(f"{name:<45} {seconds:8.2f}{unit}")
