"""What building as root of a user namespace, in a store of its own, costs over building as host root.

  .venv/bin/python benchmarks/build_isolation.py [--rounds 5]

One fresh home (registry, bootstrapped Node base). The same small Dockerfile (a COPY of a context
with a few hundred files, a RUN that writes into the image) is built alternately by the builder as
shipped (``userns: true``: a copy of the context, a sandbox per buildah call, its own store) and by
the same builder with ``userns: false`` (host root, the builder's own store), side by side in one
run. A build arg changes every round, so the RUN step is never a cached layer; the base image is in
both stores before the first timed round. Prints the medians and their ratio:

  RESULT build_host_root_s=...     RESULT build_userns_s=...     RESULT build_userns_ratio=...
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sevenp_pipeline_tests.containers import container_stack

DOCKERFILE = """ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG ROUND
COPY src /app/src
RUN node -e "require('fs').writeFileSync('/app/round', process.env.ROUND || '')" && ls /app/src | wc -l
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with container_stack(prefix="sevenp-bench-build-") as stack, tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp)
        (context / "Dockerfile").write_text(DOCKERFILE)
        for i in range(300):
            path = context / "src" / f"m{i // 30}" / f"f{i}.js"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"module.exports = {i};\n" * 20)
        builders = {"host_root": stack.builder.model_copy(update={"userns": False}), "userns": stack.builder}
        times: dict[str, list[float]] = {name: [] for name in builders}
        for round_ in range(args.rounds + 1):  # round 0 warms both stores (base image pulled and handed over)
            for name, builder in builders.items():
                started = time.monotonic()
                builder.build(context_dir=context, dockerfile=context / "Dockerfile",
                              image_name=f"localhost/bench/isolation-{name}:r{round_}",
                              build_args={"BASE_IMAGE": stack.base.ref or "", "ROUND": f"{name}-{round_}"}, labels={})
                if round_:
                    times[name].append(time.monotonic() - started)
        host, userns = (statistics.median(times[n]) for n in ("host_root", "userns"))
        print(f"{args.rounds} rounds, alternating; median build: host root {host:.2f} s, user namespace {userns:.2f} s")
        print(f"RESULT build_host_root_s={host:.2f}")
        print(f"RESULT build_userns_s={userns:.2f}")
        print(f"RESULT build_userns_ratio={userns / host:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
