"""References to a stage's test services in its ``env``: ``${postgresql.url}``, ``${redis.port}``, ...

A stage's ``env`` values may name the facts of the services it lists in ``services:``, so an app
reads them under its own names (``DATABASE_URL: "${postgresql.url}"``). Literal text around a
reference is kept, ``$${`` is a literal ``${``, and nothing else is expanded: no shell, no variable
of the orchestrator's environment. Any other ``${...}`` is refused at load, naming the key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

# The facts of each service, in the order the README lists them.
SERVICE_FACTS: dict[str, tuple[str, ...]] = {
    "postgresql": ("url", "host", "port", "user", "password", "database"),
    "redis": ("url", "host", "port"),
}
KNOWN_REFERENCES = tuple(f"${{{service}.{fact}}}" for service, facts in SERVICE_FACTS.items() for fact in facts)

# `$${` first (an escaped `${`), then `${...}` up to the first `}`; an unclosed `${` is an error too.
_TOKEN = re.compile(r"\$\$\{|\$\{(?P<name>[^}]*)(?P<close>\}?)")


class ReferenceError(ValueError):
    """An ``env`` value refers to something that is not a fact of a service."""


@dataclass(frozen=True)
class Reference:
    service: str
    fact: str

    @property
    def key(self) -> str:
        return f"{self.service}.{self.fact}"


def _known() -> str:
    return ", ".join(KNOWN_REFERENCES)


def references(value: str) -> list[Reference]:
    """The service references in ``value``; raises ReferenceError on any other ``${...}``."""
    found: list[Reference] = []
    for match in _TOKEN.finditer(value):
        if match.group(0) == "$${":
            continue
        name = match.group("name")
        if not match.group("close"):
            raise ReferenceError(f"'${{{name}' is not closed with '}}' (a literal '${{' is written '$${{')")
        service, _, fact = name.partition(".")
        if fact not in SERVICE_FACTS.get(service, ()):
            raise ReferenceError(f"'${{{name}}}' is not a service fact; known: {_known()} "
                                 "(nothing else is expanded; a literal '${' is written '$${')")
        found.append(Reference(service, fact))
    return found


def check_env(env: Mapping[str, str], services: Iterable[str], where: str) -> None:
    """Checks the references of a stage's ``env`` (``where``: its key, ``stages.<name>.env``): each a
    known fact of a service the stage lists in ``services:``."""
    listed = set(services)
    for name, value in env.items():
        try:
            refs = references(value)
        except ReferenceError as exc:
            raise ReferenceError(f"{where}.{name}: {exc}") from None
        for ref in refs:
            if ref.service not in listed:
                raise ReferenceError(
                    f"{where}.{name}: '${{{ref.key}}}' refers to {ref.service}, which this stage does not get: "
                    f"add {ref.service} to its services: [{', '.join([*sorted(listed), ref.service])}]")


def expand(value: str, facts: Mapping[str, str]) -> str:
    """``value`` with each reference replaced by its fact (``facts``: ``"postgresql.url"`` -> value) and
    ``$${`` by ``${``. The value was checked at load; a fact missing here is a bug, not a config error."""
    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        return facts[match.group("name")]

    return _TOKEN.sub(sub, value)


def has_references(value: str) -> bool:
    return any(match.group(0) != "$${" for match in _TOKEN.finditer(value))
