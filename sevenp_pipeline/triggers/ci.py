"""The CI job of one app (every asset of its group but the deployments) and its push sensor (the forge's
sensors are added by definitions.py: forge/ builds on triggers/)."""

from __future__ import annotations

from collections.abc import Sequence

import dagster as dg
from dagster._core.storage.tags import RETRY_STRATEGY_TAG

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.execution.threads import threaded_executor_for
from sevenp_pipeline.family import Family
from sevenp_pipeline.triggers.launch_form import build_launch_form, build_launch_form_sensor
from sevenp_pipeline.triggers.sensors import TAG_APP, build_push_sensor


def build_ci_job(app: AppConfig, deploy_keys: Sequence[dg.AssetKey]) -> dg.UnresolvedAssetJobDefinition:
    about = f" ({app.description})" if app.description else ""
    return dg.define_asset_job(
        name=f"{app.key}_ci_job",
        selection=dg.AssetSelection.groups(app.key) - dg.AssetSelection.assets(*deploy_keys),
        description=f"The pipeline of {app.name}{about} for one commit: its declared stages"
                    + (", image, SBOM, scans, provenance, promotion." if app.image else ".")
                    + " Stages whose needs are met run at once, each on a thread of the run worker.",
        # Ready stages run at once, each on a thread of the run worker (execution/threads.py): no
        # fresh process per step (~3 s each here), and still one step per stage, so re-execution
        # from failure works. The app's execution.max_workers is the default a launch may override.
        executor_def=threaded_executor_for(app.execution.max_workers),
        # An automatic retry (instance run_retries) re-runs every stage, not only the failed ones: it may
        # land on another worker, whose disposable workspace is empty. A stage there makes the checkout
        # and brings back the install's node_modules itself (stages/runner.py), but not for pnpm/yarn apps
        # or apps with install scripts, nor other stages' outputs: running every stage restores what
        # passed from the stage cache and leaves nothing to chance.
        tags={TAG_APP: app.name, RETRY_STRATEGY_TAG: "ALL_STEPS"},
    )


def build_ci_family(app: AppConfig, partitions: dg.DynamicPartitionsDefinition,
                    job: dg.UnresolvedAssetJobDefinition) -> Family:
    """The triggers family: the CI job, the git push sensor that launches it per pushed commit, and the
    "run branch X" launch form with the sensor that launches the CI job for the branch head it resolved."""
    form = build_launch_form(app, partitions)
    sensors = [build_push_sensor(app, job, partitions), build_launch_form_sensor(app, form, job)]
    return Family(dg.Definitions(jobs=[job, form], sensors=sensors))
