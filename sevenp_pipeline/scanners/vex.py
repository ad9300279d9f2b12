"""Suppressing findings with OpenVEX statements and an expiring allowlist, and the severity gate.

Only a VEX ``not_affected`` or ``fixed`` statement suppresses; when several statements cover the
same finding the latest (statement timestamp, else document timestamp, else file order) wins, as
OpenVEX prescribes. Allowlist entries must carry an expiry date: an expired entry stops
suppressing and is reported, so accepted risks are revisited instead of living forever.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from packageurl import PackageURL

from sevenp_pipeline.scanners.models import SEVERITIES, Finding, Suppression, VexResult, severity_rank

VEX_STATUSES = ("not_affected", "affected", "fixed", "under_investigation")
SUPPRESSING = ("not_affected", "fixed")
JUSTIFICATIONS = (
    "component_not_present", "vulnerable_code_not_present", "vulnerable_code_not_in_execute_path",
    "vulnerable_code_cannot_be_controlled_by_adversary", "inline_mitigations_already_exist",
)
ALLOWLIST_KEYS = {"id", "package", "reason", "expires"}
_EPOCH = dt.datetime.min.replace(tzinfo=dt.timezone.utc)


class SuppressionError(Exception):
    """A VEX document or allowlist file is malformed; the message names the file."""


@dataclass(frozen=True)
class VexStatement:
    vulnerabilities: frozenset[str]
    products: tuple[str, ...]  # purls (product @ids and their subcomponents)
    status: str
    justification: str
    impact_statement: str
    timestamp: dt.datetime
    source: str


@dataclass(frozen=True)
class VexDocument:
    source: str
    statements: tuple[VexStatement, ...]


def load_openvex(path: str | Path) -> VexDocument:
    """Reads an OpenVEX (v0.2.0) JSON document, checking each statement's status and justification."""
    file = Path(path)
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SuppressionError(f"{file}: cannot read OpenVEX document: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("statements"), list):
        raise SuppressionError(f"{file}: not an OpenVEX document (no 'statements' list)")
    if "openvex" not in str(doc.get("@context", "")):
        raise SuppressionError(f"{file}: @context {doc.get('@context')!r} is not an OpenVEX context")
    doc_time = _time(doc.get("timestamp"), file, "timestamp") if doc.get("timestamp") else _EPOCH
    return VexDocument(str(file), tuple(_statement(s, i, file, doc_time) for i, s in enumerate(doc["statements"])))


def _statement(raw: Any, i: int, file: Path, doc_time: dt.datetime) -> VexStatement:
    where = f"{file}: statements[{i}]"
    if not isinstance(raw, dict):
        raise SuppressionError(f"{where}: must be an object")
    vuln = raw.get("vulnerability")
    if isinstance(vuln, str):  # OpenVEX 0.0.x wrote the id as a plain string
        names = {vuln}
    elif isinstance(vuln, dict) and vuln.get("name"):
        names = {str(vuln["name"]), *(str(a) for a in vuln.get("aliases") or ())}
    else:
        raise SuppressionError(f"{where}: missing vulnerability.name")
    status = raw.get("status")
    if status not in VEX_STATUSES:
        raise SuppressionError(f"{where}: status {status!r} is not one of {', '.join(VEX_STATUSES)}")
    justification = str(raw.get("justification") or "")
    impact = str(raw.get("impact_statement") or "")
    if justification and justification not in JUSTIFICATIONS:
        raise SuppressionError(f"{where}: unknown justification {justification!r}")
    if status == "not_affected" and not (justification or impact):
        raise SuppressionError(f"{where}: not_affected needs a justification or an impact_statement")
    products: list[str] = []
    for product in raw.get("products") or ():
        if isinstance(product, dict):
            products += [str(x["@id"]) for x in (product, *(product.get("subcomponents") or ()))
                         if isinstance(x, dict) and x.get("@id")]
            purl = (product.get("identifiers") or {}).get("purl")
            if purl:
                products.append(str(purl))
    if not products:
        raise SuppressionError(f"{where}: no products[].@id")
    stamp = _time(raw["timestamp"], file, f"statements[{i}].timestamp") if raw.get("timestamp") else doc_time
    return VexStatement(frozenset(names), tuple(products), status, justification, impact, stamp, str(file))


def _time(value: Any, file: Path, key: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError as exc:
        raise SuppressionError(f"{file}: {key} is not an RFC 3339 time: {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def load_allowlist(path: str | Path) -> list[Suppression]:
    """Reads ``- {id, package?, reason, expires: YYYY-MM-DD}`` entries; no expiry is an error."""
    file = Path(path)
    try:
        entries = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SuppressionError(f"{file}: cannot read allowlist: {exc}") from exc
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise SuppressionError(f"{file}: the allowlist must be a YAML list of entries")
    result = []
    for i, entry in enumerate(entries):
        where = f"{file}: entry {i + 1}"
        if not isinstance(entry, dict):
            raise SuppressionError(f"{where}: must be a mapping with id, reason, expires")
        unknown = set(entry) - ALLOWLIST_KEYS
        if unknown:
            raise SuppressionError(f"{where}: unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        for key in ("id", "reason", "expires"):
            if not entry.get(key):
                raise SuppressionError(f"{where} ({entry.get('id', '?')}): missing '{key}'")
        expires = entry["expires"]
        if isinstance(expires, str):
            try:
                expires = dt.date.fromisoformat(expires)
            except ValueError as exc:
                raise SuppressionError(f"{where}: expires {expires!r} is not YYYY-MM-DD") from exc
        if isinstance(expires, dt.datetime) or not isinstance(expires, dt.date):
            raise SuppressionError(f"{where}: expires must be a date (YYYY-MM-DD), got {expires!r}")
        result.append(Suppression(id=str(entry["id"]), reason=str(entry["reason"]), expires=expires,
                                  package=str(entry.get("package") or ""), source=str(file)))
    return result


def apply(
    findings: Iterable[Finding],
    *,
    vex_documents: Sequence[VexDocument | str | Path] = (),
    allowlist: Sequence[Suppression] | str | Path | None = None,
    today: dt.date | None = None,
) -> VexResult:
    """Splits findings into kept and suppressed (with the reason); lists expired allowlist entries."""
    today = today or dt.date.today()
    docs = [d if isinstance(d, VexDocument) else load_openvex(d) for d in vex_documents]
    statements = [s for d in docs for s in d.statements]
    entries = load_allowlist(allowlist) if isinstance(allowlist, (str, Path)) else list(allowlist or ())
    active = [e for e in entries if e.expires >= today]
    expired = [e for e in entries if e.expires < today]
    kept: list[Finding] = []
    suppressed: list[tuple[Finding, str]] = []
    for finding in findings:
        reason = _vex_reason(finding, statements) or _allow_reason(finding, active)
        if reason:
            suppressed.append((finding, reason))
        else:
            kept.append(finding)
    return VexResult(kept=kept, suppressed=suppressed, expired_entries=expired)


def _vex_reason(finding: Finding, statements: list[VexStatement]) -> str:
    relevant = [(s.timestamp, i, s) for i, s in enumerate(statements)
                if s.vulnerabilities & finding.ids and any(_purl_matches(p, finding.purl) for p in s.products)]
    if not relevant:
        return ""
    latest = max(relevant, key=lambda t: (t[0], t[1]))[2]
    if latest.status not in SUPPRESSING:
        return ""
    why = latest.justification or latest.impact_statement
    return f"VEX {latest.status}" + (f" ({why})" if why else "") + f" in {latest.source}"


def _allow_reason(finding: Finding, entries: list[Suppression]) -> str:
    for e in entries:
        if e.id in finding.ids and (not e.package or e.package == finding.package
                                    or _purl_matches(e.package, finding.purl)):
            return f"allowlisted until {e.expires.isoformat()}: {e.reason} ({e.source})"
    return ""


def _purl_matches(pattern: str, purl: str) -> bool:
    """Same type/namespace/name; the pattern's version, if it has one, must be equal too."""
    try:
        want, have = PackageURL.from_string(pattern), PackageURL.from_string(purl)
    except ValueError:
        return False
    same = (want.type, want.namespace, want.name) == (have.type, have.namespace, have.name)
    return same and (not want.version or want.version == have.version)


def gate(findings: Iterable[Finding], threshold: str = "high") -> list[Finding]:
    """Findings at or above ``threshold`` (low/medium/high/critical); UNKNOWN severity counts as HIGH."""
    if threshold.upper() not in SEVERITIES:
        raise ValueError(f"gate threshold {threshold!r} is not one of {', '.join(s.lower() for s in SEVERITIES)}")
    floor = severity_rank(threshold)
    return [f for f in findings if severity_rank(f.severity) >= floor]
