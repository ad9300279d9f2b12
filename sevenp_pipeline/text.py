"""Text from a branch (commit author, subject and body, branch names, test names) made safe to show.

A commit message can carry terminal escapes (``ESC[2J``, a fake prompt), bidi overrides that reorder
what a reviewer reads, and HTML (``<iframe src=javascript:…>``) that a markdown viewer may render.
:func:`printable` removes the first two wherever such text reaches a log; :func:`md_text` escapes the
third wherever it goes into markdown (release notes, metadata tables).
"""

from __future__ import annotations

import html
import re

# C0 controls but tab and newline, DEL, C1 controls (U+009B is a one-character CSI), bidi embeddings,
# overrides and isolates.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str, *, multiline: bool = False) -> str:
    """``text`` without control characters; newlines kept only when ``multiline``, else a space."""
    cleaned = _CONTROL.sub("", text)
    return cleaned if multiline else cleaned.replace("\n", " ").replace("\t", " ")


def md_text(text: str) -> str:
    """``text`` for markdown: ``&``, ``<`` and ``>`` escaped, so no HTML of a commit is rendered."""
    return html.escape(text, quote=False)
