"""The app's smoke tests (spec: ``npm run test:smoke -- --env=...``) against a deployed URL.

They are the commit's own code, so they run like any stage: from the commit's checkout, through its
package manager, in the stage sandbox with a minimal environment — the URL under test is all they get
besides the app's declared env, and all they reach on the network. Deploy credentials (AWS, Slack, the
signing key) stay in the orchestrator.
"""

from __future__ import annotations

import dagster as dg

from sevenp_pipeline.config import AppConfig, StageSpec
from sevenp_pipeline.deploy.targets.role import SmokeFn, SmokeReport
from sevenp_pipeline.resources.artifacts import ArtifactStore
from sevenp_pipeline.resources.git import GitClient
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.sandbox import loopback_port
from sevenp_pipeline.stages.runner import Stage


def smoke_runner(context: dg.AssetExecutionContext, app: AppConfig, environment: str, *, runner: ProcessRunner,
                 workspaces: Workspaces, store: ArtifactStore, git: GitClient) -> SmokeFn | None:
    """A function running the smoke tests against a URL, or None when ``deploy.smoke`` is null.

    Resolving the command (script present in package.json, checkout and node_modules there) happens
    here, before anything is deployed: a missing script fails the deploy step up front.
    """
    spec = app.deploy.smoke
    if spec is None:
        return None
    name = f"{environment}_smoke_tests"
    stage_spec = StageSpec(kind="command", script=spec.script, command=spec.command,
                           timeout_seconds=spec.timeout_seconds, env=spec.env,
                           description=f"smoke tests against {environment}")
    with_smoke = app.model_copy(update={"stages": {**app.stages, name: stage_spec}})
    stage = Stage(context=context, app=with_smoke, name=name, runner=runner, workspaces=workspaces, store=store,
                  git=git)
    stage.require_workspace()
    argv = stage.argv()

    def run(url: str) -> SmokeReport:
        # The URL under test and the environment's name (the spec's `test:smoke -- --env=<env>`).
        stage.extra_env = {spec.url_env: url, "SEVENP_ENVIRONMENT": environment}
        # The URL under test is all the smoke tests reach: its port when it is on this machine's
        # loopback (the local target's front door), else a route out (no host loopback) to it.
        port = loopback_port(url)
        stage.forwards, stage.outbound = ((port,), False) if port else ((), True)
        context.log.info(f"smoke tests: `{' '.join(argv)}` with {spec.url_env}={url}")
        outcome = stage.run(argv, fail_over_limits=False)  # not ok: the deploy rolls back
        if outcome.log_path and outcome.log_path.exists():
            stage.keep(outcome.log_path, f"logs/{name}.log", redacted=True)
        return SmokeReport(url=url, ok=outcome.ok, seconds=round(outcome.duration, 2), command=outcome.command,
                           exit_code=outcome.exit_code, tail=outcome.tail_text(20))

    return run
