"""An offline OSV advisory database in a local folder: load (failing closed), update, check.

No online vulnerability service is reachable from CI, so the scanners match against OSV records
kept on disk (one JSON record per file, ``<ecosystem>/<ID>.json``). Anything wrong with that data
(missing folder, no records, unreadable or incomplete record) raises: an empty database would
otherwise report "no vulnerabilities" for every build.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import shutil
import sys
import tempfile
import urllib.parse
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cvss import CVSS3, CVSS4
from cvss.exceptions import CVSSError

from sevenp_pipeline.scanners.models import Advisory, AffectedPackage, AffectedRange

BUNDLED_DB = Path(__file__).parent / "data" / "osv"
"""The small snapshot shipped for tests and the demo (see data/README.md)."""

RANGE_EVENTS = ("introduced", "fixed", "last_affected", "limit")
GHSA_SEVERITY = {"CRITICAL": "CRITICAL", "HIGH": "HIGH", "MODERATE": "MEDIUM", "MEDIUM": "MEDIUM", "LOW": "LOW"}
DOWNLOAD_TIMEOUT = 120.0


class AdvisoryDatabaseError(Exception):
    """The advisory database is missing, empty or holds a record that is not valid OSV."""


@dataclass(frozen=True)
class AdvisoryDatabase:
    """All records of one database folder, indexed by (ecosystem, package name)."""

    root: Path
    advisories: tuple[Advisory, ...]
    fingerprint: str
    index: Mapping[tuple[str, str], tuple[Advisory, ...]]

    @classmethod
    def load(cls, path: str | Path) -> AdvisoryDatabase:
        root = Path(path)
        if not root.is_dir():
            raise AdvisoryDatabaseError(f"{root}: advisory database folder does not exist")
        files = sorted(p for p in root.rglob("*.json") if p.is_file())
        if not files:
            raise AdvisoryDatabaseError(f"{root}: advisory database is empty (no *.json OSV records)")
        digest = hashlib.sha256()
        advisories = []
        for file in files:
            raw = file.read_bytes()
            rel = file.relative_to(root).as_posix()
            digest.update(f"{rel}\0{hashlib.sha256(raw).hexdigest()}\n".encode())
            advisories.append(parse_osv(raw, file))
        index: dict[tuple[str, str], list[Advisory]] = {}
        for adv in advisories:
            if adv.withdrawn:
                continue  # kept in the count and fingerprint, never matched
            for pkg in adv.affected:
                bucket = index.setdefault((pkg.ecosystem, package_key(pkg.ecosystem, pkg.name)), [])
                if adv not in bucket:
                    bucket.append(adv)
        return cls(root, tuple(advisories), digest.hexdigest(), {k: tuple(v) for k, v in index.items()})

    @property
    def count(self) -> int:
        return len(self.advisories)

    @property
    def ecosystems(self) -> dict[str, int]:
        """Records per ecosystem (a record affecting two ecosystems counts in both)."""
        counts: Counter[str] = Counter()
        for adv in self.advisories:
            counts.update({pkg.ecosystem for pkg in adv.affected})
        return dict(sorted(counts.items()))

    @property
    def newest_modified(self) -> dt.datetime:
        return max(adv.modified for adv in self.advisories)

    def for_package(self, ecosystem: str, name: str) -> tuple[Advisory, ...]:
        return self.index.get((ecosystem, package_key(ecosystem, name)), ())

    def summary(self) -> dict[str, Any]:
        return {
            "path": str(self.root),
            "records": self.count,
            "ecosystems": self.ecosystems,
            "fingerprint": self.fingerprint,
            "newest_modified": self.newest_modified.isoformat(),
        }


def package_key(ecosystem: str, name: str) -> str:
    """Names compare case-insensitively where the ecosystem does (PyPI also folds ``_``/``.`` to ``-``)."""
    if ecosystem == "PyPI":
        return name.lower().replace("_", "-").replace(".", "-")
    return name


def parse_osv(raw: bytes, file: Path) -> Advisory:
    """Parses and validates one OSV record; every error names ``file``."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise AdvisoryDatabaseError(f"{file}: invalid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise AdvisoryDatabaseError(f"{file}: an OSV record must be a JSON object")
    adv_id = _require_str(doc, "id", file)
    modified = _parse_time(_require_str(doc, "modified", file), file, "modified")
    affected_raw = doc.get("affected")
    if not isinstance(affected_raw, list) or not affected_raw:
        raise AdvisoryDatabaseError(f"{file}: {adv_id}: missing required field 'affected' (a non-empty list)")
    affected = tuple(_parse_affected(item, i, file, adv_id) for i, item in enumerate(affected_raw))
    severity, score, vector = _severity(doc, file, adv_id)
    refs = tuple(r["url"] for r in doc.get("references") or () if isinstance(r, dict) and r.get("url"))
    return Advisory(
        id=adv_id,
        aliases=tuple(str(a) for a in doc.get("aliases") or ()),
        summary=str(doc.get("summary") or ""),
        details=str(doc.get("details") or ""),
        severity=severity,
        score=score,
        cvss_vector=vector,
        modified=modified,
        affected=affected,
        references=refs,
        path=str(file),
        withdrawn=bool(doc.get("withdrawn")),
    )


