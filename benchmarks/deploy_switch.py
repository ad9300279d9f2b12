"""Blue-green on the local deploy target under load: failed requests and timings.

Sets up its own home, registry, bootstrapped Node base and the deploy tests' images (v1, v2, broken),
then sends requests through the front door on 4 client threads (no keep-alive) during
(a) a blue-green switch v1 -> v2 and (b) a deploy of the broken image, whose health check fails.
Prints ``RESULT`` lines; removes everything it started.

    .venv/bin/python benchmarks/deploy_switch.py [--threads 4] [--min-requests 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sevenp_pipeline.config import load_app_config
from sevenp_pipeline.deploy.targets.local.target import LocalTarget
from sevenp_pipeline.deploy.targets.role import Rollout
from sevenp_pipeline_tests.containers import container_stack, publish_deploy_images

V1, V2, V3 = "a1" * 20, "b2" * 20, "c3" * 20


class Load:
    def __init__(self, url: str, threads: int) -> None:
        self.url = url
        self.ok: Counter[str] = Counter()
        self.failed: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, daemon=True) for _ in range(threads)]

    def total(self) -> int:
        with self._lock:
            return sum(self.ok.values()) + len(self.failed)

    def _loop(self) -> None:
        while not self._stop.is_set():
            request = urllib.request.Request(self.url, headers={"Connection": "close"})
            try:
                with urllib.request.urlopen(request, timeout=5) as response:
                    response.read()
                    with self._lock:
                        self.ok[response.headers.get("X-Sevenp-Release", "")[:8]] += 1
            except (urllib.error.URLError, OSError) as exc:
                with self._lock:
                    self.failed.append(str(exc))

    def run_during(self, action, min_requests: int):
        for thread in self._threads:
            thread.start()
        time.sleep(0.3)
        try:
            result = action()
            while self.total() < min_requests:  # a bounded loop: at least min_requests, then stop
                time.sleep(0.05)
        finally:
            self._stop.set()
            for thread in self._threads:
                thread.join(10)
        return result


def app_config(folder: Path):
    path = folder / "bench-app.yaml"
    path.write_text(textwrap.dedent("""\
        name: bench-app
        repository:
          url: https://example.invalid/bench-app.git
        stages: {}
        image:
          repository: sevenp/deploy-test
        deploy:
          health: {path: /health, attempts: 10, interval_seconds: 0.25, timeout_seconds: 2}
          keep_previous_seconds: 2
          stop_timeout_seconds: 2
          smoke: null
        environments:
          bench:
            target: local
        """))
    return load_app_config(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--min-requests", type=int, default=1000)
    args = parser.parse_args()
    quiet = lambda _: None  # noqa: E731
    started = time.monotonic()
    with container_stack(prefix="sevenp-bench-deploy-") as stack, tempfile.TemporaryDirectory() as tmp:
        images = publish_deploy_images(stack)
        print(f"setup (registry, base image, 3 app images): {time.monotonic() - started:.1f}s")
        target = LocalTarget(home=stack.home, app=app_config(Path(tmp)), environment="bench", runner=stack.runner)

        def rollout(image, commit: str) -> Rollout:
            return Rollout(app="bench-app", environment="bench", commit=commit, image_ref=image.ref,
                           image_digest=image.digest, run_id="bench")

        try:
            first_started = time.monotonic()
            first = target.deploy(rollout(images.v1, V1), smoke=None, log=quiet)
            assert first.ok, first.reason
            print(f"first deploy (services, front door, v1): {time.monotonic() - first_started:.1f}s")

            load = Load(target.url() + "/", args.threads)
            t0 = time.monotonic()
            switch = load.run_during(lambda: target.deploy(rollout(images.v2, V2), smoke=None, log=quiet),
                                     args.min_requests)
            seconds = time.monotonic() - t0
            assert switch.ok, switch.reason
            total_a = load.total()
            print(f"(a) blue-green v1 -> v2: deploy {sum(1 for _ in switch.steps)} steps, "
                  f"{total_a} requests in {seconds:.1f}s ({total_a / seconds:.0f}/s), by release {dict(load.ok)}, "
                  f"failed {len(load.failed)} {load.failed[:3]}")

            load_b = Load(target.url() + "/", args.threads)
            timing: dict[str, float] = {}

            def broken() -> object:
                begin = time.monotonic()
                outcome = target.deploy(rollout(images.broken, V3), smoke=None, log=quiet)
                timing["rollback_s"] = time.monotonic() - begin
                return outcome

            t0 = time.monotonic()
            rolled = load_b.run_during(broken, args.min_requests)
            seconds_b = time.monotonic() - t0
            assert not rolled.ok and rolled.rolled_back, rolled
            assert target.current() == switch.live
            total_b = load_b.total()
            print(f"(b) broken image rolled back: {rolled.reason[:120]}")
            print(f"    {total_b} requests in {seconds_b:.1f}s, by release {dict(load_b.ok)}, "
                  f"failed {len(load_b.failed)} {load_b.failed[:3]}")
            print(f"RESULT bluegreen_failed_requests={len(load.failed)}")
            print(f"RESULT switch_s={switch.switch_seconds:.3f}")
            print(f"RESULT rollback_failed_requests={len(load_b.failed)}")
            print(f"RESULT rollback_s={timing['rollback_s']:.2f}")
            print(f"RESULT total_requests={total_a + total_b}")
        finally:
            target.destroy()
    print(f"total: {time.monotonic() - started:.1f}s (everything started was removed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
