"""Per-stage limits (issue 15): the app's ``limits:`` and ``stages.<name>.limits``, enforced by the
kernel (a cgroup per stage command, rlimits, OOM priority) and by a size check of the checkout; a
stage over a limit fails with one line naming it, and another app's run beside it is unharmed."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import textwrap
import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from sevenp_pipeline.config import ConfigError, load_app_config
from sevenp_pipeline.config.models import DEFAULT_LIMITS, Limits
from sevenp_pipeline.models import Workspace
from sevenp_pipeline.resources.processes import ExecuteRequest, Outcome, ProcessRunner
from sevenp_pipeline.resources.workspaces import Workspaces, disk_usage
from sevenp_pipeline.sandbox import LimitHit
from sevenp_pipeline.sandbox import init as sandbox_init
from sevenp_pipeline_tests.conftest import Pipeline

SMALL = Limits(memory_mb=128, pids=64, cpu_shares=256, disk_mb=10)
V1 = not Path("/sys/fs/cgroup/cgroup.controllers").exists()


def _cgroups() -> set[str]:
    """The stage cgroups that exist now (every controller's, v1 or v2)."""
    parents = [Path("/sys/fs/cgroup", c, "sevenp") for c in ("memory", "pids", "cpu")] if V1 \
        else [Path("/sys/fs/cgroup/sevenp")]
    return {str(p) for parent in parents if parent.is_dir() for p in parent.iterdir() if p.is_dir()}


def _left_behind(before: set[str]) -> list[str]:
    """Stage cgroups made since ``before`` that hold no process: left behind (a stage running at the
    same time, of another test, has its processes in its own)."""
    left = []
    for path in _cgroups() - before:
        try:
            if not Path(path, "cgroup.procs").read_text().strip():
                left.append(path)
        except OSError:
            continue  # removed meanwhile
    return left


# -- the config ---------------------------------------------------------------------------------------
def _app(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "app.yaml"
    path.write_text("name: web\nrepository: {url: /srv/web.git}\n" + textwrap.dedent(extra))
    return path


def test_limits_resolve_stage_over_app_over_defaults(tmp_path: Path) -> None:
    plain = load_app_config(_app(tmp_path, ""))
    assert plain.limits_of("unit_test_results") == plain.limits_of(None) == DEFAULT_LIMITS
    assert (DEFAULT_LIMITS.memory_mb, DEFAULT_LIMITS.pids, DEFAULT_LIMITS.cpu_shares, DEFAULT_LIMITS.disk_mb) == \
        (2048, 1024, 512, 4096)
    app = load_app_config(_app(tmp_path, """\
        limits: {memory_mb: 1024, pids: 256}
        stages:
          unit_test_results: {limits: {memory_mb: 3072, disk_mb: 100}}
        """))
    assert app.limits_of(None) == dataclasses.replace(DEFAULT_LIMITS, memory_mb=1024, pids=256)
    assert app.limits_of("unit_test_results") == dataclasses.replace(DEFAULT_LIMITS, memory_mb=3072, pids=256,
                                                                     disk_mb=100)
    assert app.limits_of("lint_report") == app.limits_of(None)


@pytest.mark.parametrize(("extra", "error"), [
    ("limits: {memroy_mb: 10}\n", r"app\.yaml: limits\.memroy_mb: unknown key"),
    ("stages:\n  lint_report: {limits: {pid: 10}}\n", r"app\.yaml: stages\.lint_report\.limits\.pid: unknown key"),
    ("limits: {pids: 3}\n", r"app\.yaml: limits\.pids: "),
])
def test_a_wrong_limit_is_named_with_its_file_and_key(tmp_path: Path, extra: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_app_config(_app(tmp_path, extra))


# -- the sandbox on real commands ---------------------------------------------------------------------
@pytest.fixture
def limited(tmp_path: Path):
    """run(script, limits) runs ``sh -c script`` the way a stage's command runs, within ``limits``."""
    home = tmp_path / "home"
    workspaces = Workspaces(root=str(home / "workspaces"), cache_root=str(home / "cache"),
                            private_paths=[str(home)])
    workspace = Workspace(root=home / "workspaces" / "app" / ("b" * 40))
    workspace.src.mkdir(parents=True)
    workspaces.hand_over(workspace.src)

    def run(script: str, limits: Limits = SMALL, timeout: float = 60) -> Outcome:
        room = workspaces.stage_room(workspace, "stage")
        spec, env = workspaces.stage_sandbox(workspace, room, cwd=workspace.src, node_modules=None, limits=limits)
        return ProcessRunner().run(ExecuteRequest(argv=["sh", "-c", textwrap.dedent(script)], cwd=workspace.src,
                                                  label="stage", env=env, inherit_env=False, sandbox=spec,
                                                  capture=True, timeout_seconds=timeout))

    run.workspace = workspace
    return run


def test_a_stage_runs_in_its_own_cgroup_with_its_limits_and_leaves_none(limited) -> None:
    before = _cgroups()
    outcome = limited("""\
        for line in $(cat /proc/self/cgroup); do
          case $line in *:memory:*|*:pids:*|*:cpu:*|0::/sevenp/*) echo "cgroup ${line#*:}";; esac
        done
        echo "oom_score_adj $(cat /proc/self/oom_score_adj)"
        echo "fsize $(bash -c 'ulimit -f') core $(bash -c 'ulimit -c')"
        """)
    assert outcome.ok, outcome.output
    lines = dict(line.split(" ", 1) for line in outcome.output if " " in line and not line.startswith("cgroup"))
    assert lines["oom_score_adj"] == "1000"
    assert lines["fsize"] == f"{SMALL.disk_mb * 1024} core 0"  # bash counts ulimit -f in KiB
    cgroups = [line.split(" ", 1)[1] for line in outcome.output if line.startswith("cgroup ")]
    if V1:
        paths = dict(c.split(":", 1) for c in cgroups)
        assert set(paths) == {"memory", "pids", "cpu"}, cgroups
        assert len({p for p in paths.values()}) == 1 and paths["memory"].startswith("/sevenp/")
    else:
        assert cgroups and cgroups[0].startswith(":/sevenp/")
    assert not outcome.limit_hits
    assert not _left_behind(before)  # removed after the stage
    assert not Path("/sys/fs/cgroup/pids" + cgroups[0].split(":", 1)[1] if V1 else
                    "/sys/fs/cgroup" + cgroups[0].split(":", 1)[1]).exists()


@pytest.mark.skipif(not V1, reason="reads cgroup v1 files; the v2 path has its own test on a stand-in tree")
def test_the_cgroup_holds_the_configured_values(limited) -> None:
    outcome = limited("""\
        at=$(grep :memory: /proc/self/cgroup | cut -d: -f3)
        cat /sys/fs/cgroup/memory$at/memory.limit_in_bytes /sys/fs/cgroup/pids$at/pids.max \
            /sys/fs/cgroup/cpu$at/cpu.shares
        """)
    assert outcome.output == (str(128 << 20), "64", "256"), outcome.output


def test_memory_over_the_limit_is_killed_and_named(limited) -> None:
    outcome = limited("""\
        python3 -c '
        chunks = []
        while True:
            chunks.append(bytearray(8 << 20))
        '""")
    assert not outcome.ok
    assert outcome.limit_hits and outcome.limit_hits[0].key == "memory_mb", outcome
    assert outcome.describe() == "stage: killed: memory over its limit of 128 MB (limits.memory_mb)"


def test_a_fork_bomb_is_stopped_at_the_pids_limit_and_named(limited) -> None:
    before = _cgroups()
    started = time.monotonic()
    outcome = limited("i=0; while [ $i -lt 500 ]; do sleep 30 & i=$((i+1)); done; wait")
    assert time.monotonic() - started < 20  # the shell could not fork: it did not wait for 500 sleeps
    assert not outcome.ok
    assert [h.key for h in outcome.limit_hits] == ["pids"], outcome
    assert outcome.describe() == "stage: could not start processes: 64 processes at once (limits.pids)"
    assert len(outcome.leftovers) >= 50  # the sleeps it did start, killed with the sandbox
    assert not _left_behind(before)


def test_a_file_over_disk_mb_kills_the_writer(limited) -> None:
    outcome = limited("exec head -c 11M /dev/zero > big")
    assert not outcome.ok
    assert [h.key for h in outcome.limit_hits] == ["disk_mb"]
    assert outcome.describe() == "stage: killed: a file over its limit of 10 MB (limits.disk_mb)"
    assert (limited.workspace.src / "big").stat().st_size == 10 << 20


def test_a_stale_cgroup_of_a_killed_sandbox_is_removed_and_a_busy_one_kept() -> None:
    parent = Path("/sys/fs/cgroup/pids/sevenp" if V1 else "/sys/fs/cgroup/sevenp")
    parent.mkdir(exist_ok=True)
    stale, busy = parent / "stale-test", parent / "busy-test"
    stale.mkdir()
    busy.mkdir()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (busy / "cgroup.procs").write_text(str(sleeper.pid))
        sandbox_init.remove_stale(str(parent))  # both are new: a sandbox may be about to fill them
        assert stale.is_dir() and busy.is_dir()
        sandbox_init.remove_stale(str(parent), now=time.time() + sandbox_init.CGROUP_STALE_SECONDS + 1)
        assert not stale.exists()
        assert busy.is_dir()  # it has a process
    finally:
        sleeper.kill()
        sleeper.wait()
        for _ in range(50):
            try:
                busy.rmdir()
                break
            except OSError:
                time.sleep(0.05)
        stale.rmdir() if stale.exists() else None
    assert not busy.exists()


def test_without_cgroups_the_sandbox_refuses_to_run_unlimited(tmp_path: Path) -> None:
    cgroup = sandbox_init.Cgroup(dataclasses.asdict(SMALL), root=str(tmp_path / "no-cgroup-fs"))
    Path(cgroup.root).write_text("a file, not the cgroup filesystem")
    with pytest.raises(sandbox_init.SandboxError, match=r"limits: cannot set up the stage's cgroup .*as root"):
        cgroup.create()


def test_cpu_shares_map_onto_v2_weights() -> None:
    assert sandbox_init.shares_to_weight(2) == 1
    assert sandbox_init.shares_to_weight(1024) == 39
    assert sandbox_init.shares_to_weight(262144) == 10000


def test_disk_usage_counts_blocks_once_and_follows_no_link(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "data").write_bytes(os.urandom(1 << 20))
    os.link(tree / "sub" / "data", tree / "hardlink")
    (tree / "outside").symlink_to(tmp_path)  # never followed
    (tree / "sparse").write_bytes(b"")
    os.truncate(tree / "sparse", 1 << 30)  # 1 GiB long, no blocks
    size = disk_usage(tree)
    assert 1 << 20 <= size < (1 << 20) + (64 << 10)
    assert disk_usage(tmp_path / "absent") == 0


def test_limit_hit_lines() -> None:
    assert LimitHit("memory_mb", 2048).describe("stages.unit_tests.limits.memory_mb to change") == (
        "killed: memory over its limit of 2048 MB (limits.memory_mb; stages.unit_tests.limits.memory_mb to change)")
    assert LimitHit("disk_mb", 100, measured=150).describe() == \
        "its checkout holds 150 MB, over its limit of 100 MB (limits.disk_mb)"


# -- stages of a pipeline ------------------------------------------------------------------------------
def _failures(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {e.step_key: str(e.step_failure_data.user_failure_data.description if e.step_failure_data.user_failure_data
                            else e.step_failure_data.error)
            for e in result.all_events if e.is_step_failure}


BOMBS = """\
    stages:
      memory_bomb:
        kind: command
        command: [node, -e, "const kept = []; for (;;) kept.push(Buffer.alloc(16 << 20, 1))"]
        limits: {memory_mb: 128}
        timeout_seconds: 60
      fork_bomb:
        kind: command
        command: [node, -e, "const {spawnSync} = require('child_process'); for (let i = 0; i < 300; i++) {
                  const r = spawnSync('sh', ['-c', 'sleep 30 & sleep 30 & sleep 30 &'], {stdio: 'ignore'});
                  if (r.error || r.status !== 0) { console.error('fork failed:', r.error || r.status);
                  process.exit(1) } }"]
        limits: {pids: 64}
        timeout_seconds: 60
      fill_checkout:
        kind: command
        command: [node, -e, "for (const n of [1, 2, 3])
                  require('fs').writeFileSync('blob' + n, Buffer.alloc(3 << 20, 1))"]
        limits: {disk_mb: 8}
    """


@pytest.mark.integration
def test_bombs_fail_their_stages_by_name_while_another_apps_run_succeeds(make_pipeline, tmp_path: Path) -> None:
    bombs = make_pipeline(BOMBS)
    other = make_pipeline(name="other-app")
    other = dataclasses.replace(other, instance=dg.DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster-other")))
    bomb_sha = bombs.remote.push("feature/bombs")
    other_sha = other.remote.push("main")
    assert bombs.materialize(bomb_sha, "source_checkout,node_dependencies").success
    before = _cgroups()
    results: dict[str, dg.ExecuteInProcessResult] = {}

    def materialize(name: str, pipe: Pipeline, sha: str, selection: str) -> None:
        results[name] = pipe.materialize(sha, selection)

    threads = [
        threading.Thread(target=materialize, args=("bombs", bombs, bomb_sha, "memory_bomb,fork_bomb,fill_checkout")),
        threading.Thread(target=materialize, args=("other", other, other_sha,
                                                   "source_checkout,node_dependencies,unit_test_results")),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert results["other"].success
    failures = _failures(results["bombs"])
    lines = {step.rsplit("__", 1)[-1]: text for step, text in failures.items()}
    assert lines["memory_bomb"] == ("memory_bomb: killed: memory over its limit of 128 MB "
                                    "(limits.memory_mb; stages.memory_bomb.limits.memory_mb to change)"), lines
    assert lines["fork_bomb"] == ("fork_bomb: could not start processes: 64 processes at once "
                                  "(limits.pids; stages.fork_bomb.limits.pids to change)"), lines
    assert lines["fill_checkout"].startswith("fill_checkout: its checkout holds "), lines
    assert lines["fill_checkout"].endswith(" MB, over its limit of 8 MB "
                                           "(limits.disk_mb; stages.fill_checkout.limits.disk_mb to change)")
    held = int(lines["fill_checkout"].split("holds ")[1].split(" ")[0])
    assert 9 <= held < 20, lines["fill_checkout"]
    assert not _left_behind(before)
    # The kernel would pick a stage before the orchestrator: every stage command ran at 1000.
    assert int(Path("/proc/self/oom_score_adj").read_text()) < 1000
    assert "sleep 30 " not in _stage_processes(), "the fork bomb's sleeps outlived it"


def _stage_processes() -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            found.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return found


def test_sigxfsz_is_the_default_in_the_command(limited) -> None:
    """Python (the orchestrator) ignores SIGXFSZ; the command must not inherit that, or a write past
    disk_mb would fail with EFBIG and go on instead of ending the writer."""
    outcome = limited("grep SigIgn /proc/self/status")
    ignored = int(outcome.output[0].split()[1], 16)
    assert not ignored & (1 << (signal.SIGXFSZ - 1))


@pytest.mark.integration
def test_an_install_that_fills_the_checkout_fails_naming_disk_mb(make_pipeline) -> None:
    """The install stage writes node_modules into the checkout: it counts, before it moves to the cache."""
    pipe = make_pipeline("""\
        stages:
          node_dependencies:
            command: [node, -e, "const fs = require('fs'); fs.mkdirSync('node_modules/big', {recursive: true});
                      for (const n of [1, 2, 3]) fs.writeFileSync('node_modules/big/' + n, Buffer.alloc(900 << 10, 1))"]
            limits: {disk_mb: 2}
        """)
    sha = pipe.remote.push("feature/heavy-install")
    result = pipe.materialize(sha, "source_checkout,node_dependencies")
    assert not result.success
    (line,) = _failures(result).values()
    assert line.startswith("node_dependencies: its checkout holds "), line
    assert line.endswith(" MB, over its limit of 2 MB (limits.disk_mb; stages.node_dependencies.limits.disk_mb "
                         "to change)"), line


def test_cgroup_v2_layout_on_a_stand_in_tree(tmp_path: Path) -> None:
    """The v2 path (these machines mount v1), on a folder shaped like /sys/fs/cgroup: the controllers
    are enabled on the way down, the limits written under their v2 names, the counters read back."""
    root = tmp_path / "cgroup"
    (root / "sevenp").mkdir(parents=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    (root / "cgroup.subtree_control").write_text("memory\n")
    (root / "sevenp" / "cgroup.subtree_control").write_text("")
    cgroup = sandbox_init.Cgroup(dataclasses.asdict(SMALL), root=str(root))
    cgroup.create()
    (path,) = (Path(d) for d in cgroup.dirs)
    assert path.parent == root / "sevenp"
    assert {f.name: f.read_text() for f in path.iterdir()} == {
        "memory.max": str(128 << 20), "pids.max": "64", "cpu.weight": str(sandbox_init.shares_to_weight(256))}
    assert (root / "cgroup.subtree_control").read_text() == "+pids +cpu"  # memory was on already
    assert (root / "sevenp" / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 12\noom 1\noom_kill 1\n")
    (path / "pids.events").write_text("max 0\n")
    assert cgroup.hits(0) == [{"limit": "memory_mb", "value": 128, "events": 1}]
    for name in path.iterdir():
        name.unlink()
    cgroup.remove()
    assert not path.exists()
