"""`make demo`: the whole CI pipeline on the sample app, on embedded defaults, then the UI.

1. makes a local git "remote" holding examples/7p-education-api (a bare repo under the home);
2. starts Dagster (webserver + daemon) on a SQLite instance under the home (on PostgreSQL when
   SEVENP_DAGSTER_POSTGRES_URL is set), and the read-only artifact server (the UI's port + 1) the
   metadata links point at;
3. waits for the push sensor's first tick, pushes a commit to `develop`;
4. waits for the run the sensor starts and prints one line per stage;
5. waits for the staging deploy the pipeline's success starts (develop deploys to staging), prints
   its deployment, health check and smoke tests, and asks the staging front door which version answers;
6. leaves the UI running until Ctrl-C (or, with --no-ui, exits: non-zero if anything failed). On the
   way out it stops what it started: Dagster, the registry and the environments' containers, nginx
   and servers (their data stays under the home).

With --forge local (`make demo FORGE=local`) the sample app also reports to a forge: a GitHub-shaped
server on loopback (devtools/local_forge.py; the UI's port + 3 when free) with a demo token. The demo
runs on a copy of the apps folder whose sample app has a `forge:` section pointing at it, pushes the
commit again as pull request 1 (`refs/pull/1/head`: a run from the stage cache, and the request's
comment), waits until the forge status sensor has posted the final statuses, and prints what the forge
received; its page stays up with the UI.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import secrets
import shutil
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import yaml

from sevenp_pipeline.config import AppConfig, load_app_configs
from sevenp_pipeline.config.settings import PROJECT_ROOT, Settings
from sevenp_pipeline.config.targets import target_schema
from sevenp_pipeline.definitions import app_gates
from sevenp_pipeline.deploy.targets.resource import DeployTargets
from sevenp_pipeline.deploy.triggers import deploy_job_name
from sevenp_pipeline.devtools.devstack import (
    DevStackError,
    LocalDagster,
    artifacts_taken_message,
    demo_signing_key,
    port_available,
    port_taken_message,
)
from sevenp_pipeline.devtools.local_forge import FINAL_DEPLOY_STATES, HTTPService, LocalForge
from sevenp_pipeline.devtools.stage_table import format_table, stage_rows
from sevenp_pipeline.files import use_private_umask
from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessRunner
from sevenp_pipeline.resources.registries.local import LocalRegistry
from sevenp_pipeline.triggers.sensors import TAG_COMMIT, TAG_PR
from sevenp_pipeline.verdict import verdict

APP = "7p-education-api"
SAMPLE = PROJECT_ROOT / "examples" / APP
GIT_ID = ["-c", "user.name=7P Demo", "-c", "user.email=demo@7p.example"]
IGNORED = shutil.ignore_patterns("node_modules", "dist", "coverage", "reports", "docs")
FORGES = ("local",)
FORGE_REPOSITORY = f"sevenp-demo/{APP}"
# forge/client.py's GITHUB_TOKEN_ENV (devtools does not import forge: the forge sensor imports devtools).
GITHUB_TOKEN_ENV = "SEVENP_GITHUB_TOKEN"  # noqa: S105 (the variable's name)
PULL_REQUEST = 1


def say(message: str) -> None:
    print(f"[demo {datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


class LocalRemote:
    """A bare repository standing in for the app's hosted remote, and a clone to push from."""

    def __init__(self, home: Path, runner: ProcessRunner) -> None:
        self.bare = home / "remotes" / f"{APP}.git"
        self.work = home / "remotes" / f"{APP}-work"
        self.runner = runner

    def git(self, *args: str, cwd: Path) -> str:
        outcome = self.runner.check(ExecuteRequest(argv=["git", *GIT_ID, *args], cwd=cwd, label="git",
                                                   timeout_seconds=120, capture=True))
        return "\n".join(outcome.output).strip()

    def ensure(self) -> None:
        if not (self.bare / "HEAD").exists():
            self.bare.parent.mkdir(parents=True, exist_ok=True)
            self.git("init", "--quiet", "--bare", "--initial-branch=main", str(self.bare), cwd=self.bare.parent)
            shutil.rmtree(self.work, ignore_errors=True)
        if not (self.work / ".git").exists():
            self.work.mkdir(parents=True, exist_ok=True)
            self.git("init", "--quiet", "--initial-branch=main", cwd=self.work)
            self.git("remote", "add", "origin", str(self.bare), cwd=self.work)
            self.sync()
            self.git("add", "-A", cwd=self.work)
            self.git("commit", "--quiet", "-m", "chore: import the 7P Education API", cwd=self.work)
            self.git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=self.work)
            say(f"created the local remote {self.bare}")

    def sync(self) -> None:
        """Copies examples/ into the work clone, so edits to the sample app reach the next push."""
        for entry in self.work.iterdir():
            if entry.name != ".git":
                shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        shutil.copytree(SAMPLE, self.work, ignore=IGNORED, dirs_exist_ok=True)

    def push_change(self, branch: str) -> str:
        self.sync()
        stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
        notes = self.work / "DEMO_PUSHES.md"
        previous = notes.read_text() if notes.exists() else "# Pushes made by `make demo`\n\n"
        notes.write_text(previous + f"- {stamp}\n")
        self.git("add", "-A", cwd=self.work)
        self.git("commit", "--quiet", "-m", f"chore(demo): push at {stamp}", cwd=self.work)
        self.git("push", "--quiet", "--force", "origin", f"HEAD:refs/heads/{branch}", cwd=self.work)
        return self.git("rev-parse", "HEAD", cwd=self.work)

    def push_ref(self, sha: str, ref: str) -> None:
        """Points ``ref`` of the remote at ``sha`` (a pull request's head: ``refs/pull/N/head``)."""
        self.git("push", "--quiet", "--force", "origin", f"{sha}:{ref}", cwd=self.work)


