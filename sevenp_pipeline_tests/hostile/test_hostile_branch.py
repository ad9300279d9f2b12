"""A hostile branch pushed through a real devstack (webserver, daemon, sensor, queued runs, run
workers): each attack of sevenp_pipeline_tests/hostile/hostile.js must fail.

One devstack serves the module. Its environment holds what the orchestrator signs, publishes and
deploys with (a signing key, registry, deploy, webhook and AWS credentials); the app declares two
secrets of its own. Beside the app's YAML lies a broken one, so every test here also shows that one
bad app config does not stop another app's pushes.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from sevenp_pipeline.devtools.devstack import LocalDagster
from sevenp_pipeline.models import Workspace
from sevenp_pipeline.resources.services import free_port
from sevenp_pipeline.resources.workspaces import read_inputs
from sevenp_pipeline.scanners.provenance import generate_keypair
from sevenp_pipeline.triggers.tags import TAG_BRANCH, TAG_COMMIT
from sevenp_pipeline_tests.conftest import TINY_APP, reachable_home
from sevenp_pipeline_tests.gitutil import Remote, git
from sevenp_pipeline_tests.waiting import wait_for_runs, wait_until

pytestmark = pytest.mark.integration

HOSTILE_JS = Path(__file__).with_name("hostile.js")
APP = "hostile-app"
KEY = "hostile_app"
VICTIM_JS = "module.exports = { victim: true };\n"
STAGE_PREFIX = re.compile(r"^\[[a-z0-9_]+\] ")
WORKER_PID = re.compile(r"^Executing steps .*in process \(pid: (\d+)\)")  # the threaded executor's first event


def _token(n: int = 24) -> str:
    """A secret whose base64 uses '+' and '/' and whose URL encoding differs from it."""
    return "t0k+/" + secrets.token_urlsafe(n) + "=&%"


@dataclass
class Stack:
    remote: Remote
    stack: LocalDagster
    instance: dg.DagsterInstance
    home: Path
    orchestrator_secrets: dict[str, str]
    declared_secrets: dict[str, str]


def _victim_tarball(dest: Path) -> None:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, text in (("package/package.json", json.dumps({"name": "victim", "version": "1.0.0"})),
                           ("package/index.js", VICTIM_JS)):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    dest.write_bytes(raw.getvalue())


def _app_source(root: Path) -> Path:
    """The tiny app with one real dependency in node_modules (a local tarball: no registry needed)
    and the hostile script, which develop only uses to report what its tree holds."""
    src = root / "source"
    shutil.copytree(TINY_APP, src)
    (src / "vendor").mkdir()
    _victim_tarball(src / "vendor" / "victim-1.0.0.tgz")
    shutil.copy(HOSTILE_JS, src / "scripts" / "hostile.js")
    (src / ".gitignore").write_text("node_modules/\n")
    manifest = json.loads((src / "package.json").read_text())
    manifest["dependencies"] = {"victim": "file:vendor/victim-1.0.0.tgz"}
    manifest["scripts"]["lint"] = "node scripts/hostile.js victim && node scripts/lint.js"
    (src / "package.json").write_text(json.dumps(manifest, indent=2) + "\n")
    subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--silent"], cwd=src, check=True)
    shutil.rmtree(src / "node_modules")
    return src


@pytest.fixture(scope="module")
def hostile_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("hostile")
    remote = Remote(root, _app_source(root), APP)
    with reachable_home() as home:
        yield from _serve(root, remote, home)


def _serve(root: Path, remote: Remote, home: Path) -> Iterator[Stack]:
    apps = root / "apps"
    apps.mkdir()
    (apps / f"{APP}.yaml").write_text(f"""\
name: {APP}
repository: {{url: {remote.url}}}
branches: {{include: ["*"]}}
trigger: {{poll_interval_seconds: 1}}
secrets: [HOSTILE_NPM_TOKEN, GITHUB_PAT]
stages:
  e2e_test_results: null
  performance_report: null
  api_docs: null
