"""Restoring unchanged stages: a stage's input key, and storing / restoring its result by that key.

The **input key** is computed before the stage runs, from everything its result depends on: the
stage code version, name, kind and settings (report paths, gates), the argv, the public environment
(the app's and the stage's env, the package manager's settings; never secrets or per-run values such
as APP_PORT, service URIs, HOME or TMPDIR), node's and the package manager's versions, the services
it gets, the package.json scripts it runs, the data versions of the stages it needs in this commit
(the install's covers the lockfile and node_modules; the build's output digest covers dist/) and the
files it reads: the app folder's git tree, or with ``inputs:`` the path, mode and blob id of every
file of the commit matching them (package.json and the lockfile always count).

A stage that ran and passed every gate is stored under its key (resources/stage_cache.py). A later
commit whose stage computes the same key gets that result back instead of running: the kept files
are stored again under its own commit, build outputs are unpacked into its checkout, and it records
the same data version, metadata (plus ``restored_from``) and check results. Anything wrong with the
cache is a warning and the stage runs: the cache never fails a stage.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from sevenp_pipeline.asset_helpers import STAGE_CODE_VERSION, fingerprint, latest_materialization
from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.files import extract_data, private_dir
from sevenp_pipeline.resources.git import GitClient, GitError
from sevenp_pipeline.resources.stage_cache import CachedFile, CachedOutput, CacheError, Manifest, StageResultCache
from sevenp_pipeline.resources.workspaces import read_inputs
from sevenp_pipeline.stages.runner import Stage

DATA_VERSION_TAG = "dagster/data_version"
# Settings of a stage that change how it is run, not what it yields.
_NOT_IN_KEY = {"description", "needs", "timeout_seconds", "retries", "cache", "enabled"}


class Uncacheable(Exception):
    """The result holds something the cache cannot store faithfully (a metadata kind it does not know)."""


# -- the input key ---------------------------------------------------------------------------------
def upstream_versions(instance: dg.DagsterInstance, app: AppConfig, stage: str, sha: str) -> dict[str, str]:
    """The data version each stage ``stage`` needs recorded for this commit (its latest materialization)."""
    versions = {}
    for need in app.needs(stage):
        key = dg.AssetKey([app.key, need])
        record = latest_materialization(instance, key, sha)
        materialization = record.asset_materialization if record is not None else None
        version = (materialization.tags or {}).get(DATA_VERSION_TAG) if materialization else None
        if not version:
            raise CacheError(f"{need} has no data version recorded for {sha[:12]}")
        versions[need] = version
    return versions


def input_files(stage: Stage, git: GitClient) -> dict[str, Any]:
    """What identifies the files the stage reads: the app folder's tree, or the files ``inputs`` match."""
    spec = stage.spec
    if spec.inputs is None:
        tree = read_inputs(stage.workspace).get("tree")
        if not tree:
            raise CacheError(f"no tree hash recorded in {stage.workspace.root / 'inputs.json'}")
        return {"tree": tree}
    patterns = [*spec.inputs, "package.json", stage.package_manager.lockfile]
    try:
        files = git.files_matching(stage.app.key, stage.sha, patterns, subdir=stage.app.repository.subdirectory)
    except GitError as exc:
        raise CacheError(f"listing the files matching inputs: {exc}") from exc
    return {"inputs": list(spec.inputs), "files": fingerprint(files), "count": len(files)}


