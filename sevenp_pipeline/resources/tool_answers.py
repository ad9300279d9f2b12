"""Machine-wide tools' answers (node's and npm's versions, npm's registry), asked once per process:
every stage's key and environment need them, and stages running at once share one answer."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from sevenp_pipeline.resources.processes import ExecuteRequest, Outcome, ProcessRunner

_TOOL_VERSIONS: dict[tuple[str, ...], str] = {}
_TOOL_LOCKS: dict[tuple[str, ...], threading.Lock] = {}
_TOOL_LOCKS_GUARD = threading.Lock()


def asked_once(key: tuple[str, ...], ask: Callable[[], Outcome]) -> str:
    """The last output line of ``ask()``, run once per process for ``key``: stages running at once
    (threads of one run worker) wait for the first one's answer instead of asking again."""
    with _TOOL_LOCKS_GUARD:
        lock = _TOOL_LOCKS.setdefault(key, threading.Lock())
    with lock:
        if key not in _TOOL_VERSIONS:
            outcome = ask()
            _TOOL_VERSIONS[key] = outcome.output[-1].strip() if outcome.ok and outcome.output else "unavailable"
        return _TOOL_VERSIONS[key]


def tool_answer(runner: ProcessRunner, argv: list[str], cwd: Path) -> str:
    """A machine-wide tool's answer (node, npm's config), asked once per process, outside any app folder."""
    return asked_once(tuple(argv), lambda: runner.run(ExecuteRequest(
        argv=argv, cwd=cwd, label=" ".join(argv), timeout_seconds=120, capture=True)))


MACHINE_TOOL_QUESTIONS = (["node", "--version"], ["npm", "--version"], ["npm", "config", "get", "registry"])


def prefetch_tool_answers(runner: ProcessRunner) -> None:
    """Starts asking node's and npm's versions and npm's registry, each on a thread, at the start of
    a run: every stage's key and env need them, and the first stages then find them answered or on
    their way instead of asking one after another (a new run worker knows none of them)."""
    for argv in MACHINE_TOOL_QUESTIONS:
        if tuple(argv) not in _TOOL_VERSIONS:
            threading.Thread(target=tool_answer, args=(runner, argv, Path("/")), name=f"ask {' '.join(argv)}",
                             daemon=True).start()


def npm_registry(runner: ProcessRunner) -> str | None:
    """The registry npm is configured with: corepack downloads pinned pnpm/yarn versions from it."""
    found = tool_answer(runner, ["npm", "config", "get", "registry"], Path("/"))
    return found if found.startswith("http") else None


def tool_versions(runner: ProcessRunner) -> dict[str, str]:
    """node's version, asked once per process: part of every data version."""
    return {"node": tool_answer(runner, ["node", "--version"], Path("/"))}