""")
    # Broken: an unknown stage kind. It must break only itself.
    (apps / "broken.yaml").write_text("name: broken\nrepository: {url: /nowhere}\nstages:\n  audit: {kind: nope}\n")
    private_key, _ = generate_keypair()
    orchestrator = {
        "SEVENP_SIGNING_KEY": private_key,
        "NPM_TOKEN": "npm_" + secrets.token_hex(16),
        "DEPLOY_API_KEY": "dk-" + secrets.token_hex(16),
        "SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/" + secrets.token_hex(12),
        "AWS_SECRET_ACCESS_KEY": secrets.token_hex(20),
    }
    declared = {"HOSTILE_NPM_TOKEN": _token(), "GITHUB_PAT": "ghp_" + _token(18)}
    stack = LocalDagster(home=home, port=free_port(), apps_dir=apps, extra_env={**orchestrator, **declared})
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DAGSTER_HOME", str(stack.dagster_home))
        stack.start()
        try:
            stack.wait_for_sensor_tick(f"{KEY}_git_push_sensor")
            yield Stack(remote, stack, dg.DagsterInstance.get(), home, orchestrator, declared)
        finally:
            stack.stop()


def _messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [r.event_log_entry.user_message for r in instance.get_records_for_run(run_id, limit=100000).records]


def _tagged(messages: list[str], tag: str) -> list[object]:
    """The values hostile.js printed as ``HOSTILE-<tag>: <json>`` (the run log prefixes ``[stage] ``)."""
    prefix = f"HOSTILE-{tag}: "
    lines = [STAGE_PREFIX.sub("", line) for m in messages for line in m.splitlines()]
    return [json.loads(line[len(prefix):]) for line in lines if line.startswith(prefix)]


def _by_stage(messages: list[str], tag: str) -> dict[str, list[object]]:
    """Like _tagged, per stage (the ``[stage] `` prefix of each line)."""
    prefix = f"HOSTILE-{tag}: "
    found: dict[str, list[object]] = {}
    for line in (line for m in messages for line in m.splitlines()):
        stage = STAGE_PREFIX.match(line)
        rest = line[stage.end():] if stage else line
        if stage and rest.startswith(prefix):
            found.setdefault(stage.group(0)[1:-2], []).append(json.loads(rest[len(prefix):]))
    return found


def _host_address() -> str:
    """This machine's own (non-loopback) IPv4 address, the one its default route leaves from."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.255.255.255", 9))  # UDP: picks the route, sends nothing
        except OSError:
            return ""
        return str(sock.getsockname()[0])


def _push_hostile(stack: Stack, branch: str, scripts: dict[str, str]) -> str:
    git("checkout", "--quiet", "-B", branch, "main", cwd=stack.remote.clone)
    manifest = json.loads((stack.remote.clone / "package.json").read_text())
    manifest["scripts"].update(scripts)
    stack.remote.write("package.json", json.dumps(manifest, indent=2) + "\n")
    return stack.remote.commit(f"feat: {branch}", push_to=branch)


def _push_develop(stack: Stack, message: str, *, note: str | None = None) -> str:
    """A commit on develop; with ``note``, one whose tree differs (written to NOTES.md), so that no
    stage can be restored from the stage cache and every stage runs."""
    git("checkout", "--quiet", "main", cwd=stack.remote.clone)  # the clone's trusted line
    if note is not None:
        stack.remote.write("NOTES.md", note)
    return stack.remote.commit(message, push_to="develop")


def _grep_home(home: Path, needles: dict[str, str]) -> list[str]:
    """Every (needle name, file) where the needle occurs in any file under the home, as bytes."""
    hits = []
    encoded = {name: value.encode() for name, value in needles.items()}
    for top, _, files in os.walk(home):
        for name in files:
            path = Path(top, name)
            if path.is_symlink() or not path.is_file():
                continue
            try:
                data = path.read_bytes()
            except OSError:
                continue
            hits += [f"{label} in {path}" for label, value in encoded.items() if value in data]
    return hits


