"""promoted_image: the image tagged with the spec's tags, only when the commit passed every gate of
the app's registry, whichever run recorded them."""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
import json
from collections.abc import Mapping, Sequence

import dagster as dg

from sevenp_pipeline.asset_helpers import failure, fingerprint, md_table, stage_asset_args
from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.family import Family
from sevenp_pipeline.image.assets import image_key
from sevenp_pipeline.image.records import ImageRecord, latest_record
from sevenp_pipeline.image.tags import image_tags, semver_tags
from sevenp_pipeline.resources.git import GitClient, GitError
from sevenp_pipeline.resources.registries.role import Registry, RegistryError
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.triggers.identity import PUSH, ensure_run_identity
from sevenp_pipeline.triggers.sensors import PULL_REQUEST, TAG
from sevenp_pipeline.triggers.tags import TAG_PR, TAG_PROMOTION, TAG_REF
from sevenp_pipeline.verdict import Gates, verdict


def is_release_branch(branch: str) -> bool:
    """Branches whose package.json version may become the X.Y.Z / X.Y tags (a git tag always does)."""
    return branch in ("main", "master") or branch.startswith("release/")


def moves_branch_tags(*, origin: str, branch: str, sha: str, head: str | None) -> tuple[bool, str]:
    """Whether a run's image takes the branch's moving tags (``<branch>``, ``X.Y``, the package.json
    version), and why (not): only a pushed commit (a push run, or a re-execution of one) that is still
    the branch's head. A run launched by hand, from the graph, or of a commit the branch has moved on
    from gets the tags bound to its commit only, so it never moves ``develop`` back to an older image."""
    if origin != PUSH:
        return False, f"not a push run (it started as {origin or 'an unknown launch'}): commit tags only"
    if not branch:
        return False, "the run has no branch: commit tags only"
    if head is None:
        return False, f"the head of {branch} could not be read: commit tags only"
    if head != sha:
        return False, f"{branch} has moved on to {head[:12]}: commit tags only"
    return True, f"{sha[:12]} is the pushed head of {branch}: its tags move here"


def _branch_head(context: dg.AssetExecutionContext, git: GitClient, app: AppConfig, branch: str) -> str | None:
    if not branch:
        return None
    try:
        return git.ls_remote_heads(app.repository.url, timeout=app.trigger.ls_remote_timeout_seconds).get(branch)
    except GitError as exc:
        context.log.warning("promoted_image: the head of %s could not be read: %s", branch, exc)
        return None


def _event_tags(context: dg.AssetExecutionContext, git: GitClient, app: AppConfig, sha: str, origin: str,
                run_tags: Mapping[str, str]) -> tuple[list[str], bool, str]:
    """The tags of a pull-request run (``pr-N``) or a tag run (the tag's semver tags), as the spec's
    metadata step makes them for those events: only while the ref still points at this commit, and,
    for a tag, only when a release branch holds the commit (anyone who can push a branch can push a tag)."""
    ref = run_tags[TAG_REF]
    try:
        head = git.ls_remote_refs(app.repository.url, timeout=app.trigger.ls_remote_timeout_seconds).get(ref)
    except GitError as exc:
        context.log.warning("promoted_image: %s could not be read: %s", ref, exc)
        head = None
    commit_only = image_tags(branch="", sha=sha, moving=False)
    if head != sha:
        where = "is gone" if head is None else f"moved on to {head[:12]}"
        return commit_only, False, f"{ref} {where}: commit tags only"
    if origin == PULL_REQUEST:
        number = int(run_tags.get(TAG_PR, "0") or 0)
        if number <= 0:
            return commit_only, False, f"{ref}: no pull request number: commit tags only"
        return (image_tags(branch="", sha=sha, pr_number=number), True,
                f"{sha[:12]} is the head of pull request {number}: pr-{number}")
    tag = ref.removeprefix("refs/tags/")
    try:
        released = bool(git.branches_containing(app.key, app.repository.url, sha, allowed=is_release_branch))
    except GitError:
        released = False
    if not released:
        return commit_only, False, f"tag {tag}: no release branch (main, master, release/*) holds {sha[:12]}: " \
                                   "commit tags only"
    if not semver_tags(tag):
        return commit_only, False, f"tag {tag} is not a semantic version: commit tags only"
    return image_tags(branch="", sha=sha, git_tag=tag), True, f"tag {tag} on a release branch: its semver tags"


