"""Image build, registry push, SBOM and scan times on the sample app, cold and with unchanged inputs.

  .venv/bin/python benchmarks/package_stages.py

Runs the package-and-secure assets of one commit in a fresh pipeline home (cold: the Node base
image is bootstrapped, the app image built and pushed), then of a second commit with the same
tree (the image is found in the registry by its inputs hash), and prints each stage's duration
from Dagster's step statistics. Target: the unchanged re-run of container_image <= 10% of cold.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sevenp_pipeline.config import Settings
from sevenp_pipeline.definitions import build_definitions
from sevenp_pipeline.resource_set import build_resources
from sevenp_pipeline.scanners.provenance import generate_keypair
from sevenp_pipeline_tests.gitutil import Remote

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "7p-education-api"
STAGES = ["source_checkout", "node_dependencies", "container_image", "sbom", "vulnerability_report",
          "dependency_report", "license_report", "secret_scan", "provenance", "promoted_image"]
# Only the package half is timed: the gated declared stages are removed, so promotion (which needs
# every declared gate of the commit) is not refused for stages this benchmark does not run.
PACKAGE_ONLY = "stages:\n" + "".join(f"  {name}: null\n" for name in (
    "lint_report", "security_lint_report", "format_report", "type_check_report", "unit_test_results",
    "integration_test_results", "api_test_results", "build_artifact", "api_docs", "e2e_test_results",
    "performance_report"))


def run(settings: Settings, instance: dg.DagsterInstance, sha: str) -> dict[str, float]:
    defs = build_definitions(settings)
    job = defs.resolve_implicit_global_asset_job_def()
    keys = [dg.AssetKey(["7p_education_api", s]) for s in STAGES]
    instance.add_dynamic_partitions("7p_education_api_commits", [sha])
    result = job.execute_in_process(instance=instance, partition_key=sha, asset_selection=keys, raise_on_error=False)
    if not result.success:
        raise RuntimeError("the package stages failed; see the log above")
    return {s.step_key.split("__", 1)[1]: s.end_time - s.start_time for s in instance.get_run_step_stats(result.run_id)}


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="sevenp-bench-pkg-"))
    try:
        return _run(tmp)
    finally:  # the benchmark's remote, home and instance: nothing left in /tmp
        shutil.rmtree(tmp, ignore_errors=True)


def _run(tmp: Path) -> int:
    tmp.chmod(0o711)  # the test-database user must traverse to <home>/services
    os.environ["SEVENP_SIGNING_KEY"] = generate_keypair()[0]
    remote = Remote(tmp, SAMPLE, "7p-education-api")
    apps = tmp / "apps"
    apps.mkdir()
    (apps / "app.yaml").write_text(f"name: 7p-education-api\nrepository: {{url: {remote.url}}}\n"
                                   "image: {dockerfile: Dockerfile}\n" + PACKAGE_ONLY)
    settings = Settings(home=tmp / "home", apps_dir=apps)
    (tmp / "instance").mkdir()
    instance = dg.DagsterInstance.local_temp(str(tmp / "instance"))
    try:
        cold = run(settings, instance, remote.commit("cold"))
        warm = run(settings, instance, remote.commit("same tree"))
    finally:
        build_resources(settings)["registry"].stop()
    print()
    print(f"{'stage':<22} {'cold':>8} {'unchanged':>10}")
    for stage in STAGES:
        print(f"{stage:<22} {cold[stage]:7.2f}s {warm[stage]:9.2f}s")
    ratio = warm["container_image"] / cold["container_image"]
    half = [s for s in STAGES if s not in ("source_checkout", "node_dependencies")]
    half_ratio = sum(warm[s] for s in half) / sum(cold[s] for s in half)
    print(f"\ncontainer_image (base bootstrap + build + push) unchanged/cold: {ratio:.1%}   (target <= 10%)")
    scans = sum(cold[s] for s in ("vulnerability_report", "dependency_report", "license_report", "secret_scan"))
    print(f"SBOM (syft on the pushed image): {cold['sbom']:.1f}s; scans together: {scans:.1f}s")
    print(f"RESULT image_cold_s={cold['container_image']:.2f}")
    print(f"RESULT image_unchanged_s={warm['container_image']:.2f}")
    print(f"the image half ({', '.join(half)}) unchanged/cold: {half_ratio:.1%}")
    print(f"RESULT image_unchanged_ratio={ratio:.4f}")
    print(f"RESULT image_unchanged_vs_cold_ratio={half_ratio:.4f}")
    print(f"RESULT sbom_s={cold['sbom']:.2f}")
    print(f"RESULT scans_s={scans:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
