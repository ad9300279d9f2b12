"""Deploys through a real devstack (webserver, daemon, sensors, queued runs): a push to main deploys
staging and production waits for a person; deploys of one environment queue one behind the other and
the newest queued commit wins; `make deploy` / the CLI launches the same runs the UI does."""

from __future__ import annotations

import os
import shutil
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from sevenp_pipeline.config import AppConfig, load_app_config
from sevenp_pipeline.deploy import history
from sevenp_pipeline.deploy.approvals import record_approval
from sevenp_pipeline.deploy.assets import deploy_queue_lock
from sevenp_pipeline.deploy.targets.resource import DeployTargets
from sevenp_pipeline.deploy.triggers import deploy_job_name
from sevenp_pipeline.devtools import deploy as deploy_cli
from sevenp_pipeline.devtools.devstack import LocalDagster, launch_run
from sevenp_pipeline.resources.locks import FileLocks
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.registries.local import LocalRegistry
from sevenp_pipeline.resources.services import free_port
from sevenp_pipeline.scanners.provenance import generate_keypair
from sevenp_pipeline.triggers.tags import TAG_APP, TAG_COMMIT, TAG_DEPLOY, TAG_DEPLOY_ENV
from sevenp_pipeline_tests.conftest import FIXTURES, reachable_home
from sevenp_pipeline_tests.deploy.test_deploy_pipeline import deploy_app_config, stop_environments
from sevenp_pipeline_tests.gitutil import Remote
from sevenp_pipeline_tests.waiting import (
    wait_for_message,
    wait_for_run,
    wait_for_runs,
    wait_for_sensor_ticks,
    wait_until,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("podman") or not shutil.which("nginx"),
                       reason="needs root, podman and nginx (make system-deps installs them)"),
]

NAME = "deploy-app"
KEY = "deploy_app"
# What Dagster's QueuedRunCoordinatorDaemon logs on each pass while runs are queued (below or at the run limit).
QUEUE_PASS = ("Priority sorting and checking tag concurrency limits for queued runs", "won't launch more")
ENDED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE}


@dataclass
class Stack:
    remote: Remote
    stack: LocalDagster
    instance: dg.DagsterInstance
    home: Path
    app: AppConfig
    apps: Path

    def runs(self, job: str, sha: str) -> list[dg.DagsterRun]:
        return list(self.instance.get_runs(filters=dg.RunsFilter(job_name=job, tags={TAG_COMMIT: sha})))

    def wait(self, job: str, sha: str, *, count: int = 1, timeout: float = 300) -> list[dg.DagsterRun]:
        return wait_for_runs(self.instance, filters=dg.RunsFilter(job_name=job, tags={TAG_COMMIT: sha}), count=count,
                             timeout=timeout)

    def wait_for_queue_passes(self, since: int, count: int = 3, timeout: float = 60) -> None:
        """Waits until the daemon's run coordinator has looked at a non-empty queue ``count`` times since byte
        ``since`` of the stack's log (it logs one of QUEUE_PASS each time, every dequeue_interval_seconds)."""
        def passes() -> int:
            with self.stack.log_path.open("rb") as log:
                log.seek(since)
                lines = log.read().decode(errors="replace").splitlines()
            return sum("QueuedRunCoordinatorDaemon" in line and any(m in line for m in QUEUE_PASS) for line in lines)

        wait_until(lambda: passes() >= count, timeout=timeout,
                   what=f"{count} passes of the run queue daemon over the queue (see {self.stack.log_path})")

    def released(self, version: str, branch: str) -> str:
        self.remote.write("VERSION", version + "\n")
        sha = self.remote.commit(f"feat: version {version}", push_to=branch)
        (ci,) = self.wait(f"{KEY}_ci_job", sha)
        assert ci.status == dg.DagsterRunStatus.SUCCESS, (ci.run_id, _failure(self.instance, ci.run_id))
        return sha

    def launch_deploy(self, env: str, sha: str) -> str:
        return launch_run(self.stack.url, deploy_job_name(self.app, env), partition=sha,
                          tags={TAG_APP: NAME, TAG_COMMIT: sha, TAG_DEPLOY_ENV: f"{NAME}/{env}"})

    def release_header(self, env: str) -> str:
        url = DeployTargets(home=str(self.home)).target(self.app, env).url()
        with urllib.request.urlopen(url + "/", timeout=5) as response:
            return response.headers.get("X-Sevenp-Release", "")