def forge_apps_dir(apps_dir: Path, home: Path, api_url: str) -> Path:
    """A copy of ``apps_dir`` under the home in which the sample app reports to the forge at ``api_url``
    (a ``forge:`` section; the other apps as they are). A relative ``repository.url`` is made absolute:
    it is relative to the folder the config was in."""
    target = home / "demo-forge" / "apps"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    found = False
    for source in sorted([*apps_dir.glob("*.yaml"), *apps_dir.glob("*.yml")]):
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):  # broken: copied, so the demo names it as it would have
            shutil.copyfile(source, target / source.name)
            continue
        url = (raw.get("repository") or {}).get("url") if isinstance(raw.get("repository"), dict) else None
        if isinstance(url, str) and "://" not in url and "$" not in url and not Path(url).is_absolute():
            raw["repository"]["url"] = str((source.parent / url).resolve())
        header = ""
        if raw.get("name") == APP:
            found = True
            raw["forge"] = {"kind": "github", "api_url": api_url, "repository": FORGE_REPOSITORY}
            header = (f"# Written by `make demo FORGE=local` from {source}: its forge: section points at the\n"
                      "# demo's local forge (token: SEVENP_GITHUB_TOKEN, set by the demo).\n")
        (target / source.name).write_text(header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True),
                                          encoding="utf-8")
    if not found:
        raise DevStackError(f"no app named {APP} in {apps_dir}: FORGE=local reports the sample app's runs")
    return target


