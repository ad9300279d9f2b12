"""The stage sandbox (sevenp_pipeline/sandbox) on real commands: what a stage sees, who it runs as,
what it can write, and that nothing it starts outlives it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from sevenp_pipeline.models import Workspace
from sevenp_pipeline.resources.processes import ExecuteRequest, Outcome, ProcessRunner
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.sandbox import Network, StageUser, host_addresses, minimal_env
from sevenp_pipeline_tests.waiting import wait_until, wait_while

SECRET = "orchestrator-signing-key-4f1c9a7e"


@pytest.fixture
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A project home with a workspace, a cached node_modules tree and a secret file; run(argv)
    runs a command the way a stage's runs."""
    monkeypatch.setenv("SEVENP_SIGNING_KEY", SECRET)
    home = tmp_path / "home"
    workspaces = Workspaces(root=str(home / "workspaces"), cache_root=str(home / "cache"),
                            private_paths=[str(home)])
    workspace = Workspace(root=home / "workspaces" / "app" / ("a" * 40))
    workspace.src.mkdir(parents=True)
    (workspace.src / "package.json").write_text("{}")
    tree = home / "cache" / "node_modules" / "k" / "node_modules"
    (tree / "dep").mkdir(parents=True)
    (tree / "dep" / "index.js").write_text("module.exports = 1;\n")
    workspaces.user.own(tree, recursive=True)
    key = home / "keys" / "signing-key.pem"
    key.parent.mkdir(parents=True)
    key.write_text(SECRET)
    key.chmod(0o600)
    workspaces.hand_over(workspace.src)

    def run(argv: list[str], *, timeout: float = 30, node_modules: bool = True,
            network: Network | None = None) -> Outcome:
        room = workspaces.stage_room(workspace, "stage")
        spec, env = workspaces.stage_sandbox(workspace, room, cwd=workspace.src,
                                             node_modules=tree if node_modules else None, network=network)
        return ProcessRunner().run(ExecuteRequest(argv=argv, cwd=workspace.src, label="stage", env=env,
                                                  inherit_env=False, sandbox=spec, capture=True,
                                                  timeout_seconds=timeout))

    run.home, run.tree, run.workspace, run.key = home, tree, workspace, key
    return run


def sh(script: str) -> list[str]:
    return ["sh", "-c", textwrap.dedent(script)]


def test_minimal_environment_without_the_orchestrators_secrets(box) -> None:
    outcome = box(["env"])
    assert outcome.ok, outcome.tail_text()
    env = dict(line.split("=", 1) for line in outcome.output if "=" in line)
    assert "SEVENP_SIGNING_KEY" not in env and SECRET not in "\n".join(outcome.output)
    assert env["CI"] == "true" and env["TMPDIR"] == "/tmp"
    assert env["HOME"].startswith(str(box.workspace.root / "stages" / "stage"))
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "TZ", "USER", "LOGNAME", "CI", "COREPACK_HOME",
                        "PWD", "SHLVL", "_", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTP_PROXY",
                        "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy"}


def test_runs_unprivileged_and_sees_neither_the_home_nor_other_processes(box) -> None:
    outcome = box(sh(f"""
        id -u
        cat {box.key} || echo "no key file"
        ls -A {box.home}
        ls {box.workspace.root}
        cat /proc/1/environ || echo "no environ of pid 1"
        ls /proc | grep -c '^[0-9]'
        """))
    assert outcome.ok, outcome.tail_text()
    out = "\n".join(outcome.output)
    assert outcome.output[0] == str(StageUser.resolve().uid) != "0"
    assert SECRET not in out and "no key file" in out and "no environ of pid 1" in out
    # The home is an empty folder but for the path down to the stage's own workspace.
    assert outcome.output[outcome.output.index("no key file") + 1] == "workspaces"
    assert int(outcome.output[-1]) <= 6  # pid 1, sh, ls, grep: nothing of the machine


def test_node_modules_writes_stay_in_the_stages_own_layer(box) -> None:
    outcome = box(sh("""
        echo 'module.exports = "poisoned";' >> node_modules/dep/index.js
        mkdir node_modules/.cache && echo cached > node_modules/.cache/x
        cat node_modules/dep/index.js
        """))
    assert outcome.ok, outcome.tail_text()
    assert "poisoned" in "\n".join(outcome.output)
    assert (box.tree / "dep" / "index.js").read_text() == "module.exports = 1;\n"
    assert not (box.tree / ".cache").exists()
    again = box(["cat", "node_modules/dep/index.js"])  # the next stage starts from the cache again
    assert again.output == ("module.exports = 1;",)


def test_detached_children_are_reported_and_killed(box) -> None:
    marker = "sandbox-daemon-marker-91c2"
    started = time.monotonic()
    outcome = box(["python3", "-c", textwrap.dedent(f"""
        import subprocess
        subprocess.Popen(["python3", "-c", "import time; time.sleep(300)", "{marker}"], start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        print("parent exits")
        """)])
    assert outcome.ok and not outcome.timed_out
    assert time.monotonic() - started < 10
    assert any(marker in p for p in outcome.leftovers), outcome.leftovers
    assert subprocess.run(["pgrep", "-f", marker], check=False).returncode == 1


