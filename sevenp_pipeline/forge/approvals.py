"""Approvals by forge identity: a person the forge authenticated approves a deploy to an
``approval: manual`` environment.

``environments.<env>.approvers`` lists forge user names. The ``<app>_forge_approval_sensor`` (in the
daemon, every minute) looks, for each commit waiting for such an environment (live in the environment
it comes ``after``, or else the head of a branch it deploys), for:

- an approving review by an approver on a pull/merge request that brought the commit (GitHub:
  ``/commits/{sha}/pulls`` then ``/pulls/{n}/reviews`` in state ``APPROVED``; GitLab:
  ``/repository/commits/{sha}/merge_requests`` then ``/merge_requests/{iid}/approvals``);
- a ``/deploy <env>`` comment by an approver on that request or on the commit (ChatOps, as Prow and
  Atlantis do).

The first one found becomes the approval record ``make deploy`` writes (``deploy/approvals.py``: under
the home, which no stage can reach), naming the person and how ("github review on pull request 12"),
and the sensor starts the environment's deploy job; the deployment's metadata then names them. A run
cannot forge this: it holds no forge token and cannot write the home, and the forge, not the comment
text, says who wrote it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sevenp_pipeline.config.models import ForgeSettings
from sevenp_pipeline.forge.client import ForgeClient, Posted

LogFn = Callable[[str], None]


@dataclass(frozen=True)
class ForgeApproval:
    approver: str
    via: str


class ForgeTrouble(Exception):
    """The forge could not be asked (down, throttled, token refused): try again next tick."""


def _list(result: Posted) -> list[Any]:
    if result.outcome != "ok":
        raise ForgeTrouble(result.message)
    return result.answer if isinstance(result.answer, list) else []


def _login(entry: Any, *keys: str) -> str:
    """``entry[keys[0]][keys[1]]…`` as a string ("" when missing)."""
    for key in keys:
        entry = entry.get(key) if isinstance(entry, dict) else None
    return str(entry or "")


def _is_deploy_command(body: str, env: str) -> bool:
    words = body.strip().split()
    return len(words) >= 2 and words[0] == "/deploy" and words[1] == env


def find_forge_approval(client: ForgeClient, forge: ForgeSettings, *, sha: str, env: str,  # noqa: PLR0911
                        approvers: Iterable[str], log: LogFn) -> ForgeApproval | None:
    """The first approval of ``sha`` for ``env`` by one of ``approvers`` the forge knows, else None.
    Raises ForgeTrouble when the forge could not be asked."""
    allowed = {a.lower() for a in approvers}
    get = lambda path: client.get(forge, path, log=log)  # noqa: E731
    if forge.kind == "github":
        for pr in _list(get(f"commits/{sha}/pulls?per_page=30")):
            number = int(pr.get("number", 0)) if isinstance(pr, dict) else 0
            if number <= 0:
                continue
            for review in _list(get(f"pulls/{number}/reviews?per_page=100")):
                login = _login(review, "user", "login")
                if _login(review, "state") == "APPROVED" and login.lower() in allowed:
                    return ForgeApproval(login, f"github review on pull request {number}")
            for comment in _list(get(f"issues/{number}/comments?per_page=100")):
                login = _login(comment, "user", "login")
                if login.lower() in allowed and _is_deploy_command(_login(comment, "body"), env):
                    return ForgeApproval(login, f"github comment '/deploy {env}' on pull request {number}")
        for comment in _list(get(f"commits/{sha}/comments?per_page=100")):
            login = _login(comment, "user", "login")
            if login.lower() in allowed and _is_deploy_command(_login(comment, "body"), env):
                return ForgeApproval(login, f"github comment '/deploy {env}' on commit {sha[:12]}")
        return None
    for mr in _list(get(f"repository/commits/{sha}/merge_requests")):
        iid = int(mr.get("iid", 0)) if isinstance(mr, dict) else 0
        if iid <= 0:
            continue
        approvals = get(f"merge_requests/{iid}/approvals")
        if approvals.outcome != "ok":
            raise ForgeTrouble(approvals.message)
        answer = approvals.answer if isinstance(approvals.answer, dict) else {}
        for entry in answer.get("approved_by") or []:
            login = _login(entry, "user", "username")
            if login.lower() in allowed:
                return ForgeApproval(login, f"gitlab approval of merge request {iid}")
        for note in _list(get(f"merge_requests/{iid}/notes?per_page=100")):
            login = _login(note, "author", "username")
            if login.lower() in allowed and _is_deploy_command(_login(note, "body"), env):
                return ForgeApproval(login, f"gitlab comment '/deploy {env}' on merge request {iid}")
    for note in _list(get(f"repository/commits/{sha}/comments")):
        login = _login(note, "author", "username")
        if login.lower() in allowed and _is_deploy_command(_login(note, "note"), env):
            return ForgeApproval(login, f"gitlab comment '/deploy {env}' on commit {sha[:12]}")
    return None

