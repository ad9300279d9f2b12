"""Secret redaction: everything a stage logs or stores passes through a Redactor first.

Dagster masks nothing (FIELD-NOTES): a secret written to ``context.log`` or printed by a child
process lands in the event log and the compute-log files. Over-redaction is reversible by the
user; a leaked secret is not, so the redactor errs on the side of hiding.

A registered secret is masked in the forms a script can print it in: as is; base64 in the
standard and URL-safe alphabets, padded or not, alone or inside a longer blob (the ``user:secret``
of HTTP Basic and npm's ``_auth``, for any user); hex in lower and upper case; percent-encoded
(``quote``, ``quote_plus``, or any mix of escaped and plain characters). Base64 is found through
the characters that depend only on the secret's bytes, for each of the three positions a secret
can take within a 3-byte group, and the whole base64 token around such a match is masked: that
is what decoding every token and searching the bytes would find, without decoding anything.

Output arrives line by line, so a secret printed as ``abcd`` + newline + ``efgh...`` would leak in
halves: :meth:`Redactor.stream` holds a line back while its end could be the start of a secret
continued on the next one, and ``Redactor(text)`` on a whole text does the same across its lines.
"""

from __future__ import annotations

import base64
import functools
import re
import string
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

MASK = "***"
# A declared secret shorter than this is refused at config load; shorter values found by the name
# heuristics are not masked: masking "1" or "true" everywhere helps no one.
MIN_SECRET_LENGTH = 8
# Environment variable names whose values are treated as secrets even when not declared. Short
# words count only as a whole part of the name: GITHUB_PAT and BASIC_AUTH, not PATH or AUTHOR;
# SEVENP_SIGNING_KEY, not KEYBOARD.
SECRET_NAME = re.compile(
    r"(?i)secret|token|passw(?:or)?d|api[_-]?key|private[_-]?key|access[_-]?key|credential|webhook"
    r"|(?:^|_)(?:pat|o?auth|dsn|key)(?:_|$)"
)
# URIs with an inline password: postgresql://user:pass@host
# (Not `host:port/repo@sha256:...`: a password here has no '/'.)
URI_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://[^:/@\s]+:)(?P<pw>[^@\s/]+)(?=@)", re.I)
# A value that is a URL with credentials: https://user:token@host, https://token@host.
URL_USERINFO = re.compile(r"^[a-z][a-z0-9+.-]*://(?P<userinfo>[^/@\s]+)@", re.I)
# A run of text with at least one %XX escape: decoded and searched for secrets.
_PERCENT_RUN = re.compile(r"[^\s\"']*%[0-9A-Fa-f]{2}[^\s\"']*")
_PERCENT_ESCAPE = re.compile(r"%[0-9A-F]{2}")
_BASE64_CHARS = frozenset(string.ascii_letters + string.digits + "+/-_")
_TO_URLSAFE = str.maketrans("+/", "-_")
# The first characters of every form: a line is held back only when its end matches at least a
# prefix of one of these (a longer prefix is confirmed against the whole form).
_HEAD = MIN_SECRET_LENGTH
# A stream never holds more lines than this; past it the oldest line goes out with the part that
# could begin a secret masked.
MAX_HELD_LINES = 256


def secret_forms(secret: str) -> dict[str, bool]:
    """The strings ``secret`` can appear as in output, each mapped to whether it is a base64
    fragment (whose surrounding base64 token is masked whole)."""
    raw = secret.encode("utf-8", errors="surrogateescape")  # os.environ's undecodable bytes
    forms: dict[str, bool] = {secret.replace("\r", "").replace("\n", ""): False}
    forms[raw.hex()] = False
    forms[raw.hex().upper()] = False
    for encoded in (quote(raw, safe=""), quote(raw), quote_plus(raw)):
        forms[encoded] = False
        forms[_PERCENT_ESCAPE.sub(lambda m: m.group().lower(), encoded)] = False
    for core in _base64_cores(raw):
        forms.setdefault(core, True)
        forms.setdefault(core.translate(_TO_URLSAFE), True)
    return {form: b64 for form, b64 in forms.items() if len(form) >= MIN_SECRET_LENGTH}


