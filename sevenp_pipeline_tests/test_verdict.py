"""verdict() against a real instance: materializations and check evaluations recorded by runs of tiny assets."""

# No `from __future__ import annotations`: Dagster reads the asset's config annotation.
from collections.abc import Iterator

import dagster as dg
import pytest

from sevenp_pipeline.asset_helpers import gated_result
from sevenp_pipeline.verdict import Gate, Gates, verdict

PARTITIONS = dg.StaticPartitionsDefinition(["c1", "c2"])


class Outcome(dg.Config):
    passed: bool = True
    not_run: str = ""


def _stage(name: str) -> tuple[dg.AssetsDefinition, Gates]:
    """A stage as the pipeline builds one: a gate that fails records an observation, not a
    materialization (asset_helpers.gated_result); a stage that does not run records no check result."""
    check = dg.AssetCheckSpec("ok", asset=name, blocking=True, description=f"{name} is ok",
                              partitions_def=PARTITIONS)

    @dg.multi_asset(name=name, specs=[dg.AssetSpec(name, partitions_def=PARTITIONS)], check_specs=[check],
                    can_subset=True)
    def _asset(context: dg.AssetExecutionContext, config: Outcome) -> Iterator[object]:
        if config.not_run:
            yield dg.MaterializeResult(metadata={"not_run": config.not_run, "reason": f"{config.not_run} said so"})
            return
        yield from gated_result(context, metadata={}, checks=[dg.AssetCheckResult(
            check_name="ok", passed=config.passed, severity=dg.AssetCheckSeverity.ERROR,
            description="fine" if config.passed else "three things broke")])

    return _asset, Gates.of([check], family=name)


LINT, LINT_GATES = _stage("lint")
SCAN, SCAN_GATES = _stage("scan")
GATES = LINT_GATES + SCAN_GATES


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


def _run(instance: dg.DagsterInstance, asset: dg.AssetsDefinition, partition: str = "c1", **outcome: object) -> None:
    dg.materialize([asset], instance=instance, partition_key=partition, raise_on_error=False,
                   run_config={"ops": {asset.op.name: {"config": outcome}}})


def _why(instance: dg.DagsterInstance, partition: str = "c1") -> dict[str, str]:
    return {f.gate.family: f.why for f in verdict(instance, GATES, partition).failures}


def test_registry_keeps_pipeline_order_and_only_blocking_checks() -> None:
    warn = dg.AssetCheckSpec("advice", asset="lint", blocking=False)
    gates = Gates.of([warn], family="lint") + GATES
    assert [g.label for g in gates] == ["lint:ok", "scan:ok"]
    assert gates.assets == [dg.AssetKey("lint"), dg.AssetKey("scan")]
    assert next(iter(gates)) == Gate(dg.AssetKey("lint"), "ok", "lint is ok", "lint")


def test_every_gate_passed(instance: dg.DagsterInstance) -> None:
    _run(instance, LINT)
    _run(instance, SCAN)
    result = verdict(instance, GATES, "c1")
    assert result.passed and result.failures == ()


def test_a_gate_never_run_for_the_commit_blocks(instance: dg.DagsterInstance) -> None:
    _run(instance, LINT)
    _run(instance, SCAN, partition="c2")
    assert _why(instance) == {"scan": "has not run for this commit"}
    # Named once per asset, as the refusal shows it.
    two = Gates((*GATES, Gate(dg.AssetKey("scan"), "signed", "signed by us", "scan")))
    assert verdict(instance, two, "c1").reasons() == ["scan has not run for this commit"]


def test_a_failed_check_blocks_naming_gate_and_description(instance: dg.DagsterInstance) -> None:
    _run(instance, LINT)
    _run(instance, SCAN, passed=False)
    result = verdict(instance, GATES, "c1")
    assert not result.passed
    assert result.describe() == "scan:ok did not pass: three things broke"
    assert result.failures[0].gate == next(iter(SCAN_GATES))


def test_the_latest_result_decides(instance: dg.DagsterInstance) -> None:
    _run(instance, LINT)
    _run(instance, SCAN, passed=False)
    _run(instance, SCAN)  # re-run alone, passing
    assert verdict(instance, GATES, "c1").passed
    # Failing again: no new materialization, but the failure recorded after it decides.
    _run(instance, SCAN, passed=False)
    assert _why(instance) == {"scan": "did not pass: three things broke"}
    _run(instance, SCAN)
    assert verdict(instance, GATES, "c1").passed
    assert verdict(instance, GATES, "c2").failures[0].why == "has not run for this commit"


def test_not_applicable_does_not_block_skipped_by_request_does(instance: dg.DagsterInstance) -> None:
    _run(instance, LINT, not_run="not_applicable")
    _run(instance, SCAN, not_run="skipped_by_request")
    assert _why(instance) == {"scan": "did not run (skipped_by_request said so)"}


def test_a_gate_not_evaluated_in_that_run_blocks(instance: dg.DagsterInstance) -> None:
    _run(instance, LINT)
    _run(instance, SCAN)
    extra = Gate(dg.AssetKey("scan"), "signed", "signed by us", "scan")
    result = verdict(instance, Gates((*GATES, extra)), "c1")
    assert [f.gate for f in result.failures] == [extra]
    assert "not evaluated" in result.failures[0].why
