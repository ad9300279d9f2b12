"""The scale-out tests' one Docker engine (session): every module under scale_out/ shares it, so a
session never starts two dockerd on the same data root (SEVENP_TEST_DOCKER_DATA_ROOT)."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sevenp_pipeline_tests.scale_out.engine import Engine, build_images, docker_engine, require_dockerd


@pytest.fixture(scope="session")
def engine() -> Iterator[Engine]:
    require_dockerd()
    root = Path(tempfile.mkdtemp(prefix="sevenp-dockerd-"))
    try:
        with docker_engine(root) as made:
            start = time.monotonic()
            timings = build_images(made, root)
            print(f"scale-out images: base {timings['base']:.1f}s, image {timings['image']:.1f}s, "
                  f"fixture {time.monotonic() - start:.1f}s")
            yield made
    finally:
        shutil.rmtree(root, ignore_errors=True)