def test_exit_codes_and_a_missing_command(box) -> None:
    assert box(["sh", "-c", "exit 3"]).exit_code == 3
    missing = box(["no-such-tool-xyz"])
    assert missing.exit_code == 127 and "no-such-tool-xyz" in missing.tail_text()


def test_timeout_kills_everything_in_the_sandbox(box) -> None:
    marker = "sandbox-timeout-marker-5d1e"
    outcome = box(["sh", "-c", f"python3 -c \"import time; time.sleep(300)\" {marker} & sleep 300"], timeout=1)
    assert outcome.timed_out
    assert subprocess.run(["pgrep", "-f", marker], check=False).returncode == 1


def test_sandboxed_command_dies_with_the_process_that_started_it(box, tmp_path: Path) -> None:
    """A run worker killed with -9: its stage command (and what that started) dies with it."""
    room = Workspaces(root=str(box.home / "workspaces"), cache_root=str(box.home / "cache"),
                      private_paths=[str(box.home)])
    stage_room = room.stage_room(box.workspace, "killed")
    spec, env = room.stage_sandbox(box.workspace, stage_room, cwd=box.workspace.src, node_modules=None)
    marker = "sandbox-orphan-marker-77ab"
    sleeper = f"python3 -c 'import time; time.sleep(300)' {marker}"
    request = {"spec": spec.wrap(["sh", "-c", f"{sleeper} & {sleeper}"]), "env": env}
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent("""
        import json, subprocess, sys, time
        from sevenp_pipeline.resources.processes import _with_parent_death_signal
        data = json.load(open(sys.argv[1]))
        subprocess.Popen(_with_parent_death_signal(data["spec"]), env=data["env"], start_new_session=True)
        time.sleep(300)
        """))
    (tmp_path / "request.json").write_text(json.dumps(request))
    worker = subprocess.Popen([sys.executable, str(script), str(tmp_path / "request.json")],
                              env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})

    def sandboxed() -> list[str]:
        found = subprocess.run(["pgrep", "-f", marker], check=False, capture_output=True, text=True)
        return found.stdout.split()

    wait_until(sandboxed, timeout=60, what="the sandboxed command to start")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    wait_while(sandboxed, timeout=10, what="the sandboxed command to die with its worker")


def test_minimal_env_drops_path_entries_under_private_folders() -> None:
    env = minimal_env(home=Path("/h"), tmpdir=Path("/t"), user="u", private=[Path("/root")],
                      source={"PATH": "/root/.pyenv/shims:/usr/bin:/bin", "SEVENP_SIGNING_KEY": "x",
                              "NODE_EXTRA_CA_CERTS": "/etc/ca.pem", "AWS_SECRET_ACCESS_KEY": "y"})
    assert env["PATH"] == "/usr/bin:/bin"
    assert env["NODE_EXTRA_CA_CERTS"] == "/etc/ca.pem"
    assert "SEVENP_SIGNING_KEY" not in env and "AWS_SECRET_ACCESS_KEY" not in env


def test_an_outbound_stage_reaches_nothing_on_this_machines_own_address(box) -> None:
    """slirp4netns's --disable-host-loopback covers 127.0.0.1 only: a server listening on 0.0.0.0 (a
    webserver, a code server, a registry) was reachable from the install stage's scripts through the
    host's own address. Each of the host's addresses gets a prohibit route in the namespace."""
    addresses = host_addresses()
    assert addresses, "this machine has no address but loopback: nothing to check"
    accepted: list[tuple[str, int]] = []
    listeners = []
    for address in addresses:
        sock = socket.create_server((address, 0))
        listeners.append(sock)

        def accept(sock: socket.socket = sock) -> None:
            while True:
                try:
                    conn, peer = sock.accept()
                except OSError:
                    return
                accepted.append(peer)
                conn.close()

        threading.Thread(target=accept, daemon=True).start()
    try:
        targets = [sock.getsockname() for sock in listeners]
        with socket.create_connection(targets[0], timeout=5):  # control: the host itself reaches it
            pass
        wait_until(lambda: len(accepted) == 1, timeout=5, what="the control connection")
        probe = ("import socket\n"
                 f"for host, port in {targets!r}:\n"
                 "    s = socket.socket(); s.settimeout(5)\n"
                 "    print(host, s.connect_ex((host, port)))\n")
        out = box(["python3", "-c", probe], network=Network(outbound=True), node_modules=False)
        assert out.ok, out.tail_text()
        results = dict(line.split() for line in out.output if line.strip())
        assert set(results) == set(addresses) and all(code != "0" for code in results.values()), results
        assert len(accepted) == 1, f"the stage connected to the host: {accepted[1:]}"
    finally:
        for sock in listeners:
            sock.close()


def test_host_addresses_reads_the_local_entries_of_the_routing_trie(tmp_path: Path) -> None:
    trie = tmp_path / "fib_trie"
    trie.write_text("Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n"
                    "     |-- 127.0.0.1\n        /32 host LOCAL\n     |-- 192.0.2.2\n        /32 host LOCAL\n"
                    "     |-- 192.0.2.0\n        /24 link UNICAST\n     |-- 10.0.2.100\n        /32 host LOCAL\n"
                    "Local:\n     |-- 198.51.100.7\n        /32 host LOCAL\n")
    assert host_addresses(trie) == ["192.0.2.2", "198.51.100.7"]
