"""License policy check over SBOM or lockfile components, with SPDX expressions.

Expressions are parsed by ``license-expression`` against the SPDX license list (``GPL-3.0``
normalises to ``GPL-3.0-only``). ``A OR B`` is allowed when either side is (the user may choose);
``A AND B`` only when both are. A known SPDX license outside the allowlist, or on the denylist, is
denied; a missing license or one that is not an SPDX id (``SEE LICENSE IN …``) is unknown.
Several license entries on one component are combined with AND (the conservative reading).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from license_expression import (
    AND,
    OR,
    ExpressionError,
    LicenseExpression,
    LicenseSymbol,
    Licensing,
    get_spdx_licensing,
)

from sevenp_pipeline.scanners.models import Component, LicenseFinding, LicenseReport

DEFAULT_ALLOWED_LICENSES: tuple[str, ...] = (
    "MIT", "MIT-0", "ISC", "BSD-2-Clause", "BSD-3-Clause", "Apache-2.0", "0BSD", "BlueOak-1.0.0", "CC0-1.0",
    "Python-2.0", "Unlicense", "CC-BY-4.0", "CC-BY-3.0", "Zlib", "WTFPL",
)
"""Permissive licenses fine for a proprietary web service; copyleft (GPL/AGPL/LGPL) needs a review."""

UNKNOWN_POLICIES = ("fail", "warn", "allow")
ALLOWED, DENIED, UNKNOWN = "allowed", "denied", "unknown"


class LicensePolicyError(ValueError):
    """The policy itself is wrong (e.g. an allowlist entry that is not an SPDX id)."""


def check_licenses(
    components: Iterable[Component],
    *,
    allow: Iterable[str] = DEFAULT_ALLOWED_LICENSES,
    deny: Iterable[str] = (),
    unknown: str = "fail",
) -> LicenseReport:
    """Classifies each component; ``report.ok`` is False on any denied (or, with ``unknown="fail"``, unknown)."""
    if unknown not in UNKNOWN_POLICIES:
        raise LicensePolicyError(f"unknown-license policy {unknown!r} is not one of {', '.join(UNKNOWN_POLICIES)}")
    licensing = get_spdx_licensing()
    allowed_keys, denied_keys = _keys(licensing, allow, "allow"), _keys(licensing, deny, "deny")
    buckets: dict[str, list[LicenseFinding]] = {ALLOWED: [], DENIED: [], UNKNOWN: []}
    counts: Counter[str] = Counter()
    for comp in components:
        expression, status, reason = _classify(licensing, comp.licenses, allowed_keys, denied_keys)
        counts[expression or "(none)"] += 1
        buckets[status].append(LicenseFinding(comp.name, comp.version, comp.purl, expression, status, reason))
    return LicenseReport(
        allowed=tuple(buckets[ALLOWED]), denied=tuple(buckets[DENIED]), unknown=tuple(buckets[UNKNOWN]),
        counts_by_license=dict(counts.most_common()), unknown_policy=unknown,
    )


def _keys(licensing: Licensing, ids: Iterable[str], what: str) -> frozenset[str]:
    keys = set()
    for raw in ids:
        parsed = licensing.parse(raw, validate=False)
        if not isinstance(parsed, LicenseSymbol) or licensing.unknown_license_keys(parsed):
            raise LicensePolicyError(f"{what} list: {raw!r} is not a single SPDX license id")
        keys.add(parsed.key)
    return frozenset(keys)


def _classify(
    licensing: Licensing, licenses: tuple[str, ...], allowed: frozenset[str], denied: frozenset[str]
) -> tuple[str, str, str]:
    if not licenses:
        return "", UNKNOWN, "no license declared"
    text = " AND ".join(f"({lic})" if len(licenses) > 1 else lic for lic in licenses)
    try:
        parsed = licensing.parse(text, validate=False)
    except ExpressionError as exc:
        return text, UNKNOWN, f"not an SPDX expression: {exc}"
    if parsed is None:
        return text, UNKNOWN, "empty license expression"
    status, reason = _evaluate(licensing, parsed, allowed, denied)
    return str(parsed), status, reason


def _evaluate(
    licensing: Licensing, expr: LicenseExpression, allowed: frozenset[str], denied: frozenset[str]
) -> tuple[str, str]:
    if isinstance(expr, LicenseSymbol):
        if expr.key in denied:
            return DENIED, f"{expr.key} is on the denylist"
        if expr.key in allowed:
            return ALLOWED, f"{expr.key} is allowed"
        if licensing.unknown_license_keys(expr):
            return UNKNOWN, f"{expr.key!r} is not an SPDX license id"
        return DENIED, f"{expr.key} is not on the allowlist"
    parts = [_evaluate(licensing, arg, allowed, denied) for arg in expr.args]
    statuses = [s for s, _ in parts]
    if isinstance(expr, OR):
        order = (ALLOWED, UNKNOWN, DENIED)  # any acceptable choice is enough
    elif isinstance(expr, AND):
        order = (DENIED, UNKNOWN, ALLOWED)  # every part must be acceptable
    else:
        return UNKNOWN, f"unsupported expression {expr}"
    status = next(s for s in order if s in statuses)
    return status, "; ".join(r for s, r in parts if s == status)
