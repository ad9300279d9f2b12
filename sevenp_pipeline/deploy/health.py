"""HTTP health checks with retries (spec: run_health_checks, 30 attempts 10 s apart; config decides)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable

from sevenp_pipeline.config.models import HealthCheckSettings
from sevenp_pipeline.deploy.targets.role import HealthReport, LogFn


def probe(url: str, timeout: float) -> tuple[int | None, str]:
    """One GET: (status, error). A 2xx is (status, ""); anything else names what happened."""
    request = urllib.request.Request(url, headers={"User-Agent": "sevenp-pipeline-health"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (http(s) URL we built)
            response.read(65536)
            return response.status, ""
    except urllib.error.HTTPError as exc:
        return exc.code, f"HTTP {exc.code} {exc.reason}"
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"no answer: {reason}"


def check_health(base_url: str, settings: HealthCheckSettings, *, log: LogFn,
                 cancelled: Callable[[], bool] = lambda: False,
                 sleep: Callable[[float], None] = time.sleep) -> HealthReport:
    """GETs ``base_url + settings.path`` until a 2xx, at most ``attempts`` times ``interval_seconds`` apart."""
    url = base_url.rstrip("/") + settings.path
    started = time.monotonic()
    status: int | None = None
    error = "not tried"
    attempt = 0
    for attempt in range(1, settings.attempts + 1):
        if cancelled():
            error = "cancelled"
            break
        status, error = probe(url, settings.timeout_seconds)
        if status is not None and 200 <= status < 300:
            log(f"health check {attempt}/{settings.attempts}: {url} answered {status}")
            return HealthReport(url=url, ok=True, attempts=attempt, max_attempts=settings.attempts,
                                seconds=time.monotonic() - started, last_status=status, last_error="")
        log(f"health check {attempt}/{settings.attempts}: {url}: {error}")
        if attempt < settings.attempts:
            sleep(settings.interval_seconds)
    return HealthReport(url=url, ok=False, attempts=attempt, max_attempts=settings.attempts,
                        seconds=time.monotonic() - started, last_status=status, last_error=error)
