"""What the stage sandbox costs per stage, measured side by side with the same commands run bare.

  .venv/bin/python benchmarks/sandbox_cost.py [--rounds 20]

Interleaved in one process, on a checkout of the sample app with its dependencies installed:
- ``true`` bare vs sandboxed: the fixed cost of unshare + pid 1 + mounts + the user switch;
- ``node -e 0`` and ``npm run --silent lint`` (the sample app's ESLint) bare vs sandboxed: what a
  real stage pays, as a ratio;
- preparing a stage's room (fresh HOME/TMPDIR/layer, chowned) and handing a checkout to the stage
  user (chown -R of the tree).
Prints ``RESULT sandbox_overhead_ms=...``, ``RESULT sandboxed_lint_ratio=...`` and the others.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sevenp_pipeline.models import Workspace
from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessRunner
from sevenp_pipeline.resources.workspaces import Workspaces, record_inputs

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "7p-education-api"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="sevenp-sandbox-bench-", dir=Path.cwd()))
    try:
        run(home, args.rounds)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(home: Path, rounds: int) -> None:
    workspaces = Workspaces(root=str(home / "workspaces"), cache_root=str(home / "cache"),
                            private_paths=[str(home)])
    workspace = Workspace(root=home / "workspaces" / "app" / ("0" * 40))
    shutil.copytree(SAMPLE, workspace.src, ignore=shutil.ignore_patterns("node_modules", "dist", "coverage",
                                                                         "reports", "docs"))
    print("installing the sample app's dependencies (npm ci) ...", flush=True)
    tree = home / "cache" / "node_modules" / "bench" / "node_modules"
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=workspace.src, check=True)
    tree.parent.mkdir(parents=True)
    shutil.move(workspace.src / "node_modules", tree)
    workspaces.user.own(tree, recursive=True)
    (workspace.src / "node_modules").mkdir()
    record_inputs(workspace, node_modules=str(tree))

    started = time.perf_counter()
    workspaces.hand_over(workspace.src)
    hand_over_ms = (time.perf_counter() - started) * 1000
    files = sum(1 for _ in workspace.src.rglob("*"))

    runner = ProcessRunner()
    commands = {"true": ["true"], "node": ["node", "-e", "0"], "lint": ["npm", "run", "--silent", "lint"]}
    times: dict[tuple[str, bool], list[float]] = {(c, s): [] for c in commands for s in (False, True)}
    room_ms: list[float] = []
    for _ in range(rounds):
        for name, argv in commands.items():
            for sandboxed in (False, True):
                started = time.perf_counter()
                room = workspaces.stage_room(workspace, name)
                spec, env = workspaces.stage_sandbox(workspace, room, cwd=workspace.src, node_modules=tree)
                if sandboxed:
                    room_ms.append((time.perf_counter() - started) * 1000)
                else:  # bare: the same command as root with the same env, node_modules a plain link
                    spec = None
                request = ExecuteRequest(argv=argv, cwd=workspace.src, label=name, env=env, inherit_env=False,
                                         sandbox=spec, capture=True)
                if not sandboxed and name == "lint":  # eslint resolves from ./node_modules: bind the cache
                    (workspace.src / "node_modules").rmdir()
                    (workspace.src / "node_modules").symlink_to(tree)
                outcome = runner.run(request)
                if not sandboxed and name == "lint":
                    (workspace.src / "node_modules").unlink()
                    (workspace.src / "node_modules").mkdir()
                if not outcome.ok:
                    raise SystemExit(f"{name} ({'sandboxed' if sandboxed else 'bare'}) failed:\n"
                                     + outcome.tail_text())
                times[(name, sandboxed)].append(outcome.duration * 1000)

    def median(name: str, sandboxed: bool) -> float:
        return statistics.median(times[(name, sandboxed)])

    print(f"\n{rounds} rounds, interleaved, medians:")
    print(f"{'command':<28}{'bare ms':>10}{'sandboxed ms':>14}{'ratio':>8}")
    for name, argv in commands.items():
        bare, boxed = median(name, False), median(name, True)
        print(f"{' '.join(argv):<28}{bare:>10.1f}{boxed:>14.1f}{boxed / bare:>8.2f}")
    print(f"stage room (HOME, TMPDIR, layer; chowned): {statistics.median(room_ms):.1f} ms")
    print(f"checkout handed to the stage user: {hand_over_ms:.1f} ms for {files} files")
    print(f"RESULT sandbox_overhead_ms={median('true', True) - median('true', False):.1f}")
    print(f"RESULT sandboxed_node_ratio={median('node', True) / median('node', False):.3f}")
    print(f"RESULT sandboxed_lint_ratio={median('lint', True) / median('lint', False):.3f}")
    print(f"RESULT stage_room_ms={statistics.median(room_ms):.1f}")
    print(f"RESULT checkout_hand_over_ms={hand_over_ms:.1f}")


if __name__ == "__main__":
    main()
