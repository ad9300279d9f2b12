"""Secret redaction: everything a stage logs or stores passes through a Redactor first.

Dagster masks nothing (FIELD-NOTES): a secret written to ``context.log`` or printed by a child
process lands in the event log and the compute-log files. Over-redaction is reversible by the
user; a leaked secret is not, so the redactor errs on the side of hiding.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

MASK = "***"
# Environment variable names whose values are treated as secrets even when not declared.
SECRET_NAME = re.compile(r"(?i)(secret|token|passw(or)?d|api[_-]?key|private[_-]?key|access[_-]?key|credential)")
# Values shorter than this are not redacted: masking "1" or "true" everywhere helps no one.
MIN_SECRET_LENGTH = 6
# URIs with an inline password: postgresql://user:pass@host
# (Not `host:port/repo@sha256:...`: a password here has no '/'.)
URI_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s/]+)(?=@)", re.I)


class Redactor:
    """Replaces every known secret value (and passwords inside URIs) with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        new = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH}
        if new - self._secrets:
            self._secrets |= new
            # Longest first so a secret containing another is masked whole.
            alternatives = sorted(self._secrets, key=len, reverse=True)
            self._pattern = re.compile("|".join(re.escape(s) for s in alternatives))

    def add_from_env(self, env: Mapping[str, str], declared: Iterable[str] = ()) -> None:
        """Registers declared secret variables and any variable whose name looks secret."""
        declared = set(declared)
        self.add(*(v for k, v in env.items() if k in declared or SECRET_NAME.search(k)))

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        return URI_PASSWORD.sub(lambda m: m.group("scheme") + MASK, text)