def _require_str(doc: Mapping[str, Any], key: str, file: Path, where: str = "") -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value.strip():
        raise AdvisoryDatabaseError(f"{file}: missing required field '{where}{key}'")
    return value


def _parse_time(value: str, file: Path, key: str) -> dt.datetime:
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise AdvisoryDatabaseError(f"{file}: '{key}' is not an RFC 3339 time: {value!r}") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def _parse_affected(item: Any, i: int, file: Path, adv_id: str) -> AffectedPackage:
    where = f"affected[{i}]"
    if not isinstance(item, dict) or not isinstance(item.get("package"), dict):
        raise AdvisoryDatabaseError(f"{file}: {adv_id}: missing required field '{where}.package'")
    pkg = item["package"]
    ecosystem = _require_str(pkg, "ecosystem", file, f"{where}.package.")
    name = _require_str(pkg, "name", file, f"{where}.package.")
    ranges = []
    for j, rng in enumerate(item.get("ranges") or ()):
        if not isinstance(rng, dict) or not isinstance(rng.get("events"), list) or not rng["events"]:
            raise AdvisoryDatabaseError(f"{file}: {adv_id}: {where}.ranges[{j}] needs a type and non-empty events")
        events = []
        for event in rng["events"]:
            kinds = [k for k in RANGE_EVENTS if isinstance(event, dict) and k in event]
            if len(kinds) != 1 or not isinstance(event[kinds[0]], str):
                raise AdvisoryDatabaseError(f"{file}: {adv_id}: {where}.ranges[{j}]: bad event {event!r}")
            events.append((kinds[0], event[kinds[0]]))
        if not any(kind == "introduced" for kind, _ in events):
            raise AdvisoryDatabaseError(f"{file}: {adv_id}: {where}.ranges[{j}] has no 'introduced' event")
        range_type = _require_str(rng, "type", file, f"{where}.ranges[{j}].")
        ranges.append(AffectedRange(type=range_type, events=tuple(events)))
    versions = tuple(str(v) for v in item.get("versions") or ())
    if not ranges and not versions:
        raise AdvisoryDatabaseError(f"{file}: {adv_id}: {where} ({name}) has neither 'ranges' nor 'versions'")
    return AffectedPackage(
        ecosystem=ecosystem.split(":", 1)[0], name=name, ranges=tuple(ranges), versions=versions,
        purl=str(pkg.get("purl") or ""),
    )


def _severity(doc: Mapping[str, Any], file: Path, adv_id: str) -> tuple[str, float | None, str]:
    """GHSA's ``database_specific.severity`` wins (MODERATE → MEDIUM); else the CVSS base score."""
    score: float | None = None
    vector = ""
    for entry in sorted(doc.get("severity") or (), key=lambda e: e.get("type") != "CVSS_V3"):
        kind, text = entry.get("type"), entry.get("score", "")
        try:
            if kind == "CVSS_V3":
                score, vector = float(CVSS3(text).base_score), text
            elif kind == "CVSS_V4":
                score, vector = float(CVSS4(text).base_score), text
            else:
                continue
        except CVSSError as exc:
            raise AdvisoryDatabaseError(f"{file}: {adv_id}: invalid {kind} vector {text!r}: {exc}") from exc
        break
    db_specific = doc.get("database_specific") or {}
    rating = str(db_specific.get("severity") or "").upper() if isinstance(db_specific, dict) else ""
    if rating in GHSA_SEVERITY:
        return GHSA_SEVERITY[rating], score, vector
    if score is None:
        return "UNKNOWN", None, vector
    return cvss_rating(score), score, vector


def cvss_rating(score: float) -> str:
    """CVSS v3/v4 qualitative rating; 0.0 (None) is reported as LOW rather than dropped."""
    if score >= 9.0:
        return "CRITICAL"
    if score >= 7.0:
        return "HIGH"
    if score >= 4.0:
        return "MEDIUM"
    return "LOW"


# ---------------------------------------------------------------- update from OSV's bulk export


