"""Unchanged stages are restored, not re-run: the input key, the result cache and its retention.

The fast tests drive the cache store, the metadata round trip and git's file matching directly; the
integration tests run the tiny app's pipeline with real git, npm, node, PostgreSQL and Redis.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import dagster as dg
import pytest
import yaml

from sevenp_pipeline.config import ConfigError, load_app_config
from sevenp_pipeline.housekeeping.retention import WorkspaceRetention
from sevenp_pipeline.resources.git import GitClient
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.stage_cache import CachedFile, CacheError, Manifest, StageResultCache
from sevenp_pipeline.stages.cache import Uncacheable, decode_metadata, encode_metadata
from sevenp_pipeline.triggers.tags import TAG_APP, TAG_BRANCH, TAG_COMMIT
from sevenp_pipeline_tests.conftest import SAMPLE_APP, Pipeline
from sevenp_pipeline_tests.gitutil import Remote, git
from sevenp_pipeline_tests.results import metadata_of

KEY = "0123456789abcdef0123456789abcdef"
SAMPLE_CONFIG = Path(__file__).resolve().parents[2] / "apps" / "7p-education-api.yaml"
QUALITY_STAGES = ["lint_report", "security_lint_report", "format_report", "type_check_report"]


# -- config -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("inputs", "message"), [
    ('["src/**", 3]', "stages.lint_report.inputs[1]: Input should be a valid string"),
    ('["src/**", ""]', "stages.lint_report.inputs[1]: an empty pattern"),
    ('["/etc/passwd"]', "stages.lint_report.inputs[0]: '/etc/passwd' is absolute"),
    ('["src/../../secrets/**"]', "stages.lint_report.inputs[0]: 'src/../../secrets/**' leaves the app folder"),
    ('[":(exclude)src"]', "stages.lint_report.inputs[0]: ':(exclude)src': pathspec magic is not accepted"),
    ("[]", "stages.lint_report.inputs: an empty list would let any change of the app reuse an old result"),
])
def test_bad_inputs_are_refused_naming_file_and_key(tmp_path: Path, inputs: str, message: str) -> None:
    path = tmp_path / "web.yaml"
    path.write_text(f"name: web\nrepository: {{url: /srv/web.git}}\nstages:\n  lint_report: {{inputs: {inputs}}}\n")
    with pytest.raises(ConfigError) as error:
        load_app_config(path)
    assert str(error.value).startswith(f"{path}: {message}"), str(error.value)


def test_inputs_and_cache_settings(tmp_path: Path) -> None:
    path = tmp_path / "web.yaml"
    path.write_text("name: web\nrepository: {url: /srv/web.git}\nstages:\n"
                    "  lint_report: {inputs: ['src/**', '*.config.*']}\n  format_report: {cache: false}\n")
    app = load_app_config(path)
    assert app.stage("lint_report").inputs == ["src/**", "*.config.*"] and app.stage("lint_report").cacheable
    assert app.stage("unit_test_results").inputs is None and app.stage("unit_test_results").cacheable
    assert not app.stage("format_report").cacheable
    assert not app.stage("node_dependencies").cacheable  # the install has its own cache
    path.write_text("name: web\nrepository: {url: /srv/web.git}\nstages:\n  node_dependencies: {inputs: [x]}\n")
    with pytest.raises(ConfigError, match=r"stages\.node_dependencies\.inputs: the install stage is never restored"):
        load_app_config(path)


# -- git: the files an inputs list matches -----------------------------------------------------------
def test_files_matching_follows_git_globs_under_the_app_folder(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for rel in ("app/src/a.ts", "app/src/deep/b.ts", "app/README.md", "app/eslint.config.mjs",
                "app/tsconfig.json", "app/tsconfig.build.json", "app/package.json", "app/tests/c.ts", "other/x.ts"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text(rel)
    git("init", "--quiet", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "--quiet", "-m", "files", cwd=repo)
    sha = git("rev-parse", "HEAD", cwd=repo)
    cache = tmp_path / "cache"
    (cache / "git").mkdir(parents=True)
    git("clone", "--quiet", "--mirror", str(repo), str(cache / "git" / "app.git"), cwd=tmp_path)
    client = GitClient(runner=ProcessRunner(), cache_dir=str(cache))
    files = client.files_matching("app", sha, ["src/**", "*.config.*", "tsconfig*.json", "package.json"],
                                  subdir="app")
    assert [f[0] for f in files] == ["eslint.config.mjs", "package.json", "src/a.ts", "src/deep/b.ts",
                                     "tsconfig.build.json", "tsconfig.json"]
    assert all(mode == "100644" and len(oid) == 40 for _, mode, oid in files)
    # `*` stops at a slash: a top-level glob does not reach into folders.
    assert [f[0] for f in client.files_matching("app", sha, ["*.ts"], subdir="app")] == []
    assert [f[0] for f in client.files_matching("app", sha, ["**/*.ts"], subdir="app")] == [
        "src/a.ts", "src/deep/b.ts", "tests/c.ts"]


def test_the_sample_apps_inputs_cover_what_its_tools_read(tmp_path: Path) -> None:
    """apps/7p-education-api.yaml narrows the quality stages' inputs: each list must hold every file
    its tool reads in examples/7p-education-api, or a change there would restore a stale result."""
    remote = Remote(tmp_path, SAMPLE_APP, "sample")
    cache = tmp_path / "cache"
    (cache / "git").mkdir(parents=True)
    git("clone", "--quiet", "--mirror", remote.url, str(cache / "git" / "sample.git"), cwd=tmp_path)
    client = GitClient(runner=ProcessRunner(), cache_dir=str(cache))
    stages = yaml.safe_load(SAMPLE_CONFIG.read_text())["stages"]
    sha = git("rev-parse", "HEAD", cwd=remote.clone)

    def matched(stage: str) -> set[str]:
        return {path for path, _, _ in client.files_matching("sample", sha, stages[stage]["inputs"])}

    files = {p.relative_to(remote.clone).as_posix() for p in remote.clone.rglob("*")
             if p.is_file() and ".git" not in p.relative_to(remote.clone).parts}
    scripts = {f for f in files if f.endswith((".js", ".mjs", ".cjs", ".ts"))}
    assert matched("lint_report") == scripts  # eslint . lints them all, its config among them
    assert matched("security_lint_report") == {f for f in files if f.endswith(".ts")} | {
        "eslint.security.config.mjs"}
    typed = {"tsconfig.json", "playwright.config.ts", "api-spec/openapi.json", "migrations/index.d.ts"} | {
        f for f in files if f.endswith(".ts") and f.split("/")[0] in ("src", "tests", "e2e")}
    assert typed <= matched("type_check_report") and "README.md" not in matched("type_check_report")
    prettier = {f for f in files if f.endswith((".ts", ".js", ".mjs", ".cjs", ".json", ".md", ".css", ".html",
                                                ".yaml", ".yml"))}
    assert prettier | {".prettierrc.json", ".prettierignore"} <= matched("format_report")
    assert "README.md" in matched("format_report")  # prettier --check . reads it


# -- the store -------------------------------------------------------------------------------------
def _manifest(cache: StageResultCache, tmp_path: Path, *, run_id: str = "run-1", body: str = "report") -> Manifest:
    source = tmp_path / f"{run_id}.json"
    source.write_text(body)
    digest = cache.put_blob(source)
    return Manifest(app="web", stage="lint_report", input_key=KEY, commit="a" * 40, run_id=run_id,
                    created=time.time(), data_version="dv-1",
                    metadata=encode_metadata({"errors": 0, "body": body}),
                    checks=[{"name": "no_lint_errors", "passed": True, "severity": "ERROR", "description": "ok",
                             "metadata": {}}],
                    files=(CachedFile("reports/lint.json", digest, f"file:///old/{run_id}.json"),))


def test_manifest_round_trip_and_what_makes_an_entry_unusable(tmp_path: Path) -> None:
    cache = StageResultCache(root=str(tmp_path / "cache"))
    assert cache.load(app="web", stage="lint_report", key=KEY) is None
    saved = _manifest(cache, tmp_path)
    path = cache.save(saved)
    assert path == tmp_path / "cache" / "manifests" / "web" / "lint_report" / f"{KEY}.json"
    loaded = cache.load(app="web", stage="lint_report", key=KEY)
    assert loaded == saved
    blob = cache.verified_blobs(loaded)["reports/lint.json"]
    assert blob.parent == tmp_path / "cache" / "blobs" / "sha256" and blob.read_text() == "report"
    assert oct(blob.stat().st_mode & 0o777) == "0o600" and oct(path.stat().st_mode & 0o777) == "0o600"

    blob.write_text("tampered")
    with pytest.raises(CacheError, match="is corrupt"):
        cache.verified_blobs(loaded)
    blob.unlink()
    with pytest.raises(CacheError, match="is missing"):
        cache.verified_blobs(loaded)
    path.write_text(path.read_text()[:40])
    with pytest.raises(CacheError, match="not valid JSON"):
        cache.load(app="web", stage="lint_report", key=KEY)
    path.write_text(json.dumps({"format": 1, "app": "web"}))
    with pytest.raises(CacheError, match="missing or malformed field"):
        cache.load(app="web", stage="lint_report", key=KEY)


def _write_many(root: str, tmp: str, writer: int, rounds: int) -> int:
    cache = StageResultCache(root=root)
    for i in range(rounds):
        run_id = f"writer{writer}-{i}"
        # A large body: a torn write or two writers interleaved would show as bad JSON or a mixed body.
        cache.save(_manifest(cache, Path(tmp), run_id=run_id, body=run_id * 20000))
    return rounds


def test_concurrent_writers_of_one_key_leave_a_valid_manifest(tmp_path: Path) -> None:
    root = str(tmp_path / "cache")
    cache = StageResultCache(root=root)
    seen: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            try:
                manifest = cache.load(app="web", stage="lint_report", key=KEY)  # raises on a torn manifest
                if manifest is not None:
                    if decode_metadata(manifest.metadata, {})["body"] != manifest.run_id * 20000:
                        errors.append(f"mixed manifest of {manifest.run_id}")
                    cache.verified_blobs(manifest)
                    seen.append(manifest.run_id)
            except CacheError as exc:
                errors.append(str(exc))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        with ProcessPoolExecutor(max_workers=4, mp_context=get_context("fork")) as pool:
            done = list(pool.map(_write_many, [root] * 4, [str(tmp_path)] * 4, range(4), [15] * 4))
    finally:
        stop.set()
        reader.join()
    assert done == [15] * 4
    assert errors == []
    final = cache.load(app="web", stage="lint_report", key=KEY)
    assert final is not None and final.run_id.endswith("-14")
    assert cache.verified_blobs(final)
    assert seen  # the reader saw whole manifests while the writers ran
    folder = tmp_path / "cache" / "manifests" / "web" / "lint_report"
    assert sorted(p.name for p in folder.iterdir()) == [f"{KEY}.json"]  # no temp file left behind
    assert not [p for p in (tmp_path / "cache" / "blobs" / "sha256").iterdir() if p.name.startswith(".tmp")]


def test_prune_drops_unused_manifests_then_unreferenced_blobs(tmp_path: Path) -> None:
    cache = StageResultCache(root=str(tmp_path / "cache"))
    now = time.time()
    old = _manifest(cache, tmp_path, run_id="old", body="old report")
    fresh = _manifest(cache, tmp_path, run_id="fresh", body="fresh report")
    old = Manifest(**{**old.__dict__, "stage": "format_report"})
    old_path, fresh_path = cache.save(old), cache.save(fresh)
    os.utime(old_path, (now - 20 * 86400, now - 20 * 86400))
    blobs = tmp_path / "cache" / "blobs" / "sha256"
    for blob in blobs.iterdir():
        os.utime(blob, (now - 20 * 86400, now - 20 * 86400))
    young_orphan = tmp_path / "young"
    young_orphan.write_text("being stored right now")
    young_digest = cache.put_blob(young_orphan)

    dry = cache.prune(unused_for_seconds=14 * 86400, now=now, dry_run=True)
    assert (dry.manifests_removed, dry.blobs_removed) == (1, 1) and old_path.exists()
    report = cache.prune(unused_for_seconds=14 * 86400, now=now)
    assert (report.manifests_removed, report.blobs_removed, report.manifests_kept) == (1, 1, 1)
    assert report.bytes_freed > 0
    assert not old_path.exists() and fresh_path.exists()
    assert {p.name for p in blobs.iterdir()} == {fresh.files[0].sha256, young_digest}
    # A restore touches its manifest: a result in use is never pruned for its age.
    os.utime(fresh_path, (now - 20 * 86400, now - 20 * 86400))
    cache.touch(cache.load(app="web", stage="lint_report", key=KEY))
    assert cache.prune(unused_for_seconds=14 * 86400).manifests_removed == 0


def test_retention_prunes_the_stage_cache_too(tmp_path: Path) -> None:
    cache = StageResultCache(root=str(tmp_path / "cache"))
    path = cache.save(_manifest(cache, tmp_path))
    os.utime(path, (time.time() - 30 * 86400,) * 2)
    retention = WorkspaceRetention(workspaces_dir=str(tmp_path / "workspaces"), stage_cache_dir=cache.root,
                                   stage_cache_days=14)
    report = retention.prune(dg.DagsterInstance.ephemeral())
    assert report.stage_cache is not None
    assert report.stage_cache.manifests_removed == 1 and not path.exists()
    assert "stage cache: removed 1 result(s)" in report.summary()


def test_metadata_round_trip_moves_artifact_uris() -> None:
    metadata = {
        "errors": 0, "ratio": 0.5, "gates_passed": True, "command": "npm run lint", "nothing": None,
        "log": dg.MetadataValue.url("file:///a/old/logs/lint.log"),
        "problems": dg.MetadataValue.md("| file |\n|---|\n| see file:///a/old/logs/lint.log |"),
        "where": dg.MetadataValue.path("/srv/x"), "data": dg.MetadataValue.json({"a": [1, 2]}),
        "count": dg.MetadataValue.int(3), "at": dg.MetadataValue.timestamp(1700000000.0),
    }
    encoded = json.loads(json.dumps(encode_metadata(metadata)))
    decoded = decode_metadata(encoded, {"file:///a/old/logs/lint.log": "file:///a/new/logs/lint.log"})
    assert decoded["log"] == dg.MetadataValue.url("file:///a/new/logs/lint.log")
    assert "file:///a/new/logs/lint.log" in decoded["problems"].md_str
    assert (decoded["errors"], decoded["ratio"], decoded["gates_passed"], decoded["count"]) == (0, 0.5, True, 3)
    assert isinstance(decoded["gates_passed"], bool) and isinstance(decoded["ratio"], float)
    assert decoded["where"] == dg.MetadataValue.path("/srv/x") and decoded["data"].data == {"a": [1, 2]}
    assert decoded["at"].value == 1700000000.0
    with pytest.raises(Uncacheable):
        encode_metadata({"odd": object()})


# -- the pipeline ----------------------------------------------------------------------------------
CACHED_STAGES = ["lint_report", "security_lint_report", "format_report", "type_check_report", "unit_test_results",
                 "integration_test_results", "api_test_results", "build_artifact", "api_docs"]
# A stage after the build that reads dist/: it works only if a restored build's output is unpacked.
DIST_CHECK = """
  dist_check:
    kind: command
    command: [node, -e, "const m = require('./dist/math.js'); if (m.add(2, 3) !== 5) process.exit(3)"]
    needs: [build_artifact]
    cache: false