def input_key(stage: Stage, argv: list[str], *, git: GitClient, app_port: bool) -> str:
    """The stage's input key (module docstring). Raises CacheError when a part cannot be known."""
    spec, app = stage.spec, stage.app
    scripts: dict[str, str | None] = {}
    if spec.script:
        defined = stage.package_scripts()
        # npm and pnpm run pre<script> and post<script> around it.
        scripts = {s: defined.get(s) for s in (f"pre{spec.script}", spec.script, f"post{spec.script}")}
    node_modules = read_inputs(stage.workspace).get("node_modules")
    parts = {
        "code_version": STAGE_CODE_VERSION,
        "stage": stage.name,
        "kind": spec.kind,
        "settings": spec.model_dump(mode="json", exclude=_NOT_IN_KEY),
        "argv": argv,
        "env": stage.env(per_run=False),  # service references unexpanded: no per-run values
        "secret_names": sorted(app.secrets),
        "tools": stage.tool_versions(),
        "services": sorted(spec.services),
        "service_settings": app.services.model_dump(mode="json") if spec.services else None,
        "init_sql": init_sql_digest(stage),
        "app_port": app_port,
        "scripts": scripts,
        "node_modules": Path(node_modules).parent.name if node_modules else None,
        "upstream": upstream_versions(stage.context.instance, app, stage.name, stage.sha),
        "subdirectory": app.repository.subdirectory,
        "files": input_files(stage, git),
    }
    return fingerprint(parts)


def init_sql_digest(stage: Stage) -> str | None:
    """The digest of ``services.postgresql.init_sql`` for a stage that gets PostgreSQL: it counts even
    when the stage's ``inputs`` leave it out."""
    pg = stage.app.services.postgresql
    if not (pg and pg.init_sql and "postgresql" in stage.spec.services):
        return None
    path = stage.report_path(pg.init_sql)  # never read through a link out of the checkout
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "missing"


def try_input_key(stage: Stage, argv: list[str], *, git: GitClient, app_port: bool) -> str | None:
    """The input key, or None (with a warning: the stage then runs and is not stored)."""
    try:
        return input_key(stage, argv, git=git, app_port=app_port)
    except (CacheError, OSError) as exc:
        stage.context.log.warning(f"{stage.name}: no input key, the stage cache is not used: {exc}")
        return None


# -- metadata to JSON and back ---------------------------------------------------------------------
# MetadataValue kinds the stages record, and how each is written to JSON.
_WRAPPED: tuple[tuple[type, str, Any], ...] = (
    (dg.MarkdownMetadataValue, "md", lambda v: v.md_str),
    (dg.UrlMetadataValue, "url", lambda v: v.url),
    (dg.PathMetadataValue, "path", lambda v: v.path),
    (dg.JsonMetadataValue, "json", lambda v: v.data),
    (dg.TimestampMetadataValue, "timestamp", lambda v: v.value),
)
_UNWRAPPED = (dg.TextMetadataValue, dg.IntMetadataValue, dg.FloatMetadataValue, dg.BoolMetadataValue,
              dg.NullMetadataValue)
# Plain values; bool before int (a bool is an int).
_PLAIN: tuple[tuple[type, str], ...] = ((bool, "bool"), (int, "int"), (float, "float"), (str, "text"),
                                        (dict, "json"), (list, "json"), (type(None), "null"))


def _encode(value: Any) -> dict[str, Any]:
    if isinstance(value, _UNWRAPPED):
        value = value.value
    for cls, kind, get in _WRAPPED:
        if isinstance(value, cls):
            return {"type": kind, "value": get(value)}
    for cls, kind in _PLAIN:
        if isinstance(value, cls):
            return {"type": kind, "value": value}
    raise Uncacheable(f"metadata of type {type(value).__name__}")


