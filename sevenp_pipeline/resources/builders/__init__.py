"""The image builder role and its implementations, one module per concern.

``role`` (ImageBuilder, the image records, errors, refs), ``buildah`` and ``docker`` (the
implementations), ``context`` (.dockerignore and the build-input hash), ``container_config`` (the
project's containers.conf / storage.conf / registries.conf rendered under the pipeline home).
"""

from sevenp_pipeline.resources.builders.buildah import BuildahBuilder
from sevenp_pipeline.resources.builders.container_config import ContainerConfig, render_container_config
from sevenp_pipeline.resources.builders.context import build_input_hash, dockerignore_filter
from sevenp_pipeline.resources.builders.docker import DockerBuilder
from sevenp_pipeline.resources.builders.role import (
    INPUT_HASH_LABEL,
    BuiltImage,
    ExportedImage,
    ImageBuilder,
    ImageBuildError,
    ImagePushError,
    RemoteImage,
    split_ref,
)

__all__ = [
    "INPUT_HASH_LABEL",
    "BuildahBuilder",
    "BuiltImage",
    "ContainerConfig",
    "DockerBuilder",
    "ExportedImage",
    "ImageBuildError",
    "ImageBuilder",
    "ImagePushError",
    "RemoteImage",
    "build_input_hash",
    "dockerignore_filter",
    "render_container_config",
    "split_ref",
]