@dataclasses.dataclass
class DemoForge:
    """`make demo FORGE=local`: the local forge, served, and the apps folder that reports to it."""

    api: LocalForge
    service: HTTPService
    apps_dir: Path

    @classmethod
    def start(cls, settings: Settings, port: int) -> DemoForge:
        api = LocalForge(repository=FORGE_REPOSITORY, token=f"demo_{secrets.token_hex(20)}")
        service = HTTPService(api, port=port)
        try:
            return cls(api, service, forge_apps_dir(settings.apps_dir, settings.home, service.url))
        except BaseException:
            service.stop()
            raise

    def env(self, ui_url: str) -> dict[str, str]:
        """The token, and the UI's URL the statuses and the comment link runs at (unless set)."""
        return {GITHUB_TOKEN_ENV: self.api.token, "SEVENP_UI_URL": os.environ.get("SEVENP_UI_URL") or ui_url}

    def open_pull_request(self, remote: LocalRemote, sha: str, base: str) -> None:
        """Pull request 1 of ``sha`` into ``base``, as the forge and the remote's refs show it."""
        self.api.pulls[PULL_REQUEST] = {"commits": [sha], "title": "chore(demo): the change make demo pushed",
                                        "base": base, "head": "demo/change"}
        remote.push_ref(sha, f"refs/pull/{PULL_REQUEST}/head")

    def reported(self, sha: str, prefix: str) -> bool:
        """Whether the forge shows the final state of ``sha``'s runs: no pending context, the pipeline's
        context set, the pull request's comment written for the finished run, every deployment ended."""
        latest = self.api.latest(sha)
        comments = self.api.comments_on(PULL_REQUEST)
        return (f"{prefix}/pipeline" in latest and all(s["state"] != "pending" for s in latest.values())
                and bool(comments) and all("the pipeline is running" not in str(c["body"]) for c in comments)
                and all(d["states"] and d["states"][-1] in FINAL_DEPLOY_STATES  # type: ignore[index]
                        for d in self.api.deployments.values() if d["sha"] == sha))

    def wait_reported(self, sha: str, prefix: str, timeout: float, alive: Callable[[], bool]) -> bool:
        """Waits until :meth:`reported`, and the forge heard nothing for 3 s (the sensor's last posts)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and alive():
            if self.reported(sha, prefix) and time.monotonic() - self.api.last_request > 3:
                return True
            time.sleep(1)
        return False

    def stop(self) -> None:
        self.service.stop()


def wait_for_run(instance: dg.DagsterInstance, sha: str, timeout: float,
                 alive: Callable[[], bool] = lambda: True, job: str | None = None,
                 tags: dict[str, str] | None = None) -> tuple[dg.DagsterRun, float]:
    """Waits for the run of ``sha`` (of ``job``, with ``tags``, when given); returns it and the push-to-start
    latency's end time. Raises DevStackError as soon as ``alive()`` says Dagster stopped (no run would finish)."""
    deadline = time.monotonic() + timeout
    started_at = None
    last_status = None
    while time.monotonic() < deadline:
        if not alive():
            raise DevStackError("the Dagster stack exited while the pipeline ran (see its log)")
        runs = instance.get_runs(filters=dg.RunsFilter(tags={TAG_COMMIT: sha, **(tags or {})}, job_name=job), limit=1)
        if runs:
            run = runs[0]
            record = instance.get_run_record_by_id(run.run_id)
            if record and record.start_time and started_at is None:
                started_at = record.start_time
            if run.status != last_status:
                say(f"run {run.run_id[:8]}: {run.status.value}")
                last_status = run.status
            if run.is_finished:
                return run, started_at or time.time()
        time.sleep(1)
    raise TimeoutError(f"no finished run for {sha} after {timeout:.0f}s")


