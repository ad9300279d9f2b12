"""What the per-stage limits cost: the cgroup (made, entered, read and removed per command) and the
size check of a checkout after each stage.

  .venv/bin/python benchmarks/stage_limits.py [--rounds 20] [--tree PATH]

- ``true`` sandboxed without and with limits, interleaved, medians: the cgroup's fixed cost;
- ``disk_usage`` of a tree: the machine's npm (``/usr/lib/node_modules``, a real node_modules tree)
  or ``--tree``; as ms per 10,000 entries, what the check costs an install stage (its checkout holds
  node_modules) and every other stage (a checkout without it).
Prints ``RESULT limits_overhead_ms=...``, ``RESULT checkout_scan_ms_per_10k_entries=...``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sevenp_pipeline.config.models import DEFAULT_LIMITS
from sevenp_pipeline.models import Workspace
from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessRunner
from sevenp_pipeline.resources.workspaces import Workspaces, disk_usage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--tree", type=Path, default=Path("/usr/lib/node_modules"))
    args = parser.parse_args()
    runner = ProcessRunner()
    with tempfile.TemporaryDirectory() as tmp:  # under /tmp, which the sandbox covers: its path is traversable
        home = Path(tmp) / "home"
        workspaces = Workspaces(root=str(home / "workspaces"), cache_root=str(home / "cache"),
                                private_paths=[str(home)])
        workspace = Workspace(root=home / "workspaces" / "app" / ("c" * 40))
        workspace.src.mkdir(parents=True)
        workspaces.hand_over(workspace.src)

        def once(limited: bool) -> float:
            room = workspaces.stage_room(workspace, "bench")
            spec, env = workspaces.stage_sandbox(workspace, room, cwd=workspace.src, node_modules=None,
                                                 limits=DEFAULT_LIMITS if limited else None)
            started = time.perf_counter()
            outcome = runner.run(ExecuteRequest(argv=["true"], cwd=workspace.src, label="bench", env=env,
                                                inherit_env=False, sandbox=spec))
            took = (time.perf_counter() - started) * 1000
            assert outcome.ok, outcome.describe()
            return took

        plain, limited = [], []
        once(False)
        once(True)
        for _ in range(args.rounds):
            plain.append(once(False))
            limited.append(once(True))
    entries = sum(len(dirs) + len(files) for _, dirs, files in os.walk(args.tree))
    scans = []
    for _ in range(5):
        started = time.perf_counter()
        size = disk_usage(args.tree)
        scans.append((time.perf_counter() - started) * 1000)
    scan = statistics.median(scans)
    print(f"true sandboxed, no limits      {statistics.median(plain):8.1f} ms")
    print(f"true sandboxed, with limits    {statistics.median(limited):8.1f} ms")
    print(f"disk_usage({args.tree}): {entries} entries, {size / 2**20:.1f} MB, {scan:.1f} ms")
    print(f"RESULT limits_overhead_ms={statistics.median(limited) - statistics.median(plain):.1f}")
    print(f"RESULT checkout_scan_ms_per_10k_entries={scan / entries * 10_000:.1f}")


if __name__ == "__main__":
    main()