@pytest.fixture(scope="module")
def deploy_stack(stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("deploy-daemon")
    remote = Remote(root, FIXTURES / "deploy-pipeline-app", NAME)
    apps = root / "apps"
    apps.mkdir()
    (apps / f"{NAME}.yaml").write_text(deploy_app_config(remote.url, stack.base.ref))
    app = load_app_config(apps / f"{NAME}.yaml")
    private, _ = generate_keypair()
    with reachable_home() as home, pytest.MonkeyPatch.context() as env:
        stack.registry.grant(home)  # the app's base image is in the session's registry
        stack_ = LocalDagster(home=home, port=free_port(), apps_dir=apps, extra_env={"SEVENP_SIGNING_KEY": private})
        env.setenv("DAGSTER_HOME", str(stack_.dagster_home))
        stack_.start()
        try:
            stack_.wait_for_sensor_tick(f"{KEY}_git_push_sensor")
            yield Stack(remote, stack_, dg.DagsterInstance.get(), home, app, apps)
        finally:
            stack_.stop()
            stop_environments(home, app)
            LocalRegistry(runner=ProcessRunner(), home=str(home)).stop()


def _failure(instance: dg.DagsterInstance, run_id: str) -> str:
    """The descriptions of the run's failed steps."""
    found = []
    for record in instance.get_records_for_run(run_id, limit=100000).records:
        event = record.event_log_entry.dagster_event
        if event is None or not event.is_step_failure:
            continue
        data = event.step_failure_data
        if data.user_failure_data:
            found.append(data.user_failure_data.description or "")
        elif data.error:  # not a dg.Failure: an exception in the step (shown so a red run says why)
            found.append(f"{event.step_key}: {data.error.message.strip()}")
    return "\n".join(found)


def test_push_to_main_deploys_staging_and_production_waits_for_a_person(deploy_stack: Stack,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    sha = deploy_stack.released("1", "main")
    (staging,) = deploy_stack.wait(deploy_job_name(deploy_stack.app, "staging"), sha)
    assert staging.status == dg.DagsterRunStatus.SUCCESS and staging.tags[TAG_DEPLOY] == "live"
    assert staging.tags["dagster/sensor_name"] == f"{KEY}_deploy_sensor"
    assert deploy_stack.release_header("staging") == sha
    # Production (approval: manual) is never started by itself: the deploy sensor, which would start it when
    # staging goes live, has run twice since staging's deploy ended and launched nothing.
    staging_ended = deploy_stack.instance.get_run_record_by_id(staging.run_id).end_time
    assert staging_ended is not None
    wait_for_sensor_ticks(deploy_stack.stack, f"{KEY}_deploy_sensor", after=staging_ended, count=2)
    assert deploy_stack.runs(deploy_job_name(deploy_stack.app, "production"), sha) == []

    # Launched through GraphQL (what a stage on loopback did) without a person's approval: refused.
    forged = wait_for_run(deploy_stack.instance, deploy_stack.launch_deploy("production", sha), statuses=ENDED)
    assert forged.status == dg.DagsterRunStatus.FAILURE and forged.tags[TAG_DEPLOY] == "refused"
    assert "nobody approved" in _failure(deploy_stack.instance, forged.run_id)
    assert history.latest_for_commit(deploy_stack.instance, KEY, "production", sha) is None

    # A person approves: `make deploy ENV=production COMMIT=<sha>` records who, then launches the deploy job.
    monkeypatch.setenv("SEVENP_HOME", str(deploy_stack.home))
    monkeypatch.setenv("SEVENP_APPS_DIR", str(deploy_stack.apps))
    monkeypatch.setenv("APPROVER", "Grace Hopper")
    code = deploy_cli.main(["deploy", "--app", NAME, "--env", "production", "--commit", sha,
                            "--url", deploy_stack.stack.url, "--wait"])
    assert code == 0
    assert deploy_stack.release_header("production") == sha
    release = history.latest_for_commit(deploy_stack.instance, KEY, "production", sha)
    assert release is not None and release.metadata["approved_by"] == "Grace Hopper"
    assert release.metadata["approved_via"] == "make deploy"


def test_queued_commits_deploy_only_the_newest(deploy_stack: Stack) -> None:
    # Three commits built on branches that do not deploy by themselves (staging takes main only), then main
    # fast-forwarded to the last: a deploy needs its commit on an allowed branch of the remote, and the push
    # starts no run (its commit has run already), so only the deploys launched below go to staging.
    shas = [deploy_stack.released(v, f"feature/queue-{v}") for v in ("2", "3", "4")]
    deploy_stack.remote.push("main")
    locks = FileLocks(root=str(deploy_stack.home))  # the stack's (no Postgres instance: SEVENP_LOCKS is file)
    # the staging deploy queue is busy while the three are launched
    with locks.hold(deploy_queue_lock(NAME, "staging"), timeout=10):
        run_ids = [deploy_stack.launch_deploy("staging", sha) for sha in shas]
        wait_for_run(deploy_stack.instance, run_ids[0], statuses={dg.DagsterRunStatus.STARTED}, timeout=120)
        deploy_stack.wait_for_queue_passes(since=deploy_stack.stack.log_path.stat().st_size)
        # One deploy of staging at a time (the sevenp/deploy-env tag limit): the others wait in the queue.
        assert [deploy_stack.instance.get_run_by_id(r).status for r in run_ids[1:]] == \
            [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.QUEUED]
    runs = [wait_for_run(deploy_stack.instance, r, statuses=ENDED, timeout=120) for r in run_ids]
    assert [r.tags.get(TAG_DEPLOY) for r in runs] == ["superseded", "superseded", "live"]
    assert all(r.status == dg.DagsterRunStatus.SUCCESS for r in runs)
    assert deploy_stack.release_header("staging") == shas[-1]


def test_two_production_deploys_run_one_after_the_other(deploy_stack: Stack) -> None:
    newest = deploy_stack.release_header("staging")  # passed staging's smoke tests (previous test)
    live = deploy_stack.release_header("production")  # the first release (first test)
    assert live and live != newest
    for sha in (newest, live):  # a person approved both (what `make deploy` records before it launches)
        record_approval(deploy_stack.home.resolve(), KEY, "production", sha, approver="Ada Lovelace", via="test")
    first = deploy_stack.launch_deploy("production", newest)
    wait_for_message(deploy_stack.instance, first, "no newer deploy of production is queued", timeout=120)
    second = deploy_stack.launch_deploy("production", live)
    runs = [wait_for_run(deploy_stack.instance, r, statuses=ENDED, timeout=120) for r in (first, second)]
    assert [r.tags.get(TAG_DEPLOY) for r in runs] == ["live", "live"]
    one, two = (deploy_stack.instance.get_run_record_by_id(r) for r in (first, second))
    assert one.end_time is not None and two.start_time is not None and one.end_time <= two.start_time
    assert deploy_stack.release_header("production") == live


def test_status_and_rollback_from_the_command_line(deploy_stack: Stack, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """`make deploy-status` says what runs where; `make rollback` redeploys the last healthy release
    before the live one (the previous test left production on the first release, after the newest)."""
    monkeypatch.setenv("SEVENP_HOME", str(deploy_stack.home))
    monkeypatch.setenv("SEVENP_APPS_DIR", str(deploy_stack.apps))
    live = deploy_stack.release_header("production")
    before = deploy_stack.release_header("staging")  # production's previous healthy release
    assert deploy_cli.main(["status", "--app", NAME]) == 0
    out = capsys.readouterr().out
    assert f"production: {live[:12]}" in out and f"staging: {before[:12]}" in out
    assert deploy_cli.main(["rollback", "--app", NAME, "--env", "production", "--url", deploy_stack.stack.url,
                            "--wait"]) == 0
    assert f"rollback of production from {live[:12]} to {before[:12]}" in capsys.readouterr().out
    assert deploy_stack.release_header("production") == before
    (run,) = [r for r in deploy_stack.runs(deploy_job_name(deploy_stack.app, "production"), before)
              if r.tags.get("sevenp/rollback") == live]
    assert run.tags[TAG_DEPLOY] == "live"
    # A commit that never went live there is refused with a message, not launched.
    assert deploy_cli.main(["rollback", "--app", NAME, "--env", "staging", "--to", "0" * 40,
                            "--url", deploy_stack.stack.url]) == 2
    assert "never went live in staging" in capsys.readouterr().err


def test_a_feature_commit_is_refused_through_graphql_and_the_command_line(deploy_stack: Stack,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Round one's route to production: a feature branch's commit (every gate green) launched through
    the webserver's GraphQL (what a stage on loopback did; the Launchpad sends the same mutation): the
    pipeline with launch_options.environment, and each deploy job directly; and through `make deploy`
    with a person's approval. Every one is refused by the branch rule, checked against the remote,
    and neither environment changes."""
    live = {env: deploy_stack.release_header(env) for env in ("staging", "production")}
    sha = deploy_stack.released("EVIL", "feature/evil")
    # Round one's exact attack: the pipeline launched again through GraphQL with the Launchpad's
    # launch_options.environment: production (and a branch tag claiming main). The deploy sensor takes
    # it as the person's choice and starts staging; the deploy itself refuses the commit.
    ci = launch_run(deploy_stack.stack.url, f"{KEY}_ci_job", partition=sha,
                    run_config={"resources": {"launch_options": {"config": {"environment": "production"}}}},
                    tags={TAG_APP: NAME, TAG_COMMIT: sha, "sevenp/branch": "main"})
    ended = wait_for_run(deploy_stack.instance, ci, statuses=ENDED)
    assert ended.status == dg.DagsterRunStatus.SUCCESS, (ci, _failure(deploy_stack.instance, ci))
    (chosen,) = deploy_stack.wait(deploy_job_name(deploy_stack.app, "staging"), sha)
    assert chosen.tags[TAG_DEPLOY] == "refused"
    assert "is on no branch that environments.staging.branches allows (main)" in \
        _failure(deploy_stack.instance, chosen.run_id)
    record_approval(deploy_stack.home.resolve(), KEY, "production", sha, approver="Ada Lovelace", via="test")
    for env in ("staging", "production"):
        forged = wait_for_run(deploy_stack.instance, deploy_stack.launch_deploy(env, sha), statuses=ENDED)
        assert forged.status == dg.DagsterRunStatus.FAILURE and forged.tags[TAG_DEPLOY] == "refused"
        assert f"is on no branch that environments.{env}.branches allows (main)" in \
            _failure(deploy_stack.instance, forged.run_id)
    monkeypatch.setenv("SEVENP_HOME", str(deploy_stack.home))
    monkeypatch.setenv("SEVENP_APPS_DIR", str(deploy_stack.apps))
    monkeypatch.setenv("APPROVER", "Grace Hopper")
    for env in ("staging", "production"):
        assert deploy_cli.main(["deploy", "--app", NAME, "--env", env, "--commit", sha,
                                "--url", deploy_stack.stack.url, "--wait"]) == 1
        (*_, last) = sorted(deploy_stack.runs(deploy_job_name(deploy_stack.app, env), sha),
                            key=lambda r: deploy_stack.instance.get_run_record_by_id(r.run_id).create_timestamp)
        assert last.tags[TAG_DEPLOY] == "refused"
        assert "environments." + env + ".branches" in _failure(deploy_stack.instance, last.run_id)
    for env in ("staging", "production"):
        assert deploy_stack.release_header(env) == live[env]
        assert history.latest_for_commit(deploy_stack.instance, KEY, env, sha) is None