def _encoded_forms(name: str, secret: str) -> dict[str, str]:
    raw = secret.encode()
    b64 = base64.b64encode(raw).decode()
    return {
        f"{name} plain": secret,
        f"{name} base64": b64.rstrip("="),  # the unpadded form is inside the padded one
        f"{name} base64url": base64.urlsafe_b64encode(raw).decode().rstrip("="),
        f"{name} basic auth": base64.b64encode(b"ci-user:" + raw).decode().rstrip("="),
        f"{name} hex": raw.hex(),
        f"{name} HEX": raw.hex().upper(),
        f"{name} url": urllib.parse.quote(secret, safe=""),
    }


def test_hostile_stage_reads_no_orchestrator_secret_and_leaves_nothing(hostile_stack: Stack) -> None:
    stack = hostile_stack
    develop = _push_develop(stack, "chore: develop before the attack")
    (first,) = wait_for_runs(stack.instance, tags={TAG_COMMIT: develop})
    assert first.status == dg.DagsterRunStatus.SUCCESS, first.run_id
    clean = _tagged(_messages(stack.instance, first.run_id), "VICTIM-SHA256")

    sha = _push_hostile(stack, "feature/attack", {
        "lint": "node scripts/hostile.js steal poison daemon encode && node scripts/lint.js"})
    (run,) = wait_for_runs(stack.instance, tags={TAG_COMMIT: sha})
    messages = _messages(stack.instance, run.run_id)
    assert run.tags[TAG_BRANCH] == "feature/attack"
    assert run.status == dg.DagsterRunStatus.SUCCESS, "\n".join(messages[-40:])

    # Environment: none of the orchestrator's variables; the declared secrets are there.
    (env_keys,) = _tagged(messages, "ENV-KEYS")
    for name in (*stack.orchestrator_secrets, "DAGSTER_HOME", "SEVENP_HOME"):
        assert name not in env_keys
    assert {"HOSTILE_NPM_TOKEN", "GITHUB_PAT", "CI", "HOME", "TMPDIR", "PATH"} <= set(env_keys)
    # /proc: no environ readable but the stage's own processes'; no file of the home outside its checkout.
    (files_read,) = _tagged(messages, "FILES-READ-OUTSIDE")
    assert [f for f in files_read if f.startswith(str(stack.home))] == []

    # The cache, and another branch's view of it, are unchanged; the stage wrote into its own layer.
    (poison,) = _tagged(messages, "POISON")
    assert poison["victim"] is True and poison["direct"] == "ENOENT"
    workspace = stack.home / "workspaces" / KEY / sha
    cached = Path(read_inputs(Workspace(root=workspace))["node_modules"])
    assert (cached / "victim" / "index.js").read_text() == VICTIM_JS
    assert not (cached / ".cache").exists()
    # A new tree: the lint stage (which reads the victim package) must run again, not be restored.
    after = _push_develop(stack, "chore: develop after the attack", note="after the attack\n")
    (second,) = wait_for_runs(stack.instance, tags={TAG_COMMIT: after})
    assert second.status == dg.DagsterRunStatus.SUCCESS
    assert _tagged(_messages(stack.instance, second.run_id), "VICTIM-SHA256") == clean

    # The detached daemon: reported by name, killed, gone.
    assert any("process(es) running, now killed" in m and "HOSTILE_DAEMON_MARKER" in m for m in messages)
    assert subprocess.run(["pgrep", "-f", "HOSTILE_DAEMON_MARKER"], check=False).returncode == 1

    # Secrets: neither the orchestrator's nor any encoded form of the declared ones anywhere in the home
    # (event log, compute logs, workspace logs, artifacts, Dagster's storage).
    needles = {f"orchestrator {name}": value for name, value in stack.orchestrator_secrets.items()}
    needles["signing key body"] = stack.orchestrator_secrets["SEVENP_SIGNING_KEY"].splitlines()[1]
    for name, value in stack.declared_secrets.items():
        needles.update(_encoded_forms(name, value))
        half = len(value) // 2
        needles[f"{name} first half"] = value[:half]
    assert any("HOSTILE_NPM_TOKEN base64=***" in m for m in messages)  # it really printed them
    assert _grep_home(stack.home, needles) == []


