"""What the stage sandbox costs per stage, measured side by side with the same commands run bare.

  .venv/bin/python benchmarks/sandbox_cost.py [--rounds 20]

Interleaved in one process, on a checkout of the sample app with its dependencies installed:
- ``true`` bare vs sandboxed: the fixed cost of unshare + pid 1 + mounts + the user switch;
- ``node -e 0`` and ``npm run --silent lint`` (the sample app's ESLint) bare vs sandboxed: what a
  real stage pays, as a ratio;
- the network namespace: ``true`` with one forwarded port (a stage with a test service) and with a
  route out (slirp4netns, the install stage), and the relay's cost per request/response round trip
  (a node client doing 2000 small round trips to an echo server on host loopback, bare vs from inside);
- preparing a stage's room (fresh HOME/TMPDIR/layer, chowned) and handing a checkout to the stage
  user (chown -R of the tree).
Prints ``RESULT sandbox_overhead_ms=...`` (network namespace included), ``RESULT sandboxed_lint_ratio=...``,
``RESULT forwarded_overhead_ms``, ``RESULT outbound_overhead_ms``, ``RESULT relay_roundtrip_ratio`` and the others.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sevenp_pipeline.models import Workspace
from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessRunner
from sevenp_pipeline.resources.workspaces import Workspaces, record_inputs
from sevenp_pipeline.sandbox import Network

SAMPLE = Path(__file__).resolve().parents[1] / "examples" / "7p-education-api"
ROUND_TRIPS = 2000
CLIENT = """
const net = require("net");
const [port, trips] = process.argv.slice(1).map(Number);
const sock = net.connect(port, "127.0.0.1", () => {
  sock.setNoDelay(true);
  let left = trips;
  const started = process.hrtime.bigint();
  sock.on("data", () => {
    if (--left === 0) {
      console.log(Number(process.hrtime.bigint() - started) / 1000 / trips);
      sock.end();
    } else sock.write("ping");
  });
  sock.write("ping");
});
"""


def echo_server() -> int:
    """An echo server on host loopback (a stand-in for a test database): returns its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)

    def serve(conn: socket.socket) -> None:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while data := conn.recv(4096):
                conn.sendall(data)

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return int(server.getsockname()[1])


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

    # The network namespace's variants, interleaved with the plain sandboxed `true` (no port, no route).
    port = echo_server()
    networks = {"none": Network(), "forward": Network(forwards=(port,)), "outbound": Network(outbound=True)}
    net_ms: dict[str, list[float]] = {name: [] for name in networks}
    trip_us: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(rounds):
        for name, network in networks.items():
            room = workspaces.stage_room(workspace, f"net-{name}")
            spec, env = workspaces.stage_sandbox(workspace, room, cwd=workspace.src, node_modules=tree,
                                                 network=network)
            outcome = runner.run(ExecuteRequest(argv=["true"], cwd=workspace.src, label=name, env=env,
                                                inherit_env=False, sandbox=spec, capture=True))
            if not outcome.ok:
                raise SystemExit(f"true with network {name} failed:\n" + outcome.tail_text())
            net_ms[name].append(outcome.duration * 1000)
    for _ in range(max(3, rounds // 4)):
        for sandboxed in (False, True):
            room = workspaces.stage_room(workspace, "relay")
            spec, env = workspaces.stage_sandbox(workspace, room, cwd=workspace.src, node_modules=tree,
                                                 network=Network(forwards=(port,)))
            outcome = runner.run(ExecuteRequest(
                argv=["node", "-e", CLIENT, str(port), str(ROUND_TRIPS)], cwd=workspace.src, label="relay",
                env=env, inherit_env=False, sandbox=spec if sandboxed else None, capture=True))
            if not outcome.ok:
                raise SystemExit("round-trip client failed:\n" + outcome.tail_text())
            trip_us[sandboxed].append(float(outcome.tail_text(1).strip()))

    def median(name: str, sandboxed: bool) -> float:
        return statistics.median(times[(name, sandboxed)])

    print(f"\n{rounds} rounds, interleaved, medians:")
    print(f"{'command':<28}{'bare ms':>10}{'sandboxed ms':>14}{'ratio':>8}")
    for name, argv in commands.items():
        bare, boxed = median(name, False), median(name, True)
        print(f"{' '.join(argv):<28}{bare:>10.1f}{boxed:>14.1f}{boxed / bare:>8.2f}")
    base = statistics.median(net_ms["none"])
    print(f"true, own network namespace only: {base:.1f} ms; with one forwarded port: "
          f"{statistics.median(net_ms['forward']):.1f} ms; outbound (slirp4netns): "
          f"{statistics.median(net_ms['outbound']):.1f} ms")
    bare_trip, relayed_trip = statistics.median(trip_us[False]), statistics.median(trip_us[True])
    print(f"request/response round trip to a host loopback server: bare {bare_trip:.1f} us, "
          f"relayed into the namespace {relayed_trip:.1f} us")
    print(f"stage room (HOME, TMPDIR, layer; chowned): {statistics.median(room_ms):.1f} ms")
    print(f"checkout handed to the stage user: {hand_over_ms:.1f} ms for {files} files")
    print(f"RESULT sandbox_overhead_ms={median('true', True) - median('true', False):.1f}")
    print(f"RESULT sandboxed_node_ratio={median('node', True) / median('node', False):.3f}")
    print(f"RESULT sandboxed_lint_ratio={median('lint', True) / median('lint', False):.3f}")
    print(f"RESULT forwarded_overhead_ms={statistics.median(net_ms['forward']) - median('true', False):.1f}")
    print(f"RESULT outbound_overhead_ms={statistics.median(net_ms['outbound']) - median('true', False):.1f}")
    print(f"RESULT relay_roundtrip_us={relayed_trip:.1f}")
    print(f"RESULT relay_roundtrip_ratio={relayed_trip / bare_trip:.2f}")
    print(f"RESULT stage_room_ms={statistics.median(room_ms):.1f}")
    print(f"RESULT checkout_hand_over_ms={hand_over_ms:.1f}")


if __name__ == "__main__":
    main()