"""
QUALITY_INPUTS = """
  lint_report: {inputs: ["src/**", "scripts/lint.js"]}
  security_lint_report: {inputs: ["src/**", "scripts/lint.js"]}
  format_report: {inputs: ["src/**", "scripts/format.js"]}
  type_check_report: {inputs: ["src/**", "scripts/typecheck.js"]}
"""
QUALITY = "source_checkout,node_dependencies,lint_report,security_lint_report,format_report,type_check_report"
NO_CACHE = {"resources": {"launch_options": {"config": {"use_stage_cache": False}}}}


def _materializations(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetMaterialization]:
    return {e.asset_key.path[-1]: e.materialization for e in result.get_asset_materialization_events()}


def _meta(result: dg.ExecuteInProcessResult, stage: str) -> dict:
    return {k: v.value for k, v in _materializations(result)[stage].metadata.items()}


def _versions(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {name: m.tags["dagster/data_version"] for name, m in _materializations(result).items()}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {f"{e.asset_check_evaluation_data.asset_key.path[-1]}.{e.asset_check_evaluation_data.check_name}":
            e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}


def _restored(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {name: m.metadata["restored_from"].value for name, m in _materializations(result).items()
            if "restored_from" in m.metadata}


def _ran(pipe: Pipeline, sha: str, stage: str) -> bool:
    """Whether the stage's command ran for the commit: the runner writes the log in its workspace."""
    return (pipe.settings.workspaces_dir / pipe.key / sha / "logs" / f"{stage}.log").exists()


