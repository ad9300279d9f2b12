"""Which test runner a test/e2e stage runs, and the flags that make it write its own report.

A stage with neither ``junit`` nor ``report`` gets a :class:`ReportPlan`: arguments appended to its
command (``npm run x -- args`` appends them to the script string, so they reach the script's LAST
command), environment to add, and the report path inside the app folder with its format. Pure: reads
the package.json data it is given, runs nothing. Flags were checked with the real runners on node 20:

- jest ``--json --outputFile=R`` (keeps its console output);
- vitest ``--reporter=default --reporter=json --outputFile.json=R``;
- mocha ``--reporter=json --reporter-option=output=R`` (the console shows no per-test lines);
- ava ``--tap``: TAP on stdout only, so the report is the stage's (redacted) log;
- ``node --test``: options after the test path are taken as test files, so the reporters go in
  ``NODE_OPTIONS`` (allowed there; the child test processes do not write the file again);
- playwright ``--reporter=list,junit`` with ``PLAYWRIGHT_JUNIT_OUTPUT_NAME=R``.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

REPORT_DIR = ".sevenp-reports"
LOG_REPORT = ""  # ReportPlan.report for a runner whose report is the stage's own log (ava --tap)

_ENV_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SEPARATORS = {"&&", "||", ";", "|", "&"}
# Wrappers whose own options precede the real command (coverage tools, env loaders).
_WRAPPERS = {"cross-env", "npx", "bunx", "c8", "nyc", "dotenv", "env"}


class UnknownRunner(ValueError):
    """The stage's runner cannot be told; the message says what to configure instead."""


@dataclass(frozen=True)
class ReportPlan:
    runner: str  # jest, vitest, mocha, ava, node, playwright
    fmt: str  # one of config.kinds.TEST_FORMATS
    report: str  # path relative to the app folder; LOG_REPORT: the stage's log
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    def key_parts(self) -> list[str]:
        """What the plan adds to the stage's command, for the stage cache key (deterministic order)."""
        return [self.runner, self.fmt, self.report, *self.args, *(f"{k}={v}" for k, v in self.env)]


def last_command(script: str) -> list[str]:
    """The words of the last command of a package.json script (``a && b; c | d`` -> ``d``)."""
    lexer = shlex.shlex(script, posix=True, punctuation_chars="&|;")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in _SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(token)
    return next((c for c in reversed(commands) if c), [])


def _strip_prefixes(words: list[str]) -> list[str]:
    """Drop env assignments and the launchers in front of the runner (cross-env, npx, pnpm exec, yarn, c8)."""
    i = 0
    while i < len(words):
        word = words[i]
        base = PurePosixPath(word).name
        if _ENV_ASSIGNMENT.match(word):
            i += 1
        elif base in _WRAPPERS:
            i += 1
            while i < len(words) and (words[i].startswith("-") or _ENV_ASSIGNMENT.match(words[i])):
                i += 1
        elif base in ("pnpm", "npm", "bun") and i + 1 < len(words) and words[i + 1] in ("exec", "x"):
            i += 2
            if i < len(words) and words[i] == "--":
                i += 1
        elif base == "yarn" and i + 1 < len(words):
            i += 2 if words[i + 1] in ("exec", "run") else 1
        else:
            break
    return words[i:]


def runner_of(words: list[str]) -> str | None:
    """The runner a command line starts, or None."""
    rest = _strip_prefixes(words)
    if not rest:
        return None
    base = PurePosixPath(rest[0]).name
    args = rest[1:]
    if base in ("jest", "vitest", "ava"):
        return base
    if base in ("mocha", "_mocha"):
        return "mocha"
    if base in ("node", "tsx") and "--test" in args:
        return "node"
    if base == "playwright" and args[:1] == ["test"]:
        return "playwright"
    return None


def plan_for(stage: str, package: dict[str, Any], script: str | None = None,
             command: list[str] | None = None) -> ReportPlan:
    """The report plan of a stage that runs ``script`` (a package.json script name) or ``command``."""
    if command is not None:
        words, what = list(command), f"command {shlex.join(command)}"
    else:
        text = (package.get("scripts") or {}).get(script or "")
        if not isinstance(text, str):
            raise UnknownRunner(f"stage {stage}: package.json has no script '{script}' to detect the test runner "
                                f"of; set stages.{stage}.report and report_format (or junit)")
        words, what = last_command(text), f"script '{script}' ({text})"
    runner = runner_of(words)
    if runner is None:
        raise UnknownRunner(f"stage {stage}: cannot tell the test runner of {what} (known: jest, vitest, mocha, "
                            f"ava, node --test, playwright test); set stages.{stage}.report and report_format "
                            "(or junit)")
    return _plan(stage, runner)


def _plan(stage: str, runner: str) -> ReportPlan:
    def path(ext: str) -> str:
        return f"{REPORT_DIR}/{stage}.{ext}"

    if runner == "jest":
        report = path("json")
        return ReportPlan(runner, "jest-json", report, ("--json", f"--outputFile={report}"))
    if runner == "vitest":
        report = path("json")
        return ReportPlan(runner, "vitest-json", report,
                          ("--reporter=default", "--reporter=json", f"--outputFile.json={report}"))
    if runner == "mocha":
        report = path("json")
        return ReportPlan(runner, "mocha-json", report, ("--reporter=json", f"--reporter-option=output={report}"))
    if runner == "ava":
        return ReportPlan(runner, "tap", LOG_REPORT, ("--tap",))
    if runner == "node":
        report = path("xml")
        options = ("--test-reporter=spec --test-reporter-destination=stdout "
                   f"--test-reporter=junit --test-reporter-destination={report}")
        return ReportPlan(runner, "junit", report, (), (("NODE_OPTIONS", options),))
    report = path("xml")
    return ReportPlan(runner, "junit", report, ("--reporter=list,junit",),
                      (("PLAYWRIGHT_JUNIT_OUTPUT_NAME", report),))