def update_from_osv_export(
    source: str | Path, dest: str | Path, ecosystems: Sequence[str] = ("npm",)
) -> AdvisoryDatabase:
    """Rebuilds ``dest`` from OSV's ``all.zip`` export(s), atomically: temp dir → validate → swap.

    ``source`` is a zip file, a folder holding ``<ecosystem>/all.zip`` (the bucket's layout), or an
    https URL of either (``https://osv-vulnerabilities.storage.googleapis.com`` as a base URL).
    Only records affecting one of ``ecosystems`` are kept. On any error ``dest`` is left untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    wanted = set(ecosystems)
    with tempfile.TemporaryDirectory(prefix=f".{dest.name}.update-", dir=dest.parent) as tmp:
        staging = Path(tmp) / "db"
        staging.mkdir()
        for zip_path in _fetch_exports(source, ecosystems, Path(tmp)):
            _extract_export(zip_path, staging, wanted)
        AdvisoryDatabase.load(staging)  # fails closed before anything is swapped
        _swap(staging, dest)
    return AdvisoryDatabase.load(dest)


def _fetch_exports(source: str | Path, ecosystems: Sequence[str], tmp: Path) -> list[Path]:
    text = str(source)
    if text.startswith(("http://", "https://")):
        if not text.startswith("https://"):
            raise AdvisoryDatabaseError(f"{text}: only https downloads are allowed")
        urls = [text] if text.endswith(".zip") else [f"{text.rstrip('/')}/{eco}/all.zip" for eco in ecosystems]
        return [_download(url, tmp / f"export-{i}.zip") for i, url in enumerate(urls)]
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        zips = [path / eco / "all.zip" for eco in ecosystems]
        missing = [str(z) for z in zips if not z.is_file()]
        if missing:
            raise AdvisoryDatabaseError(f"{path}: missing OSV export(s): {', '.join(missing)}")
        return zips
    raise AdvisoryDatabaseError(f"{source}: no such OSV export (zip file, folder or https URL)")


def _download(url: str, target: Path) -> Path:
    if urllib.parse.urlsplit(url).scheme != "https":
        raise AdvisoryDatabaseError(f"{url}: only https downloads are allowed")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as resp, target.open("wb") as out:  # noqa: S310
            shutil.copyfileobj(resp, out, 1 << 20)
    except OSError as exc:
        raise AdvisoryDatabaseError(f"{url}: download failed: {exc}") from exc
    return target


def _extract_export(zip_path: Path, staging: Path, wanted: set[str]) -> None:
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise AdvisoryDatabaseError(f"{zip_path}: not a readable zip file: {exc}") from exc
    with archive:
        for info in archive.infolist():
            if info.is_dir() or not info.filename.endswith(".json"):
                continue
            where = Path(f"{zip_path}!{info.filename}")
            try:
                raw = archive.read(info)
            except (zipfile.BadZipFile, OSError) as exc:
                raise AdvisoryDatabaseError(f"{where}: unreadable zip member: {exc}") from exc
            adv = parse_osv(raw, where)
            eco = next((p.ecosystem for p in adv.affected if p.ecosystem in wanted), None)
            if eco is None:
                continue
            if not _safe_id(adv.id):
                raise AdvisoryDatabaseError(f"{where}: unsafe record id {adv.id!r}")
            (staging / eco).mkdir(exist_ok=True)
            (staging / eco / f"{adv.id}.json").write_bytes(raw)


def _safe_id(adv_id: str) -> bool:
    return adv_id not in {".", ".."} and all(c.isalnum() or c in "-_.:" for c in adv_id)


def _swap(staging: Path, dest: Path) -> None:
    """Two renames on one filesystem; a failure between them puts the old database back."""
    old = dest.with_name(f".{dest.name}.old")
    if old.exists():
        shutil.rmtree(old)
    had_old = dest.exists()
    if had_old:
        dest.rename(old)
    try:
        staging.rename(dest)
    except OSError:
        if had_old:
            old.rename(dest)
        raise
    if had_old:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- CLI


def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sevenp_pipeline.scanners.advisories")
    sub = parser.add_subparsers(dest="command", required=True)
    upd = sub.add_parser("update", help="rebuild a database folder from OSV all.zip export(s)")
    upd.add_argument("--source", required=True, help="all.zip, a folder of <ecosystem>/all.zip, or an https URL")
    upd.add_argument("--dest", required=True, type=Path)
    upd.add_argument("--ecosystem", action="append", dest="ecosystems", help="repeatable; default npm")
    chk = sub.add_parser("check", help="load a database folder and print its counts")
    chk.add_argument("path", type=Path, nargs="?", default=BUNDLED_DB)
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        if args.command == "update":
            db = update_from_osv_export(args.source, args.dest, tuple(args.ecosystems or ("npm",)))
        else:
            db = AdvisoryDatabase.load(args.path)
    except AdvisoryDatabaseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(db.summary(), indent=2))
    return 0


if __name__ == "__main__":
    with contextlib.suppress(BrokenPipeError):
        sys.exit(main())
