"""Push -> run start through a webhook delivery against through the git poll, side by side on one real
local Dagster (webserver, daemon, push sensors, queue, run workers: what ``make dev`` runs, with
``SEVENP_WEBHOOK_SECRET`` set, so its webhook receiver runs too, on the UI's port + 2).

  .venv/bin/python benchmarks/webhook_latency.py [--pushes 5] [--seed 7] [--poll-interval S]

Two copies of the dependency-free test app (sevenp_pipeline_tests/fixtures/tiny-app), each with its
own remote, in one instance under one daemon:

* ``bench-hooked``: ``forge: {kind: github}`` and ``trigger.poll_interval_seconds: 60``. A push is
  ``git push``, then at once the signed GitHub ``push`` delivery GitHub would send, POSTed to the
  receiver. The poll, once a minute, reads git in the same tick as the spool: it can never start a
  run before the delivery does.
* ``bench-polled``: no forge, the sample app's poll interval (``trigger.poll_interval_seconds`` of
  apps/7p-education-api.yaml), the path ``push_to_start_median_s`` of pipeline_speed.py measures.

The pushes alternate between the two apps (which one goes first alternates too). Before each one a
random pause of 0-5 s (seeded, one distribution for both sides, not counted) puts the push at a random point
of the sensor daemon's 5 s loop, not at a fixed offset from the end of the previous run. push -> start
is from just before ``git push`` (for the hooked app: before the push *and* the delivery) to the run's
STARTED time, as pipeline_speed.py's ``pushed_run`` measures it; each run is waited for before the
next push, so no run waits in the queue behind another. The commits are empty (one tree): every stage
but the first run's is restored, so a run takes a few seconds.

Each push -> start is split in two: push -> run created (the sensor: the wait for the daemon's next
loop, then the tick) and created -> STARTED (the queue, dequeued every second, and the run worker's
launch). Both sensors are evaluated by the same loop of Dagster's sensor daemon, which runs every 5 s
whatever a sensor's interval: a delivery waits for it like a poll of 5 s or less does, so at the
sample app's 2 s poll the two paths cost about the same; the webhook's gain is over a slower poll (a
forge's API limits, a remote far away) and ``poll_interval_seconds`` can be raised with it.

Prints each push, the medians, and ``RESULT webhook_push_to_start_median_s``,
``RESULT poll_push_to_start_median_s`` and ``RESULT webhook_vs_poll_ratio``.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import dagster as dg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline_speed import SAMPLE_CONFIG, pushed_run

from sevenp_pipeline.devtools.devstack import WEBHOOK_SECRET, LocalDagster, port_available
from sevenp_pipeline.resources.services import free_port
from sevenp_pipeline_tests.gitutil import Remote

TINY_APP = Path(__file__).resolve().parents[1] / "sevenp_pipeline_tests" / "fixtures" / "tiny-app"
BRANCH = "develop"
HOOK_POLL_SECONDS = 60  # the hooked app's fallback poll: far beyond any push -> start measured here
LOOP_SECONDS = 5.0  # Dagster's sensor daemon loop (dagster/_daemon/sensor.py MIN_INTERVAL_LOOP_TIME)
# Every stage of the tiny app but the install and the linter removed: the run's length does not matter
# (only its start does), it only has to end before the next push.
STAGES = {name: None for name in ("security_lint_report", "format_report", "type_check_report", "unit_test_results",
                                  "integration_test_results", "api_test_results", "build_artifact", "api_docs",
                                  "e2e_test_results", "performance_report")}


class HookedRemote:
    """A remote whose :meth:`push` is followed at once by the forge's signed webhook delivery."""

    def __init__(self, remote: Remote, repository: str, url: str, secret: str) -> None:
        self.remote, self.repository, self.url, self._secret = remote, repository, url, secret.encode()
        self.heads: dict[str, str] = {}

    def deliver(self, event: str, payload: dict[str, object]) -> int:
        body = json.dumps(payload).encode()
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": "GitHub-Hookshot/bench",
            "X-GitHub-Event": event, "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    def push(self, branch: str) -> str:
        sha = self.remote.push(branch)
        before, self.heads[branch] = self.heads.get(branch, "0" * 40), sha
        status = self.deliver("push", {"ref": f"refs/heads/{branch}", "before": before, "after": sha,
                                       "created": before == "0" * 40, "deleted": False, "forced": False,
                                       "repository": {"full_name": self.repository}})
        if status != 202:
            raise RuntimeError(f"the receiver answered {status} to the push delivery of {sha[:12]}")
        return sha

    def wait_ready(self, timeout: float = 60) -> None:
        """Until the receiver answers a signed ping (200): it runs and has the same secret."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if self.deliver("ping", {"zen": "bench", "repository": {"full_name": self.repository}}) == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the webhook receiver did not answer a signed ping on {self.url} within {timeout:.0f}s")


def write_app(apps: Path, remote: Remote, name: str, extra: dict[str, object]) -> str:
    config = {"name": name, "repository": {"url": remote.url}, "branches": {"include": [BRANCH]},
              **extra, "stages": STAGES}
    (apps / f"{name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return f"{name.replace('-', '_')}_git_push_sensor"


def stack_port() -> int:
    """A UI port whose + 1 (artifacts) and + 2 (webhook receiver) are free too."""
    for _ in range(50):
        port = free_port()
        if port_available(port + 1) and port_available(port + 2):
            return port
    raise RuntimeError("no free port with the next two free as well")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=5, help="measured pushes per path")
    parser.add_argument("--seed", type=int, default=7, help="seed of the pauses before the pushes")
    parser.add_argument("--poll-interval", type=int, default=None,
                        help="the polled app's trigger.poll_interval_seconds (default: the sample app's)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sevenp-bench-webhook-"))
    try:
        return _run(tmp, args)
    finally:  # the remotes, the home and the instance: nothing left in /tmp
        shutil.rmtree(tmp, ignore_errors=True)


def _run(tmp: Path, args: argparse.Namespace) -> int:
    secret = uuid.uuid4().hex
    apps = tmp / "apps"
    apps.mkdir()
    poll_seconds = args.poll_interval or yaml.safe_load(SAMPLE_CONFIG.read_text())["trigger"]["poll_interval_seconds"]
    hooked_remote, polled = Remote(tmp, TINY_APP, "bench-hooked"), Remote(tmp, TINY_APP, "bench-polled")
    hook_sensor = write_app(apps, hooked_remote, "bench-hooked", {
        # No status is ever posted to a real forge: the API is a closed local port (and no token is set).
        "forge": {"kind": "github", "repository": "acme/bench-hooked", "api_url": "http://127.0.0.1:9"},
        "trigger": {"poll_interval_seconds": HOOK_POLL_SECONDS}})
    poll_sensor = write_app(apps, polled, "bench-polled", {"trigger": {"poll_interval_seconds": poll_seconds}})
    stack = LocalDagster(home=tmp / "home", port=stack_port(), apps_dir=apps, extra_env={WEBHOOK_SECRET: secret})
    hooked = HookedRemote(hooked_remote, "acme/bench-hooked",
                          f"http://127.0.0.1:{stack.port + 2}/webhooks/github", secret)
    os.environ["DAGSTER_HOME"] = str(stack.dagster_home)
    stack.start()
    try:
        for sensor in (hook_sensor, poll_sensor):  # the baselines: only later pushes start runs
            stack.wait_for_sensor_tick(sensor)
        hooked.wait_ready()
        instance = dg.DagsterInstance.get()
        remotes = {"webhook": hooked_remote, "poll": polled}  # what commits
        pushers = {"webhook": hooked, "poll": polled}  # what pushes: a HookedRemote pushes, then delivers
        print("warming up (first run of the tree on each app: the install and the linter run)...", flush=True)
        for name, remote in remotes.items():
            remote.commit(f"chore: warm up {name}", push_to=None)
            pushed_run(instance, pushers[name], BRANCH)
        pauses = random.Random(args.seed)
        starts: dict[str, list[float]] = {name: [] for name in remotes}
        launches: dict[str, list[float]] = {name: [] for name in remotes}
        for i in range(args.pushes):
            for name in list(remotes) if i % 2 == 0 else list(reversed(remotes)):
                remotes[name].commit(f"chore: bench push {i} ({name})", push_to=None)
                time.sleep(pauses.uniform(0, LOOP_SECONDS))  # not counted: a random phase of the daemon's loop
                start, _, run_s, run_id = pushed_run(instance, pushers[name], BRANCH)
                record = instance.get_run_record_by_id(run_id)
                launch = record.start_time - record.create_timestamp.timestamp()  # queued -> worker started
                starts[name].append(start)
                launches[name].append(launch)
                print(f"push {i + 1} {name:7s}: push -> start {start:5.2f} s = sensor {start - launch:5.2f} s "
                      f"+ queue and launch {launch:4.2f} s  (run {run_id[:8]}, {run_s:.1f} s)", flush=True)
    finally:
        stack.stop()

    hook, poll = statistics.median(starts["webhook"]), statistics.median(starts["poll"])
    print()
    print(f"push -> run start, {args.pushes} pushes each, one daemon: median (min-max), of which the queue "
          "and the run worker's launch")
    labels = {"webhook": f"webhook, poll every {HOOK_POLL_SECONDS} s", "poll": f"git poll every {poll_seconds} s"}
    for name, label in labels.items():
        figures = starts[name]
        print(f"  {label:27s} {statistics.median(figures):5.2f} s ({min(figures):.2f}-{max(figures):.2f})"
              f"  launch {statistics.median(launches[name]):.2f} s")
    print("  target: webhook <= 4 s")
    print(f"RESULT webhook_push_to_start_median_s={hook:.2f}")
    print(f"RESULT poll_push_to_start_median_s={poll:.2f}")
    print(f"RESULT webhook_vs_poll_ratio={hook / poll:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
