"""A person's approval of a deploy to an ``approval: manual`` environment: a record no run can make.

A launch, a run tag or ``launch_options.environment`` is not an approval: any process that reaches the
webserver sets those (a stage did, through GraphQL on loopback). An approval is a file under
``<home>/approvals/<app>/<env>/<sha>.json`` naming the person, written by ``make deploy`` /
``make rollback`` (the deploy CLI, run by the operator on the orchestrator's machine, outside any run).
Stages cannot reach the home (the sandbox hides it), and the deploy only reads it.

The same record carries an operator's override (``make deploy OVERRIDE='why'``): the deploy then
accepts a commit that the environment's branch rule refuses, unless the environment sets
``allow_override: false``, and records who and why on the deployment. Nothing else is overridden:
the gates, the signed provenance and ``after`` still decide.
"""

from __future__ import annotations

import getpass
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from sevenp_pipeline.files import read_json_state, write_json_state
from sevenp_pipeline.resources.git import is_sha
from sevenp_pipeline.text import printable


@dataclass(frozen=True)
class Approval:
    approver: str
    at: float
    via: str
    override: str = ""  # the operator's reason to deploy a commit the branch rule refuses ("" = none)


def approval_path(home: Path, app_key: str, env: str, sha: str) -> Path:
    if not is_sha(sha):
        raise ValueError(f"{sha!r} is not a full commit SHA")
    return home / "approvals" / app_key / env / f"{sha}.json"


def override_reason() -> str:
    """``OVERRIDE``: why an operator deploys a commit the environment's branch rule refuses."""
    return printable(os.environ.get("OVERRIDE", "")).strip()


def approver_name() -> str:
    """Who approves: ``APPROVER``, else the operator's user name."""
    name = printable(os.environ.get("APPROVER", "")).strip()
    return name or getpass.getuser()


def record_approval(home: Path, app_key: str, env: str, sha: str, *, approver: str, via: str,
                    override: str = "") -> Approval:
    name = printable(approver).strip()
    if not name:
        raise ValueError("an approval names a person")
    approval = Approval(approver=name, at=time.time(), via=via, override=printable(override).strip()[:500])
    write_json_state(approval_path(home, app_key, env, sha), asdict(approval))
    return approval


def find_approval(home: Path, app_key: str, env: str, sha: str) -> Approval | None:
    data = read_json_state(approval_path(home, app_key, env, sha))
    try:
        return Approval(approver=str(data["approver"]), at=float(data["at"]), via=str(data["via"]),
                        override=str(data.get("override") or ""))
    except (KeyError, TypeError, ValueError):
        return None
