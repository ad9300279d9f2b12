"""Real buildah, skopeo and docker-registry: base bootstrap, the sample app's image, pushes by
digest, reuse of unchanged inputs, build failures and a registry that goes down."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from sevenp_pipeline.image.assets import PublishedImage, image_push_lock, publish_image
from sevenp_pipeline.resources.builders.role import INPUT_HASH_LABEL, ImageBuildError
from sevenp_pipeline.resources.locks import FileLocks
from sevenp_pipeline.resources.processes import ExecuteRequest
from sevenp_pipeline.resources.registries.local import LocalRegistry
from sevenp_pipeline.resources.registries.role import RegistryError
from sevenp_pipeline.resources.registries.transport import SkopeoTransport
from sevenp_pipeline_tests.image.conftest import (
    APP_REPOSITORY,
    SAMPLE_APP,
    TIMINGS,
    SampleBuild,
    Stack,
    needs_buildah,
    publish_sample,
)
from sevenp_pipeline_tests.waiting import wait_while

pytestmark = [pytest.mark.integration, needs_buildah]


def skopeo_json(stack: Stack, *args: str) -> dict:
    cfg = stack.builder.config()
    out = stack.runner.check(ExecuteRequest(argv=["skopeo", "inspect", "--tls-verify=false", *args], cwd=stack.home,
                                            label="skopeo inspect", env=cfg.env(), capture=True))
    return json.loads("\n".join(out.output))


def test_base_image_bootstrap_is_found_not_rebuilt(stack: Stack) -> None:
    assert stack.base.built and stack.base.ref and stack.base.digest
    assert stack.base.local_name == f"localhost/sevenp/node-base:{stack.base.node_version}"
    assert skopeo_json(stack, f"docker://{stack.base.ref}")["Digest"] == stack.base.digest
    started = time.monotonic()
    again = stack.base_image.ensure(builder=stack.builder, registry=stack.registry)
    TIMINGS["base bootstrap (found)"] = time.monotonic() - started
    assert not again.built and again.digest == stack.base.digest and again.image_id == stack.base.image_id
    config = skopeo_json(stack, "--config", "--raw", f"docker://{stack.base.ref}")
    assert f"NODE_VERSION={stack.base.node_version}" in config["config"]["Env"]


def test_sample_app_image_is_built_and_pushed_by_digest(stack: Stack, sample: SampleBuild) -> None:
    first = sample.first
    assert not first.reused and first.image is not None
    ref = stack.registry.repository_ref(APP_REPOSITORY)
    assert first.refs[0] == f"{ref}@{first.digest}"
    assert f"{ref}:develop" in first.refs and f"{ref}:develop-1111111" in first.refs
    # the digest the push reported is what the registry serves for the tag (skopeo and the API agree)
    assert skopeo_json(stack, f"docker://{ref}:develop")["Digest"] == first.digest
    assert stack.registry.find(APP_REPOSITORY, "develop-1111111") == first.digest
    remote = stack.builder.inspect_remote(f"{ref}:develop")
    assert remote is not None and remote.digest == first.digest
    assert remote.media_type == "application/vnd.docker.distribution.manifest.v2+json"
    assert stack.builder.inspect_remote(f"{ref}:no-such-tag") is None
    assert remote.labels[INPUT_HASH_LABEL] == first.input_hash
    image = first.image
    assert image.layer_count == remote.layer_count >= 2
    assert image.size_bytes > 50_000_000
    assert image.config_digest == f"sha256:{image.image_id}"
    TIMINGS[f"sample image size, MB ({image.layer_count} layers)"] = image.size_bytes / 1e6
    # docker format keeps HEALTHCHECK; the Dockerfile's user, command and port survive
    config = skopeo_json(stack, "--config", "--raw", f"docker://{ref}:develop")["config"]
    assert config["Healthcheck"]["Test"] == ["CMD-SHELL", "node healthcheck.js"]
    assert config["User"] == "1001" and config["Cmd"] == ["node", "dist/server.js"]
    assert "3000/tcp" in config["ExposedPorts"]
    # the build log streamed through the log callback, npm ci ran inside RUN steps
    text = "\n".join(sample.log)
    assert "RUN npm ci --omit=dev --ignore-scripts" in text and "RUN npm run build" in text
    assert "added" in text  # npm's "added N packages"


def test_unchanged_inputs_are_detected_and_not_rebuilt(stack: Stack, sample: SampleBuild) -> None:
    log: list[str] = []
    started = time.monotonic()
    again = publish_sample(stack, ["develop", "develop-2222222"], log)
    seconds = time.monotonic() - started
    TIMINGS["sample app re-run, unchanged inputs"] = seconds
    assert again.reused and again.image is None
    assert again.digest == sample.first.digest and again.input_hash == sample.first.input_hash
    assert not any("STEP" in line or "$ buildah" in line for line in log)  # no build, no push
    assert stack.registry.find(APP_REPOSITORY, "develop-2222222") == sample.first.digest  # only the new tag added
    # How much faster that is, is benchmarks/package_stages.py's to measure: a timed assert fails on a busy machine.


def test_a_publish_of_the_same_inputs_waits_for_the_push_in_progress(stack: Stack, sample: SampleBuild,
                                                                     tmp_path: Path) -> None:
    """Two runs building one tree take turns on the image's push lock (flock here; PostgreSQL across
    machines, resources/locks_postgres.py): the second then finds the first's inputs tag, nothing built."""
    locks = FileLocks(root=str(tmp_path))
    published: list[PublishedImage] = []
    assert stack.base.ref is not None

    def second_run() -> None:
        published.append(publish_image(
            builder=stack.builder, registry=stack.registry, context_dir=SAMPLE_APP,
            dockerfile=SAMPLE_APP / "Dockerfile", repository=APP_REPOSITORY, tags=["develop"],
            build_args={"BASE_IMAGE": stack.base.ref or ""},
            labels={"org.opencontainers.image.source": "examples/7p-education-api"}, locks=locks))

    name = image_push_lock(APP_REPOSITORY, f"inputs-{sample.first.input_hash[:40]}")
    with locks.hold(name, timeout=5):  # the first run's build and push, in progress
        waiting = threading.Thread(target=second_run)
        waiting.start()
        waiting.join(timeout=2)
        assert waiting.is_alive() and not published
    waiting.join(timeout=60)
    assert len(published) == 1 and published[0].reused and published[0].digest == sample.first.digest


