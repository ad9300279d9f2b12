"""The builder role without container tools: DockerBuilder at the ProcessRunner seam (there is
no Docker engine on the development machines), input hashing, refs and the rendered settings."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydantic import PrivateAttr

from sevenp_pipeline.resources.builders import (
    BuiltImage,
    DockerBuilder,
    ImageBuildError,
    ImagePushError,
    build_input_hash,
    render_container_config,
    split_ref,
)
from sevenp_pipeline.resources.processes import ExecuteRequest, LogFn, Outcome, ProcessRunner
from sevenp_pipeline.resources.registries.transport import SkopeoTransport

Handler = Callable[[ExecuteRequest], tuple[int, list[str]]]
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                       "config": {"digest": "sha256:" + "c" * 64, "size": 10}, "layers": []}).encode()


class FakeRunner(ProcessRunner):
    """Answers commands from a handler instead of starting processes; records every request."""

    _handler: Handler = PrivateAttr()
    _calls: list[ExecuteRequest] = PrivateAttr(default_factory=list)

    def run(self, request: ExecuteRequest, *, log: LogFn | None = None) -> Outcome:
        self._calls.append(request)
        code, lines = self._handler(request)
        if log:
            for line in lines:
                log(f"[{request.label}] {line}")
        now = time.time()
        return Outcome(label=request.label, command=" ".join(request.argv), exit_code=code, started=now, ended=now,
                       tail=tuple(lines[-60:]), output=tuple(lines) if request.capture else ())


def fake(handler: Handler) -> FakeRunner:
    runner = FakeRunner()
    runner._handler = handler
    return runner


def _arg(argv: tuple[str, ...], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def docker_engine(request: ExecuteRequest) -> tuple[int, list[str]]:
    """A scripted docker CLI + skopeo."""
    argv = tuple(request.argv)
    if argv[0] == "docker" and argv[1] == "build":
        Path(_arg(argv, "--iidfile")).write_text("sha256:" + "a" * 64)
        return 0, ["#1 [internal] load build definition from Dockerfile", "#9 DONE 0.1s"]
    if argv[:3] == ("docker", "image", "inspect"):
        return 0, [json.dumps([{"Id": "sha256:" + "a" * 64, "Size": 1234, "RootFS": {"Layers": ["x", "y", "z"]}}])]
    if argv[:2] == ("docker", "tag"):
        return 0, []
    if argv[:2] == ("docker", "push"):
        return 0, ["The push refers to repository [reg.example.com/app]",
                   f"v1: digest: sha256:{'d' * 64} size: 1570"]
    if argv[:2] == ("docker", "save"):
        Path(_arg(argv, "-o")).write_bytes(b"tar")
        return 0, []
    if argv[0] == "skopeo" and "copy" in argv:
        dest = argv[-1]
        if dest.startswith("dir:"):
            Path(dest[4:]).mkdir(parents=True)
            (Path(dest[4:]) / "manifest.json").write_bytes(MANIFEST)
        return 0, ["Writing manifest to image destination"]
    if argv[:3] == ("docker", "manifest", "inspect"):
        if "missing" in argv[-1]:
            return 1, ["no such manifest: reg.example.com/missing:1"]
        return 0, [json.dumps({"Descriptor": {"digest": "sha256:" + "e" * 64,
                                              "mediaType": "application/vnd.docker.distribution.manifest.v2+json"},
                               "SchemaV2Manifest": {"layers": [{}, {}]}})]
    return 99, [f"unexpected command {argv}"]


@pytest.fixture
def app(tmp_path: Path) -> Path:
    ctx = tmp_path / "app"
    (ctx / "src").mkdir(parents=True)
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY src /src\n")
    (ctx / "src" / "a.js").write_text("1")
    return ctx


def test_docker_build_passes_args_labels_engine_and_reads_the_image(tmp_path: Path, app: Path) -> None:
    runner = fake(docker_engine)
    builder = DockerBuilder(runner=runner, home=str(tmp_path / "home"), docker_host="tcp://10.0.0.5:2375")
    seen: list[str] = []
    image = builder.build(context_dir=app, dockerfile=Path("Dockerfile"), image_name="app:1",
                          build_args={"BASE_IMAGE": "reg/node:20"}, labels={"a": "b"}, log=seen.append)
    assert image == BuiltImage(image_id="a" * 64, config_digest="sha256:" + "a" * 64, size_bytes=1234,
                               layer_count=3, local_name="app:1")
    build = runner._calls[0]
    assert build.argv[:2] == ("docker", "build")
    assert tuple(build.argv[build.argv.index("--build-arg"):][:2]) == ("--build-arg", "BASE_IMAGE=reg/node:20")
    assert "--label" in build.argv and "a=b" in build.argv
    assert build.argv[-1] == str(app) and _arg(build.argv, "-f") == str(app / "Dockerfile")
    assert build.env["DOCKER_HOST"] == "tcp://10.0.0.5:2375"
    assert build.env["CONTAINERS_STORAGE_CONF"].startswith(str((tmp_path / "home").resolve()))
    assert any("load build definition" in line for line in seen)  # the build log streams through `log`


def test_docker_build_failure_names_dockerfile_and_carries_the_tail(tmp_path: Path, app: Path) -> None:
    runner = fake(lambda r: (1, ["#7 [build 3/5] RUN npm ci", "npm ERR! code E404", "ERROR: failed to solve"]))
    builder = DockerBuilder(runner=runner, home=str(tmp_path / "home"))
    with pytest.raises(ImageBuildError) as err:
        builder.build(context_dir=app, dockerfile=app / "Dockerfile", image_name="app:1", build_args={}, labels={})
    assert str(app / "Dockerfile") in str(err.value)
    assert "npm ERR! code E404" in err.value.log_tail and err.value.dockerfile == app / "Dockerfile"


def test_docker_missing_dockerfile_runs_nothing(tmp_path: Path, app: Path) -> None:
    runner = fake(docker_engine)
    builder = DockerBuilder(runner=runner, home=str(tmp_path / "home"))
    with pytest.raises(ImageBuildError, match=r"Dockerfile not found: .*Dockerfile\.production"):
        builder.build(context_dir=app, dockerfile=Path("Dockerfile.production"), image_name="x:1", build_args={},
                      labels={})
    assert runner._calls == []


def test_docker_push_by_tag_returns_the_reported_digest(tmp_path: Path) -> None:
    runner = fake(docker_engine)
    builder = DockerBuilder(runner=runner, home=str(tmp_path / "home"))
    image = BuiltImage(image_id="a" * 64, config_digest="sha256:" + "a" * 64, size_bytes=1, layer_count=1,
                       local_name="app:1")
    assert builder.push(image=image, destination_ref="reg.example.com/app:v1") == "sha256:" + "d" * 64
    assert [c.argv[:2] for c in runner._calls] == [("docker", "tag"), ("docker", "push")]


def test_docker_push_by_digest_exports_then_copies_unchanged(tmp_path: Path) -> None:
    runner = fake(docker_engine)
    builder = DockerBuilder(runner=runner, home=str(tmp_path / "home"))
    image = BuiltImage(image_id="a" * 64, config_digest="sha256:" + "a" * 64, size_bytes=1, layer_count=1,
                       local_name="app:1")
    digest = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
    assert builder.export(image=image).manifest_digest == digest
    transport = SkopeoTransport(builder)
    assert transport.push_by_digest(image=image, destination_ref=f"reg.example.com/app@{digest}") == digest
    copies = [c.argv for c in runner._calls if c.argv[0] == "skopeo"]
    assert copies[-1][-1] == f"docker://reg.example.com/app@{digest}" and copies[-1][-2].startswith("dir:")
    assert sum(1 for c in runner._calls if c.argv[:2] == ("docker", "save")) == 1  # the export is cached
    with pytest.raises(ImagePushError, match="exports as"):
        transport.push_by_digest(image=image, destination_ref="reg.example.com/app@sha256:" + "0" * 64)
    with pytest.raises(ValueError, match="push by digest"):
        builder.push(image=image, destination_ref=f"reg.example.com/app@{digest}")  # the builder pushes tags only


def test_docker_push_failure_names_the_destination(tmp_path: Path) -> None:
    def handler(request: ExecuteRequest) -> tuple[int, list[str]]:
        if request.argv[1] == "push":
            return 1, ["Get \"https://reg.example.com/v2/\": dial tcp: connection refused"]
        return 0, []

    builder = DockerBuilder(runner=fake(handler), home=str(tmp_path / "home"))
    image = BuiltImage(image_id="a" * 64, config_digest="x", size_bytes=1, layer_count=1, local_name="app:1")
    with pytest.raises(ImagePushError, match=r"reg\.example\.com/app:v1.*\n.*connection refused"):
        builder.push(image=image, destination_ref="reg.example.com/app:v1")


def test_docker_inspect_remote(tmp_path: Path) -> None:
    runner = fake(docker_engine)
    builder = DockerBuilder(runner=runner, home=str(tmp_path / "home"))
    remote = builder.inspect_remote("127.0.0.1:5000/app:1")
    assert remote is not None and remote.digest == "sha256:" + "e" * 64 and remote.layer_count == 2
    assert "--insecure" in runner._calls[-1].argv  # loopback registries are plain HTTP
    assert builder.inspect_remote("reg.example.com/missing:1") is None
    assert "--insecure" not in runner._calls[-1].argv


def test_split_ref() -> None:
    assert split_ref("127.0.0.1:5000/a/b:1") == ("127.0.0.1:5000", "a/b", "1", None)
    assert split_ref("reg.io/a@sha256:" + "f" * 64) == ("reg.io", "a", None, "sha256:" + "f" * 64)
    assert split_ref("localhost/sevenp/node-base:20") == ("localhost", "sevenp/node-base", "20", None)
    with pytest.raises(ValueError, match="fully qualified"):
        split_ref("node:20")


def test_input_hash_follows_dockerignore_and_inputs(tmp_path: Path, app: Path) -> None:
    (app / ".dockerignore").write_text("node_modules\n*.log\n**/__tests__\n")
    (app / "node_modules" / "x").mkdir(parents=True)

    def h(**kw: object) -> str:
        args = {"context_dir": app, "dockerfile": app / "Dockerfile", "build_args": {"A": "1"}, "labels": {}}
        args.update(kw)
        return build_input_hash(**args)  # type: ignore[arg-type]

    first = h()
    (app / "node_modules" / "x" / "index.js").write_text("ignored")
    (app / "debug.log").write_text("ignored")
    (app / "src" / "__tests__").mkdir()
    (app / "src" / "__tests__" / "t.js").write_text("ignored")
    assert h() == first
    (app / "src" / "nested.log").write_text("NOT ignored: *.log only matches at the root")
    second = h()
    assert second != first
    assert h(build_args={"A": "2"}) != second
    assert h(labels={"l": "v"}) != second
    assert h(base_digests={"BASE_IMAGE": "sha256:" + "1" * 64}) != second
    (app / "Dockerfile").write_text("FROM scratch\n")
    assert h() != second


def test_settings_are_rendered_under_home_from_the_templates(tmp_path: Path) -> None:
    cfg = render_container_config(home=tmp_path / "home", insecure_registries=["reg.internal:5000"],
                                  mirrors={"docker.io/library/node": "127.0.0.1:5000/mirror/node"})
    home = str((tmp_path / "home").resolve())
    storage = cfg.storage_conf.read_text()
    assert f'graphroot = "{home}/containers/storage"' in storage and 'driver = "overlay"' in storage
    conf = cfg.containers_conf.read_text()
    assert 'runtime = "runc"' in conf and 'cgroup_manager = "cgroupfs"' in conf and "nofile=20000:20000" in conf
    assert f"{home}/containers/events/events.log" in conf
    registries = cfg.registries_conf.read_text()
    assert 'location = "reg.internal:5000"\ninsecure = true' in registries
    assert registries.count("[[registry.mirror]]\nlocation = \"127.0.0.1:5000/mirror/node\"") == 1
    assert "{mirrors}" not in registries and "{insecure_registries}" not in registries
    env = cfg.env()
    assert env["CONTAINERS_CONF"] == str(cfg.containers_conf) and env["CONTAINERS_REGISTRIES_CONF"].startswith(home)
    assert json.loads(cfg.policy.read_text())["default"][0]["type"] == "insecureAcceptAnything"
