"""The local deploy target: blue-green deploys of an app image under podman, behind the environment's
nginx front door (nginx.py), with the environment's own PostgreSQL and Redis (services.py).

A deploy holds a flock on the environment (the kernel frees it if the run dies). Steps: pull by digest,
ensure services and front door, the pre-deploy command (migrations) in a ``--rm`` container of the new
image, start green on a free loopback port, health check (and smoke tests) against green directly,
switch the front door, keep blue for ``keep_previous_seconds`` while re-probing green (switch back if it
stops answering) and check that the environment's PostgreSQL and Redis answer (a database that died
during the deploy and did not come back within ``SERVICES_BACK_SECONDS`` switches traffic back: the
deploy is not live), then retire blue and record the new live release in ``state.json``. Traffic never
moves to a green that failed a check; after any exception green is removed and the previous front door
config restored.

nginx, PostgreSQL and Redis run under the environment's keeper (keeper.py, supervision.py), which starts
each again when it dies; ``probe()`` says what answers now (``make deploy-status``, the
``environment_watchdog`` sensor) and ``recover()`` starts what is down.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sevenp_pipeline.config.models import AppConfig
from sevenp_pipeline.deploy.health import check_health, probe
from sevenp_pipeline.deploy.targets.local.nginx import FrontDoor, Upstream
from sevenp_pipeline.deploy.targets.local.podman import Podman
from sevenp_pipeline.deploy.targets.local.services import EnvironmentServices, ServiceEnv
from sevenp_pipeline.deploy.targets.local.supervision import Keeper
from sevenp_pipeline.deploy.targets.role import (
    DeployError,
    DeployOutcome,
    DeployTarget,
    LogFn,
    Probe,
    Release,
    Rollout,
    SmokeFn,
)
from sevenp_pipeline.files import read_json_state, write_json_state
from sevenp_pipeline.locks import LockTimeout, file_lock
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.services import free_port

if TYPE_CHECKING:
    from sevenp_pipeline.deploy.targets.resource import DeployTargets

_SHA = re.compile(r"^[0-9a-f]{7,64}$")
LABEL_APP = "sevenp.app"
LABEL_ENV = "sevenp.environment"
LABEL_COMMIT = "sevenp.commit"
SERVICES_BACK_SECONDS = 15.0  # after the switch: how long the keeper has to bring a dead server back


def _quiet(_: str) -> None:
    return None


def build_target(*, targets: DeployTargets, app: AppConfig, environment: str) -> LocalTarget:
    """The registry's factory: the environment lives under ``targets.home``."""
    return LocalTarget(home=Path(targets.home), app=app, environment=environment, runner=ProcessRunner())


