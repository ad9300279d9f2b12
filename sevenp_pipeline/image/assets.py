"""container_image and promoted_image: the app image built without a Docker daemon, pushed by
digest, and tagged with the spec's tags only after every security gate passed."""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
import json
from typing import Any

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.image.tags import image_tags
from sevenp_pipeline.resources.base_image import NodeBaseImage
from sevenp_pipeline.resources.builder import BuildahBuilder, ImageBuilder, ImageBuildError, ImagePushError
from sevenp_pipeline.resources.git import GitClient, GitError
from sevenp_pipeline.resources.registry import Registry, RegistryError, publish_image
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.stages import checked_out, failure, fingerprint, stage_asset_args
from sevenp_pipeline.triggers.tags import TAG_BRANCH


def is_release_branch(branch: str) -> bool:
    """Branches whose package.json version may become the X.Y.Z / X.Y tags (a git tag always does)."""
    return branch in ("main", "master") or branch.startswith("release/")


def latest_metadata(context: dg.AssetExecutionContext, key: dg.AssetKey) -> dict[str, Any]:
    """Metadata of the latest materialization of ``key`` for this commit (raises naming the asset)."""
    result = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[context.partition_key]), limit=1)
    if not result.records:
        raise failure(f"{context.asset_key.to_user_string()}: {key.to_user_string()} has no materialization "
                      f"for commit {context.partition_key[:12]}: materialize it first")
    mat = result.records[0].asset_materialization
    assert mat is not None
    return {k: v.value for k, v in mat.metadata.items()}


def image_key(app: AppConfig) -> dg.AssetKey:
    return dg.AssetKey([app.key, "container_image"])


def build_package_assets(
    app: AppConfig, partitions: dg.PartitionsDefinition, upstream: list[dg.AssetsDefinition],
    checkout: dg.AssetsDefinition,
) -> list[dg.AssetsDefinition]:
    """The image is built from the checkout; ``upstream`` (the gated build) orders it after the gates."""
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
    ) -> dg.MaterializeResult:
        workspace = checked_out(workspaces, app, context.partition_key, stage="container_image")
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
            published = publish_image(
                builder=image_builder, registry=registry, context_dir=context_dir, dockerfile=dockerfile,
                repository=app.image_repository, tags=[],
                build_args={"BASE_IMAGE": base, **settings.build_args},
                labels={"org.opencontainers.image.source": app.repository.url,
                        "org.opencontainers.image.title": app.name},
                log=log,
            )
        except ImageBuildError as exc:
            tail = getattr(exc, "log_tail", "") or ""
            raise failure(f"container_image: {exc}", build_log_tail=dg.MetadataValue.md(
                "```\n" + tail + "\n```")) from exc
        except (ImagePushError, RegistryError) as exc:
            raise failure(f"container_image: {exc}") from exc
        ref = f"{registry.repository_ref(app.image_repository)}@{published.digest}"
        remote = image_builder.inspect_remote(ref)
        meta: dict[str, Any] = {
            "digest": published.digest,
            "image_ref": ref,
            "repository": registry.repository_ref(app.image_repository),
            "registry": registry.describe(),
            "reused": published.reused,
            "input_hash": published.input_hash,
            "base_image": base,
            "layer_count": remote.layer_count if remote else (published.image.layer_count if published.image else 0),
            "refs": dg.MetadataValue.json(list(published.refs)),
        }
        if published.image is not None:
            meta["size_bytes"] = published.image.size_bytes
        context.log.info("%s %s (%s)", "reused" if published.reused else "built and pushed", ref,
                         f"inputs {published.input_hash[:12]}")
        return dg.MaterializeResult(data_version=dg.DataVersion(published.digest), metadata=meta)

    return [container_image]


def build_promotion_asset(
    app: AppConfig, partitions: dg.PartitionsDefinition, gates: list[dg.AssetsDefinition]
) -> dg.AssetsDefinition:
    @dg.asset(
        **stage_asset_args(app, partitions, dg.AssetKey([app.key, "promoted_image"]), "package",
                           "The image tagged as the spec's metadata step would (branch, pr-N, X.Y.Z, X.Y, "
                           "<branch>-<sha>) — only reached when every security gate passed.",
                           kinds=frozenset({"docker"})),
        deps=gates,
    )
    def promoted_image(
        context: dg.AssetExecutionContext, registry: Registry, git: GitClient, workspaces: Workspaces,
    ) -> dg.MaterializeResult:
        sha = context.partition_key
        image = latest_metadata(context, image_key(app))
        branch = context.run.tags.get(TAG_BRANCH, "")
        git_tag = _release_tag(git, app, sha)
        version = None
        if git_tag is None and is_release_branch(branch):
            version = _package_version(workspaces, app, sha)
        tags = image_tags(branch=branch, sha=sha, git_tag=git_tag, version=version)
        try:
            registry.prepare(log=context.log.info)
            result = registry.tag(repository=app.image_repository, digest=image["digest"], tags=tags,
                                  log=context.log.info)
        except RegistryError as exc:
            raise failure(f"promoted_image: {exc}") from exc
        return dg.MaterializeResult(
            data_version=dg.DataVersion(fingerprint(image["digest"], tags)),
            metadata={"digest": image["digest"], "tags": dg.MetadataValue.json(tags),
                      "refs": dg.MetadataValue.json(list(result.refs)), "branch": branch or "(launched by hand)"},
        )

    return promoted_image


def _release_tag(git: GitClient, app: AppConfig, sha: str) -> str | None:
    """A `vX.Y.Z` git tag pointing at the commit, if the remote has one."""
    try:
        tags = git.tags_at(app.key, sha)
    except GitError:
        return None
    return next((t for t in tags if t.lstrip("v")[:1].isdigit()), None)


def _package_version(workspaces: Workspaces, app: AppConfig, sha: str) -> str | None:
    workspace = workspaces.for_commit(app=app.key, sha=sha, subdir=app.repository.subdirectory)
    try:
        return json.loads((workspace.app_dir / "package.json").read_text()).get("version")
    except (OSError, ValueError):
        return None