def front_door(url: str) -> str:
    """What the environment's stable URL answers on /health, and which release answered."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:  # noqa: S310 (our loopback URL)
            body = response.read(300).decode(errors="replace")
            return (f"GET {url}/health -> {response.status}, X-Sevenp-Release: "
                    f"{response.headers.get('X-Sevenp-Release', '?')[:12]}, {body.strip()}")
    except (urllib.error.URLError, OSError) as exc:
        return f"GET {url}/health failed: {exc}"


def stop_environments(settings: Settings) -> None:
    """Stops every local environment of the configured apps (containers, nginx, servers; data stays)."""
    try:
        apps = load_app_configs(settings.apps_dir, variables={"SEVENP_HOME": str(settings.home)})
    except Exception as exc:
        say(f"could not read the apps to stop their environments: {exc}")
        return
    targets = DeployTargets(home=str(settings.home))
    for app in apps:
        for env, spec in app.deploy_environments.items():
            if target_schema(spec.target).runs_here:
                try:
                    targets.target(app, env).stop(log=lambda _line: None)
                except Exception as exc:
                    say(f"stopping {app.name}/{env} failed: {exc}")


def _taken_port(port: int, artifacts_port: int) -> str:
    """Why the demo cannot start (the UI's or the artifact server's port is taken), or ""."""
    if not port_available(port):
        return port_taken_message(port, "127.0.0.1", "demo")
    if not port_available(artifacts_port):
        return artifacts_taken_message(artifacts_port, "127.0.0.1", "demo")
    return ""


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _forge_port(port: int) -> int:
    """The local forge's port: the UI's + 3 when free (+ 2 is the webhook receiver's), else any free one (0)."""
    return port + 3 if port_available(port + 3) else 0


def show_forge(forge: DemoForge, remote: LocalRemote, instance: dg.DagsterInstance, app: AppConfig, sha: str,
               branch: str, timeout: float, alive: Callable[[], bool]) -> bool:
    """Pull request 1 of ``sha``: its run, then what the forge received once the sensor posted the end of
    it. Whether the run passed and the forge shows the final statuses."""
    forge.open_pull_request(remote, sha, base=branch)
    say(f"pushed {sha[:12]} as pull request {PULL_REQUEST} (refs/pull/{PULL_REQUEST}/head, into {branch}); "
        "waiting for its run")
    run, _ = wait_for_run(instance, sha, timeout, alive=alive, job=f"{app.key}_ci_job",
                          tags={TAG_PR: str(PULL_REQUEST)})
    say(f"waiting for {app.key}_forge_status_sensor to post the final statuses and the comment")
    done = forge.wait_reported(sha, app.forge.context_prefix, 180, alive)
    if not done:
        say("the forge did not get the final statuses within 180 s; what it received so far:")
    print()
    print(forge.api.report(shas=[sha]))
    say(f"local forge page: {forge.service.url}/")
    return done and run.status == dg.DagsterRunStatus.SUCCESS


def main(argv: list[str] | None = None) -> int:  # noqa: PLR0911 (one exit status per way out, each said)
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-ui", action="store_true", help="exit after the table (status 1 if it failed)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "3000")))
    parser.add_argument("--artifacts-port", type=int, default=None,
                        help="the read-only artifact server's port (default: --port + 1)")
    parser.add_argument("--branch", default="develop")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the pipeline")
    parser.add_argument("--forge", default="", metavar="KIND",
                        help="'local': report to a GitHub-shaped server on loopback (the UI's port + 3) and "
                             "show what it received (default: no forge)")
    args = parser.parse_args(argv)
    if args.forge and args.forge not in FORGES:
        parser.error(f"--forge {args.forge!r} (FORGE={args.forge}): the demo's forge is 'local' (a GitHub-shaped "
                     "server on loopback); leave it out for no forge. A real GitHub or GitLab is configured in "
                     "the app's forge: section (README: Commit statuses on GitHub or GitLab)")
    use_private_umask()  # the home, Dagster's storage and the logs this demo creates are private

    # Ctrl-C and SIGTERM both end the demo through its cleanup (started in the background by a
    # script, a process inherits SIGINT ignored, and SIGTERM would skip `finally`).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    artifacts_port = args.artifacts_port or args.port + 1
    taken = _taken_port(args.port, artifacts_port)
    if taken:  # before anything starts: nothing to clean up
        print(f"demo: {taken}", file=sys.stderr, flush=True)
        return 2
    settings = Settings.from_env()
    runner = ProcessRunner()
    remote = LocalRemote(settings.home, runner)
    remote.ensure()
    try:
        forge = DemoForge.start(settings, _forge_port(args.port)) if args.forge else None
    except (DevStackError, OSError) as exc:  # before anything else started: nothing to clean up
        print(f"demo: the local forge cannot start: {exc}", file=sys.stderr, flush=True)
        return 2
    if forge is not None:
        settings = dataclasses.replace(settings, apps_dir=forge.apps_dir)
        say(f"local forge (GitHub API) on {forge.service.url}, repository {FORGE_REPOSITORY}; "
            f"the sample app reports to it from {forge.apps_dir}")
    stack = LocalDagster(home=settings.home, port=args.port, apps_dir=settings.apps_dir,
                         extra_env=demo_signing_key(settings.home, log=say), artifacts_port=artifacts_port)
    if forge is not None:
        stack.extra_env.update(forge.env(stack.url))
    os.environ["DAGSTER_HOME"] = str(stack.dagster_home)
    say(f"starting Dagster (webserver + daemon) on {stack.url}, artifacts on {stack.artifacts_url}; "
        f"log: {stack.log_path}")
    try:
        stack.start()  # fails fast if the wrapper exits (its port taken meanwhile, the webserver died)
        sensor = f"{APP.replace('-', '_')}_git_push_sensor"
        stack.wait_for_sensor_tick(sensor)
        say(f"sensor {sensor} is watching {remote.bare}")
        sha = remote.push_change(args.branch)
        pushed = time.time()
        say(f"pushed {sha[:12]} to {args.branch}; waiting for the pipeline")
        instance = dg.DagsterInstance.get()
        alive = lambda: stack.process is not None and stack.process.alive()  # noqa: E731
        app = next(a for a in load_app_configs(settings.apps_dir, variables={"SEVENP_HOME": str(settings.home)})
                   if a.name == APP)
        run, started = wait_for_run(instance, sha, args.timeout, alive=alive, job=f"{app.key}_ci_job")
        print()
        print(format_table(stage_rows(instance, run.run_id)))
        print()
        # The same verdict promotion and deploys read: every gate of the commit, across runs.
        result = verdict(instance, app_gates(app), sha)
        say(f"verdict for {sha[:12]}: " + ("every gate passed" if result.passed else result.describe()))
        say(f"push → run start: {started - pushed:.1f}s; run {run.status.value} "
            f"in {(instance.get_run_record_by_id(run.run_id).end_time or time.time()) - started:.1f}s")
        say(f"run page: {stack.url}/runs/{run.run_id}")
        say(f"asset graph: {stack.url}/asset-groups")
        links = os.environ.get("SEVENP_ARTIFACTS_URL") or stack.artifacts_url  # what the code server links
        say(f"artifacts of {sha[:12]}: {links.rstrip('/')}/{app.key}/{sha}/")
        say(f"branches and environments of {app.key}: {links.rstrip('/')}/_cockpit/{app.key}/")
        ok = run.status == dg.DagsterRunStatus.SUCCESS
        staging = [e for e, spec in app.deploy_environments.items()
                   if not spec.after and args.branch in spec.branches]
        if ok and staging:
            env = staging[0]
            say(f"waiting for the {env} deploy the pipeline's success starts")
            deploy, _ = wait_for_run(instance, sha, 600, alive=alive, job=deploy_job_name(app, env))
            print()
            print(format_table(stage_rows(instance, deploy.run_id)))
            print()
            url = DeployTargets(home=str(settings.home)).target(app, env).url()
            say(f"{env}: {front_door(url)}")
            say(f"deploy run page: {stack.url}/runs/{deploy.run_id}")
            ok = deploy.status == dg.DagsterRunStatus.SUCCESS
        if forge is not None:
            ok = show_forge(forge, remote, instance, app, sha, args.branch, args.timeout, alive) and ok
        if args.no_ui:
            return 0 if ok else 1
        say(f"the UI stays up at {stack.url} (artifacts: {stack.artifacts_url}"
            + (f", the local forge: {forge.service.url}/" if forge else "") + ") — press Ctrl-C to stop")
        try:
            while stack.process is not None and stack.process.alive():
                time.sleep(1)
        except KeyboardInterrupt:
            return 0
        say("the Dagster stack exited")
        return 1
    except KeyboardInterrupt:
        say("interrupted")
        return 130
    except (DevStackError, urllib.error.URLError) as exc:
        say(f"failed: {exc}")
        return 1
    finally:
        say("stopping Dagster, the local image registry and the environments")
        stack.stop()
        stop_environments(settings)
        LocalRegistry(runner=runner, home=str(settings.home)).stop()
        if forge is not None:
            forge.stop()


if __name__ == "__main__":
    sys.exit(main())
