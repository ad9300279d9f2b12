"""Matches SBOM or lockfile components against OSV advisories with real version-range logic.

Versions are parsed and compared by ``univers`` (the ecosystem's own version scheme; SemVer for
``SEMVER`` ranges). An OSV range is walked as the OSV spec describes (events in version order,
``introduced`` opens an interval, ``fixed``/``limit`` close it exclusively, ``last_affected``
inclusively) and each interval is tested as a univers ``VersionRange``. A version that cannot be
parsed for a package that has advisories is reported as affected: failing closed, not silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from packageurl import PackageURL
from univers.version_constraint import VersionConstraint
from univers.version_range import RANGE_CLASS_BY_SCHEMES, NpmVersionRange, VersionRange
from univers.versions import InvalidVersion, Version

from sevenp_pipeline.scanners.advisories import AdvisoryDatabase
from sevenp_pipeline.scanners.models import AffectedPackage, AffectedRange, Component, Finding

ECOSYSTEM_BY_PURL_TYPE = {
    "npm": "npm", "pypi": "PyPI", "maven": "Maven", "golang": "Go", "gem": "RubyGems", "cargo": "crates.io",
    "nuget": "NuGet", "composer": "Packagist", "hex": "Hex", "pub": "Pub", "deb": "Debian", "apk": "Alpine",
}
_SEP = {"maven": ":"}


def osv_name(purl: PackageURL) -> str:
    """The OSV package name of a purl: ``@babel/core`` for npm scoped, ``group:artifact`` for Maven."""
    if purl.type == "deb" and purl.qualifiers and isinstance(purl.qualifiers, dict):
        upstream = purl.qualifiers.get("upstream")
        if upstream:  # OSV's Debian records name the source package
            return upstream.split("@", 1)[0]
    if purl.namespace and purl.type not in ("deb", "apk"):
        return f"{purl.namespace}{_SEP.get(purl.type, '/')}{purl.name}"
    return purl.name


def match(components: Iterable[Component], db: AdvisoryDatabase, *, source: str) -> list[Finding]:
    """One finding per (advisory, package@version), with every location the package was seen at."""
    found: dict[tuple[str, str], Finding] = {}
    for comp in components:
        if not comp.purl:
            continue
        try:
            purl = PackageURL.from_string(comp.purl)
        except ValueError:
            continue  # syft emits purls for everything it knows; a component without one cannot match
        ecosystem = ECOSYSTEM_BY_PURL_TYPE.get(purl.type)
        if ecosystem is None:
            continue
        version = purl.version or comp.version
        name = osv_name(purl)
        for adv in db.for_package(ecosystem, name):
            verdicts = [(pkg, is_affected(version, pkg, purl.type)) for pkg in adv.affected
                        if pkg.ecosystem == ecosystem and pkg.name == name]
            hit = next(((pkg, v) for pkg, v in verdicts if v is not False), None)
            if hit is None:
                continue
            verdict = hit[1]
            key_purl = PackageURL(type=purl.type, namespace=purl.namespace, name=purl.name, version=version)
            key = (adv.id, key_purl.to_string())
            if key in found:
                prev = found[key]
                found[key] = replace(prev, locations=tuple(dict.fromkeys((*prev.locations, *comp.locations))))
                continue
            summary = adv.summary if verdict else f"{adv.summary} (version {version!r} unparsable: assumed affected)"
            found[key] = Finding(
                advisory_id=adv.id,
                aliases=adv.aliases,
                severity=adv.severity,
                summary=summary,
                purl=key[1],
                package=name,
                installed_version=version,
                fixed_versions=tuple(v for p, _ in verdicts for v in p.fixed_versions),
                source=source,
                score=adv.score,
                locations=tuple(dict.fromkeys(comp.locations)),
                url=adv.url,
            )
    return sorted(found.values(), key=lambda f: (f.package, f.installed_version, f.advisory_id))


def is_affected(version: str, pkg: AffectedPackage, purl_type: str) -> bool | None:
    """True/False, or None when ``version`` does not parse in the package's scheme (caller: fail closed)."""
    range_cls = RANGE_CLASS_BY_SCHEMES.get(purl_type, NpmVersionRange)
    try:
        if pkg.versions and any(_same(version, v, range_cls) for v in pkg.versions):
            return True
        for rng in pkg.ranges:
            if rng.type == "GIT":
                continue  # commit ranges do not apply to released package versions
            cls = NpmVersionRange if rng.type == "SEMVER" else range_cls
            if _in_range(cls.version_class(version), rng, cls):
                return True
    except InvalidVersion:
        return None
    return False


def _same(version: str, listed: str, range_cls: type[VersionRange]) -> bool:
    try:
        return range_cls.version_class(version) == range_cls.version_class(listed)
    except InvalidVersion:
        return version == listed


def _in_range(version: Version, rng: AffectedRange, cls: type[VersionRange]) -> bool:
    return any(not c or version in cls(constraints=c) for c in _intervals(rng, cls))


def _intervals(rng: AffectedRange, cls: type[VersionRange]) -> list[list[VersionConstraint]]:
    """OSV events, sorted by version ("0" first), folded into univers constraint intervals."""
    vc = cls.version_class
    events = sorted(
        ((kind, None if value == "0" else vc(value)) for kind, value in rng.events),
        key=lambda e: (e[1] is not None, e[1] if e[1] is not None else 0),
    )
    intervals: list[list[VersionConstraint]] = []
    open_at: list[VersionConstraint] | None = None
    for kind, ver in events:
        if kind == "introduced":
            if open_at is None:
                open_at = [] if ver is None else [VersionConstraint(comparator=">=", version=ver)]
        elif open_at is not None and ver is not None:
            comparator = "<=" if kind == "last_affected" else "<"
            intervals.append([*open_at, VersionConstraint(comparator=comparator, version=ver)])
            open_at = None
    if open_at is not None:  # introduced with no end: every later version is affected
        intervals.append(open_at)
    return intervals