class LocalTarget(DeployTarget):
    """One environment of one app on this machine.

    Args:
        home: the pipeline home; the environment keeps everything in ``<home>/deploy/<app>/<env>``.
        app: the app's config (deploy settings, environments).
        environment: a name in ``app.deploy_environments`` whose target is ``local``.
        runner: the process runner (podman, nginx and the servers start through it).
        insecure_registries: plain-HTTP registries besides loopback ones (pulled with --tls-verify=false).
        podman_binary / nginx_binary: the tools (looked up on PATH).
        front_door_cls: the front door implementation (tests swap it to inject a bad config).
    """

    def __init__(self, *, home: Path, app: AppConfig, environment: str, runner: ProcessRunner,
                 insecure_registries: Sequence[str] = (), podman_binary: str = "podman",
                 nginx_binary: str = "nginx", front_door_cls: type[FrontDoor] = FrontDoor,
                 lock_timeout_seconds: float = 900) -> None:
        if environment not in app.deploy_environments:
            raise DeployError(f"{app.name}: no environment '{environment}' "
                              f"(declared: {', '.join(app.deploy_environments) or 'none'})")
        self.spec = app.deploy_environments[environment]
        if self.spec.target != "local":
            raise DeployError(f"{app.name}/{environment}: target is '{self.spec.target}', not 'local'")
        self.home = Path(home).resolve()
        self.app = app
        self.environment = environment
        self.runner = runner
        self.root = self.home / "deploy" / app.name / environment
        self.podman = Podman(home=self.home, runner=runner, insecure_registries=insecure_registries,
                             binary=podman_binary)
        self.nginx_binary = nginx_binary
        self.front_door_cls = front_door_cls
        self.lock_timeout_seconds = lock_timeout_seconds
        self.keeper = Keeper(root=self.root, runner=runner)
        self.services = EnvironmentServices(home=self.home, root=self.root, runner=runner,
                                            names=app.deploy.services, keeper=self.keeper)

    # -- state -----------------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        return self.root / "state.json"

    @property
    def lock_path(self) -> Path:
        return self.root / ".deploy.lock"

    def _read_state(self) -> dict[str, Any]:
        return read_json_state(self.state_path)

    def _write_state(self, state: dict[str, Any]) -> None:
        write_json_state(self.state_path, state)

    def current(self) -> Release | None:
        live = self._read_state().get("live")
        return Release.from_json(live) if live else None

    def front_port(self) -> int:
        """``EnvironmentSpec.port``, else the one chosen on the first deploy (kept in state)."""
        if self.spec.port:
            return int(self.spec.port)
        port = self._read_state().get("front_port")
        if not port:
            raise DeployError(f"{self._where()}: no front door yet (nothing deployed)")
        return int(port)

    def url(self) -> str:
        return f"http://127.0.0.1:{self.front_port()}"

    def front_door(self, port: int | None = None) -> FrontDoor:
        return self.front_door_cls(root=self.root / "nginx", port=port or self.front_port(), runner=self.runner,
                                   binary=self.nginx_binary, keeper=self.keeper)

    def labels(self) -> dict[str, str]:
        return {LABEL_APP: self.app.name, LABEL_ENV: self.environment}

    def _where(self) -> str:
        return f"{self.app.name}/{self.environment}"

    # -- deploy ----------------------------------------------------------------------------------
    def deploy(self, rollout: Rollout, *, smoke: SmokeFn | None, log: LogFn) -> DeployOutcome:
        if rollout.app != self.app.name or rollout.environment != self.environment:
            raise DeployError(f"{self._where()}: rollout is for {rollout.app}/{rollout.environment}")
        if not _SHA.match(rollout.commit):
            raise DeployError(f"{self._where()}: commit '{rollout.commit}' is not a hex SHA")
        self.podman.executable()  # podman missing: say so before anything starts
        if shutil.which(self.nginx_binary) is None:
            raise DeployError(f"nginx is not installed ('{self.nginx_binary}' not found on PATH): apt install nginx")
        try:
            with file_lock(self.lock_path, timeout=self.lock_timeout_seconds, what=f"deploys of {self._where()}"):
                return self._deploy_locked(rollout, smoke, log)
        except LockTimeout as exc:
            raise DeployError(f"{self._where()}: {exc}") from exc

    def _deploy_locked(self, rollout: Rollout, smoke: SmokeFn | None, log: LogFn) -> DeployOutcome:
        started = time.monotonic()
        state = self._read_state()
        previous = Release.from_json(state["live"]) if state.get("live") else None
        steps: list[str] = []

        def step(text: str) -> None:
            steps.append(text)
            log(f"{self._where()}: {text}")

        # 1. image, services, front door: any failure here changes nothing that serves traffic
        service_env, front = self._prepare(rollout, state, previous, step, log)
        url = front.url()

        def outcome(**kwargs: Any) -> DeployOutcome:
            kwargs.setdefault("live", previous)
            return DeployOutcome(environment=self.environment, url=url, previous=previous, steps=steps, **kwargs)

        env = {**self.app.deploy.env, **rollout.env, **service_env.env,
               "SEVENP_COMMIT": rollout.commit, "SEVENP_ENVIRONMENT": self.environment}
        labels = {**self.labels(), LABEL_COMMIT: rollout.commit}
        secrets = service_env.secrets
        # 2. pre-deploy (migrations) in the new image
        refused = self._pre_deploy(rollout, env, labels, secrets, step, log)
        if refused:
            return outcome(ok=False, reason=refused)
        # 3. green
        green_port = free_port()
        green = self._name(rollout.commit, str(self._next_serial(state)))
        self._write_state(state)
        step(f"start {green} on 127.0.0.1:{green_port}")
        switched_from = ""  # the front door config green replaced, once traffic moved
        try:
            self.podman.run_detached(
                name=green, image=rollout.image_ref,
                env={**env, self.app.deploy.port_env: str(green_port)}, labels=labels, secrets=secrets, log=log)
            green_url = f"http://127.0.0.1:{green_port}"
            # 4. health
            health = check_health(green_url, self.app.health_for(self.environment), log=log)
            step(health.summary())
            if not health.ok:
                logs = self._logs(green)  # before the container goes
                self._discard(green, log)
                step(f"removed {green}; traffic stays on {previous.commit[:12] if previous else 'nothing'}")
                return outcome(ok=False, rolled_back=True, health=health,
                               reason=f"health check failed: {health.url}: {health.last_error} "
                                      f"(after {health.attempts} attempt(s)); container log: {logs}")
            # 5. smoke
            report = None
            if smoke is not None:
                report = smoke(green_url)
                step(report.summary())
                if not report.ok:
                    self._discard(green, log)
                    step(f"removed {green}; traffic stays on {previous.commit[:12] if previous else 'nothing'}")
                    return outcome(ok=False, rolled_back=True, health=health, smoke=report,
                                   reason=f"{report.summary()}: {report.tail[-2000:]}")
            # 6. switch
            ready_at = time.monotonic()
            step(f"switch the front door to {green}")
            switched_from = front.switch(Upstream(port=green_port, commit=rollout.commit), log=log)
            switch_seconds = time.monotonic() - ready_at
            step(f"front door switched to {rollout.commit[:12]} in {switch_seconds:.3f}s")
            release = Release(commit=rollout.commit, image_ref=rollout.image_ref, image_digest=rollout.image_digest,
                              since=time.time(), run_id=rollout.run_id, slot=green, endpoint=green_url)
            # 7. watch green while blue stays ready
            failure = self._watch(green_url, previous, log)
            down = "" if failure else self._services_down(log)
            if down:
                step(f"the environment's servers did not answer after the switch: {down}")
            if failure or down:
                if previous and _port_of(previous):
                    front.switch(Upstream(port=_port_of(previous), commit=previous.commit), log=log)
                    step(f"switched back to {previous.commit[:12]}: {failure}")
                else:
                    front.switch(None, log=log)
                    step(f"front door back to 503: {failure}")
                switched_from = ""
                self._discard(green, log)
                reason = (f"{green} stopped answering after the switch: {failure}" if failure else
                          f"{down} (not back {SERVICES_BACK_SECONDS:.0f}s after the switch): not live")
                return outcome(ok=False, rolled_back=True, health=health, smoke=report, switch_seconds=switch_seconds,
                               reason=reason)
            state["live"] = release.to_json()
            self._write_state(state)
            switched_from = ""
            if previous:
                self.podman.remove(previous.slot, stop_timeout=self.app.deploy.stop_timeout_seconds, log=log)
                step(f"retired {previous.slot}")
            self._remove_strays(keep=green, log=log)
            step(f"live: {rollout.commit[:12]} ({time.monotonic() - started:.1f}s)")
            return outcome(ok=True, live=release, health=health, smoke=report, switch_seconds=switch_seconds)
        except BaseException as exc:
            if switched_from:
                with contextlib.suppress(Exception):
                    front.restore_config(switched_from, log=log)
            with contextlib.suppress(Exception):
                self._discard(green, log)
            if isinstance(exc, DeployError):
                raise DeployError(f"{self._where()}: {steps[-1] if steps else 'deploy'}: {exc}") from exc
            if isinstance(exc, Exception):
                raise DeployError(f"{self._where()}: failed at '{steps[-1] if steps else 'start'}': "
                                  f"{type(exc).__name__}: {exc}") from exc
            raise

    def _prepare(self, rollout: Rollout, state: dict[str, Any], previous: Release | None, step: LogFn,
                 log: LogFn) -> tuple[ServiceEnv, FrontDoor]:
        """Pulls the image, ensures the environment's servers and its front door (still serving
        ``previous``); returns the servers' container env and the running front door."""
        step(f"pull {rollout.image_ref}")
        self.podman.pull(rollout.image_ref, log=log)
        service_env = self.services.ensure(log=log)
        step(f"services ready: {', '.join(self.app.deploy.services) or 'none'}")
        port = int(self.spec.port or state.get("front_port") or free_port())
        if state.get("front_port") != port:
            state["front_port"] = port
            self._write_state(state)
        front = self.front_door(port)
        live_upstream = (Upstream(port=_port_of(previous), commit=previous.commit)
                         if previous and _port_of(previous) else None)
        front.ensure_running(initial=live_upstream, log=log)
        step(f"front door {front.url()} running")
        return service_env, front

    def _pre_deploy(self, rollout: Rollout, env: dict[str, str], labels: dict[str, str], secrets: Sequence[str],
                    step: LogFn, log: LogFn) -> str:
        """Runs ``deploy.pre_deploy`` (migrations) in a container of the new image; returns why it
        failed ("" when it passed or there is none)."""
        if not self.app.deploy.pre_deploy:
            return ""
        step(f"pre-deploy: {' '.join(self.app.deploy.pre_deploy)}")
        ran = self.podman.run_to_completion(
            name=self._name(rollout.commit, "pre"), image=rollout.image_ref, argv=self.app.deploy.pre_deploy,
            env=env, labels={**labels, "sevenp.role": "pre-deploy"},
            timeout=self.app.deploy.pre_deploy_timeout_seconds, secrets=secrets, log=log)
        if ran.ok:
            return ""
        step("pre-deploy failed: nothing switched")
        return f"pre-deploy command failed: {ran.describe()}: {ran.tail_text(10)}"

    def _watch(self, green_url: str, previous: Release | None, log: LogFn) -> str:
        """Probes green for ``keep_previous_seconds``; returns why it failed ("" when it kept answering)."""
        keep = self.app.keep_previous_for(self.environment)
        if keep <= 0:
            return ""
        settings = self.app.health_for(self.environment)
        url = green_url.rstrip("/") + settings.path
        deadline = time.monotonic() + keep
        failures = 0
        error = ""
        interval = min(max(settings.interval_seconds, 0.2), 2.0, keep)
        while time.monotonic() < deadline:
            status, error = probe(url, settings.timeout_seconds)
            failures = 0 if status is not None and 200 <= status < 300 else failures + 1
            if failures >= 2:  # one lost probe is not a dead release
                log(f"{self._where()}: {url} stopped answering: {error}")
                return f"{url}: {error}"
            time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
        if previous:
            log(f"{self._where()}: {url} kept answering for {keep:.0f}s; retiring {previous.slot}")
        return ""

    def _services_down(self, log: LogFn, wait: float | None = None) -> str:
        """"" when every server of the environment answers, waiting up to ``wait`` for the keeper to bring
        back one that died; else what is down, e.g. "postgresql: no connection to 127.0.0.1:5433: ..."."""
        deadline = time.monotonic() + (SERVICES_BACK_SECONDS if wait is None else wait)
        while True:
            down = {name: why for name, why in self.services.probe().items() if why}
            if not down:
                return ""
            if time.monotonic() > deadline:
                return "; ".join(f"{name}: {why}" for name, why in down.items())
            log(f"{self._where()}: waiting for {', '.join(down)} to answer again")
            time.sleep(0.5)

    # -- status and recovery ---------------------------------------------------------------------
    def probe(self) -> list[Probe]:
        """What answers now: the front door (the health path through nginx), each server, the keeper."""
        state = self._read_state()
        found: list[Probe] = []
        live = Release.from_json(state["live"]) if state.get("live") else None
        if live is None and not self.keeper.programs():
            return []  # never deployed, or stopped (make deploy-stop): nothing should answer
        if state.get("front_port"):
            settings = self.app.health_for(self.environment)
            url = self.url().rstrip("/") + (settings.path if live else "/")
            status, error = probe(url, min(settings.timeout_seconds, 5.0))
            if live:
                ok = status is not None and 200 <= status < 300
                detail = f"{url}: HTTP {status}" if ok else f"{url}: {error or f'HTTP {status}'}"
            else:  # nothing live: nginx answers 503 by design
                ok = status == 503
                detail = f"{url}: {'503, nothing deployed' if ok else error or f'HTTP {status}'}"
            found.append(Probe(name="front door", ok=ok, detail=detail))
        for name, why in self.services.probe().items():
            port = self.services.port(name)
            found.append(Probe(name=name, ok=not why, detail=why or f"127.0.0.1:{port} answers"))
        if self.keeper.programs():
            pid = self.keeper.pid()
            restarts = {n: self.keeper.restarts(n) for n in self.keeper.programs()}
            counts = ", ".join(f"{n} {c}" for n, c in restarts.items() if c) or "none"
            found.append(Probe(name="keeper", ok=pid is not None,
                               detail=f"pid {pid}, restarts: {counts}" if pid else
                               f"not running (log: {self.keeper.log_path})"))
        return found

    def recover(self, *, log: LogFn) -> list[str]:
        """Starts what is down in a live environment: the keeper (it starts or adopts nginx and the servers),
        the front door and servers it does not run, the live release's container. Returns what it did.
        Skips (returns []) while a deploy holds the environment: the deploy starts them itself."""
        state = self._read_state()
        if not state.get("live"):
            return []
        done: list[str] = []
        try:
            with file_lock(self.lock_path, timeout=2, what=f"deploys of {self._where()}"):
                if self.keeper.programs() and not self.keeper.alive():
                    pid = self.keeper.ensure_running(log=log)
                    done.append(f"keeper restarted (pid {pid})")
                release = Release.from_json(state["live"])
                if release.slot and not self.podman.running(release.slot):
                    self.podman.start(release.slot, log=log)
                    done.append(f"container {release.slot} started")
                self.services.ensure(log=log)
                if state.get("front_port"):
                    self.front_door(int(state["front_port"])).ensure_running(log=log)
        except LockTimeout:
            log(f"{self._where()}: a deploy holds the environment; not touching it now")
        return done

    def _name(self, commit: str, suffix: str) -> str:
        return f"{self.app.name}-{self.environment}-{commit[:12]}-{suffix}"

    @staticmethod
    def _next_serial(state: dict[str, Any]) -> int:
        state["serial"] = int(state.get("serial", 0)) + 1
        return state["serial"]

    def _discard(self, name: str, log: LogFn) -> None:
        self.podman.remove(name, stop_timeout=0, log=log)

    def _logs(self, name: str) -> str:
        with contextlib.suppress(Exception):
            text = self.podman.logs(name, lines=5).strip()
            return text.replace("\n", " | ") or "(empty)"
        return "(unavailable)"

    def _remove_strays(self, *, keep: str, log: LogFn) -> None:
        """Containers of this environment other than the live one (left by a run killed mid-deploy)."""
        for container in self.podman.ps(self.labels()):
            if container.name != keep:
                log(f"{self._where()}: removing leftover container {container.name}")
                self.podman.remove(container.name)

    # -- lifecycle -------------------------------------------------------------------------------
    def stop(self, *, log: LogFn) -> None:
        """Stops the environment's containers, its front door and servers; data and state stay."""
        with file_lock(self.lock_path, timeout=self.lock_timeout_seconds, what=f"deploys of {self._where()}"):
            with contextlib.suppress(DeployError):
                for container in self.podman.ps(self.labels()):
                    self.podman.remove(container.name, stop_timeout=self.app.deploy.stop_timeout_seconds, log=log)
            state = self._read_state()
            self.keeper.stop(log=log)  # every program it runs (or, if it died, left running)
            if state.get("front_port"):
                self.front_door(int(state["front_port"])).stop(log=log)
            self.services.stop(log=log)
            if state.get("live"):  # nothing serves now; a later deploy starts from an empty environment
                state["stopped"] = state.pop("live")
                self._write_state(state)

    def destroy(self, *, log: LogFn = _quiet) -> None:
        """:meth:`stop`, then delete the environment's folder (database and Redis data included)."""
        self.stop(log=log)
        shutil.rmtree(self.root, ignore_errors=True)


def _port_of(release: Release | None) -> int:
    if release is None or not release.endpoint:
        return 0
    try:
        return int(release.endpoint.rsplit(":", 1)[1].split("/")[0])
    except (IndexError, ValueError):
        return 0