def _redis(port: int, command: str) -> str:
    out = subprocess.run(["redis-cli", "-p", str(port), *command.split()], capture_output=True, text=True,
                         timeout=10, check=False)
    return out.stdout.strip() if out.returncode == 0 else f"error: {out.stderr.strip()}"


def test_stages_reach_neither_the_host_loopback_nor_anything_but_their_own_services(hostile_stack: Stack) -> None:
    """Round one's way to production: a stage calling the webserver's GraphQL on 127.0.0.1. Each stage
    of a hostile branch scans all 65535 ports of its loopback and calls GraphQL on the webserver's
    port (on loopback, slirp's host gateway and the machine's own address): the install stage (which
    goes outbound, for the registry), lint (no network) and the integration tests (their services)."""
    stack = hostile_stack
    # An environment's Redis as round one found it: on loopback, without a password (environments now
    # have one; this one stays open to show the network alone keeps stages out).
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: _redis(redis_port, "PING") == "PONG", timeout=10, what="the environment's Redis")
        attack = f"network:{stack.stack.port}:{_host_address()} redis:{redis_port}"
        sha = _push_hostile(stack, "feature/network", {
            "preinstall": f"node scripts/hostile.js {attack}",
            "lint": f"node scripts/hostile.js {attack} && node scripts/lint.js",
            "test:integration": f"node scripts/hostile.js services {attack} && node scripts/test.js integration",
        })
        (run,) = wait_for_runs(stack.instance, tags={TAG_COMMIT: sha}, timeout=600)
        messages = _messages(stack.instance, run.run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS, "\n".join(messages[-40:])  # the services worked
        sets = _by_stage(messages, "REDIS-SET")
        assert sets == {stage: ["ECONNREFUSED"] for stage in ("node_dependencies", "lint_report",
                                                                   "integration_test_results")}, sets
        assert _redis(redis_port, "GET sevenp-hostile") == ""  # answers the host; nothing was written
    finally:
        redis.terminate()
        redis.wait(timeout=10)

    open_ports = _by_stage(messages, "OPEN-PORTS")
    ((service_ports,),) = _by_stage(messages, "SERVICE-PORTS").values()
    assert len(service_ports) == 2
    assert open_ports == {"node_dependencies": [[]], "lint_report": [[]],
                          "integration_test_results": [service_ports]}
    calls = _by_stage(messages, "GRAPHQL")
    assert set(calls) == set(open_ports)
    for stage, (call,) in calls.items():
        assert call["loopback"] == "ECONNREFUSED", (stage, call)  # nothing listens on the stage's own loopback
        for route in ("gateway", "host"):
            assert call[route] != "open" and not str(call[route]).startswith("HTTP"), (stage, route, call)
    assert calls["lint_report"][0]["gateway"] == "ENETUNREACH"  # no route out at all
    # The webserver is there, and answers from the host.
    assert stack.stack.graphql("{ version }")["version"]


def test_killed_run_worker_is_retried_with_nothing_left(hostile_stack: Stack) -> None:
    """kill -9 of the run worker mid-stage (holding its services and its pool slot): the retry
    starts by itself and passes; the killed stage's processes, servers and service folder are gone."""
    stack = hostile_stack
    sha = _push_hostile(stack, "feature/hang", {
        "test:integration": "node scripts/hostile.js hang && node scripts/test.js integration"})
    services = stack.home / "services"
    marker = stack.home / "workspaces" / KEY / sha / "src" / ".hostile-attempt"

    def hanging() -> tuple[list[dg.DagsterRun], int] | None:
        runs = stack.instance.get_runs(filters=dg.RunsFilter(tags={TAG_COMMIT: sha}))
        if not (runs and marker.exists()):
            return None
        worker = next((int(found.group(1)) for m in _messages(stack.instance, runs[0].run_id)
                       if (found := WORKER_PID.match(m))), None)
        return None if worker is None else (runs, worker)

    runs, worker = wait_until(hanging, timeout=180, interval=0.2,
                              what="the hanging stage to start (its marker, and its run worker's pid in the log)")
    (killed_run,) = runs
    assert list(services.glob("svc-*")), "the integration stage's services should be running"
    os.kill(worker, signal.SIGKILL)
    killed_at = time.time()

    # run_retries makes a retry (a run whose parent is the killed one).
    wait_for_runs(stack.instance, tags={"dagster/parent_run_id": killed_run.run_id}, timeout=120, finished=False)
    first, retry = wait_for_runs(stack.instance, tags={TAG_COMMIT: sha}, count=2, timeout=420)
    assert (first.run_id, first.status) == (killed_run.run_id, dg.DagsterRunStatus.FAILURE)
    assert retry.status == dg.DagsterRunStatus.SUCCESS
    # Not stuck behind the dead run's pool slot (it sat 5.5 minutes before free_slots_after_run_end_seconds).
    assert stack.instance.get_run_record_by_id(retry.run_id).start_time - killed_at < 90
    assert any("second attempt passes" in m for m in _messages(stack.instance, retry.run_id))
    # Nothing of the killed attempt is left: its stage command, its servers, its service folder.
    assert subprocess.run(["pgrep", "-f", "hostile.js hang"], check=False).returncode == 1
    assert subprocess.run(["pgrep", "-f", str(services)], check=False).returncode == 1
    assert _service_folders(services) == []


def _service_folders(services: Path) -> list[str]:
    """Each ``svc-*`` or ``.svc-new-*`` folder left, with its owner record (or none) and what it holds."""
    left = []
    for folder in sorted([*services.glob("svc-*"), *services.glob(".svc-new-*")]):
        owner = folder / "owner.json"
        record = owner.read_text() if owner.exists() else "no owner record"
        left.append(f"{folder.name}: {record}; holds {sorted(p.name for p in folder.iterdir())}")
    return left


def test_broken_app_config_is_visible_and_breaks_only_itself(hostile_stack: Stack) -> None:
    """The hostile app ran on every push above beside broken.yaml; the file's error is on its own
    sensor, naming the file and the key."""
    ticks = wait_until(
        lambda: [t for t in hostile_stack.stack.sensor_ticks("broken_config_error") if t["status"] == "FAILURE"],
        timeout=120, interval=0.5, what="the error sensor to fail a tick")
    error = ticks[0]["error"]
    text = " ".join([error["message"], *(c["message"] for c in error["causes"])])
    assert "broken.yaml: stages.audit" in text and "nope" in text


def test_a_reports_link_out_of_the_checkout_touches_nothing_there(hostile_stack: Stack) -> None:
    """A branch commits ``reports`` as a link to a folder of the host (round one: root deleted the file
    there, removing the stale report before checking the path). The host file survives, unchanged:
    the orchestrator leaves the stale report alone, naming the link, and the lint stage fails."""
    stack = hostile_stack
    victim = Path(tempfile.mkdtemp(prefix="sevenp-victim-", dir="/var/tmp"))
    (victim / "lint.json").write_text("the host's own file\n")
    clone = stack.remote.clone
    try:
        git("checkout", "--quiet", "-B", "feature/reports-link", "main", cwd=clone)
        shutil.rmtree(clone / "reports", ignore_errors=True)
        (clone / "reports").symlink_to(victim)
        sha = stack.remote.commit("feat: reports elsewhere", push_to="feature/reports-link")
        (run,) = wait_for_runs(stack.instance, tags={TAG_COMMIT: sha}, timeout=600)
        messages = "\n".join(_messages(stack.instance, run.run_id))
        assert run.status == dg.DagsterRunStatus.FAILURE
        assert "lint_report: stale reports/lint.json not removed: reports is a link or not a folder" in messages
        # Inside the stage's sandbox the link leads nowhere (its target is a hidden folder): the stage's
        # own write fails too, so neither root nor the stage user reaches the host's folder.
        assert "ENOENT: no such file or directory, mkdir 'reports'" in messages
        assert (victim / "lint.json").read_text() == "the host's own file\n"
        assert sorted(p.name for p in victim.iterdir()) == ["lint.json"]
    finally:
        (clone / "reports").unlink(missing_ok=True)
        git("checkout", "--quiet", "-f", "main", cwd=clone)
        shutil.rmtree(victim, ignore_errors=True)
