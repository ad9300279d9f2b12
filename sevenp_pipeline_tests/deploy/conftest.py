"""Deploy fixtures: the session's container stack (shared with the image tests), the test app's images
(v1, v2, broken) pushed once, and a factory for local targets whose environments are destroyed after
each test, checked to leave no container, nginx master or server behind."""

from __future__ import annotations

import json
import shutil
import socket
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sevenp_pipeline.config import load_app_config
from sevenp_pipeline.deploy.targets.local.target import LocalTarget
from sevenp_pipeline.deploy.targets.role import Rollout
from sevenp_pipeline_tests.containers import DeployImages, Stack, TestImage, publish_deploy_images

needs_podman = pytest.mark.skipif(
    not shutil.which("podman") or not shutil.which("nginx") or not Path("/usr/libexec/podman/catatonit").exists(),
    reason="needs podman (with catatonit) and nginx (Debian packages podman catatonit nginx)",
)
APP = "deploy-test"


@pytest.fixture(scope="session")
def images(stack: Stack) -> DeployImages:
    return publish_deploy_images(stack)


def app_config(tmp: Path, environment: str, *, deploy: str = "", env_extra: str = "") -> object:
    """An app config with one local environment, short health checks and a short keep-previous."""
    path = tmp / f"{APP}.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: {APP}
        repository:
          url: https://example.invalid/{APP}.git
        stages: {{}}
        image:
          repository: sevenp/deploy-test
        deploy:
          health:
            path: /health
            attempts: 8
            interval_seconds: 0.25
            timeout_seconds: 2
          keep_previous_seconds: 1
          stop_timeout_seconds: 2
          smoke: null
        """) + textwrap.indent(textwrap.dedent(deploy), "  ") + textwrap.dedent(f"""\
        environments:
          {environment}:
            target: local
        """) + textwrap.indent(textwrap.dedent(env_extra), "    "))
    return load_app_config(path)


def rollout(image: TestImage, environment: str, commit: str) -> Rollout:
    return Rollout(app=APP, environment=environment, commit=commit, image_ref=image.ref, image_digest=image.digest,
                   run_id=f"run-{commit[:6]}")


@pytest.fixture
def make_target(stack: Stack, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Callable[..., LocalTarget]]:
    made: list[LocalTarget] = []
    counter = iter(range(1000))

    def make(*, deploy: str = "", env_extra: str = "", **kwargs) -> LocalTarget:
        environment = f"t{next(counter)}_{request.node.name[5:25].strip('_').replace('-', '_').lower()}"
        environment = "".join(c if c.isalnum() or c == "_" else "_" for c in environment)
        app = app_config(tmp_path, environment, deploy=deploy, env_extra=env_extra)
        target = LocalTarget(home=stack.home, app=app, environment=environment, runner=stack.runner, **kwargs)
        made.append(target)
        return target

    yield make
    for target in made:
        ports = service_ports(target)
        target.destroy()
        base = LocalTarget(home=stack.home, app=target.app, environment=target.environment, runner=stack.runner)
        left = base.podman.ps(base.labels())
        assert not left, f"containers left behind: {[c.name for c in left]}"
        assert not processes_naming(target.root), "an nginx master or a server still runs"
        assert not [p for p in ports if listening(p)], f"a server still listens on one of {ports}"
        assert not target.root.exists()


def service_ports(target: LocalTarget) -> list[int]:
    try:
        state = json.loads(target.services.state_path.read_text())
    except OSError:
        return []
    return [int(v["port"]) for v in state.values() if v.get("port")]


def processes_naming(root: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(root) in cmdline:
                found.append(f"{proc.name}: {cmdline}")
    return found


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0
