"""container_image: the app image built without a Docker daemon, pushed by digest (the spec's tags
are added by ``promotion/``, after every gate passed).

:func:`publish_image` is the build-or-reuse step: it hashes the build's inputs, looks for an
``inputs-<hash>`` tag in the registry and, when found, only adds the new tags (no build, no push).
"""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from sevenp_pipeline.asset_helpers import failure, stage_asset_args
from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.config.models import Branches, Limits
from sevenp_pipeline.family import Family
from sevenp_pipeline.image.records import ImageRecord, recorded_digests
from sevenp_pipeline.locks import LockTimeout
from sevenp_pipeline.resources.base_image import NodeBaseImage
from sevenp_pipeline.resources.builders.buildah import BuildahBuilder
from sevenp_pipeline.resources.builders.context import build_input_hash
from sevenp_pipeline.resources.builders.role import (
    INPUT_HASH_LABEL,
    BuiltImage,
    ImageBuilder,
    ImageBuildError,
    ImagePushError,
    split_ref,
)
from sevenp_pipeline.resources.git import GitClient, GitError
from sevenp_pipeline.resources.locks import Locks, LocksUnavailable
from sevenp_pipeline.resources.processes import LogFn
from sevenp_pipeline.resources.registries.role import Registry, RegistryError
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.stages import checked_out
from sevenp_pipeline.triggers.identity import ensure_run_identity
from sevenp_pipeline.triggers.sensors import branch_matches

# A push waits for another run's build of the same inputs: a cold build of a large image, at most.
PUSH_LOCK_WAIT_SECONDS = 3600.0


def image_key(app: AppConfig) -> dg.AssetKey:
    return dg.AssetKey([app.key, "container_image"])


def build_package_assets(
    app: AppConfig, partitions: dg.PartitionsDefinition, upstream: Sequence[dg.AssetKey], checkout: dg.AssetKey,
) -> list[dg.AssetsDefinition]:
    """``[container_image]``, built from ``checkout``; ``upstream`` (the gated build) orders it after the gates."""
    assert app.image is not None
    settings = app.image

    @dg.asset(
        **stage_asset_args(app, partitions, image_key(app), "package",
                           "The app's container image (buildah, no daemon), pushed to the registry by digest.",
                           kinds=frozenset({"docker"})),
        deps=[checkout, *upstream],
    )
    def container_image(
        context: dg.AssetExecutionContext,
        image_builder: ImageBuilder,
        registry: Registry,
        node_base_image: NodeBaseImage,
        workspaces: Workspaces,
        git: GitClient,
        locks: Locks,
    ) -> dg.MaterializeResult:
        ensure_run_identity(context, app)
        workspace = checked_out(workspaces, app, context.partition_key, stage="container_image", git=git,
                                log=context.log.info)
        context_dir = (workspace.app_dir / settings.context).resolve()
        dockerfile = workspace.app_dir / settings.dockerfile
        if not dockerfile.is_file():
            raise failure(f"container_image: {settings.dockerfile} not found in {app.name} at commit "
                          f"{context.partition_key[:12]} (image.dockerfile in the app config)")
        log = context.log.info
        try:
            registry.prepare(log=log)
            base = settings.base_image
            if not base:
                if not isinstance(image_builder, BuildahBuilder):
                    raise failure("container_image: set image.base_image: only buildah bootstraps a local base")
                bootstrapped = node_base_image.ensure(builder=image_builder, registry=registry, log=log)
                assert bootstrapped.ref is not None
                base = bootstrapped.ref
            deploys = deploy_branches_holding(git, app, context.partition_key)
            log(f"build store: {'trusted, on ' + ', '.join(deploys) if deploys else 'untrusted'} "
                f"(branches that deploy: {', '.join(deploy_branch_patterns(app))})")
            published = publish_image(
                builder=image_builder, registry=registry, context_dir=context_dir, dockerfile=dockerfile,
                repository=app.image_repository, tags=[],
                build_args={"BASE_IMAGE": base, **settings.build_args},
                labels={"org.opencontainers.image.source": app.repository.url,
                        "org.opencontainers.image.title": app.name},
                log=log,
                trusted=lambda input_hash, digest: digest in recorded_digests(
                    context.instance, image_key(app), input_hash),
                deploy_branch=bool(deploys),
                limits=app.limits_of(None),
                locks=locks,
            )
        except ImageBuildError as exc:
            tail = getattr(exc, "log_tail", "") or ""
            raise failure(f"container_image: {exc}", build_log_tail=dg.MetadataValue.md(
                "```\n" + tail + "\n```")) from exc
        except (ImagePushError, RegistryError, LockTimeout, LocksUnavailable) as exc:
            raise failure(f"container_image: {exc}") from exc
        repository = registry.repository_ref(app.image_repository)
        ref = f"{repository}@{published.digest}"
        remote = image_builder.inspect_remote(ref)
        record = ImageRecord(
            repository=repository, digest=published.digest, ref=ref, input_hash=published.input_hash,
            size_bytes=published.image.size_bytes if published.image else None,
            layers=remote.layer_count if remote else (published.image.layer_count if published.image else 0),
            reused=published.reused, base_image=base, registry=registry.describe(), refs=published.refs,
        )
        context.log.info("%s %s (%s)", "reused" if published.reused else "built and pushed", ref,
                         f"inputs {published.input_hash[:12]}")
        return dg.MaterializeResult(data_version=dg.DataVersion(published.digest), metadata=record.to_metadata())

    return [container_image]


