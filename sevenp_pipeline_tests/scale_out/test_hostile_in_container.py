"""Issue 19: the hostile branch (sevenp_pipeline_tests/hostile/hostile.js) on the scale-out path. One run
of a hostile commit, launched through DockerRunLauncher into a run container that holds orchestrator
secrets, on the host network beside a loopback HTTP listener (the webserver's and the registry's
stand-in), the code server, PostgreSQL and the S3 store. Its install stage (outbound, through
slirp4netns) and its lint stage (no network) steal, scan, poison and daemonize; the lint stage then
fails the run. Checked from the stages' own reports and from the host: no secret reached a stage or
its output, nothing on loopback was reached, the shared dependency cache in S3 is the clean tree and
no process of the stage is left."""

from __future__ import annotations

import io
import json
import secrets
import subprocess
import tarfile
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from sevenp_pipeline.resources.services import Server
from sevenp_pipeline.scanners.provenance import generate_keypair
from sevenp_pipeline_tests.conftest import write_app_config
from sevenp_pipeline_tests.gitutil import Remote, git
from sevenp_pipeline_tests.hostile.test_hostile_branch import (
    APP,
    KEY,
    VICTIM_JS,
    _app_source,
    _by_stage,
    _host_address,
)
from sevenp_pipeline_tests.scale_out import test_docker_launcher as launcher
from sevenp_pipeline_tests.scale_out.engine import Engine
from sevenp_pipeline_tests.scale_out.test_docker_launcher import (
    BUCKET,
    Deployment,
    _launch,
    _run_env,
    _serve_code,
    _story,
    _workspace,
    _write_instance,
)
from sevenp_pipeline_tests.waiting import wait_for_run, wait_until

pytestmark = pytest.mark.integration

postgres = launcher.postgres  # the module fixtures of test_docker_launcher (the engine is conftest's)
s3 = launcher.s3

STAGES = ("node_dependencies", "lint_report")  # the two that run the branch's code, in the sandbox
LINT_EXIT = 7


class Listener(ThreadingHTTPServer):
    """An HTTP server on the host's loopback that records every peer that connects to it."""

    daemon_threads = True

    def __init__(self, address: str) -> None:
        self.peers: list[tuple[str, int]] = []
        super().__init__((address, 0), _Answer)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.peers.append(client_address)
        return True


class _Answer(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b'{"data": {"terminateRun": {"__typename": "TerminateRunSuccess"}}}')

    do_GET = do_POST


@contextmanager
def _listener(address: str = "127.0.0.1") -> Iterator[Listener]:
    server = Listener(address)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def _deploy_hostile(engine: Engine, postgres: Server, s3: Any, tmp_path: Path,
                    orchestrator: dict[str, str]) -> Iterator[Deployment]:
    """The hostile app (a real dependency in node_modules, hostile.js in its tree) deployed as
    test_docker_launcher deploys the tiny app; the run containers also get ``orchestrator``."""
    remote = Remote(tmp_path, _app_source(tmp_path), APP)
    apps = tmp_path / "apps"
    apps.mkdir()
    write_app_config(apps / f"{APP}.yaml", APP, remote.url)
    env = _run_env(apps, s3.meta.endpoint)
    mounts = [f"{apps}:{apps}:ro", f"{remote.url}:{remote.url}:ro"]
    home = tmp_path / "dagster"
    url = f"postgresql+psycopg2://{postgres.user}:{postgres.password}@127.0.0.1:{postgres.port}/docker"
    _write_instance(home, url, {**env, **orchestrator}, mounts, {})
    port = _serve_code(engine, env, mounts)
    try:
        yield Deployment(remote=remote, home=home, code_port=port, env=env, key=KEY)
    finally:
        engine.docker("rm", "-f", f"sevenp-code-{port}")


def _push_hostile(remote: Remote, scripts: dict[str, str]) -> str:
    git("checkout", "--quiet", "-B", "feature/attack", "main", cwd=remote.clone)
    manifest = json.loads((remote.clone / "package.json").read_text())
    manifest["scripts"].update(scripts)
    remote.write("package.json", json.dumps(manifest, indent=2) + "\n")
    return remote.commit("feat: attack from a run container", push_to="feature/attack")


