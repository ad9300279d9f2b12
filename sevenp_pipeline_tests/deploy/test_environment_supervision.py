"""An environment's nginx, PostgreSQL and Redis under its keeper, with real processes and `kill -9`: each
comes back by itself, `make deploy-status` says what is down while it is, the watchdog sensor restarts a
dead keeper and tells Slack once of the outage and once of the recovery, and a deploy whose database
died and stayed down is not live."""

from __future__ import annotations

import json
import os
import shutil
import signal
from pathlib import Path

import dagster as dg
import pytest

from sevenp_pipeline.deploy.targets import resource as targets_resource
from sevenp_pipeline.deploy.targets.local import target as target_module
from sevenp_pipeline.deploy.targets.local.keeper import start_time
from sevenp_pipeline.deploy.targets.local.supervision import Keeper
from sevenp_pipeline.deploy.targets.local.target import LocalTarget
from sevenp_pipeline.deploy.targets.role import SmokeReport
from sevenp_pipeline.deploy.watchdog import build_environment_watchdog
from sevenp_pipeline.devtools import deploy as deploy_cli
from sevenp_pipeline.resources.notify import SlackNotifier
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline_tests.containers import DeployImages, needs_buildah
from sevenp_pipeline_tests.deploy.conftest import APP, needs_podman, rollout
from sevenp_pipeline_tests.deploy.test_local_target import V1, V2, Load, get
from sevenp_pipeline_tests.httpserver import http_server
from sevenp_pipeline_tests.waiting import wait_until

pytestmark = [pytest.mark.integration]
BACK_SECONDS = 10  # bounded wait for a killed server to answer again (the keeper's target: well under 1 s / 5 s)


def kill_nginx(target: LocalTarget) -> list[int]:
    """kill -9 of the front door's master and every worker at once; returns their pids."""
    front = target.front_door()
    pids = [front.running_pid(), *front.workers()]
    assert pids[0] is not None and len(pids) >= 2, pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    return pids


def answers(url: str) -> tuple[int, str] | None:
    """(status, release) of a GET, None when nothing answers (refused, reset)."""
    try:
        return get(url)[:2]
    except OSError:
        return None


def server_pid(target: LocalTarget, name: str) -> int:
    pid = target.keeper.program_pid(name)
    assert pid is not None, f"the keeper runs no {name}"
    return pid


def oom_score_adj(pid: int) -> int:
    return int(Path(f"/proc/{pid}/oom_score_adj").read_text())


def expected_oom_score_adj(target: LocalTarget) -> int:
    """-800, unless the host refuses to lower it (no CAP_SYS_RESOURCE, as in some sandboxed VMs): then the
    keeper said so in its log and everything keeps the default 0."""
    if "oom_score_adj -800 not set" in target.keeper.log_path.read_text():
        return 0
    return -800


def status(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], target: LocalTarget) -> tuple[int, str]:
    """`make deploy-status` for the test app (the command itself, on the test's home and app file)."""
    monkeypatch.setenv("SEVENP_HOME", str(target.home))
    capsys.readouterr()
    code = deploy_cli.main(["status", "--app", APP])
    return code, capsys.readouterr().out


@pytest.fixture
def apps_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SEVENP_APPS_DIR", str(tmp_path))  # conftest.app_config writes the app's file here
    return tmp_path


@needs_buildah
@needs_podman
def test_killed_nginx_postgres_and_redis_come_back_by_themselves(make_target, images: DeployImages) -> None:
    target = make_target()
    outcome = target.deploy(rollout(images.v1, target.environment, V1), smoke=None, log=lambda _: None)
    assert outcome.ok, outcome.reason
    assert all(p.ok for p in target.probe()), target.probe()
    keeper = target.keeper.pid()
    adj = expected_oom_score_adj(target)
    assert keeper is not None and oom_score_adj(keeper) == adj

    # nginx: master and workers killed together, under load; the front door answers again by itself
    with Load(target.url() + "/") as load:
        load.wait_for(20)
        killed = kill_nginx(target)
        wait_until(lambda: answers(target.url() + "/") == (200, V1), timeout=BACK_SECONDS,
                   what="the front door to answer again after kill -9 of nginx")
        load.wait_for(20)
    master = target.front_door().running_pid()
    assert master is not None and master not in killed
    assert oom_score_adj(master) == adj
    assert all(oom_score_adj(w) == adj for w in target.front_door().workers())
    assert target.keeper.restarts("nginx") == 1
    keeper_log = target.keeper.log_path.read_text()
    assert "nginx: pid" in keeper_log and "killed by SIGKILL" in keeper_log

    # PostgreSQL and Redis: each back on its port, with its data and password; the app reaches both
    for name in ("postgresql", "redis"):
        pid = server_pid(target, name)
        assert oom_score_adj(pid) == adj
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda n=name: target.services.probe()[n] == "", timeout=BACK_SECONDS,
                   what=f"{name} to answer again after kill -9")
        assert server_pid(target, name) != pid and target.keeper.restarts(name) == 1
    status_code, release, body = get(target.url() + "/")
    assert (status_code, release) == (200, V1) and body["database"] and body["redis"]
    assert target.keeper.pid() == keeper  # the keeper itself was never touched

    # The live release's container: its first process killed, podman starts it again (restart policy)
    slot = outcome.live.slot
    init = target.podman.main_pid(slot)
    assert init > 0
    os.kill(init, signal.SIGKILL)
    wait_until(lambda: target.podman.main_pid(slot) not in (0, init), timeout=30,
               what="podman to start the killed container again")
    wait_until(lambda: answers(target.url() + "/") == (200, V1), timeout=BACK_SECONDS,
               what="the release to answer through the front door after its container was killed")