def promoted_key(app: AppConfig) -> dg.AssetKey:
    return dg.AssetKey([app.key, "promoted_image"])


def build_promotion_asset(
    app: AppConfig, partitions: dg.PartitionsDefinition, after: Sequence[dg.AssetKey], gates: Gates,
) -> dg.AssetsDefinition:
    """``promoted_image``: the spec's tags on the image, after every asset in ``after`` materialized
    and only when the commit passed every gate in ``gates``."""
    @dg.asset(
        **stage_asset_args(app, partitions, promoted_key(app), "package",
                           "The image tagged as the spec's metadata step would (branch, pr-N, X.Y.Z, X.Y, "
                           "<branch>-<sha>) — only when every gate of the commit ran and passed.",
                           kinds=frozenset({"docker"})),
        deps=after,
    )
    def promoted_image(
        context: dg.AssetExecutionContext, registry: Registry, git: GitClient, workspaces: Workspaces,
    ) -> dg.MaterializeResult:
        sha = context.partition_key
        identity = ensure_run_identity(context, app, git)
        # Every gate must have run and passed for this commit, not only the ones this run executed:
        # a stage skipped by request (skip_tests) or a scan that failed in an earlier run never lets
        # an image through.
        result = verdict(context.instance, gates, sha)
        if not result.passed:
            context.instance.add_run_tags(context.run.run_id, {TAG_PROMOTION: "refused"})
            raise failure(f"promoted_image: not promoted, the gates of commit {sha[:12]} are not all met: "
                          f"{result.describe()}",
                          unmet_gates=dg.MetadataValue.md(md_table(
                              ["gate", "of", "why"], [[f.gate.label, f.gate.family, f.why] for f in result.failures])))
        image = latest_record(context, ImageRecord, image_key(app))
        branch = identity.branch
        run_tags = context.run.tags
        if identity.origin in (PULL_REQUEST, TAG) and run_tags.get(TAG_REF):
            tags, moving, why = _event_tags(context, git, app, sha, identity.origin, run_tags)
        else:
            moving, why = moves_branch_tags(origin=identity.origin, branch=branch, sha=sha,
                                            head=_branch_head(context, git, app, branch))
            git_tag = _release_tag(git, app, sha)
            version = None
            if git_tag is None and is_release_branch(branch):
                version = _package_version(workspaces, app, sha)
            tags = image_tags(branch=branch, sha=sha, git_tag=git_tag, version=version, moving=moving)
        context.log.info("promoted_image: %s", why)
        try:
            registry.prepare(log=context.log.info)
            tagged = registry.tag(repository=app.image_repository, digest=image.digest, tags=tags,
                                  log=context.log.info)
        except RegistryError as exc:
            raise failure(f"promoted_image: {exc}") from exc
        return dg.MaterializeResult(
            data_version=dg.DataVersion(fingerprint(image.digest, tags)),
            metadata={"digest": image.digest, "tags": dg.MetadataValue.json(tags),
                      "refs": dg.MetadataValue.json(list(tagged.refs)), "branch": branch or "(on no branch)",
                      "trigger": identity.trigger, "moves_branch_tags": moving, "why_these_tags": why},
        )

    return promoted_image


def _release_tag(git: GitClient, app: AppConfig, sha: str) -> str | None:
    """A `vX.Y.Z` git tag pointing at the commit, if the remote has one and a release branch (main,
    master, release/*) holds the commit: anyone who can push a feature branch can push a tag too, and
    a semver image tag is what deploys and users pull."""
    try:
        tags = [t for t in git.tags_at(app.key, sha) if t.lstrip("v")[:1].isdigit()]
        if not tags or not git.branches_containing(app.key, app.repository.url, sha, allowed=is_release_branch):
            return None
    except GitError:
        return None
    return tags[0]


def _package_version(workspaces: Workspaces, app: AppConfig, sha: str) -> str | None:
    workspace = workspaces.for_commit(app=app.key, sha=sha, subdir=app.repository.subdirectory)
    try:
        return json.loads((workspace.app_dir / "package.json").read_text()).get("version")
    except (OSError, ValueError):
        return None


def build_promotion_family(app: AppConfig, partitions: dg.PartitionsDefinition, after: Sequence[dg.AssetKey],
                           gates: Gates) -> Family:
    """The promotion family: ``promoted_image``, which reads the verdict of every gate in ``gates``."""
    promotion = build_promotion_asset(app, partitions, after, gates)
    return Family(dg.Definitions(assets=[promotion]), outputs=(promotion.key,))