def _bucket(client: Any) -> dict[str, bytes]:
    """Every object of the bucket (artifacts, logs, caches) by key."""
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET)
            for o in page.get("Contents", [])]
    return {key: client.get_object(Bucket=BUCKET, Key=key)["Body"].read() for key in keys}


def _cached_tree(blob: bytes) -> dict[str, bytes]:
    """The files of a packed node_modules tree (cache/deps/<key>.tar.gz), by path."""
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
        return {m.name.lstrip("./"): tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


@dataclass
class HostileRun:
    """The one hostile run: what it logged, and what the listeners saw."""

    run: dg.DagsterRun
    messages: list[str]
    home: Path
    orchestrator: dict[str, str]
    peers: list[tuple[str, int]]  # on the loopback listener
    outer_peers: list[tuple[str, int]]  # on the listener at the host's own address
    outer: str  # that listener's address


@pytest.fixture(scope="module")
def hostile_run(engine: Engine, postgres: Server, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> HostileRun:
    """ONE run of a hostile commit through DockerRunLauncher. Both stages run the network attack
    twice: against the loopback listener, then against a listener on the host's own address."""
    canary = "sevenp-canary-" + secrets.token_hex(16)  # a name no redactor masks: only absence proves it
    orchestrator = {"SEVENP_SIGNING_KEY": generate_keypair()[0], "SEVENP_RUN_NOTE": canary}
    address = _host_address()
    with pytest.MonkeyPatch.context() as patch, _listener() as listener, _listener(address) as outer, \
            _deploy_hostile(engine, postgres, s3, tmp_path_factory.mktemp("hostile"), orchestrator) as deployment, \
            dg.DagsterInstance.from_config(str(deployment.home)) as instance, \
            _workspace(instance, deployment.code_port) as workspace:
        patch.setenv("DOCKER_HOST", engine.host)  # DockerRunLauncher's client in this process
        attack = f"network:{listener.server_address[1]}:{address} network:{outer.server_address[1]}:{address}"
        sha = _push_hostile(deployment.remote, {
            "preinstall": f"node scripts/hostile.js steal {attack}",
            "lint": f"node scripts/hostile.js steal poison daemon {attack} && node scripts/lint.js"
                    f" && exit {LINT_EXIT}"})
        run_id = _launch(workspace, deployment, sha)
        run = wait_for_run(instance, run_id, timeout=600)
        messages = [r.event_log_entry.user_message for r in instance.get_records_for_run(run_id, limit=100000).records]
        peers, outer_peers = list(listener.peers), list(outer.peers)
        # The control: the listener answers a client of the host's loopback (the run container's too).
        with urllib.request.urlopen(f"http://127.0.0.1:{listener.server_address[1]}/graphql", timeout=5) as answer:
            assert answer.status == 200 and len(listener.peers) == len(peers) + 1
    print("hostile in a run container:", json.dumps({tag: _by_stage(messages, tag) for tag in (
        "GRAPHQL", "OPEN-PORTS", "POISON", "PROC-ENVIRONS", "DAEMON", "FILES-READ-OUTSIDE")}),
          "outer listener", outer.server_address, "peers", outer_peers)
    return HostileRun(run, messages, deployment.home, orchestrator, peers, outer_peers, f"{address}")


def test_a_hostile_stage_in_a_run_container_gets_no_secret_reaches_nothing_and_leaves_nothing(
        hostile_run: HostileRun, engine: Engine, s3: Any) -> None:
    run, messages, orchestrator = hostile_run.run, hostile_run.messages, hostile_run.orchestrator
    run_id, canary = run.run_id, orchestrator["SEVENP_RUN_NOTE"]
    container_id = run.tags["docker/container_id"]
    key_body = orchestrator["SEVENP_SIGNING_KEY"].splitlines()[1]
    story = _story(hostile_run.home, run_id, engine.logs(container_id))
    # The hostile stage failed the run; the install stage before it ran (both reported).
    assert run.status == dg.DagsterRunStatus.FAILURE, story
    with dg.DagsterInstance.from_config(str(hostile_run.home)) as fresh:
        failed = fresh.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    assert [r.event_log_entry.step_key for r in failed] == [f"{KEY}__lint_report"], story
    env_keys = _by_stage(messages, "ENV-KEYS")
    assert set(env_keys) == set(STAGES), story

    # No secret: not in a stage's environment, nor in what it could read (/proc, files), nor anywhere
    # it or the run wrote (the run's log in Postgres, the container's output, every object in S3).
    held = engine.inspect(container_id)["Config"]["Env"]  # the control: the run container held both
    assert f"SEVENP_RUN_NOTE={canary}" in held and any(key_body in e for e in held if e.startswith("SEVENP_SIGNING"))
    run_env = {*_run_env(Path("/"), "").keys(), *orchestrator}
    for stage, (keys,) in env_keys.items():
        assert not run_env & set(keys), (stage, run_env & set(keys))
        assert not [k for k in keys if k.startswith(("DAGSTER", "SEVENP"))], (stage, keys)
    for stage, (read,) in _by_stage(messages, "FILES-READ-OUTSIDE").items():  # its /tmp is a tmpfs of its own
        assert [f for f in read if not f.startswith("/tmp/")] == [], (stage, read)
    places = {"run log": "\n".join(messages).encode(), "container output": engine.logs(container_id).encode(),
              **{f"s3://{BUCKET}/{k}": v for k, v in _bucket(s3).items()}}
    leaks = [f"{what} in {where}" for where, data in places.items()
             for what, needle in (("canary", canary), ("signing key", key_body)) if needle.encode() in data]
    assert leaks == []

    # Nothing reached: no port open on the stages' loopback (the host's loopback, where the listener,
    # the code server, PostgreSQL and moto listen, is not theirs), no route to the listener, no connection.
    assert _by_stage(messages, "OPEN-PORTS") == {stage: [[], []] for stage in STAGES}
    for stage, (call, _) in _by_stage(messages, "GRAPHQL").items():
        assert call["loopback"] == "ECONNREFUSED", (stage, call)
        for route in ("gateway", "host"):
            assert call[route] != "open" and not str(call[route]).startswith("HTTP"), (stage, route, call)
    assert hostile_run.peers == []

    # The shared dependency cache: the lint stage wrote into its own layer only; the tree in S3 that
    # every other branch restores is the clean one, and the failed stage stored no result.
    ((poison,),) = _by_stage(messages, "POISON").values()
    assert poison["victim"] is True and poison["direct"] == "ENOENT", poison
    objects = _bucket(s3)
    trees = [_cached_tree(v) for k, v in objects.items() if k.startswith("cache/deps/") and k.endswith(".tar.gz")]
    assert trees, sorted(objects)
    for tree in trees:
        index = next(v for name, v in tree.items() if name.endswith("victim/index.js"))
        assert index.decode() == VICTIM_JS
        assert not [name for name in tree if "/.cache/" in f"/{name}"]
    # No stage result either: checkout and install store none (install's is the tree above), and the
    # failed lint stage, the one that would, stored nothing a later run of this tree would restore.
    assert [k for k in objects if k.startswith("cache/manifests/")] == []

    # No process left: the daemon was reported and killed in the container, which has exited; none on the host.
    assert len(_by_stage(messages, "DAEMON")["lint_report"]) == 1  # it did start one
    assert any("process(es) running, now killed" in m and "HOSTILE_DAEMON_MARKER" in m for m in messages), story
    assert wait_until(lambda: engine.inspect(container_id)["State"]["Status"] == "exited", timeout=60,
                      what="the run container to exit")
    assert subprocess.run(["pgrep", "-f", "HOSTILE_DAEMON_MARKER"], check=False).returncode == 1
    assert subprocess.run(["pgrep", "-f", "scripts/hostile.js"], check=False).returncode == 1


def test_an_outbound_stage_reaches_no_listener_on_the_hosts_own_address(hostile_run: HostileRun) -> None:
    """The webserver, code server, PostgreSQL or registry bound beyond loopback (0.0.0.0) on the run
    container's network (host): the install stage's route out reached them through the host's own
    address until the sandbox prohibited each of the machine's addresses in the stage's namespace."""
    calls = {stage: outer["host"] for stage, (_, outer) in _by_stage(hostile_run.messages, "GRAPHQL").items()}
    assert hostile_run.outer_peers == [] and "open" not in calls.values(), (hostile_run.outer, calls)
