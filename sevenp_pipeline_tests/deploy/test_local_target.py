"""The local target with real podman, nginx, PostgreSQL and Redis: blue-green, rollbacks, bad input."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import socket
import threading
import urllib.error
import urllib.request
from collections import Counter

import pytest

from sevenp_pipeline.deploy.targets.local.nginx import FrontDoor, Upstream
from sevenp_pipeline.deploy.targets.local.target import LocalTarget
from sevenp_pipeline.deploy.targets.role import DeployError, SmokeReport
from sevenp_pipeline_tests.containers import DeployImages, TestImage, needs_buildah
from sevenp_pipeline_tests.deploy.conftest import needs_podman, rollout
from sevenp_pipeline_tests.waiting import wait_until

pytestmark = [pytest.mark.integration, needs_buildah, needs_podman]
V1 = "a1" * 20
V2 = "b2" * 20
V3 = "c3" * 20


def get(url: str) -> tuple[int, str, dict]:
    request = urllib.request.Request(url, headers={"Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers.get("X-Sevenp-Release", ""), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("X-Sevenp-Release", ""), {}


class Load:
    """Requests through the front door on a few threads (no keep-alive) while a deploy runs."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url = url
        self.releases: Counter[str] = Counter()
        self.failures: list[str] = []
        self.order: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                status, release, _ = get(self.url)
                with self._lock:
                    if status != 200:
                        self.failures.append(f"HTTP {status}")
                    self.releases[release] += 1
                    self.order.append(release)
            except OSError as exc:
                with self._lock:
                    self.failures.append(str(exc))

    def answered(self) -> int:
        """How many requests have been answered (or failed) so far."""
        with self._lock:
            return len(self.order) + len(self.failures)

    def wait_for(self, requests: int, *, timeout: float = 30) -> None:
        """Waits until ``requests`` more requests than now have been answered."""
        target = self.answered() + requests
        wait_until(lambda: self.answered() >= target, timeout=timeout,
                   what=f"{requests} more requests through {self.url}")

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(10)


def assert_clean(target: LocalTarget, live: str | None) -> None:
    """Only the live container carries the environment's labels; no candidate config; the lock is free."""
    names = [c.name for c in target.podman.ps(target.labels())]
    assert names == ([live] if live else []), names
    assert not list((target.root / "nginx").glob(".nginx.conf.*")), "a candidate config was left behind"
    with target.lock_path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises if a deploy still holds it
        fcntl.flock(handle, fcntl.LOCK_UN)


def test_first_deploy_serves_through_the_front_door(make_target, images: DeployImages) -> None:
    target = make_target()
    log: list[str] = []
    assert target.current() is None
    outcome = target.deploy(rollout(images.v1, target.environment, V1), smoke=None, log=log.append)
    assert outcome.ok, outcome.reason
    assert outcome.previous is None and outcome.live is not None and outcome.live.commit == V1
    status, release, body = get(target.url() + "/")
    assert (status, release, body["version"]) == (200, V1, "v1")
    assert body["database"] and body["redis"] and body["commit"] == V1  # the services' env reached the app
    assert target.current() == outcome.live
    assert outcome.switch_seconds is not None  # its figure is benchmarks/deploy_switch.py's
    assert_clean(target, outcome.live.slot)


def test_blue_green_switch_drops_no_request(make_target, images: DeployImages) -> None:
    target = make_target()
    first = target.deploy(rollout(images.v1, target.environment, V1), smoke=None, log=lambda _: None)
    assert first.ok, first.reason
    with Load(target.url() + "/") as load:
        load.wait_for(10)  # v1 serves before the deploy...
        outcome = target.deploy(rollout(images.v2, target.environment, V2), smoke=None, log=lambda _: None)
        load.wait_for(10)  # ...and whatever serves after it
    assert outcome.ok, outcome.reason
    assert load.failures == []
    assert load.releases[V1] > 0 and load.releases[V2] > 0, load.releases
    assert load.order[-1] == V2
    assert get(target.url() + "/")[1] == V2
    assert outcome.previous == first.live and target.current() == outcome.live
    assert_clean(target, outcome.live.slot)  # blue retired


def test_failed_health_check_keeps_v1_serving(make_target, images: DeployImages) -> None:
    target = make_target()
    first = target.deploy(rollout(images.v1, target.environment, V1), smoke=None, log=lambda _: None)
    with Load(target.url() + "/") as load:
        outcome = target.deploy(rollout(images.broken, target.environment, V3), smoke=None, log=lambda _: None)
    assert not outcome.ok and outcome.rolled_back
    assert "health check failed" in outcome.reason and "/health" in outcome.reason and "500" in outcome.reason
    assert outcome.live == first.live and target.current() == first.live
    assert load.failures == [] and set(load.releases) == {V1}
    assert_clean(target, first.live.slot)


def test_green_that_stops_answering_after_the_switch_goes_back_to_blue(make_target, images: DeployImages) -> None:
    """Blue stays up for keep_previous_seconds while green is re-probed: green's health failing in that window
    (here: 1.5 s after it started) switches the front door back to blue at once, without a failed request."""
    target = make_target(env_extra="keep_previous_seconds: 6\n")
    first = target.deploy(rollout(images.v1, target.environment, V1), smoke=None, log=lambda _: None)
    assert first.ok, first.reason
    dying = dataclasses.replace(rollout(images.v2, target.environment, V2), env={"HEALTH_FAILS_AFTER_MS": "1500"})
    with Load(target.url() + "/") as load:
        outcome = target.deploy(dying, smoke=None, log=lambda _: None)
        load.wait_for(10)  # whatever serves after the deploy
    assert not outcome.ok and outcome.rolled_back, outcome.reason
    assert "stopped answering after the switch" in outcome.reason
    assert load.failures == [] and load.releases[V2] > 0 and load.order[-1] == V1, load.releases
    assert get(target.url() + "/")[1] == V1 and target.current() == first.live
    assert_clean(target, first.live.slot)


