"""Three apps side by side in one apps folder, no code change: the sample (npm, jest), a pnpm +
vitest app and a yarn + mocha app. Each one's pipeline runs end to end with the real tools, reaches
its build, and a failing test in each blocks its build."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from sevenp_pipeline.config import Settings
from sevenp_pipeline.definitions import build_definitions
from sevenp_pipeline_tests.conftest import FIXTURES, SAMPLE_APP, reachable_home
from sevenp_pipeline_tests.gitutil import Remote
from sevenp_pipeline_tests.results import check_verdicts, materialized, metadata_of

pytestmark = pytest.mark.integration

# Only the YAML differs between the apps: script names, report paths, which stages exist.
CONFIGS = {
    "7p-education-api": """\
stages:
  e2e_test_results: null      # covered by test_sample_app; here the build is what matters
  performance_report: null
""",
    "pnpm-vitest-app": """\
services: {postgresql: null, redis: null}
stages:
  lint_report: {script: lint}
  security_lint_report: null
  format_report: null
  type_check_report: {script: typecheck}
  unit_test_results: {script: test, coverage: coverage/coverage-summary.json}
  integration_test_results: null
  api_test_results: null
""",
    "yarn-app": """\
services: {postgresql: null, redis: null}
stages:
  lint_report: {script: lint}
  security_lint_report: null
  format_report: null
  type_check_report: null
  unit_test_results: {script: test, coverage: null, gates: {min_coverage: null}}
  integration_test_results: null
  api_test_results: null
""",
}
SOURCES = {"7p-education-api": SAMPLE_APP, "pnpm-vitest-app": FIXTURES / "pnpm-vitest-app",
           "yarn-app": FIXTURES / "yarn-app"}
# One edit per app that makes exactly one of its tests fail.
BREAK = {
    "7p-education-api": ("src/lib/slug.ts", "toLowerCase()", "toUpperCase()"),
    "pnpm-vitest-app": ("src/math.ts", "new RangeError(", "new TypeError("),
    "yarn-app": ("src/cart.js", "discountPercent > 100", "discountPercent > 200"),
}


@pytest.fixture(scope="module")
def shared_home() -> Iterator[Path]:
    with reachable_home() as home:
        yield home


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory: pytest.TempPathFactory,
                 shared_home: Path) -> tuple[dict[str, Remote], Settings, dg.DagsterInstance]:
    os.environ.setdefault("SEVENP_COREPACK_INTEGRITY_KEYS", "0")  # this machine's registry serves no signatures
    root = tmp_path_factory.mktemp("apps")
    apps = root / "apps"
    apps.mkdir()
    remotes = {}
    for name, extra in CONFIGS.items():
        remotes[name] = Remote(root, SOURCES[name], name)
        (apps / f"{name}.yaml").write_text(f"name: {name}\nrepository:\n  url: {remotes[name].url}\n" + extra)
    settings = Settings(home=shared_home, apps_dir=apps)
    return remotes, settings, dg.DagsterInstance.ephemeral(tempdir=str(root / "dagster"))


def _run(settings: Settings, instance: dg.DagsterInstance, name: str, sha: str) -> dg.ExecuteInProcessResult:
    key = name.replace("-", "_")
    instance.add_dynamic_partitions(f"{key}_commits", [sha])
    defs = build_definitions(settings)
    return defs.resolve_job_def(f"{key}_ci_job").execute_in_process(
        instance=instance, partition_key=sha, raise_on_error=False)


def test_three_apps_share_one_code_location(side_by_side) -> None:
    _, settings, _ = side_by_side
    defs = build_definitions(settings)
    graph = defs.resolve_asset_graph()
    stages = {g: sorted(k.path[-1] for k in graph.get_all_asset_keys() if k.path[0] == g)
              for g in ("pnpm_vitest_app", "yarn_app")}
    # The optional stages (docs, e2e, performance) stay declared: not applicable while the app has no script.
    assert stages["yarn_app"] == ["api_docs", "build_artifact", "e2e_test_results", "lint_report",
                                  "node_dependencies", "performance_report", "source_checkout", "unit_test_results"]
    assert "type_check_report" in stages["pnpm_vitest_app"]
    # No app here builds an image, so none deploys: a push sensor and a run-branch form's sensor each,
    # no deploy sensors.
    assert {s.name for s in defs.sensors} == {f"{app}_{sensor}" for app in (
        "7p_education_api", "pnpm_vitest_app", "yarn_app") for sensor in ("git_push_sensor", "run_branch_sensor")}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_each_app_builds_and_a_failing_test_blocks_its_build(side_by_side, name: str) -> None:
    remotes, settings, instance = side_by_side
    remote = remotes[name]
    result = _run(settings, instance, name, remote.push("develop"))
    assert result.success, check_verdicts(result)
    deps = metadata_of(result, "node_dependencies")
    assert deps["package_manager"].split("@")[0] == {"7p-education-api": "npm", "pnpm-vitest-app": "pnpm",
                                                     "yarn-app": "yarn"}[name]
    unit = metadata_of(result, "unit_test_results")
    assert unit["tests"] >= 5 and unit["failed"] == 0
    assert len(metadata_of(result, "build_artifact")["sha256"]) == 64

    rel, old, new = BREAK[name]
    path: Path = remote.clone / rel
    path.write_text(path.read_text().replace(old, new, 1))
    bad = _run(settings, instance, name, remote.commit(f"fix: break {rel}"))
    assert not bad.success
    assert check_verdicts(bad)["unit_test_results.all_tests_pass"] is False
    assert metadata_of(bad, "unit_test_results")["failed"] >= 1
    assert metadata_of(bad, "node_dependencies")["reused"] is True, (deps, metadata_of(bad, "node_dependencies"))
    assert "build_artifact" not in materialized(bad)
