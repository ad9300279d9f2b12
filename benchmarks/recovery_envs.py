"""An environment's servers killed with SIGKILL: failed requests and seconds until each answers again.

Sets up its own home, registry and the deploy tests' images like ``make bench-deploy``
(benchmarks/deploy_switch.py), deploys v1 to a local environment (nginx, PostgreSQL and Redis under the
environment's keeper) and puts the same load on the front door: 4 client threads, no keep-alive. Then:

- ``kill -9`` of nginx's master and every worker at once: seconds until a fresh request through the front
  door is answered by the release again, and requests that failed (of all sent during the load);
- ``kill -9`` of PostgreSQL, then of Redis: seconds until each takes a connection and answers again
  (PostgreSQL: its authentication request; Redis: AUTH + PING);
- ``kill -9`` of the live release container's first process: seconds until the release answers through
  the front door again (podman's restart policy).

Prints ``RESULT`` lines (``requests_per_s`` is the load's rate before the kill, so that "failed requests
≤ 1 s worth of load" can be judged); removes everything it started.

    .venv/bin/python benchmarks/recovery_envs.py [--threads 4] [--seconds 3]
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_switch import V1, Load, app_config

from sevenp_pipeline.deploy.targets.local.target import LocalTarget
from sevenp_pipeline.deploy.targets.role import Rollout
from sevenp_pipeline_tests.containers import container_stack, publish_deploy_images


def _answers(url: str) -> bool:
    request = urllib.request.Request(url, headers={"Connection": "close"})
    try:
        with urllib.request.urlopen(request, timeout=1) as response:
            response.read()
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _until(predicate, timeout: float = 30.0, interval: float = 0.005) -> float:
    """Seconds until ``predicate()`` holds (polled every ``interval``); raises after ``timeout``."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"not back after {timeout:.0f}s")
        time.sleep(interval)
    return time.monotonic() - started


def measure(*, threads: int = 4, seconds: float = 3.0, log=print) -> dict[str, float]:
    """Deploys the sample app, kills its nginx, PostgreSQL and Redis in turn; returns the figures."""
    quiet = lambda _: None  # noqa: E731
    results: dict[str, float] = {}
    with container_stack(prefix="sevenp-bench-recovery-") as stack, tempfile.TemporaryDirectory() as tmp:
        images = publish_deploy_images(stack)
        target = LocalTarget(home=stack.home, app=app_config(Path(tmp)), environment="bench", runner=stack.runner)
        try:
            first = target.deploy(Rollout(app="bench-app", environment="bench", commit=V1, image_ref=images.v1.ref,
                                          image_digest=images.v1.digest, run_id="bench"), smoke=None, log=quiet)
            assert first.ok, first.reason
            url = target.url() + "/"
            front = target.front_door()
            load = Load(url, threads)
            timing: dict[str, float] = {}

            def kill_nginx() -> None:
                t0, n0 = time.monotonic(), load.total()
                time.sleep(seconds)  # the load's rate before the kill
                timing["rate"] = (load.total() - n0) / (time.monotonic() - t0)
                pids = [front.running_pid(), *front.workers()]
                for pid in pids:
                    if pid:
                        os.kill(pid, signal.SIGKILL)
                timing["recovery"] = _until(lambda: _answers(url))
                timing["killed"] = len(pids)
                time.sleep(seconds)  # and the load after it

            load.run_during(kill_nginx, 0)
            results["requests_per_s"] = timing["rate"]
            results["recovery_s_nginx"] = timing["recovery"]
            results["failed_requests_nginx_kill"] = float(len(load.failed))
            log(f"nginx: {timing['killed']:.0f} processes killed; {load.total()} requests, "
                f"{len(load.failed)} failed {sorted(set(load.failed))[:2]}; back in {timing['recovery']:.3f}s")
            for name in ("postgresql", "redis"):
                pid = target.keeper.program_pid(name)
                assert pid is not None, f"the keeper runs no {name}"
                os.kill(pid, signal.SIGKILL)
                results[f"recovery_s_{name}"] = _until(lambda n=name: target.services.probe()[n] == "")
                log(f"{name}: pid {pid} killed; answering again after {results[f'recovery_s_{name}']:.3f}s "
                    f"(pid {target.keeper.program_pid(name)})")
            assert _answers(url), "the release no longer answers after the servers' restarts"
            slot = first.live.slot
            init = target.podman.main_pid(slot)
            os.kill(init, signal.SIGKILL)
            results["recovery_s_app_container"] = _until(lambda: _answers(url), timeout=60, interval=0.02)
            log(f"app container {slot}: its init (pid {init}) killed; the release answers through the front door "
                f"again after {results['recovery_s_app_container']:.3f}s (podman restart policy)")
        finally:
            target.destroy()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0, help="load before and after the nginx kill")
    args = parser.parse_args()
    started = time.monotonic()
    results = measure(threads=args.threads, seconds=args.seconds)
    for name in ("recovery_s_nginx", "recovery_s_postgresql", "recovery_s_redis", "recovery_s_app_container"):
        print(f"RESULT {name}={results[name]:.3f}")
    print(f"RESULT failed_requests_nginx_kill={results['failed_requests_nginx_kill']:.0f}")
    print(f"RESULT requests_per_s={results['requests_per_s']:.0f}")
    print(f"total: {time.monotonic() - started:.1f}s (everything started was removed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