def test_changed_input_is_rebuilt(stack: Stack, sample: SampleBuild, tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile.small"
    dockerfile.write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY healthcheck.js /app/\n")
    args = {"BASE_IMAGE": stack.base.ref or ""}
    one = publish_image(builder=stack.builder, registry=stack.registry, context_dir=SAMPLE_APP, dockerfile=dockerfile,
                        repository="sevenp/small", tags=["one"], build_args=args)
    dockerfile.write_text(dockerfile.read_text() + "LABEL changed=yes\n")
    two = publish_image(builder=stack.builder, registry=stack.registry, context_dir=SAMPLE_APP, dockerfile=dockerfile,
                        repository="sevenp/small", tags=["two"], build_args=args)
    assert not one.reused and not two.reused and one.digest != two.digest
    assert stack.registry.find("sevenp/small", "one") == one.digest
    assert stack.registry.find("sevenp/small", "two") == two.digest


def test_a_moved_inputs_tag_is_built_again_not_trusted(stack: Stack, tmp_path: Path) -> None:
    """Registry poisoning: another branch's image pushed over the inputs-<hash> tag. Reuse trusts only a
    digest the pipeline recorded for those inputs, so the commit is built again and the tag moved back."""
    dockerfile = tmp_path / "Dockerfile.small"
    dockerfile.write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY healthcheck.js /app/\n")
    evil = tmp_path / "Dockerfile.evil"
    evil.write_text(dockerfile.read_text() + "LABEL evil=yes\n")
    args = {"BASE_IMAGE": stack.base.ref or ""}
    recorded: dict[str, set[str]] = {}

    def publish(path: Path, tags: list[str], log: list[str] | None = None):
        made = publish_image(builder=stack.builder, registry=stack.registry, context_dir=SAMPLE_APP,
                             dockerfile=path, repository="sevenp/guarded", tags=tags, build_args=args,
                             trusted=lambda h, d: d in recorded.get(h, set()),
                             log=log.append if log is not None else None)
        recorded.setdefault(made.input_hash, set()).add(made.digest)
        return made

    first = publish(dockerfile, ["main"])
    input_tag = f"inputs-{first.input_hash[:40]}"
    other = publish_image(builder=stack.builder, registry=stack.registry, context_dir=SAMPLE_APP, dockerfile=evil,
                          repository="sevenp/guarded", tags=["evil"], build_args=args)
    stack.registry.tag(repository="sevenp/guarded", digest=other.digest, tags=[input_tag])
    assert stack.registry.find("sevenp/guarded", input_tag) == other.digest
    log: list[str] = []
    again = publish(dockerfile, ["main"], log)
    assert not again.reused and again.digest != other.digest
    assert any("which no build of the pipeline recorded" in line for line in log), log
    assert stack.registry.find("sevenp/guarded", input_tag) == again.digest
    assert stack.registry.find("sevenp/guarded", "main") == again.digest
    assert publish(dockerfile, ["main"]).reused  # a recorded digest is reused as before


def test_missing_dockerfile_names_it(stack: Stack, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "Dockerfile"
    with pytest.raises(ImageBuildError, match=re.escape(f"Dockerfile not found: {missing}")):
        stack.builder.build(context_dir=tmp_path, dockerfile=missing, image_name="localhost/x:1", build_args={},
                            labels={})
    with pytest.raises(ImageBuildError, match=r"Dockerfile\.production"):
        publish_image(builder=stack.builder, registry=stack.registry, context_dir=SAMPLE_APP,
                      dockerfile=Path("Dockerfile.production"), repository="sevenp/x", tags=["a"])


def test_failing_run_step_raises_with_the_log_tail(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nRUN echo 'preparing the broken step' && node -e 'process.exit(3)'\n"
    )
    with pytest.raises(ImageBuildError) as err:
        stack.builder.build(context_dir=tmp_path, dockerfile=tmp_path / "Dockerfile", image_name="localhost/broken:1",
                            build_args={"BASE_IMAGE": stack.base.ref or ""}, labels={})
    assert str(tmp_path / "Dockerfile") in str(err.value)
    assert "preparing the broken step" in err.value.log_tail
    assert "exit status 3" in err.value.log_tail


def test_registry_outlives_a_run_and_restarts_with_its_data(stack: Stack, sample: SampleBuild) -> None:
    # a later run (a new resource object) finds the same server and the earlier images
    later = LocalRegistry(runner=stack.runner, home=str(stack.home))
    pid = later.running_pid()
    assert pid is not None and later.ensure_running() == stack.registry.address()
    assert later.running_pid() == pid
    assert later.find(APP_REPOSITORY, "develop") == sample.first.digest
    # the server dies (not through stop()): the next ensure_running restarts it on the same port, data intact
    os.kill(pid, signal.SIGKILL)
    wait_while(later.healthy, timeout=30, interval=0.05, what="the killed registry to stop answering")
    assert later.ensure_running() == stack.registry.address()
    assert later.running_pid() not in (None, pid)
    assert later.find(APP_REPOSITORY, "develop") == sample.first.digest


def _second_registry(stack: Stack, tmp_path: Path) -> LocalRegistry:
    registry = LocalRegistry(runner=stack.runner, home=str(tmp_path / "other"), max_attempts=3, backoff_seconds=0.1,
                             clients_home=str(stack.home))  # the stack's builder gets its credentials
    registry.ensure_running()
    return registry


def test_registry_down_retries_then_fails_clearly_and_creates_no_tag(stack: Stack, tmp_path: Path) -> None:
    registry = _second_registry(stack, tmp_path)
    try:
        base = stack.builder.local_image(stack.base.local_name)
        address = registry.address()
        assert registry.stop()
        log: list[str] = []
        started = time.monotonic()
        with pytest.raises(RegistryError) as err:
            registry.push(builder=stack.builder, image=base, repository="sevenp/down", tags=["v1"], log=log.append)
        message = str(err.value)
        assert f"local registry {address} unreachable" in message and "after 3 attempts" in message
        assert "connection refused" in message.lower()
        assert sum("retrying in" in line for line in log) == 2
        assert time.monotonic() - started >= 0.3  # 0.1 + 0.2 s of backoff
        registry.ensure_running()
        assert registry.address() == address  # same port after restart
        assert registry.tags("sevenp/down") == []
        assert registry.find("sevenp/down", "v1") is None
    finally:
        registry.stop()


def test_registry_down_after_the_digest_push_leaves_no_tag(stack: Stack, tmp_path: Path) -> None:
    registry = _second_registry(stack, tmp_path)
    try:
        base = stack.builder.local_image(stack.base.local_name)
        exported = stack.builder.export(image=base)
        ref = f"{registry.repository_ref('sevenp/half')}@{exported.manifest_digest}"
        digest = SkopeoTransport(stack.builder).push_by_digest(image=base, destination_ref=ref)
        assert digest == exported.manifest_digest
        registry.stop()  # goes down between the digest push and the tags
        with pytest.raises(RegistryError, match=r"unreachable: tag .* as v1 failed after 3 attempts"):
            registry.tag(repository="sevenp/half", digest=digest, tags=["v1", "latest"])
        registry.ensure_running()
        assert registry.tags("sevenp/half") == []  # the image is there by digest only
        held = skopeo_json(stack, "--no-tags", f"docker://{registry.repository_ref('sevenp/half')}@{digest}")
        assert held["Digest"] == digest
        found = stack.builder.inspect_remote(f"{registry.repository_ref('sevenp/half')}@{digest}")
        assert found is not None and found.digest == digest
        result = registry.tag(repository="sevenp/half", digest=digest, tags=["v1"])  # and can be tagged later
        assert registry.tags("sevenp/half") == ["v1"] and result.digest == digest
    finally:
        registry.stop()


def test_mirror_mapping_serves_a_docker_hub_name_from_the_local_registry(stack: Stack, tmp_path: Path) -> None:
    mirrored = stack.builder.model_copy(
        update={"mirrors": {"docker.io/library/node": f"{stack.registry.address()}/sevenp/node-base"}}
    )
    (tmp_path / "Dockerfile").write_text(
        f"FROM docker.io/library/node:{stack.base.node_version}\nRUN node -e 'console.log(\"mirrored \" + 6*7)'\n"
    )
    log: list[str] = []
    image = mirrored.build(context_dir=tmp_path, dockerfile=tmp_path / "Dockerfile",
                           image_name="localhost/sevenp/mirrored:1", build_args={}, labels={}, log=log.append)
    text = "\n".join(log)
    assert f"Trying to pull docker.io/library/node:{stack.base.node_version}" in text
    assert "mirrored 42" in text
    assert image.layer_count == 2  # the base layer + the RUN step
    stack.builder.config()  # re-render the settings without the mirror for the other tests


PROBE_JS = """
const net = require("net");
for (const [what, port] of [["REGISTRY", +process.argv[2]], ["WEBSERVER", +process.argv[3]]]) {
  const sock = net.connect(port, "127.0.0.1");
  sock.on("connect", () => { console.log(`PROBE-${what}: connected`); sock.destroy(); });
  sock.on("error", (e) => console.log(`PROBE-${what}: ${e.code}`));
}
"""


def test_a_run_step_reaches_nothing_on_the_host_loopback(stack: Stack, tmp_path: Path) -> None:
    """A hostile Dockerfile's RUN step (round one overwrote the registry's tags from a stage): in the
    build's own network namespace neither the registry nor a webserver on loopback answers, while the
    same ports answer from the host."""
    web = socket.socket()
    web.bind(("127.0.0.1", 0))
    web.listen()
    registry_port = int(stack.registry.address().rsplit(":", 1)[1])
    (tmp_path / "probe.js").write_text(PROBE_JS)
    (tmp_path / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY probe.js /probe.js\n"
        f'RUN ["node", "/probe.js", "{registry_port}", "{web.getsockname()[1]}"]\n')
    lines: list[str] = []
    with web:
        stack.builder.build(context_dir=tmp_path, dockerfile=tmp_path / "Dockerfile", image_name="localhost/probe:1",
                            build_args={"BASE_IMAGE": stack.base.ref or ""}, labels={}, log=lines.append)
        for port in (registry_port, web.getsockname()[1]):  # both answer outside the build
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    output = "\n".join(lines).splitlines()
    said = dict(line.split("PROBE-", 1)[1].split(": ", 1) for line in output if "PROBE-" in line)
    assert said == {"REGISTRY": "ECONNREFUSED", "WEBSERVER": "ECONNREFUSED"}
