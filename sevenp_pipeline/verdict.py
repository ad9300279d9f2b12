"""Every gate of an app in one registry, and the one answer to "did this commit pass every gate?".

A gate is a blocking asset check. Families contribute theirs when they are built (the stage graph
from its kinds, security from its scanners); promotion, deploy verification and the demo read the
same :func:`verdict`. A check is recorded per run, so a commit's result for a gate is read from the
run of its asset's latest materialization for that commit: re-running the asset alone replaces it,
and a promotion launched on its own still sees a gate that failed in an earlier run. Low in the
layers: it imports no family.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import dagster as dg

from sevenp_pipeline.asset_helpers import latest_failure, latest_materialization

# A stage whose materialization says this in ``not_run`` does not apply to the app (an optional
# script it does not define): its gates do not block. Any other ``not_run`` (skip_tests) blocks.
NOT_APPLICABLE = "not_applicable"


@dataclass(frozen=True)
class Gate:
    """One blocking check: the asset it is on, its name and description, and the stage or family
    it belongs to (for messages)."""

    asset: dg.AssetKey
    check: str
    description: str
    family: str

    @property
    def check_key(self) -> dg.AssetCheckKey:
        return dg.AssetCheckKey(self.asset, self.check)

    @property
    def label(self) -> str:
        return f"{self.asset.to_user_string()}:{self.check}"


@dataclass(frozen=True)
class Gates:
    """An app's gates in pipeline order."""

    gates: tuple[Gate, ...] = ()

    @classmethod
    def of(cls, specs: Iterable[dg.AssetCheckSpec], family: str) -> Gates:
        """The blocking ones of ``specs``, as gates of ``family``."""
        return cls(tuple(Gate(asset=s.asset_key, check=s.name, description=s.description or s.name, family=family)
                         for s in specs if s.blocking))

    def __add__(self, other: Gates) -> Gates:
        return Gates((*self.gates, *other.gates))

    def __iter__(self) -> Iterator[Gate]:
        return iter(self.gates)

    def __len__(self) -> int:
        return len(self.gates)

    @property
    def assets(self) -> list[dg.AssetKey]:
        """The gated assets, in order, once each."""
        return [*dict.fromkeys(g.asset for g in self.gates)]


@dataclass(frozen=True)
class GateFailure:
    gate: Gate
    why: str
    whole_asset: bool = False  # the asset did not run for the commit: every gate on it fails alike

    @property
    def text(self) -> str:
        """``<asset> <why>`` or ``<asset>:<check> <why>``: the line a refusal shows."""
        name = self.gate.asset.path[-1]
        return f"{name if self.whole_asset else name + ':' + self.gate.check} {self.why}"


@dataclass(frozen=True)
class Verdict:
    """Whether a commit passed every gate, and if not, which failed and why."""

    failures: tuple[GateFailure, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    def reasons(self) -> list[str]:
        """One line per failed gate; an asset that did not run is named once."""
        return [*dict.fromkeys(f.text for f in self.failures)]

    def describe(self, limit: int = 10) -> str:
        reasons = self.reasons()
        more = f"; …and {len(reasons) - limit} more" if len(reasons) > limit else ""
        return "; ".join(reasons[:limit]) + more


def verdict(instance: dg.DagsterInstance, gates: Gates | Sequence[Gate], partition: str) -> Verdict:
    """Did commit ``partition`` pass every gate in ``gates``?

    A gate blocks when its asset never materialized for the commit, when the asset did not run
    (skipped by request, e.g. skip_tests), or when its check did not pass (or was not evaluated) in
    the run of that latest materialization. An asset recorded as not applicable does not block.
    """
    failures: list[GateFailure] = []
    runs: dict[dg.AssetKey, tuple[str | None, dict]] = {}
    evaluations: dict[str, dict[dg.AssetCheckKey, dg.AssetCheckEvaluation]] = {}
    for gate in gates:
        if gate.asset not in runs:
            runs[gate.asset] = _latest_run(instance, gate.asset, partition)
        run_id, meta = runs[gate.asset]
        if run_id is None:
            failures.append(GateFailure(gate, "has not run for this commit", whole_asset=True))
            continue
        not_run = meta.get("not_run")
        if not_run == NOT_APPLICABLE:
            continue
        if not_run:
            failures.append(GateFailure(gate, f"did not run ({meta.get('reason', not_run)})", whole_asset=True))
            continue
        if run_id not in evaluations:
            evaluations[run_id] = _evaluations(instance, run_id)
        evaluation = evaluations[run_id].get(gate.check_key)
        if evaluation is None:
            failures.append(GateFailure(gate, "was not evaluated in the run of its asset's latest materialization"))
        elif not evaluation.passed:
            failures.append(GateFailure(gate, "did not pass" + (f": {evaluation.description}"
                                                                if evaluation.description else "")))
    return Verdict(tuple(failures))


def _latest_run(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> tuple[str | None, dict]:
    """The run of the asset's latest result for the commit: its latest materialization, or a later
    failure (a stage whose gate failed records an observation instead of materializing)."""
    record = latest_materialization(instance, key, partition)
    failed = latest_failure(instance, key, partition)
    if failed is not None and (record is None or failed.storage_id > record.storage_id):
        assert failed.asset_observation is not None
        return failed.run_id, {k: v.value for k, v in failed.asset_observation.metadata.items()}
    if record is None or record.asset_materialization is None:
        return None, {}
    return record.run_id, {k: v.value for k, v in record.asset_materialization.metadata.items()}


def _evaluations(instance: dg.DagsterInstance, run_id: str) -> dict[dg.AssetCheckKey, dg.AssetCheckEvaluation]:
    """The last evaluation of each check in the run."""
    found: dict[dg.AssetCheckKey, dg.AssetCheckEvaluation] = {}
    records = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event is not None and event.asset_check_evaluation_data is not None:
            data = event.asset_check_evaluation_data
            found[data.asset_check_key] = data
    return found