@needs_buildah
@needs_podman
def test_status_and_watchdog_through_a_dead_keeper(make_target, images: DeployImages, apps_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    target = make_target()
    assert target.deploy(rollout(images.v1, target.environment, V1), smoke=None, log=lambda _: None).ok
    code, out = status(monkeypatch, capsys, target)
    assert code == 0, out
    assert f"{target.environment}: {V1[:12]} " in out and "): live\n" in out and "DOWN" not in out
    assert "front door up" in out and "postgresql up" in out and "redis up" in out

    # The keeper is killed first, then nginx and PostgreSQL: nothing brings them back by itself.
    redis = server_pid(target, "redis")
    os.kill(target.keeper.pid(), signal.SIGKILL)
    kill_nginx(target)
    pg = server_pid_from_state(target, "postgresql")
    os.kill(pg, signal.SIGKILL)
    wait_until(lambda: start_time(pg) is None, timeout=10, what="postgresql to be gone")
    code, out = status(monkeypatch, capsys, target)
    assert code == 1, out
    assert f"{target.environment}: {V1[:12]} " in out and "): DOWN (front door, postgresql, keeper)\n" in out, out
    assert "front door DOWN" in out and "Connection refused" in out
    assert "postgresql DOWN (no connection to 127.0.0.1:" in out
    assert "redis up" in out and "keeper DOWN (not running" in out

    # The watchdog sensor (the definition the code location registers, its resources built here).
    with http_server() as slack:
        (sensor,) = build_environment_watchdog([target.app])
        resources = {"deploy_targets": targets_resource.DeployTargets(home=str(target.home)),
                     "notifier": SlackNotifier(webhook_url=slack.url + "/hook", attempts=1)}
        # deploy_targets nests the ECS target's AWS resource: Dagster opens such resources in a context manager.
        with dg.instance_for_test() as instance, dg.build_sensor_context(instance=instance,
                                                                           resources=resources) as context:
            result = sensor(context)
            assert isinstance(result, dg.SkipReason) and "recovered" in (result.skip_message or "")
            kinds = [json.loads(r.body)["blocks"][-1]["elements"][0]["text"].split(" · ")[1] for r in slack.requests]
            assert kinds == ["environment_down", "environment_recovered"], kinds
            texts = [r.body.decode() for r in slack.requests]
            assert "Down since" in texts[0] and "front door" in texts[0] and "postgresql" in texts[0]
            assert "Up again" in texts[1]
            assert json.loads(context.cursor or "{}") == {}
            # the next tick finds it up: no message again
            with dg.build_sensor_context(instance=instance, resources=resources, cursor=context.cursor) as again:
                sensor(again)
            assert len(slack.requests) == 2
    assert target.keeper.alive()
    assert server_pid(target, "redis") == redis, "the new keeper started a second Redis instead of adopting it"
    assert get(target.url() + "/")[:2] == (200, V1)
    code, out = status(monkeypatch, capsys, target)
    assert code == 0 and "DOWN" not in out, out


def server_pid_from_state(target: LocalTarget, name: str) -> int:
    """A server's pid from the keeper's state file (the keeper itself is dead)."""
    return int(target.keeper.state()["programs"][name]["pid"])


@needs_buildah
@needs_podman
def test_a_database_that_died_and_stayed_down_during_a_deploy_is_not_live(
        make_target, images: DeployImages, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(target_module, "SERVICES_BACK_SECONDS", 6.0)
    target = make_target()

    def kill_during_deploy(*, for_good: bool):
        def smoke(url: str) -> SmokeReport:  # runs between green's health check and the switch
            if for_good:  # the data folder no longer looks like one: every restart fails
                data = Path(json.loads(target.services.state_path.read_text())["postgresql"]["data"])
                (data / "PG_VERSION").rename(data / "PG_VERSION.hidden")
            os.kill(server_pid_from_state(target, "postgresql"), signal.SIGKILL)
            return SmokeReport(url=url, ok=True, seconds=0, command="kill -9 postgres", exit_code=0, tail="")
        return smoke

    # Killed while the keeper runs: back within its window, the deploy is live and the database answers.
    first = target.deploy(rollout(images.v1, target.environment, V1), smoke=kill_during_deploy(for_good=False),
                          log=lambda _: None)
    assert first.ok, first.reason
    assert target.services.probe()["postgresql"] == ""
    # Killed for good: still down after the window, traffic goes back to v1 and v2 is not live.
    second = target.deploy(rollout(images.v2, target.environment, V2), smoke=kill_during_deploy(for_good=True),
                           log=lambda _: None)
    assert not second.ok and second.rolled_back
    assert "postgresql: no connection to 127.0.0.1" in second.reason and "not live" in second.reason
    assert target.current() == first.live
    assert get(target.url() + "/")[:2] == (200, V1)


def test_keeper_restarts_adopts_and_stops_its_programs(tmp_path: Path) -> None:
    """The keeper alone, with plain programs: a killed one restarts at once, a program that cannot start is
    retried with backoff and logged, a new keeper adopts what the killed one left running, stop ends all."""
    keeper = Keeper(root=tmp_path, runner=ProcessRunner())
    sleeper = {"argv": [shutil.which("sleep"), "300"], "cwd": str(tmp_path), "env": {}, "stop_signal": "SIGTERM",
               "stop_timeout": 5}
    keeper.set_program("sleeper", sleeper)
    keeper.set_program("broken", {**sleeper, "argv": [str(tmp_path / "no-such-binary")]})
    try:
        first = wait_until(lambda: keeper.program_pid("sleeper"), timeout=10, what="the sleeper to start")
        os.kill(first, signal.SIGKILL)
        def other_than(pid: int) -> int | None:
            now = keeper.program_pid("sleeper")
            return now if now not in (None, pid) else None

        second = wait_until(lambda: other_than(first), timeout=5, what="the sleeper to start again")
        assert keeper.restarts("sleeper") == 1
        wait_until(lambda: keeper.restarts("broken") >= 3, timeout=10, what="the broken program to be retried")
        text = keeper.log_path.read_text()
        assert f"sleeper: pid {first} killed by SIGKILL after" in text
        assert "broken: pid - could not start: FileNotFoundError" in text
        assert "; restart #2 in 0.1s" in text and "; restart #3 in 0.2s" in text  # the backoff doubles

        os.kill(keeper.pid(), signal.SIGKILL)  # the keeper itself: its program keeps running...
        wait_until(lambda: not keeper.alive(), timeout=5, what="the keeper to be gone")
        assert start_time(second) is not None
        keeper.ensure_running()  # ...and the next keeper adopts it instead of starting a second one
        assert keeper.program_pid("sleeper") == second
        os.kill(second, signal.SIGKILL)  # an adopted program is watched too
        wait_until(lambda: other_than(second), timeout=5, what="the adopted sleeper to be restarted")
    finally:
        keeper.stop()
    assert not keeper.alive()
    assert all(start_time(int(p["pid"] or 0)) is None for p in keeper.state()["programs"].values() if p["pid"])


@needs_buildah
@needs_podman
def test_an_environment_deployed_before_keepers_is_taken_over_on_its_ports_and_data(
        make_target, images: DeployImages) -> None:
    target = make_target()
    keeper = target.keeper
    target.keeper = target.services.keeper = None  # as deploys ran before: daemonized nginx, servers of the run
    first = target.deploy(rollout(images.v1, target.environment, V1), smoke=None, log=lambda _: None)
    assert first.ok, first.reason
    ports = {name: target.services.port(name) for name in ("postgresql", "redis")}
    assert "daemon on;" in (target.root / "nginx" / "nginx.conf").read_text()
    old_master = target.front_door().running_pid()

    target.keeper = target.services.keeper = keeper
    second = target.deploy(rollout(images.v2, target.environment, V2), smoke=None, log=lambda _: None)
    assert second.ok, second.reason
    assert "daemon off;" in (target.root / "nginx" / "nginx.conf").read_text()
    assert start_time(old_master) is None and target.front_door().running_pid() == server_pid(target, "nginx")
    assert {name: target.services.port(name) for name in ports} == ports  # same ports, same data and passwords
    status_code, release, body = get(target.url() + "/")
    assert (status_code, release) == (200, V2) and body["database"] and body["redis"]
    kill_nginx(target)  # and from now on the keeper restarts it
    wait_until(lambda: answers(target.url() + "/") == (200, V2), timeout=BACK_SECONDS,
               what="the front door to answer again after kill -9 of nginx")
