"""Approvals by forge identity: a person the forge authenticated approves a deploy to an
``approval: manual`` environment.

``environments.<env>.approvers`` lists forge user names and teams: ``@org/team-slug`` on GitHub, a
group's full path ``@group/subgroup`` on GitLab (:class:`TeamMembership` asks the forge whether the
person who approved is a member: ``GET /orgs/{org}/teams/{slug}/memberships/{username}``, active;
``GET /groups/{path}/members/all/{user_id}``, inherited members included). The
``<app>_forge_approval_sensor`` (in the daemon, every minute) looks, for each commit waiting for such
an environment (live in the environment it comes ``after``, or else the head of a branch it deploys),
for:

- an approving review by an approver on a pull/merge request that brought the commit (GitHub:
  ``/commits/{sha}/pulls`` then ``/pulls/{n}/reviews`` in state ``APPROVED``; GitLab:
  ``/repository/commits/{sha}/merge_requests`` then ``/merge_requests/{iid}/approvals``);
- a ``/deploy <env>`` comment by an approver on that request or on the commit (ChatOps, as Prow and
  Atlantis do).

The first one found becomes the approval record ``make deploy`` writes (``deploy/approvals.py``: under
the home, which no stage can reach), naming the person and how ("github review on pull request 12",
with " (member of @acme/senior-developers)" when a team let them),
and the sensor starts the environment's deploy job; the deployment's metadata then names them. A run
cannot forge this: it holds no forge token and cannot write the home, and the forge, not the comment
text, says who wrote it.
"""

from __future__ import annotations

import urllib.parse
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


class TeamMembership:
    """Whether a forge user is in a team or group, each user+team asked once per instance (the sensor
    makes one per tick). 404 (or an inactive membership) is "no"; 403 means the token may not read
    memberships: one warning naming the permission it lacks, and the team approves nothing. Anything
    else the forge could not answer raises ForgeTrouble."""

    def __init__(self, client: ForgeClient, forge: ForgeSettings, *, log: LogFn, warn: LogFn | None = None) -> None:
        self.client, self.forge, self.log, self.warn = client, forge, log, warn or log
        self.known: dict[tuple[str, str], bool] = {}
        self.refused: set[str] = set()  # teams whose memberships the token may not read

    def is_member(self, team: str, login: str, user_id: int | None) -> bool:
        key = (team.lower(), login.lower())
        if key not in self.known:
            self.known[key] = self._ask(team, login, user_id)
        return self.known[key]

    def _ask(self, team: str, login: str, user_id: int | None) -> bool:
        if team.lower() in self.refused:
            return False
        quote = lambda part: urllib.parse.quote(part, safe="")  # noqa: E731
        if self.forge.kind == "github":
            org, _, slug = team.partition("/")
            path = f"orgs/{quote(org)}/teams/{quote(slug.lower())}/memberships/{quote(login)}"  # slugs: lowercase
        elif user_id is None:
            self.log(f"gitlab gave no user id for {login}: membership of @{team} not asked")
            return False
        else:
            path = f"groups/{quote(team)}/members/all/{int(user_id)}"
        answer = self.client.get_api(self.forge, path, log=self.log)
        if answer.outcome == "ok":
            state = answer.answer.get("state", "active") if isinstance(answer.answer, dict) else "active"
            return state == "active"  # GitHub: "pending" is an invitation not yet accepted
        if answer.code == 404:
            return False
        if answer.code == 403:
            self.refused.add(team.lower())
            variable = self.client.token_variable(self.forge)
            needs = ("the read:org scope (a fine-grained token: the organization permission 'Members: read')"
                     if self.forge.kind == "github" else "the read_api scope and access to the group")
            self.warn(f"{self.forge.kind} refused to say who is a member of @{team} (HTTP 403): the token in "
                      f"{variable} needs {needs}; until it has it, approvers: @{team} approves nobody")
            return False
        raise ForgeTrouble(f"membership of {login} in @{team} not read: {answer.message}")


def _user_id(entry: Any, *keys: str) -> int | None:
    value = _login(entry, *keys)
    return int(value) if value.isdigit() else None


def find_forge_approval(client: ForgeClient, forge: ForgeSettings, *, sha: str, env: str,  # noqa: PLR0911
                        approvers: Iterable[str], log: LogFn, warn: LogFn | None = None,
                        membership: TeamMembership | None = None) -> ForgeApproval | None:
    """The first approval of ``sha`` for ``env`` by one of ``approvers`` (a user name, or ``@team`` whose
    members approve) the forge knows, else None. ``membership`` caches team answers (a new one when
    None). Raises ForgeTrouble when the forge could not be asked."""
    approvers = list(approvers)
    users = {a.lower() for a in approvers if not a.startswith("@")}
    teams = [a[1:] for a in approvers if a.startswith("@")]
    membership = membership or TeamMembership(client, forge, log=log, warn=warn)
    get = lambda path: client.get(forge, path, log=log)  # noqa: E731

    def by_approver(entry: Any, who: str, login_key: str, how: str) -> ForgeApproval | None:
        login = _login(entry, who, login_key)
        if not login:
            return None
        if login.lower() in users:
            return ForgeApproval(login, how)
        for team in teams:
            if membership.is_member(team, login, _user_id(entry, who, "id")):
                return ForgeApproval(login, f"{how} (member of @{team})")
        return None

    def command(entry: Any, who: str, login_key: str, body: str, how: str) -> ForgeApproval | None:
        return by_approver(entry, who, login_key, how) if _is_deploy_command(_login(entry, body), env) else None

    if forge.kind == "github":
        for pr in _list(get(f"commits/{sha}/pulls?per_page=30")):
            number = int(pr.get("number", 0)) if isinstance(pr, dict) else 0
            if number <= 0:
                continue
            for review in _list(get(f"pulls/{number}/reviews?per_page=100")):
                if _login(review, "state") == "APPROVED" and (
                        found := by_approver(review, "user", "login", f"github review on pull request {number}")):
                    return found
            for comment in _list(get(f"issues/{number}/comments?per_page=100")):
                if found := command(comment, "user", "login", "body",
                                    f"github comment '/deploy {env}' on pull request {number}"):
                    return found
        for comment in _list(get(f"commits/{sha}/comments?per_page=100")):
            if found := command(comment, "user", "login", "body",
                                f"github comment '/deploy {env}' on commit {sha[:12]}"):
                return found
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
            if found := by_approver(entry, "user", "username", f"gitlab approval of merge request {iid}"):
                return found
        for note in _list(get(f"merge_requests/{iid}/notes?per_page=100")):
            if found := command(note, "author", "username", "body",
                                f"gitlab comment '/deploy {env}' on merge request {iid}"):
                return found
    for note in _list(get(f"repository/commits/{sha}/comments")):
        if found := command(note, "author", "username", "note",
                            f"gitlab comment '/deploy {env}' on commit {sha[:12]}"):
            return found
    return None