def encode_metadata(metadata: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {str(k): _encode(v) for k, v in metadata.items()}


def decode_metadata(encoded: dict[str, Any], uris: dict[str, str]) -> dict[str, Any]:
    """The metadata back, with every artifact URI of the original commit replaced by this commit's."""

    def moved(text: str) -> str:
        for old, new in uris.items():
            text = text.replace(old, new)
        return text

    out: dict[str, Any] = {}
    for name, item in encoded.items():
        kind, value = item["type"], item["value"]
        if kind == "md":
            out[name] = dg.MetadataValue.md(moved(value))
        elif kind == "url":
            out[name] = dg.MetadataValue.url(uris.get(value, value))
        elif kind == "path":
            out[name] = dg.MetadataValue.path(value)
        elif kind == "json":
            out[name] = dg.MetadataValue.json(value)
        elif kind == "timestamp":
            out[name] = dg.MetadataValue.timestamp(float(value))
        elif kind == "null":
            out[name] = dg.MetadataValue.null()
        elif kind == "text":
            out[name] = moved(value)
        elif kind in ("int", "float", "bool"):
            out[name] = value
        else:
            raise CacheError(f"metadata {name!r} has an unknown type {kind!r}")
    return out


def encode_check(result: dg.AssetCheckResult) -> dict[str, Any]:
    return {"name": result.check_name, "passed": result.passed, "severity": result.severity.value,
            "description": result.description, "metadata": encode_metadata(dict(result.metadata or {}))}


def decode_check(item: dict[str, Any], *, note: str) -> dg.AssetCheckResult:
    description = item.get("description")
    return dg.AssetCheckResult(
        check_name=item["name"], passed=bool(item["passed"]), severity=dg.AssetCheckSeverity(item["severity"]),
        description=f"{description} ({note})" if description else note,
        metadata=decode_metadata(item.get("metadata") or {}, {}))


# -- store and restore -----------------------------------------------------------------------------
def save_result(context: dg.AssetExecutionContext, cache: StageResultCache, *, app: str, name: str, key: str,
                data_version: str, metadata: dict[str, Any], checks: Sequence[dg.AssetCheckResult] = (),
                files: Mapping[str, tuple[Path, str]] | None = None,
                outputs: Mapping[str, str] | None = None) -> None:
    """Stores a result that passed every gate under ``key`` (``files``: name -> (local file, its
    artifact URI); ``outputs``: app folder -> the name of its packed file). A failure to store is a
    warning, never a failed asset."""
    if not all(c.passed for c in checks):
        return
    try:
        cached = tuple(CachedFile(name=n, sha256=cache.put_blob(path), uri=uri)
                       for n, (path, uri) in (files or {}).items())
        cache.save(Manifest(
            app=app, stage=name, input_key=key, commit=context.partition_key, run_id=context.run.run_id,
            created=time.time(), data_version=data_version, metadata=encode_metadata(metadata),
            checks=[encode_check(c) for c in checks], files=cached,
            outputs=tuple(CachedOutput(path=p, file=f) for p, f in (outputs or {}).items())))
    except (CacheError, Uncacheable, OSError, ValueError) as exc:
        context.log.warning(f"{name}: result not stored in the stage cache: {exc}")
        return
    context.log.info("%s: stored in the stage cache (input key %s)", name, key)


def load_result(context: dg.AssetExecutionContext, cache: StageResultCache, *, app: str, name: str,
                key: str, checks: Sequence[str] = ()) -> tuple[Manifest, dict[str, Path]] | None:
    """The stored result for ``key`` with its verified files, or None (the asset then runs): a
    missing entry is logged, a broken one (``checks``: the check names it must hold) is a warning."""
    try:
        manifest = cache.load(app=app, stage=name, key=key)
        if manifest is None:
            context.log.info("%s: no stored result for input key %s: running it", name, key)
            return None
        stored = sorted(str(c.get("name")) for c in manifest.checks)
        if stored != sorted(checks):
            raise CacheError(f"{manifest.path}: holds checks {stored}, the asset has {sorted(checks)}")
        blobs = cache.verified_blobs(manifest)
        decode_metadata(manifest.metadata, {})  # checked before anything is written
    except (CacheError, OSError, ValueError, KeyError, TypeError) as exc:
        not_used(context, name, key, exc)
        return None
    return manifest, blobs


def not_used(context: dg.AssetExecutionContext, name: str, key: str, exc: BaseException) -> None:
    context.log.warning(f"{name}: stage cache entry for input key {key} not used, running it: "
                        f"{type(exc).__name__}: {exc}")


def mark_restored(context: dg.AssetExecutionContext, cache: StageResultCache, manifest: Manifest, *,
                  name: str) -> dict[str, str]:
    """Records the use (retention keeps used entries) and logs it; the metadata every restore adds."""
    cache.touch(manifest)
    context.log.info("%s: restored from %s (input key %s, run %s)", name, manifest.commit[:12],
                     manifest.input_key, manifest.run_id)
    return {"restored_from": manifest.commit, "restored_run_id": manifest.run_id}


def store(stage: Stage, cache: StageResultCache, key: str, *, data_version: str, metadata: dict[str, Any],
          checks: list[dg.AssetCheckResult], outputs: dict[str, str]) -> None:
    """Stores a declared stage's result that passed every gate, with the files it kept (the stored files
    themselves for a local store, hard-linked into the cache; copies fetched from a remote one)."""
    with tempfile.TemporaryDirectory(prefix="sevenp-cache-") as tmp:
        files = {}
        for name, uri in stage.kept.items():
            path = stage.store.local_copy(app=stage.app.key, sha=stage.sha, name=name, folder=Path(tmp))
            if path is None:
                stage.context.log.warning(f"{stage.name}: result not stored in the stage cache: "
                                          f"the artifact store has no {name}")
                return
            files[name] = (path, uri)
        save_result(stage.context, cache, app=stage.app.key, name=stage.name, key=key, data_version=data_version,
                    metadata=metadata, checks=checks, files=files, outputs=outputs)


def restore(stage: Stage, cache: StageResultCache, key: str, *, checks: list[str]) -> dg.MaterializeResult | None:
    """The stored result for ``key`` as this commit's, or None (the stage then runs). ``checks``: the
    stage's check names, which the stored results must be."""
    found = load_result(stage.context, cache, app=stage.app.key, name=stage.name, key=key, checks=checks)
    if found is None:
        return None
    manifest, blobs = found
    try:
        results = [decode_check(c, note=f"restored from {manifest.commit[:12]}") for c in manifest.checks]
        uris = {cached.uri: stage.store.put_file(app=stage.app.key, sha=stage.sha, name=cached.name,
                                                 path=blobs[cached.name], link=True)
                for cached in manifest.files}
        for output in manifest.outputs:
            _unpack(stage, blobs[output.file], output.path)
        metadata = decode_metadata(manifest.metadata, uris)
    except (CacheError, OSError, ValueError, KeyError, TypeError, tarfile.TarError) as exc:
        not_used(stage.context, stage.name, key, exc)
        return None
    return dg.MaterializeResult(
        data_version=dg.DataVersion(manifest.data_version),
        metadata={**metadata, **mark_restored(stage.context, cache, manifest, name=stage.name)},
        check_results=results,
    )


def _unpack(stage: Stage, tarball: Path, rel: str) -> None:
    """Unpacks a stored output folder (``dist``) into this commit's app folder, where the build left it."""
    if Path(rel).is_absolute() or ".." in Path(rel).parts:
        raise CacheError(f"output folder {rel!r} is not inside the app folder")
    target = stage.report_path(rel)  # refuses a link out of the checkout
    with tarfile.open(tarball, "r:gz") as tar:
        names = tar.getnames()
        arc = target.name
        strays = [n for n in names if n != arc and not n.startswith(arc + "/")]
        if strays:
            raise CacheError(f"{tarball} holds {strays[0]!r}, outside {arc}/")
        if target.is_symlink() or target.is_file():
            target.unlink()
        shutil.rmtree(target, ignore_errors=True)
        # Folders above it that the build made (``build/`` of ``build/out``) are made again, 0755 as git
        # or a build would make them, not 0700 as the orchestrator's umask would.
        created = [p for p in reversed(target.parents) if p.is_relative_to(stage.workspace.app_dir) and not p.exists()]
        private_dir(target.parent, mode=0o755)
        extract_data(tar, target.parent)
    # later stages run as the stage user, as after a build
    stage.workspaces.hand_over(created[0] if created else target)
