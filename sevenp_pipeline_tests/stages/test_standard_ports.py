"""Standard ports inside the stage: an app that hard-codes ``localhost:5432`` and ``localhost:6379``
reaches its own stage's PostgreSQL and Redis there, relayed to the servers' random host ports, while
a second such stage runs at the same time against servers of its own."""

from __future__ import annotations

import json
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sevenp_pipeline.models import Workspace
from sevenp_pipeline.resources.processes import ExecuteRequest, Outcome, ProcessRunner
from sevenp_pipeline.resources.services import TestServices
from sevenp_pipeline.resources.workspaces import Workspaces
from sevenp_pipeline.sandbox import Network
from sevenp_pipeline_tests.conftest import reachable_home

pytestmark = pytest.mark.integration

# What an app with hard-coded addresses does: Redis at localhost:6379 (INCR twice, apart, so two
# stages sharing one server would see each other's counts), PostgreSQL at localhost:5432 (a real
# login with the stage's user and password, through psql).
APP = textwrap.dedent("""\
    const net = require("net");
    const { execFileSync } = require("child_process");
    function redis(command) {
      return new Promise((resolve, reject) => {
        const sock = net.connect({ host: "localhost", port: 6379 }, () => sock.write(command + "\\r\\n"));
        sock.once("data", (d) => { resolve(d.toString().trim()); sock.destroy(); });
        sock.once("error", reject);
      });
    }
    (async () => {
      const start = Date.now();
      const first = await redis("INCR hits");
      await new Promise((r) => setTimeout(r, 2500));
      const second = await redis("INCR hits");
      const db = execFileSync("psql", ["-X", "-tA", "-h", "localhost", "-p", "5432", "-c",
        "select current_database() || ' ' || current_setting('port')"], { encoding: "utf8" }).trim();
      console.log(JSON.stringify({ first, second, db, start, end: Date.now() }));
    })().catch((e) => { console.error(String(e)); process.exit(1); });
""")


@pytest.fixture
def home() -> Iterator[Path]:
    with reachable_home() as path:
        yield path


def _stage(home: Path, workspaces: Workspaces, name: str, results: dict[str, Outcome | BaseException],
           ports: dict[str, tuple], together: threading.Barrier) -> None:
    try:
        workspace = Workspace(root=home / "workspaces" / "app" / name.ljust(40, "0"))
        workspace.src.mkdir(parents=True)
        (workspace.src / "app.js").write_text(APP)
        workspaces.hand_over(workspace.src)
        services = TestServices(runner=ProcessRunner(), root_dir=str(home / "services"))
        with services.provide(["postgresql", "redis"], standard_ports=True) as endpoints:
            ports[name] = endpoints.ports
            together.wait(timeout=120)  # both stages' servers are up: run the two apps at once
            room = workspaces.stage_room(workspace, name)
            spec, env = workspaces.stage_sandbox(workspace, room, cwd=workspace.src, node_modules=None,
                                                 network=Network(forwards=endpoints.ports))
            results[name] = ProcessRunner().run(ExecuteRequest(
                argv=["node", "app.js"], cwd=workspace.src, label=name, inherit_env=False, sandbox=spec,
                env={**env, **endpoints.env}, secrets=endpoints.secrets, capture=True,
                timeout_seconds=60))
    except BaseException as exc:  # reported by the test, not lost in the thread
        together.abort()
        results[name] = exc


def _answer(outcome: Outcome) -> dict:
    return json.loads(next(line for line in outcome.output if line.startswith("{")))


def test_two_stages_at_once_each_reach_their_own_servers_on_the_standard_ports(home: Path) -> None:
    workspaces = Workspaces(root=str(home / "workspaces"), cache_root=str(home / "cache"),
                            private_paths=[str(home / "workspaces"), str(home / "cache")])
    results: dict[str, Outcome | BaseException] = {}
    ports: dict[str, tuple] = {}
    together = threading.Barrier(2)
    threads = [threading.Thread(target=_stage, args=(home, workspaces, n, results, ports, together))
               for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    answers = {}
    for name in ("a", "b"):
        outcome = results[name]
        assert not isinstance(outcome, BaseException), outcome
        assert outcome.ok, outcome.tail_text(20)
        answers[name] = _answer(outcome)
    # The two apps ran at the same time, and each Redis counted only its own INCRs: two servers.
    a, b = answers["a"], answers["b"]
    assert a["start"] < b["end"] and b["start"] < a["end"], answers
    assert [(x["first"], x["second"]) for x in (a, b)] == [(":1", ":2"), (":1", ":2")], answers
    # Inside, both saw 5432 and 6379; outside, four servers on four random ports, none standard.
    inside = {name: sorted(p[0] for p in pairs) for name, pairs in ports.items()}
    assert inside == {"a": [5432, 6379], "b": [5432, 6379]}
    host_ports = [p[1] for pairs in ports.values() for p in pairs]
    assert len(set(host_ports)) == 4 and not {5432, 6379} & set(host_ports)
    for name in ("a", "b"):  # psql at localhost:5432 reached this stage's own server
        assert answers[name]["db"] == f"test_db {dict(ports[name])[5432]}", answers
