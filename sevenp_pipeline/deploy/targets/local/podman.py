"""podman for the local deploy target: pull by digest, run an app container detached or to completion,
remove, list by label, read logs.

Every call goes through the :class:`ProcessRunner` with the project's container settings
(``render_container_config``: runc, cgroupfs, ``--init``, host network, raised ulimits, storage under
the pipeline home). The flags that matter on this kind of host are also given on the command line, so
a container behaves the same if a containers.conf is not read. A container's environment is passed
in a 0600 ``--env-file`` removed right after start: the database password never shows in ``ps``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from sevenp_pipeline.deploy.targets.role import DeployError, LogFn
from sevenp_pipeline.resources.builders.container_config import (
    ContainerConfig,
    is_insecure,
    render_container_config,
)
from sevenp_pipeline.resources.processes import ExecuteRequest, Outcome, ProcessRunner

RUN_FLAGS = ("--init", "--network", "host", "--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768")
# A release's container that dies (its process killed, OOM) is started again by podman (conmon runs
# `podman container cleanup`, which applies the policy); `podman stop`/`rm` are not restarted.
RESTART_FLAGS = ("--restart", "on-failure")
_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LABEL = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_DIGEST_REF = re.compile(r"^[a-z0-9][a-z0-9._:/\[\]-]*@sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    id: str
    state: str  # running, exited, created, ...
    labels: Mapping[str, str]


class Podman:
    """A small podman client. ``binary`` is looked up on PATH (a test points it elsewhere)."""

    def __init__(self, *, home: Path, runner: ProcessRunner, insecure_registries: Sequence[str] = (),
                 binary: str = "podman", timeout_seconds: float = 300) -> None:
        self.home = home
        self.runner = runner
        self.insecure_registries = tuple(insecure_registries)
        self.binary = binary
        self.timeout_seconds = timeout_seconds
        self._config: ContainerConfig | None = None

    # -- setup -------------------------------------------------------------------------------------
    def executable(self) -> str:
        """The podman binary's path; a :class:`DeployError` naming the package when it is missing."""
        found = shutil.which(self.binary)
        if found is None:
            raise DeployError(f"podman is not installed ('{self.binary}' not found on PATH): apt install podman")
        return found

    def config(self) -> ContainerConfig:
        if self._config is None:
            self._config = render_container_config(home=self.home, insecure_registries=self.insecure_registries)
        return self._config

    def _argv(self, *args: str) -> list[str]:
        return [self.executable(), *args]

    def _run(self, args: Sequence[str], *, label: str, log: LogFn | None = None, timeout: float | None = None,
             capture: bool = False, secrets: Sequence[str] = ()) -> Outcome:
        cfg = self.config()
        return self.runner.run(ExecuteRequest(
            argv=self._argv(*args), cwd=cfg.root, label=label, env=cfg.env(), capture=capture,
            timeout_seconds=timeout or self.timeout_seconds, secrets=secrets,
        ), log=log)

    # -- images ------------------------------------------------------------------------------------
    def pull(self, ref: str, *, log: LogFn | None = None) -> str:
        """Pulls ``repository@sha256:...``; returns the local image id. Not found → DeployError naming the ref."""
        if not _DIGEST_REF.match(ref):
            raise DeployError(f"image reference '{ref}' is not repository@sha256:<64 hex>: deploys pull by digest")
        args = ["pull", "--quiet"]
        if is_insecure(ref, self.insecure_registries):
            args.append("--tls-verify=false")
        outcome = self._run([*args, ref], label="podman pull", log=log, capture=True)
        if not outcome.ok:
            text = outcome.tail_text(8)
            if "manifest unknown" in text or "not found" in text or "404" in text:
                raise DeployError(f"image {ref} not found in its registry: {text}")
            raise DeployError(f"could not pull {ref}: {outcome.describe()}: {text}")
        return outcome.output[-1].strip() if outcome.output else ""

    # -- containers --------------------------------------------------------------------------------
    def run_detached(self, *, name: str, image: str, env: Mapping[str, str], labels: Mapping[str, str],
                     secrets: Sequence[str] = (), log: LogFn | None = None) -> str:
        """``podman run -d``; returns the container id. The container outlives this process (conmon)."""
        with self._env_file(env) as env_file:
            outcome = self._run(
                ["run", "-d", *RUN_FLAGS, *RESTART_FLAGS, "--name", _checked_name(name), "--env-file", str(env_file),
                 *_label_args(labels), image],
                label=f"podman run {name}", log=log, capture=True, secrets=secrets, timeout=120)
        if not outcome.ok:
            self.remove(name)
            raise DeployError(f"could not start container {name}: {outcome.describe()}: {outcome.tail_text(8)}")
        return outcome.output[-1].strip() if outcome.output else ""

    def run_to_completion(self, *, name: str, image: str, argv: Sequence[str], env: Mapping[str, str],
                          labels: Mapping[str, str], timeout: float, secrets: Sequence[str] = (),
                          log: LogFn | None = None) -> Outcome:
        """``podman run --rm`` of ``argv`` in ``image`` (e.g. migrations). Never raises on a non-zero exit;
        the container is removed whatever happens (timeout, interrupted run)."""
        try:
            with self._env_file(env) as env_file:
                return self._run(
                    ["run", "--rm", *RUN_FLAGS, "--name", _checked_name(name), "--env-file", str(env_file),
                     *_label_args(labels), image, *argv],
                    label=f"pre-deploy {name}", log=log, timeout=timeout, secrets=secrets)
        finally:
            self.remove(name)

    def remove(self, name: str, *, stop_timeout: float | None = None, log: LogFn | None = None) -> None:
        """Stops (SIGTERM, ``stop_timeout`` seconds, then SIGKILL) and removes ``name``; quiet when absent."""
        if stop_timeout is not None and self.exists(name):
            self._run(["stop", "-t", str(int(stop_timeout)), name], label=f"podman stop {name}", log=log,
                      timeout=stop_timeout + 60)
        self._run(["rm", "-f", "-t", "0", "--ignore", name], label=f"podman rm {name}", timeout=120)

    def start(self, name: str, *, log: LogFn | None = None) -> None:
        """``podman start`` of an existing container (the live release's, after it died)."""
        outcome = self._run(["start", _checked_name(name)], label=f"podman start {name}", log=log, capture=True,
                            timeout=120)
        if not outcome.ok:
            raise DeployError(f"could not start container {name}: {outcome.describe()}: {outcome.tail_text(8)}")

    def main_pid(self, name: str) -> int:
        """The host pid of the container's first process (its init), 0 when it does not run."""
        outcome = self._run(["inspect", "--format", "{{.State.Pid}}", _checked_name(name)],
                            label="podman inspect", capture=True, timeout=60)
        try:
            return int(outcome.output[-1].strip()) if outcome.ok and outcome.output else 0
        except ValueError:
            return 0

    def exists(self, name: str) -> bool:
        return self._run(["container", "exists", name], label="podman container exists", timeout=60).ok

    def running(self, name: str) -> bool:
        return any(c.name == name and c.state == "running" for c in self.ps({}))

    def ps(self, labels: Mapping[str, str]) -> list[ContainerInfo]:
        """All containers (running or not) carrying every label in ``labels``."""
        filters = [a for k, v in labels.items() for a in ("--filter", f"label={k}={v}")]
        outcome = self._run(["ps", "-a", "--format", "json", *filters], label="podman ps", capture=True,
                            timeout=60)
        if not outcome.ok:
            raise DeployError(f"podman ps failed: {outcome.describe()}: {outcome.tail_text(8)}")
        try:
            rows = json.loads("\n".join(outcome.output) or "[]")
        except ValueError as exc:
            raise DeployError(f"podman ps: unreadable output: {exc}") from exc
        return [ContainerInfo(name=(r.get("Names") or [""])[0], id=r.get("Id", ""), state=r.get("State", ""),
                              labels=r.get("Labels") or {}) for r in rows]

    def logs(self, name: str, *, lines: int = 30) -> str:
        outcome = self._run(["logs", "--tail", str(lines), name], label="podman logs", capture=True, timeout=60)
        return "\n".join(outcome.output)

    # -- helpers -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _env_file(self, env: Mapping[str, str]):
        for key, value in env.items():
            if not _ENV_NAME.match(key) or "\n" in value:
                raise DeployError(f"container environment: '{key}' is not a variable name or its value has a newline")
        folder = self.config().root / "tmp"
        folder.mkdir(parents=True, exist_ok=True)
        fd, path = tempfile.mkstemp(prefix="env-", dir=folder)  # 0600
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write("".join(f"{k}={v}\n" for k, v in env.items()))
            yield Path(path)
        finally:
            Path(path).unlink(missing_ok=True)


def _checked_name(name: str) -> str:
    if not _NAME.match(name):
        raise DeployError(f"'{name}' is not a valid container name")
    return name


def _label_args(labels: Mapping[str, str]) -> list[str]:
    args = []
    for key, value in labels.items():
        if not _LABEL.match(key) or "\n" in value:
            raise DeployError(f"container label '{key}={value}' is not valid")
        args += ["--label", f"{key}={value}"]
    return args
