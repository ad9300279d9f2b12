"""A stage kind's facts live in two records: its schema (config/kinds.py, what validation reads) and
its behaviour (stages/kinds.py). These tests hold the two to each other."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from sevenp_pipeline.config import STAGE_KINDS
from sevenp_pipeline.config.kinds import KIND_SCHEMAS
from sevenp_pipeline.stages.kinds import KINDS, RECORDS
from sevenp_pipeline.stages.tool_asset import build_tool_asset


def test_every_schema_has_exactly_one_behaviour_record_and_back() -> None:
    assert Counter(kind.name for kind in RECORDS) == Counter(list(KIND_SCHEMAS))
    assert all(KINDS[name].schema is schema for name, schema in KIND_SCHEMAS.items())
    assert tuple(KIND_SCHEMAS) == STAGE_KINDS


def test_a_kind_that_runs_a_tool_reads_what_it_wrote() -> None:
    for kind in RECORDS:
        assert (kind.build is build_tool_asset) == (kind.evaluate is not None), kind.name


def test_config_does_not_import_the_stage_engine() -> None:
    code = ("import sys, sevenp_pipeline.config; "
            "print(sorted(m for m in sys.modules if m.startswith('sevenp_pipeline.stages')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