def _base64_cores(data: bytes) -> list[str]:
    """For each offset of ``data`` within a 3-byte group, the base64 characters that depend on
    ``data`` alone: they appear in the encoding of any blob holding ``data`` at that offset."""
    cores = []
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + data).decode("ascii")
        first = -(-8 * offset // 6)  # the first character whose 6 bits all come from data
        last = 8 * (offset + len(data)) // 6
        cores.append(encoded[first:last])
    return cores


def url_credentials(value: str) -> list[str]:
    """The userinfo of a URL value (``https://user:tok@host``), its password, decoded and not."""
    match = URL_USERINFO.match(value.strip())
    if match is None:
        return []
    userinfo = match.group("userinfo")
    found = [userinfo, unquote(userinfo)]
    if ":" in userinfo:
        password = userinfo.split(":", 1)[1]
        found += [password, unquote(password)]
    return found


class Redactor:
    """Replaces every known secret value, in its encoded forms too, and passwords inside URIs
    with ``***``."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: set[str] = set()
        self._compiled: _Patterns | None = None
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        new = {s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH} - self._secrets
        if new:
            self._secrets |= new
            self._compiled = None  # compiled again on first use: adding several sets costs one compile

    def add_from_env(self, env: Mapping[str, str], declared: Iterable[str] = ()) -> None:
        """Registers declared secret variables, any variable whose name looks secret and the
        credentials of any value that is a URL with a userinfo part."""
        declared = set(declared)
        for name, value in env.items():
            if name in declared or SECRET_NAME.search(name):
                self.add(value)
            self.add(*url_credentials(value))

    def stream(self) -> RedactingStream:
        """A redactor for output arriving line by line that also masks secrets split across lines."""
        return RedactingStream(self)

    def __call__(self, text: str) -> str:
        if "\n" not in text:
            return self.line(text)
        stream = self.stream()
        lines = [clean for line in text.split("\n") for clean in stream.feed(line)]
        return "\n".join([*lines, *stream.flush()])

    def line(self, text: str) -> str:
        """Redacts one line on its own (no secret split across lines is seen)."""
        spans = self._spans(text)
        return _mask(text, spans) if spans else text

    def _patterns(self) -> _Patterns | None:
        if self._compiled is None and self._secrets:
            self._compiled = _compile(frozenset(self._secrets))
        return self._compiled

    def _spans(self, text: str) -> list[tuple[int, int]]:
        spans = [m.span("pw") for m in URI_PASSWORD.finditer(text)] if "://" in text else []
        patterns = self._patterns()
        if patterns is None:
            return spans
        for span in _all_matches(patterns.forms, text):
            spans.append(_whole_token(text, *span) if patterns.base64[text[slice(*span)]] else span)
        if "%" in text:
            for run in _PERCENT_RUN.finditer(text):
                value = run.group()
                decoded = unquote(value)
                if patterns.plain.search(decoded) or ("+" in value and patterns.plain.search(unquote_plus(value))):
                    spans.append(run.span())
        return spans


@dataclass(frozen=True)
class _Patterns:
    forms: re.Pattern[str]  # every form of every secret, longest match first
    base64: Mapping[str, bool]  # form -> is a base64 fragment
    plain: re.Pattern[str]  # the secrets as they are (for percent-decoded text)
    tail: re.Pattern[str]  # the start of a form (its first _HEAD characters, or fewer at the end)
    by_head: Mapping[str, tuple[str, ...]]  # the forms starting with these _HEAD characters
    longest: int


@functools.lru_cache(maxsize=64)
def _compile(secrets: frozenset[str]) -> _Patterns:
    """Patterns for a set of secrets. Cached: every command builds a Redactor from the same env."""
    forms: dict[str, bool] = {}
    for secret in secrets:
        for form, b64 in secret_forms(secret).items():
            forms[form] = forms.get(form, False) or b64
    by_head: dict[str, list[str]] = {}
    for form in forms:
        by_head.setdefault(form[:_HEAD], []).append(form)
    plain = {s.replace("\r", "").replace("\n", "") for s in secrets}
    return _Patterns(
        forms=re.compile(_trie_source(_trie(forms))),
        base64=forms,
        plain=re.compile(_trie_source(_trie(plain))),
        tail=re.compile(_tail_source(_trie(by_head), 0)),
        by_head={head: tuple(found) for head, found in by_head.items()},
        longest=max(len(form) for form in forms),
    )


# A trie as nested dicts: one key per next character, "" marks the end of a word. As a regex it is
# far faster than an alternation of hundreds of literals, which Python's re tries one by one.
def _trie(words: Iterable[str]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for word in words:
        node = root
        for char in word:
            node = node.setdefault(char, {})
        node[""] = True
    return root


def _trie_source(node: dict[str, Any]) -> str:
    """A regex matching any word of the trie, the longest where several match."""
    out = []
    children = [c for c in node if c]
    while len(children) == 1 and "" not in node:  # a run of single characters needs no group
        out.append(re.escape(children[0]))
        node = node[children[0]]
        children = [c for c in node if c]
    if children:
        group = "(?:" + "|".join(re.escape(c) + _trie_source(node[c]) for c in sorted(children)) + ")"
        out.append(group + "?" if "" in node else group)
    return "".join(out)


def _tail_source(node: dict[str, Any], depth: int) -> str:
    """A regex matching a word of the trie, or at the end of the text any non-empty prefix of one."""
    children = sorted(c for c in node if c)
    if not children:
        return ""
    alternatives = [re.escape(c) + _tail_source(node[c], depth + 1) for c in children]
    if depth > 0:
        alternatives.append(r"\Z")
    return "(?:" + "|".join(alternatives) + ")"


def _all_matches(pattern: re.Pattern[str], text: str, pos: int = 0) -> Iterable[tuple[int, int]]:
    """Every match, overlapping ones too (one secret's form can end where another's begins)."""
    match = pattern.search(text, pos)
    while match is not None:
        yield match.span()
        match = pattern.search(text, match.start() + 1)


def _whole_token(text: str, start: int, end: int) -> tuple[int, int]:
    """Widens a base64 fragment to the base64 token around it, padding included."""
    while start > 0 and text[start - 1] in _BASE64_CHARS:
        start -= 1
    while end < len(text) and text[end] in _BASE64_CHARS:
        end += 1
    while end < len(text) and text[end] == "=":
        end += 1
    return start, end


def _mask(text: str, spans: Iterable[tuple[int, int]]) -> str:
    """``text`` with each span replaced by the mask; overlapping and touching spans become one."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if end <= start:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out = []
    last = 0
    for start, end in merged:
        out += [text[last:start], MASK]
        last = end
    out.append(text[last:])
    return "".join(out)


# A line is held back only when its last MIN_HELD_PREFIX or more characters begin a form: one or
# two characters of a secret end most lines (hex forms begin with any of 0-9a-f), and holding all of
# those back delayed more than half of a stage's live log.
MIN_HELD_PREFIX = 4


class RedactingStream:
    """Redacts output line by line and masks a secret split across consecutive lines.

    :meth:`feed` returns the lines that can go out now (in order, redacted); a line whose end
    could begin a secret continued on the next line is held back until that line arrives.
    :meth:`flush` returns the rest at the end of the output.
    """

    def __init__(self, redactor: Redactor) -> None:
        self._redactor = redactor
        self._held: list[tuple[str, list[tuple[int, int]]]] = []  # a raw line, masked spans on it
        self._suspect = 0  # in the first held line: where the text that could begin a secret starts
        self._previous = ""  # the end of the last line that went out (see _continue_previous)
        self._last_released = ""

    def feed(self, line: str) -> list[str]:
        self._held.append((line, []))
        self._continue_previous()
        out = self._release(final=False)
        if out and not self._held:
            self._previous = self._last_released[-(MIN_HELD_PREFIX - 1):]
        return out

    def _continue_previous(self) -> None:
        """The first line after a released one: mask what continues a form whose first (at most
        MIN_HELD_PREFIX - 1) characters ended the released line."""
        patterns = self._redactor._patterns()
        if patterns is None or not self._previous or len(self._held) != 1:
            return
        line, spans = self._held[0]
        contents = [self._previous, line.rstrip("\r")]
        starts = [0, len(contents[0]), len(contents[0]) + len(contents[1])]
        _mark_across(patterns, [[], spans], "".join(contents), starts, 0)

    def flush(self) -> list[str]:
        return self._release(final=True)

    def _release(self, *, final: bool) -> list[str]:
        patterns = self._redactor._patterns()
        if patterns is None or final:
            keep = len(self._held)
        elif len(self._held) == 1:  # the common case: nothing held before this line
            suspect = _suspect_start(patterns, self._held[0][0].rstrip("\r"))
            keep = 1 if suspect is None else 0
            self._suspect = suspect or 0
        else:
            # Line breaks (and CRs before them) are left out: what the lines read joined up.
            contents = [line.rstrip("\r") for line, _ in self._held]
            starts = [0]
            for content in contents:
                starts.append(starts[-1] + len(content))
            joined = "".join(contents)
            _mark_across(patterns, [spans for _, spans in self._held], joined, starts, self._suspect)
            suspect = _suspect_start(patterns, joined)
            if suspect is None:
                keep = len(self._held)
            else:  # everything from the line holding the suspect start on waits
                keep = next(i for i in range(len(contents)) if starts[i + 1] > suspect)
                if keep == 0 and len(self._held) > MAX_HELD_LINES:
                    line, spans = self._held[0]
                    spans.append((suspect, len(line)))
                    keep = 1
                self._suspect = max(0, suspect - starts[keep])
        out = [_mask(line, [*spans, *self._redactor._spans(line)]) for line, spans in self._held[:keep]]
        if keep:
            self._last_released = self._held[keep - 1][0].rstrip("\r")
        del self._held[:keep]
        return out


def _mark_across(
    patterns: _Patterns, spans: list[list[tuple[int, int]]], joined: str, starts: list[int], suspect: int
) -> None:
    """Marks in ``spans`` (one list per line joined up in ``joined``, the lines starting at
    ``starts``) each line's part of every form that runs across a line break.

    Such a form starts at or after ``suspect``, the suspect start of the lines held before the last
    one: an earlier start would have been the suspect start.
    """
    for match_start, match_end in _all_matches(patterns.forms, joined, suspect):
        first, last = bisect_right(starts, match_start) - 1, bisect_right(starts, match_end - 1) - 1
        if first == last:
            continue  # within one line: found again when the line goes out
        start, end = match_start, match_end
        if patterns.base64[joined[start:end]]:  # the whole token, but not into other lines
            start, end = _whole_token(joined, start, end)
            start, end = max(start, starts[first]), min(end, starts[last + 1])
        for i in range(first, last + 1):
            spans[i].append((max(start, starts[i]) - starts[i], min(end, starts[i + 1]) - starts[i]))


def _suspect_start(patterns: _Patterns, text: str) -> int | None:
    """Where the longest end of ``text`` that is the beginning of a form (not all of it) starts."""
    pos = max(0, len(text) - patterns.longest + 1)
    while (match := patterns.tail.search(text, pos)) is not None:
        start = match.start()
        rest = text[start:]
        if len(rest) < _HEAD or any(len(form) > len(rest) and form.startswith(rest)
                                    for form in patterns.by_head[rest[:_HEAD]]):
            # The earliest start is the longest end. Shorter than MIN_HELD_PREFIX, the line goes out
            # (at most 3 characters of a form; the next line's continuation is still masked).
            return start if len(rest) >= MIN_HELD_PREFIX else None
        pos = start + 1
    return None
