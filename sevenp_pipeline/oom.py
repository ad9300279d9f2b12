"""The kernel's OOM priority of the orchestrator's processes (``/proc/<pid>/oom_score_adj``).

The supervised stack (webserver, daemon, code server, registry) runs at ``OOM_SCORE_ADJ`` so that
under memory pressure the kernel kills a stage first; run workers go back to 0 (they hold a run's
memory). Lowering the value below 0 needs CAP_SYS_RESOURCE (root normally has it; some containers
drop it): without it the value stays as inherited and the caller is told.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

OOM_SCORE_ADJ = -900
Say = Callable[[str], None]


def set_oom_score_adj(pid: int, value: int, *, say: Say | None = None) -> bool:
    """Writes ``/proc/<pid>/oom_score_adj``; False (with a message) when not allowed or gone."""
    try:
        Path(f"/proc/{pid}/oom_score_adj").write_text(f"{value}\n")
    except PermissionError:
        if say:
            say(f"cannot set oom_score_adj {value} of pid {pid} (needs root / CAP_SYS_RESOURCE): "
                "left at its inherited value")
        return False
    except OSError:
        return False  # it exited meanwhile
    return True


def oom_score_adj(pid: int | str = "self") -> int | None:
    try:
        return int(Path(f"/proc/{pid}/oom_score_adj").read_text())
    except (OSError, ValueError):
        return None


def reset_own_oom_priority() -> None:
    """A process that inherited the orchestrator's protected OOM priority (a run worker, child of
    the code server) puts itself back to the default 0: it is the one holding a run's memory."""
    current = oom_score_adj()
    if current is not None and current < 0:
        set_oom_score_adj(os.getpid(), 0)


def can_lower() -> bool:
    """Whether this process may set a negative oom_score_adj (CAP_SYS_RESOURCE in its effective set)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 24))  # CAP_SYS_RESOURCE
    except (OSError, ValueError):
        pass
    return False
