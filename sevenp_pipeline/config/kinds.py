"""What the config schema knows of each stage kind: the data validation reads, low in the layers.

A kind's behaviour (its gates, how it reads its report, its asset) is ``sevenp_pipeline/stages/kinds.py``,
one record per schema here; this module imports nothing of the stage engine, so ``config/`` stays
below it. Adding a kind is one entry here and one record there.
"""

from __future__ import annotations

from dataclasses import dataclass

INSTALL = "install"


@dataclass(frozen=True)
class KindSchema:
    """One stage kind as the YAML sees it."""

    name: str
    requires: str | None = None  # the StageSpec field naming the file or folder the kind reads
    cacheable: bool = True  # the stage cache may store and restore its result
    runs_command: bool = True  # takes a 'script' or a 'command'
    default_command: str | None = None  # what runs without a 'command' (then it takes no 'script')
    outbound: bool = False  # gets a route out by default (network: outbound)
    at_most_one: bool = False  # an app declares at most one stage of the kind
    test_report: bool = False  # reads a test report: 'junit', or 'report' (+ 'report_format'), or detected
    gate_keys: tuple[str, ...] = ()  # the keys of 'gates:' its gates read (StageGates fields)


# The test report formats a test/e2e stage reads (sevenp_pipeline/test_reports.py parses them).
TEST_FORMATS: tuple[str, ...] = ("junit", "jest-json", "vitest-json", "mocha-json", "tap")


_COVERAGE = ("min_coverage", "coverage_metric")


def _schemas(*schemas: KindSchema) -> dict[str, KindSchema]:
    return {s.name: s for s in schemas}


# In the order error messages list them.
KIND_SCHEMAS: dict[str, KindSchema] = _schemas(
    # The install has its own cache (node_modules by lockfile).
    KindSchema(INSTALL, cacheable=False, default_command="the package manager's frozen-lockfile install",
               outbound=True, at_most_one=True),
    KindSchema("lint", requires="report", gate_keys=("max_problems", "count_warnings")),
    KindSchema("format", gate_keys=("max_problems",)),
    KindSchema("typecheck", gate_keys=("max_problems",)),
    KindSchema("test", test_report=True, gate_keys=_COVERAGE),
    KindSchema("build", requires="output_dir"),
    KindSchema("docs"),
    KindSchema("e2e", test_report=True, gate_keys=_COVERAGE),
    KindSchema("performance", requires="report", gate_keys=("p95_ms", "min_requests_per_second")),
    KindSchema("command"),
    # commitlint reads the pushed range, not files: nothing to key a cached result on.
    KindSchema("commitlint", cacheable=False, runs_command=False, gate_keys=("commit_types", "max_header_length")),
)

STAGE_KINDS: tuple[str, ...] = tuple(KIND_SCHEMAS)
"""What a declared stage can be; the kind brings the report parser and the gates (stages/kinds.py)."""
