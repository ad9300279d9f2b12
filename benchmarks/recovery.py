"""Recovery after ``kill -9``: how long each supervised process is down, and what an nginx kill costs
the front door's clients.

Runs two measurements side by side in one invocation, each setting up and removing what it uses:

- the Dagster stack (benchmarks/recovery_stack.py): daemon, webserver, code server, image registry;
- a deployed local environment under the load of ``make bench-deploy`` (benchmarks/recovery_envs.py):
  its nginx front door (master and workers), PostgreSQL and Redis.

Prints ``RESULT recovery_s_<component>=<seconds>`` for each, and ``RESULT failed_requests_nginx_kill``
beside ``RESULT requests_per_s`` (the load's rate: the target is at most one second's worth).

    .venv/bin/python benchmarks/recovery.py [--only stack|envs]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["stack", "envs"])
    args = parser.parse_args()
    figures: dict[str, float] = {}
    if args.only in (None, "stack"):
        import recovery_stack  # noqa: PLC0415 (benchmarks/ is not a package)

        figures.update({f"recovery_s_{name}": s for name, s in recovery_stack.measure().items()})
    if args.only in (None, "envs"):
        import recovery_envs  # noqa: PLC0415

        figures.update(recovery_envs.measure())
    print("\nsummary (all components, one run):")
    for name, value in figures.items():
        print(f"RESULT {name}={value:.3f}".rstrip("0").rstrip("."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