def test_failed_smoke_tests_keep_v1_serving(make_target, images: DeployImages) -> None:
    target = make_target()
    first = target.deploy(rollout(images.v1, target.environment, V1), smoke=None, log=lambda _: None)
    seen: list[str] = []

    def smoke(url: str) -> SmokeReport:
        seen.append(get(url + "/")[2]["version"])
        return SmokeReport(url=url, ok=False, seconds=0.1, command="npm run test:smoke", exit_code=1,
                           tail="1 failing: GET /courses")

    outcome = target.deploy(rollout(images.v2, target.environment, V2), smoke=smoke, log=lambda _: None)
    assert seen == ["v2"]  # the smoke tests ran against green, not the front door
    assert not outcome.ok and outcome.rolled_back and "smoke tests FAILED" in outcome.reason
    assert get(target.url() + "/")[1] == V1 and target.current() == first.live
    assert_clean(target, first.live.slot)


def test_pre_deploy_runs_against_the_environment_database(make_target, images: DeployImages) -> None:
    target = make_target(deploy="pre_deploy: [node, /app/migrate.js]\n")
    log: list[str] = []
    outcome = target.deploy(rollout(images.v1, target.environment, V1), smoke=None, log=log.append)
    assert outcome.ok, outcome.reason
    assert any("migrated" in line for line in log)
    assert not any(target.services.password_path.read_text().strip() in line for line in log)  # redacted


def test_failed_pre_deploy_switches_nothing(make_target, images: DeployImages) -> None:
    target = make_target(deploy="pre_deploy: [node, /app/migrate.js, --fail]\n")
    outcome = target.deploy(rollout(images.v1, target.environment, V1), smoke=None, log=lambda _: None)
    assert not outcome.ok and "pre-deploy command failed" in outcome.reason
    assert "migration failed on purpose" in outcome.reason
    assert target.current() is None and get(target.url() + "/")[0] == 503
    assert_clean(target, None)


def test_image_not_found(make_target, images: DeployImages) -> None:
    target = make_target()
    missing = TestImage(version="gone", ref=images.v1.ref.split("@")[0] + "@sha256:" + "0" * 64,
                        digest="sha256:" + "0" * 64)
    with pytest.raises(DeployError, match=r"not found.*sha256:0000"):
        target.deploy(rollout(missing, target.environment, V1), smoke=None, log=lambda _: None)
    assert target.current() is None
    assert_clean(target, None)


def test_front_port_in_use(make_target, images: DeployImages) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        target = make_target(env_extra=f"port: {port}\n")
        with pytest.raises(DeployError, match=rf"127\.0\.0\.1:{port} is already in use"):
            target.deploy(rollout(images.v1, target.environment, V1), smoke=None, log=lambda _: None)
    assert target.current() is None
    assert_clean(target, None)


class BrokenOnV2(FrontDoor):
    """A front door whose config for V2 nginx rejects (the seam for an invalid candidate config)."""

    def render(self, upstream: Upstream | None) -> str:
        text = super().render(upstream)
        if upstream and upstream.commit == V2:
            return text.replace("server_tokens off;", "server_tokens maybe;")
        return text


def test_invalid_nginx_config_leaves_traffic_untouched(make_target, images: DeployImages) -> None:
    target = make_target(front_door_cls=BrokenOnV2)
    first = target.deploy(rollout(images.v1, target.environment, V1), smoke=None, log=lambda _: None)
    live_config = (target.root / "nginx" / "nginx.conf").read_text()
    with Load(target.url() + "/") as load, pytest.raises(
            DeployError, match=r"switch the front door.*rejected by nginx -t.*invalid value \"maybe\""):
        target.deploy(rollout(images.v2, target.environment, V2), smoke=None, log=lambda _: None)
    assert (target.root / "nginx" / "nginx.conf").read_text() == live_config
    assert load.failures == [] and set(load.releases) == {V1}
    assert target.current() == first.live
    assert_clean(target, first.live.slot)


def test_wrong_health_path(make_target, images: DeployImages) -> None:
    # Enough attempts for the app to be up (~0.3 s): the path, not the start-up, is what fails.
    target = make_target(env_extra="health: {path: /healthz, attempts: 8, interval_seconds: 0.25}\n")
    outcome = target.deploy(rollout(images.v1, target.environment, V1), smoke=None, log=lambda _: None)
    assert not outcome.ok and outcome.rolled_back
    assert "/healthz" in outcome.reason and "HTTP 404" in outcome.reason, outcome.reason
    assert target.current() is None
    assert_clean(target, None)


def test_podman_missing(make_target, images: DeployImages) -> None:
    target = make_target(podman_binary="/nonexistent/podman")
    with pytest.raises(DeployError, match=r"podman is not installed.*apt install podman"):
        target.deploy(rollout(images.v1, target.environment, V1), smoke=None, log=lambda _: None)
    assert not (target.root / "nginx").exists()  # nothing started