def _warnings(pipe: Pipeline, result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(e.user_message for e in pipe.instance.all_logs(result.run_id)
                     if e.level >= logging.WARNING and not e.is_dagster_event)


def _manifests(pipe: Pipeline, stage: str) -> list[Path]:
    return sorted((pipe.settings.stage_cache_dir / "manifests" / pipe.key / stage).glob("*.json"))


@pytest.mark.integration
def test_same_tree_on_another_branch_restores_every_cached_stage(make_pipeline) -> None:
    pipe = make_pipeline("stages:" + DIST_CHECK)
    first_sha = pipe.remote.push("develop")
    first = pipe.materialize(first_sha)
    assert first.success
    assert not _restored(first) and all(_ran(pipe, first_sha, s) for s in CACHED_STAGES)
    git("checkout", "--quiet", "-b", "feature/again", cwd=pipe.remote.clone)
    sha = pipe.remote.commit("chore: the same tree again", push_to="feature/again")

    second = pipe.materialize(sha)
    assert second.success
    restored = _restored(second)
    assert restored == dict.fromkeys(CACHED_STAGES, first_sha)
    for stage in CACHED_STAGES:
        assert not _ran(pipe, sha, stage), f"{stage} ran although its inputs did not change"
    assert _ran(pipe, sha, "dist_check")  # cache: false: it runs, on the unpacked build output
    assert _meta(second, "node_dependencies")["reused"] is True  # the install keeps its own cache
    assert _versions(second) == _versions(first)  # every stage: equal inputs, equal data versions
    # The same figures, and the kept files stored again under this commit.
    for stage in CACHED_STAGES:
        before, after = _meta(first, stage), _meta(second, stage)
        assert after["restored_run_id"] == first.run_id and after["input_key"] == before["input_key"]
        for name in ("errors", "passed", "failed", "coverage_lines_pct", "sha256", "files", "gates_passed"):
            assert after.get(name) == before.get(name), (stage, name)
    junit = _meta(second, "unit_test_results")["junit"]
    assert sha in junit and Path(junit.removeprefix("file://")).read_bytes() == \
        Path(_meta(first, "unit_test_results")["junit"].removeprefix("file://")).read_bytes()
    # The same check results, saying where they came from.
    checks1, checks2 = _checks(first), _checks(second)
    assert checks1.keys() == checks2.keys()
    for name, check in checks2.items():
        stage = name.split(".")[0]
        if stage in CACHED_STAGES:
            original = checks1[name]
            assert (check.passed, check.severity, check.metadata) == (original.passed, original.severity,
                                                                      original.metadata)
            assert check.description == f"{original.description} (restored from {first_sha[:12]})"
    # The build's output was unpacked into the new checkout, byte for byte what was built.
    dist = pipe.settings.workspaces_dir / pipe.key / sha / "src" / "dist" / "math.js"
    assert dist.read_text() == (pipe.remote.clone / "src" / "math.js").read_text()


# The build writes out/dist/: restored on another commit, out/ is made again by the orchestrator (umask 077).
NESTED_BUILD = """
  build_artifact:
    kind: build
    command: [node, -e, "require('fs').cpSync('src', 'out/dist', {recursive: true})"]
    output_dir: out/dist
    needs: [node_dependencies]
  dist_check:
    kind: command
    command: [node, -e, "const m = require('./out/dist/math.js'); if (m.add(2, 3) !== 5) process.exit(3)"]
    needs: [build_artifact]
    cache: false
"""


@pytest.mark.integration
def test_a_restored_nested_build_output_is_readable_by_the_next_stage(make_pipeline) -> None:
    pipe = make_pipeline("stages:" + NESTED_BUILD)
    first = pipe.materialize(pipe.remote.push("develop"), f"{QUALITY},build_artifact,dist_check")
    assert first.success
    sha = pipe.remote.commit("chore: the same tree again")
    second = pipe.materialize(sha, f"{QUALITY},build_artifact,dist_check")
    assert "build_artifact" in _restored(second), "the build was not restored: nothing to check"
    assert second.success, _warnings(pipe, second)
    out = pipe.settings.workspaces_dir / pipe.key / sha / "src" / "out"
    assert stat.S_IMODE(out.stat().st_mode) == 0o755


@pytest.mark.integration
def test_a_readme_change_restores_stages_whose_inputs_exclude_it(make_pipeline) -> None:
    pipe = make_pipeline("stages:" + QUALITY_INPUTS)
    first_sha = pipe.remote.push("develop")
    first = pipe.materialize(first_sha)
    assert not (pipe.remote.clone / "README.md").exists()
    pipe.remote.write("README.md", "# tiny app\n")
    sha = pipe.remote.commit("docs: a README")
    second = pipe.materialize(sha)
    assert first.success and second.success
    quality = ["lint_report", "security_lint_report", "format_report", "type_check_report"]
    assert _restored(second) == dict.fromkeys(quality, first_sha)
    assert not any(_ran(pipe, sha, s) for s in quality)
    # Whole-tree stages (the default) see a new tree and run.
    for stage in ("unit_test_results", "integration_test_results", "api_test_results", "build_artifact"):
        assert _ran(pipe, sha, stage) and "restored_from" not in _meta(second, stage)
    assert _versions(second)["build_artifact"] == _versions(first)["build_artifact"]  # the same dist/
    # A change inside the inputs runs them again.
    pipe.remote.write("src/math.js", (pipe.remote.clone / "src" / "math.js").read_text() + "// more\n")
    third_sha = pipe.remote.commit("fix: touch the source")
    third = pipe.materialize(third_sha, QUALITY)
    assert third.success and not _restored(third) and all(_ran(pipe, third_sha, s) for s in quality)


@pytest.mark.integration
def test_a_failed_gate_is_never_stored_or_restored(pipeline: Pipeline) -> None:
    pipeline.remote.write("src/old.js", "var x = 1;\nmodule.exports = x;\n")
    first_sha = pipeline.remote.commit("feat: use var")
    first = pipeline.materialize(first_sha, QUALITY)
    assert not first.success and _checks(first)["lint_report.no_lint_errors"].passed is False
    assert _manifests(pipeline, "lint_report") == [] and len(_manifests(pipeline, "format_report")) == 1
    sha = pipeline.remote.commit("chore: same tree")
    second = pipeline.materialize(sha, QUALITY)
    assert not second.success and _checks(second)["lint_report.no_lint_errors"].passed is False
    assert _ran(pipeline, sha, "lint_report") and "restored_from" not in metadata_of(second, "lint_report")
    assert _restored(second) == dict.fromkeys(["security_lint_report", "format_report", "type_check_report"],
                                              first_sha)


@pytest.mark.integration
def test_cache_false_and_use_stage_cache_false_run_again(make_pipeline) -> None:
    pipe = make_pipeline("stages:\n  format_report: {cache: false}\n")
    first_sha = pipe.remote.push("develop")
    first = pipe.materialize(first_sha, QUALITY)
    assert first.success and _manifests(pipe, "format_report") == []
    sha = pipe.remote.commit("chore: same tree")
    second = pipe.materialize(sha, QUALITY)
    assert second.success
    assert _restored(second) == dict.fromkeys(["lint_report", "security_lint_report", "type_check_report"],
                                              first_sha)
    assert _ran(pipe, sha, "format_report")
    forced_sha = pipe.remote.commit("chore: same tree, forced")
    forced = pipe.materialize(forced_sha, QUALITY, run_config=NO_CACHE)
    assert forced.success and not _restored(forced)
    assert all(_ran(pipe, forced_sha, s) for s in ("lint_report", "security_lint_report", "format_report",
                                                    "type_check_report"))
    assert _versions(forced) == {**_versions(first), "source_checkout": _versions(forced)["source_checkout"]}


@pytest.mark.integration
def test_a_corrupt_blob_or_truncated_manifest_runs_the_stage_with_a_warning(pipeline: Pipeline) -> None:
    first = pipeline.materialize(pipeline.remote.push("develop"), QUALITY)
    assert first.success
    (lint,) = _manifests(pipeline, "lint_report")
    kept = json.loads(lint.read_text())["files"][0]
    blob = pipeline.settings.stage_cache_dir / "blobs" / "sha256" / kept["sha256"]
    blob.write_bytes(b"not what was stored")
    (security,) = _manifests(pipeline, "security_lint_report")
    security.write_text(security.read_text()[: len(security.read_text()) // 2])

    sha = pipeline.remote.commit("chore: same tree")
    second = pipeline.materialize(sha, QUALITY)
    assert second.success
    assert set(_restored(second)) == {"format_report", "type_check_report"}
    assert _ran(pipeline, sha, "lint_report") and _ran(pipeline, sha, "security_lint_report")
    warnings = _warnings(pipeline, second)
    assert f"lint_report: stage cache entry for input key {lint.stem} not used" in warnings
    assert f"{blob} of {kept['name']} is corrupt" in warnings
    assert f"{security}: not valid JSON" in warnings
    # Running them stored whole entries again.
    third = pipeline.materialize(pipeline.remote.commit("chore: same tree, once more"), QUALITY)
    assert set(_restored(third)) == {"lint_report", "security_lint_report", "format_report", "type_check_report"}


@pytest.mark.integration
def test_restore_works_after_the_workspace_was_pruned(make_pipeline) -> None:
    pipe = make_pipeline("stages:" + DIST_CHECK)

    def tags(sha: str) -> dict[str, str]:
        return {TAG_APP: pipe.app.name, TAG_BRANCH: "develop", TAG_COMMIT: sha}

    first_sha = pipe.remote.push("develop")
    assert pipe.materialize(first_sha, tags=tags(first_sha)).success
    pipe.remote.write("README.md", "# tiny app\n")
    newer = pipe.remote.commit("docs: a README")
    assert pipe.materialize(newer, "source_checkout", tags=tags(newer)).success
    retention = WorkspaceRetention(workspaces_dir=str(pipe.settings.workspaces_dir), keep_per_branch=1,
                                   min_age_seconds=0, stage_cache_dir=str(pipe.settings.stage_cache_dir))
    report = retention.prune(pipe.instance)
    assert [r.sha for r in report.removed] == [first_sha]
    assert not (pipe.settings.workspaces_dir / pipe.key / first_sha).exists()
    assert report.stage_cache is not None
    assert report.stage_cache.manifests_removed == 0 and report.stage_cache.manifests_kept == len(CACHED_STAGES)

    (pipe.remote.clone / "README.md").unlink()
    sha = pipe.remote.commit("docs: no README after all")  # the first commit's tree again
    assert git("rev-parse", f"{sha}^{{tree}}", cwd=pipe.remote.clone) == \
        git("rev-parse", f"{first_sha}^{{tree}}", cwd=pipe.remote.clone)
    again = pipe.materialize(sha, tags=tags(sha))
    assert again.success
    assert _restored(again) == dict.fromkeys(CACHED_STAGES, first_sha)
    assert _ran(pipe, sha, "dist_check")
    assert (pipe.settings.workspaces_dir / pipe.key / sha / "src" / "dist" / "math.js").is_file()


@pytest.mark.integration
def test_the_sample_app_restores_its_quality_stages_after_a_readme_change(make_pipeline) -> None:
    """The sample's own inputs: ESLint and tsc are restored after a README change; prettier, which
    checks README.md, runs."""
    stages = yaml.safe_load(SAMPLE_CONFIG.read_text())["stages"]
    pipe = make_pipeline(yaml.safe_dump({"stages": {s: stages[s] for s in QUALITY_STAGES}}), source=SAMPLE_APP,
                         name="7p-education-api")
    first_sha = pipe.remote.push("develop")
    first = pipe.materialize(first_sha, QUALITY)
    assert first.success
    readme = pipe.remote.clone / "README.md"
    readme.write_text(readme.read_text() + "\nOne more line.\n")
    sha = pipe.remote.commit("docs: one more line")
    second = pipe.materialize(sha, QUALITY)
    assert second.success
    assert _restored(second) == dict.fromkeys(["lint_report", "security_lint_report", "type_check_report"],
                                              first_sha)
    assert _ran(pipe, sha, "format_report") and _meta(second, "format_report")["unformatted_files"] == 0
