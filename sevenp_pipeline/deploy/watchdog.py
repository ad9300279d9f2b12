"""``environment_watchdog``: every minute, probe each live environment, start what is down, tell Slack.

The keeper of each local environment (targets/local/keeper.py) restarts nginx, PostgreSQL and Redis
within moments of their death; this sensor covers what the keeper cannot: the keeper itself killed,
a server that keeps failing, the live release's container gone. Per tick and live environment it
probes the front door (the health path through nginx), PostgreSQL and Redis (a connection) and the
keeper; when something is down it calls the target's ``recover()`` (start the keeper, which adopts or
restarts its programs; start the live container; ensure the servers and front door) and probes again.

Slack hears one message when an environment goes down (with the time it was found down and what was
done) and one when it answers again (with that time and how long it was down), never one per tick:
the environments that are down, since when and why, live in the sensor cursor between ticks.
It requests no runs; the tick's skip reason says what it saw (the UI's sensor page).
"""

# No `from __future__ import annotations`: Dagster reads the resource and context annotations.
import json
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any

import dagster as dg

from sevenp_pipeline.config import AppConfig
from sevenp_pipeline.config.targets import target_schema
from sevenp_pipeline.deploy.targets.resource import DeployTargets
from sevenp_pipeline.deploy.targets.role import DeployError, Release
from sevenp_pipeline.resources.notify import Notification, SlackNotifier

SENSOR_NAME = "environment_watchdog"
INTERVAL_SECONDS = 60


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def watch_environments(apps: Sequence[AppConfig], targets: DeployTargets, notifier: SlackNotifier, cursor: str | None,
                       *, log: Callable[[str], None], now: Callable[[], float] = time.time) -> tuple[str, list[str]]:
    """One watchdog tick. Returns the new cursor and one line per environment about what it saw and did."""
    try:
        down: dict[str, Any] = json.loads(cursor) if cursor else {}
    except ValueError:
        down = {}
    seen: list[str] = []
    live_keys: set[str] = set()
    for app in apps:
        for env, spec in app.deploy_environments.items():
            if not target_schema(spec.target).runs_here:
                continue
            key = f"{app.name}/{env}"
            try:
                target = targets.target(app, env)
                release = target.current()
            except DeployError as exc:
                seen.append(f"{key}: not checked: {exc}")
                continue
            if release is None:
                continue  # nothing live (never deployed, or stopped with make deploy-stop)
            live_keys.add(key)
            failing = [p for p in target.probe() if not p.ok]
            done: list[str] = []
            if failing:
                found_at = now()
                log(f"{key}: down: {'; '.join(p.describe() for p in failing)}")
                try:
                    done = target.recover(log=log)
                except Exception as exc:  # a failed recovery is reported, and tried again next tick
                    done = [f"recovery failed: {type(exc).__name__}: {exc}"]
                failing_after = [p for p in target.probe() if not p.ok]
                if key not in down:
                    down[key] = {"since": found_at, "what": "; ".join(p.describe() for p in failing)}
                    _notify(notifier, "environment_down", app, env, release,
                            f"{app.name}: {env} is down ({', '.join(p.name for p in failing)})",
                            f"{down[key]['what']}. Restart: {', '.join(done) or 'nothing to start'}"
                            + ("; still down" if failing_after else "; answering again"),
                            {"Down since": _when(found_at)}, log)
                failing = failing_after
            if not failing and key in down:
                since = float(down.pop(key)["since"])
                back = now()
                _notify(notifier, "environment_recovered", app, env, release,
                        f"{app.name}: {env} is up again",
                        f"Front door, database and cache answer again after {back - since:.0f}s down.",
                        {"Down since": _when(since), "Up again": _when(back)}, log)
                seen.append(f"{key}: recovered ({', '.join(done) or 'came back by itself'})")
            elif failing:
                seen.append(f"{key}: DOWN since {_when(float(down[key]['since']))}: "
                            f"{'; '.join(p.describe() for p in failing)}")
            else:
                seen.append(f"{key}: up")
    for key in [k for k in down if k not in live_keys]:  # stopped or removed while down: not an outage now
        down.pop(key)
    return json.dumps(down, sort_keys=True), seen


def _notify(notifier: SlackNotifier, kind: str, app: AppConfig, env: str, release: Release, title: str, text: str,
            fields: dict[str, str], log: Callable[[str], None]) -> None:
    notifier.notify(Notification(kind=kind, app=app.name, environment=env, commit=release.commit,  # type: ignore[arg-type]
                                 run_id=release.run_id, title=title, text=text,
                                 fields={**fields, "Deployed by run": release.run_id[:8]}), log=log)


def build_environment_watchdog(apps: Sequence[AppConfig]) -> list[dg.SensorDefinition]:
    """The sensor, when any app has a local environment ([] otherwise)."""
    watched = [a for a in apps if any(target_schema(s.target).runs_here for s in a.deploy_environments.values())]
    if not watched:
        return []

    @dg.sensor(name=SENSOR_NAME, minimum_interval_seconds=INTERVAL_SECONDS,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Every minute: probes each live local environment (front door, PostgreSQL, Redis, "
                           "keeper), starts what is down, and tells Slack of the outage and the recovery.")
    def environment_watchdog(context: dg.SensorEvaluationContext, deploy_targets: DeployTargets,
                             notifier: SlackNotifier):
        cursor, seen = watch_environments(watched, deploy_targets, notifier, context.cursor, log=context.log.info)
        context.update_cursor(cursor)
        return dg.SkipReason("; ".join(seen) or "no live local environment")

    return [environment_watchdog]
