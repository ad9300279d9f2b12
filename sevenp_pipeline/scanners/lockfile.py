"""Components from an npm ``package-lock.json`` (v1, v2, v3): the dependency check over the lockfile.

The lockfile lists every installed package with its exact version, including nested copies
(``node_modules/a/node_modules/b``), so it can be matched without installing anything. Each
component's location is ``<lockfile>#<path in the tree>``; ``dev`` marks devDependencies.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from packageurl import PackageURL

from sevenp_pipeline.scanners.models import Component


class LockfileError(Exception):
    """The lockfile is missing, not JSON or not an npm lockfile this reader understands."""


def components_from_lockfile(path: str | Path) -> list[Component]:
    lockfile = Path(path)
    try:
        doc = json.loads(lockfile.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LockfileError(f"{lockfile}: cannot read npm lockfile: {exc}") from exc
    if not isinstance(doc, dict):
        raise LockfileError(f"{lockfile}: not an npm lockfile (expected a JSON object)")
    version = doc.get("lockfileVersion")
    if version in (2, 3) and isinstance(doc.get("packages"), dict):
        entries = _from_packages(doc["packages"])
    elif version == 1 and isinstance(doc.get("dependencies"), dict):
        entries = _from_dependencies(doc["dependencies"], "")
    else:
        raise LockfileError(f"{lockfile}: unsupported lockfileVersion {version!r} (npm lockfile v1, v2 or v3)")
    components = []
    for tree_path, listed_name, listed_version, dev, license_value in entries:
        name, ver = listed_name, listed_version
        if ver.startswith("npm:"):  # an alias: "npm:real-name@1.2.3"
            name, _, ver = ver[4:].rpartition("@")
        scope, _, bare = name.rpartition("/")
        purl = PackageURL(type="npm", namespace=scope or None, name=bare, version=ver).to_string()
        components.append(Component(
            name=name, version=ver, purl=purl, type="npm", licenses=_licenses(license_value),
            locations=(f"{lockfile.name}#{tree_path}",), dev=dev,
        ))
    return components


Entry = tuple[str, str, str, bool, Any]


def _from_packages(packages: Mapping[str, Any]) -> Iterator[Entry]:
    for tree_path, meta in packages.items():
        if not tree_path or "node_modules/" not in tree_path or not isinstance(meta, dict):
            continue  # "" is the project itself; other paths without node_modules are workspace sources
        if meta.get("link") or not meta.get("version"):
            continue  # a symlink to a workspace package, described by its own entry
        name = meta.get("name") or tree_path.rsplit("node_modules/", 1)[1]
        yield tree_path, name, str(meta["version"]), bool(meta.get("dev")), meta.get("license")


def _from_dependencies(deps: Mapping[str, Any], parent: str) -> Iterator[Entry]:
    for name, meta in deps.items():
        if not isinstance(meta, dict):
            continue
        tree_path = f"{parent}node_modules/{name}"
        if meta.get("version"):
            yield tree_path, name, str(meta["version"]), bool(meta.get("dev")), meta.get("license")
        if isinstance(meta.get("dependencies"), dict):
            yield from _from_dependencies(meta["dependencies"], f"{tree_path}/")


def _licenses(value: Any) -> tuple[str, ...]:
    """npm's ``license`` is an SPDX string; old packages use ``{"type": ...}`` or a list of those."""
    if isinstance(value, str) and value:
        return (value,)
    if isinstance(value, dict) and value.get("type"):
        return (str(value["type"]),)
    if isinstance(value, list):
        return tuple(x for v in value for x in _licenses(v))
    return ()
