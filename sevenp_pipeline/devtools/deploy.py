"""Deploys from the command line, through the running Dagster (the same runs the UI launches):

    python -m sevenp_pipeline.devtools.deploy status   [--app APP]
    python -m sevenp_pipeline.devtools.deploy deploy   --env ENV --commit SHA [--app APP]
    python -m sevenp_pipeline.devtools.deploy rollback --env ENV [--to SHA] [--app APP]
    python -m sevenp_pipeline.devtools.deploy stop     [--env ENV] [--app APP]

``deploy`` launches ``<app>_deploy_<env>_job`` for the commit. For an ``approval: manual`` environment it
first records the person's approval (``--approver``, else ``APPROVER``, else the user name; see
deploy/approvals.py): only such a record lets that deploy through. ``rollback`` launches it for the last
healthy commit before the one live now (or ``--to``), approved the same way: rollback is a redeploy of a
healthy partition, with the same checks. ``stop`` stops a local environment's
containers, nginx and servers (its data stays). ``--app`` may be left out when one app deploys.

``status`` probes each environment, not only its record: the front door (the health path through nginx),
PostgreSQL and Redis (a connection), the keeper that restarts them; each is printed up or DOWN with
what failed, and the exit code is 1 when something of a live environment is down.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timezone

import dagster as dg

from sevenp_pipeline.config import AppConfig, Settings, load_app_configs
from sevenp_pipeline.deploy import history
from sevenp_pipeline.deploy.approvals import approver_name, override_reason, record_approval
from sevenp_pipeline.deploy.targets.resource import DeployTargets
from sevenp_pipeline.deploy.targets.role import DeployError
from sevenp_pipeline.deploy.triggers import deploy_job_name
from sevenp_pipeline.devtools.devstack import DevStackError, launch_run
from sevenp_pipeline.resources.git import is_sha
from sevenp_pipeline.triggers.tags import TAG_APP, TAG_COMMIT, TAG_DEPLOY_ENV, TAG_ROLLBACK


class UsageError(Exception):
    pass


def _app(settings: Settings, name: str | None) -> AppConfig:
    apps = [a for a in load_app_configs(settings.apps_dir, variables={"SEVENP_HOME": str(settings.home)})
            if a.deploy_environments]
    if name:
        found = [a for a in apps if name in (a.name, a.key)]
        if not found:
            raise UsageError(f"no app '{name}' with environments in {settings.apps_dir} "
                             f"(apps that deploy: {', '.join(a.name for a in apps) or 'none'})")
        return found[0]
    if len(apps) != 1:
        raise UsageError(f"give --app (apps that deploy: {', '.join(a.name for a in apps) or 'none'})")
    return apps[0]


def _env(app: AppConfig, env: str) -> str:
    if env not in app.deploy_environments:
        raise UsageError(f"{app.name} has no environment '{env}' (declared: {', '.join(app.deploy_environments)})")
    return env


def _launch(url: str, app: AppConfig, env: str, sha: str, tags: dict[str, str]) -> str:
    return launch_run(url, deploy_job_name(app, env), partition=sha,
                      tags={TAG_APP: app.name, TAG_COMMIT: sha, TAG_DEPLOY_ENV: history.deploy_env_tag(app.name, env),
                            **tags})


def _approve(settings: Settings, app: AppConfig, env: str, sha: str, approver: str | None, *, via: str,
             override: str = "") -> None:
    spec = app.deploy_environments[env]
    if override and not spec.allow_override:
        raise UsageError(f"{env} does not take overrides (environments.{env}.allow_override: false in the "
                         f"config of {app.name})")
    if spec.approval != "manual" and not override:
        return
    made = record_approval(settings.home, app.key, env, sha, approver=approver or approver_name(), via=via,
                           override=override)
    print(f"{env}: {sha[:12]} approved by {made.approver}" + (f", overriding the branch rule: {made.override}"
                                                              if made.override else ""))


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _live_commit(targets: DeployTargets, instance: dg.DagsterInstance, app: AppConfig, env: str) -> str | None:
    try:
        release = targets.target(app, env).current()
    except DeployError:
        release = None
    if release is not None:
        return release.commit
    latest = history.healthy_deployments(instance, app.key, env, limit=1)
    return latest[0].commit if latest else None


def status_lines(targets: DeployTargets, app: AppConfig) -> tuple[list[str], bool]:
    """What ``status`` prints for ``app``: per environment the live release and what answers now (each
    probe up or DOWN, naming what failed). Returns the lines and whether everything of a live one is up."""
    lines: list[str] = []
    healthy = True
    for env in app.deploy_environments:
        target = targets.target(app, env)
        release = target.current()
        try:
            where = target.url()
        except DeployError:
            where = "no front door yet"
        probes = target.probe()
        down = [p for p in probes if not p.ok]
        if release is None:
            lines.append(f"{env}: nothing deployed ({where})")
        else:
            verdict = "live" if not down else f"DOWN ({', '.join(p.name for p in down)})"
            lines.append(f"{env}: {release.commit[:12]} {release.image_digest[:19]} since "
                         f"{_when(release.since)} at {where} (run {release.run_id[:8]}): {verdict}")
            healthy = healthy and not down
        lines.extend(f"  {p.describe()}" for p in probes)
    return lines, healthy


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sevenp deploy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["status", "deploy", "rollback", "stop"])
    parser.add_argument("--app")
    parser.add_argument("--env")
    parser.add_argument("--commit", help="deploy: the commit (full SHA) to deploy")
    parser.add_argument("--to", help="rollback: the commit to go back to (default: the last healthy one)")
    parser.add_argument("--url", default="http://127.0.0.1:3000", help="the Dagster webserver")
    parser.add_argument("--approver", help="deploy/rollback of a manual environment: who approves "
                                           "(default: APPROVER, else your user name)")
    parser.add_argument("--override", help="deploy: why this commit goes out although the environment's branch "
                                           "rule refuses it (default: OVERRIDE); recorded with the approver")
    parser.add_argument("--wait", action="store_true", help="deploy/rollback: wait for the run and print its outcome")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    try:
        app = _app(settings, args.app)
        targets = DeployTargets(home=str(settings.home))
        if args.command == "stop":
            for env in [_env(app, args.env)] if args.env else list(app.deploy_environments):
                targets.target(app, env).stop(log=print)
            return 0
        if args.command == "status":
            lines, healthy = status_lines(targets, app)
            print("\n".join(lines))
            return 0 if healthy else 1
        instance = dg.DagsterInstance.get()
        if not args.env:
            raise UsageError(f"{args.command} needs --env")
        env = _env(app, args.env)
        if args.command == "deploy":
            if not args.commit or not is_sha(args.commit):
                raise UsageError("deploy needs --commit <full 40-character SHA>")
            _approve(settings, app, env, args.commit, args.approver, via="make deploy",
                     override=args.override or override_reason())
            run_id = _launch(args.url, app, env, args.commit, {"dagster/user": "make deploy"})
            print(f"deploy of {args.commit[:12]} to {env}: run {run_id} ({args.url}/runs/{run_id})")
        else:
            live = _live_commit(targets, instance, app, env)
            if args.to:
                if not is_sha(args.to):
                    raise UsageError("--to needs a full 40-character SHA")
                if history.latest_for_commit(instance, app.key, env, args.to) is None:
                    raise UsageError(f"{args.to[:12]} never went live in {env}: only a healthy release is "
                                     "rolled back to")
                to = args.to
            else:
                candidate = history.rollback_candidate(instance, app.key, env, live)
                if candidate is None:
                    raise UsageError(f"{env} has no earlier healthy release than {(live or 'nothing')[:12]} "
                                     "to roll back to")
                to = candidate.commit
            _approve(settings, app, env, to, args.approver, via="make rollback")
            run_id = _launch(args.url, app, env, to, {TAG_ROLLBACK: live or "none",
                                                      "dagster/user": "make rollback"})
            print(f"rollback of {env} from {(live or 'nothing')[:12]} to {to[:12]}: run {run_id} "
                  f"({args.url}/runs/{run_id})")
        if args.wait:
            while True:
                run = instance.get_run_by_id(run_id)
                if run is not None and run.is_finished:
                    print(f"run {run_id[:8]}: {run.status.value}")
                    return 0 if run.status == dg.DagsterRunStatus.SUCCESS else 1
                time.sleep(1)
        return 0
    except (UsageError, DeployError, DevStackError) as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