def deploy_branch_patterns(app: AppConfig) -> list[str]:
    """The branches whose commits deploy: every environment's ``branches`` (an environment without
    any takes every branch), and main/master."""
    patterns = ["main", "master"]
    for env in (app.environments or {}).values():
        patterns += env.branches or ["*"]
    return [*dict.fromkeys(patterns)]


def deploy_branches_holding(git: GitClient, app: AppConfig, sha: str) -> list[str]:
    """The remote's branches that deploy and hold ``sha`` now (asked of the remote, not of run tags).
    An error reaching the remote counts as none: the build is then untrusted, never the reverse."""
    rules = Branches(include=deploy_branch_patterns(app))
    try:
        return git.branches_containing(app.key, app.repository.url, sha, allowed=lambda b: branch_matches(b, rules))
    except GitError:
        return []


@dataclass(frozen=True)
class PublishedImage:
    """The outcome of :func:`publish_image`."""

    digest: str
    refs: tuple[str, ...]
    input_hash: str
    reused: bool  # True: an image with the same inputs was already in the registry; nothing was built
    image: BuiltImage | None  # the local image when it was built in this call



def publish_image(
    *, builder: ImageBuilder, registry: Registry, context_dir: Path, dockerfile: Path, repository: str,
    tags: Sequence[str], build_args: Mapping[str, str] | None = None, labels: Mapping[str, str] | None = None,
    log: LogFn | None = None, trusted: Callable[[str, str], bool] | None = None, deploy_branch: bool = False,
    limits: Limits | None = None, locks: Locks | None = None,
) -> PublishedImage:
    """Builds and pushes unless the registry already holds an image built from the same inputs.

    The inputs hash covers the Dockerfile, the context (after .dockerignore), build args, labels
    and the digests of base images named in ``*IMAGE`` build args (resolved in their registry, so
    a moved base tag means a rebuild). The image carries it as label ``org.sevenp.inputs-hash``
    and tag ``inputs-<hash[:40]>``; finding that tag means: add ``tags``, nothing else, as long as
    ``trusted(input_hash, digest)`` says the orchestrator itself recorded that digest for those inputs.
    The tag is mutable (anyone who can push to the registry can move it): a digest it did not record
    is built again, and the push moves the tag back. ``deploy_branch``: a branch that deploys holds the
    commit (its build never shares a store with a feature branch's, see builders/stores.py).
    ``limits``: the build's (the app's ``limits:``; None: the defaults). ``locks``: the deployment's
    (the find, build and push under one lock per repository and inputs); None: no lock.
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
    # Two runs with the same inputs (two workers, two commits with one tree) take turns: the second
    # finds the first's push by its inputs tag instead of building and pushing the same image again.
    hold = locks.hold(image_push_lock(repository, input_tag), timeout=PUSH_LOCK_WAIT_SECONDS,
                      what=f"the push of {repository}:{input_tag}") if locks is not None else nullcontext()
    with hold:
        return _find_or_push(builder=builder, registry=registry, context_dir=context_dir, dockerfile=dockerfile,
                             repository=repository, tags=tags, build_args=build_args, labels=labels, log=log,
                             trusted=trusted, deploy_branch=deploy_branch, limits=limits, input_hash=input_hash)


def image_push_lock(repository: str, input_tag: str) -> str:
    """The lock a build and push of ``repository`` with these inputs holds."""
    return f"image-pushes/{repository}/{input_tag}"


def _find_or_push(
    *, builder: ImageBuilder, registry: Registry, context_dir: Path, dockerfile: Path, repository: str,
    tags: Sequence[str], build_args: dict[str, str], labels: dict[str, str], log: LogFn | None,
    trusted: Callable[[str, str], bool] | None, deploy_branch: bool, limits: Limits | None, input_hash: str,
) -> PublishedImage:
    input_tag = f"inputs-{input_hash[:40]}"
    all_tags = [*dict.fromkeys([*tags, input_tag])]
    found = registry.find(repository, input_tag)
    if found and trusted is not None and not trusted(input_hash, found):
        if log:
            log(f"WARNING: {registry.repository_ref(repository)}:{input_tag} points at {found}, which no build of "
                f"the pipeline recorded for these inputs: the tag was moved; building again")
        found = None
    if found:
        if log:
            log(f"{registry.repository_ref(repository)}:{input_tag} exists ({found}): same inputs, not rebuilt")
        result = registry.tag(repository=repository, digest=found, tags=[t for t in all_tags if t != input_tag],
                              log=log)
        return PublishedImage(digest=found, refs=(*result.refs, f"{registry.repository_ref(repository)}:{input_tag}"),
                              input_hash=input_hash, reused=True, image=None)
    image = builder.build(context_dir=context_dir, dockerfile=dockerfile,
                          image_name=f"localhost/{repository}:{input_tag}", build_args=build_args,
                          labels={**labels, INPUT_HASH_LABEL: input_hash}, log=log, trusted=deploy_branch,
                          limits=limits)
    result = registry.push(builder=builder, image=image, repository=repository, tags=all_tags, log=log)
    return PublishedImage(digest=result.digest, refs=result.refs, input_hash=input_hash, reused=False, image=image)


def build_image_family(app: AppConfig, partitions: dg.PartitionsDefinition, upstream: Sequence[dg.AssetKey],
                       checkout: dg.AssetKey) -> Family:
    """The image family: the container image, built once every stage in ``upstream`` passed."""
    (image,) = build_package_assets(app, partitions, upstream, checkout)
    return Family(dg.Definitions(assets=[image]), outputs=(image.key,))
