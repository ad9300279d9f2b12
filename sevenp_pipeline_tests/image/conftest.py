"""Session fixtures for the image tests: one build+push of the sample app (measured). The pipeline home,
its registry and the bootstrapped base image (``stack``) are shared with the deploy tests: see
sevenp_pipeline_tests/conftest.py and containers.py."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from sevenp_pipeline.image.assets import PublishedImage, publish_image
from sevenp_pipeline_tests.containers import TIMINGS, Stack, needs_buildah

SAMPLE_APP = Path(__file__).resolve().parents[2] / "examples" / "7p-education-api"
APP_REPOSITORY = "sevenp/7p-education-api"
__all__ = ["APP_REPOSITORY", "SAMPLE_APP", "TIMINGS", "SampleBuild", "Stack", "needs_buildah", "publish_sample"]


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
