"""Components from a Node lockfile: the dependency check over what ``install`` would put on disk.

Three formats, picked by :func:`lockfile_components` from what the app folder holds:

- npm ``package-lock.json`` / ``npm-shrinkwrap.json`` (v1, v2, v3): every installed copy with its
  tree path (``node_modules/a/node_modules/b``); location ``<lockfile>#<path in the tree>``.
- pnpm ``pnpm-lock.yaml`` (lockfileVersion 6.x and 9.x): ``packages:`` keyed ``/name@1.2.3`` (6.x)
  or ``name@1.2.3`` (9.x), peer suffixes ``(peer@x)`` stripped; location ``<lockfile>#name@version``.
- yarn ``yarn.lock``: classic v1 (``"name@^1.0.0", name@~1.0.0:`` + ``version "1.2.3"``) and berry
  (YAML with ``__metadata``, ``"name@npm:^1.0.0"`` + ``version: 1.2.3``); workspace, link, portal,
  file and patch entries are not registry packages and are skipped (a patch entry repeats the
  package it patches, which has its own entry).

Each is matched without installing anything. ``dev`` marks packages only reachable from
devDependencies (npm and pnpm 6.x record it; pnpm 9.x and yarn are walked from the importers /
package.json).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml
from packageurl import PackageURL

from sevenp_pipeline.scanners.models import Component


class LockfileError(Exception):
    """No lockfile, or one this reader cannot parse; the message names the file(s)."""


# In the order a package manager would prefer them when several are present.
LOCKFILE_NAMES = ("npm-shrinkwrap.json", "package-lock.json", "pnpm-lock.yaml", "yarn.lock")


def lockfile_components(app_dir: str | Path) -> tuple[Path, list[Component]]:
    """The lockfile in ``app_dir`` (see :data:`LOCKFILE_NAMES`) and its components.

    Raises:
        LockfileError: none of the lockfiles is there (the message lists the names looked for),
            or the one found cannot be read.
    """
    app = Path(app_dir)
    for name in LOCKFILE_NAMES:
        path = app / name
        if path.is_file():
            if name == "pnpm-lock.yaml":
                return path, components_from_pnpm_lock(path)
            if name == "yarn.lock":
                return path, components_from_yarn_lock(path)
            return path, components_from_lockfile(path)
    raise LockfileError(f"no lockfile in {app}: looked for {', '.join(LOCKFILE_NAMES)}")


def _component(name: str, version: str, location: str, *, dev: bool = False,
               licenses: tuple[str, ...] = ()) -> Component:
    scope, _, bare = name.rpartition("/")
    purl = PackageURL(type="npm", namespace=scope or None, name=bare, version=version).to_string()
    return Component(name=name, version=version, purl=purl, type="npm", licenses=licenses,
                     locations=(location,), dev=dev)


def components_from_lockfile(path: str | Path) -> list[Component]:
    lockfile = Path(path)
    doc = _read_mapping(lockfile, "npm lockfile", json.loads, "a JSON object")
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
        components.append(_component(name, ver, f"{lockfile.name}#{tree_path}", dev=dev,
                                     licenses=_licenses(license_value)))
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


def _split_spec(spec: str) -> tuple[str, str]:
    """``name@rest`` → (name, rest); the ``@`` of a scope (``@scope/name@1``) is not the separator."""
    at = spec.find("@", 1)
    if at < 0:
        return spec, ""
    return spec[:at], spec[at + 1:]


def _read_mapping(path: Path, what: str, parse: Callable[[str], Any], expected: str) -> dict[str, Any]:
    """A lockfile parsed into a mapping; an unreadable or malformed file raises naming it."""
    try:
        doc = parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise LockfileError(f"{path}: cannot read {what}: {exc}") from exc
    if not isinstance(doc, dict):
        raise LockfileError(f"{path}: not a {what} (expected {expected})")
    return doc


def _read_yaml(path: Path, what: str) -> dict[str, Any]:
    return _read_mapping(path, what, yaml.safe_load, "a YAML mapping")


# -- pnpm ------------------------------------------------------------------------------------------
def _pnpm_key(key: str) -> tuple[str, str]:
    """``/name@1.2.3(peer@1)`` (6.x) or ``@scope/name@1.2.3(peer@1)`` (9.x) → (name, version)."""
    name, version = _split_spec(key.lstrip("/"))
    return name, version.split("(", 1)[0]


def _pnpm_target(dep: str, ref: str) -> str:
    """The packages/snapshots key a dependency entry points at (an alias ref names its package)."""
    ref = ref.lstrip("/")
    return ref if "@" in ref.split("(", 1)[0][1:] else f"{dep}@{ref}"


def components_from_pnpm_lock(path: str | Path) -> list[Component]:
    """Components of a ``pnpm-lock.yaml`` (lockfileVersion 6.x or 9.x)."""
    lockfile = Path(path)
    doc = _read_yaml(lockfile, "pnpm lockfile")
    version = str(doc.get("lockfileVersion", ""))
    if not version.startswith(("6.", "9.")):
        raise LockfileError(f"{lockfile}: unsupported lockfileVersion {version!r} (pnpm lockfile 6.x or 9.x)")
    packages = doc.get("packages") or {}
    if not isinstance(packages, dict):
        raise LockfileError(f"{lockfile}: 'packages' is not a mapping")
    # 9.x keeps the dependency graph in snapshots (keys with peer suffixes); 6.x in packages.
    graph = doc.get("snapshots") if isinstance(doc.get("snapshots"), dict) else packages
    importers = doc.get("importers") or {".": doc}  # 6.x single project: the sections are top-level
    roots: dict[bool, list[str]] = {False: [], True: []}
    for importer in importers.values():
        for section, dev in (("dependencies", False), ("optionalDependencies", False), ("devDependencies", True)):
            for dep, meta in ((importer or {}).get(section) or {}).items():
                ref = str(meta.get("version", "") if isinstance(meta, dict) else meta)
                if ref and not ref.startswith(("link:", "file:", "workspace:")):
                    roots[dev].append(_pnpm_target(dep, ref))
    prod, dev_only = ({_pnpm_key(k) for k in _walk(roots[dev], graph)} for dev in (False, True))
    components: dict[tuple[str, str], Component] = {}
    for key, entry in {**{k: {} for k in graph}, **packages}.items():
        meta = entry if isinstance(entry, dict) else {}
        name, ver = _pnpm_key(str(key))
        if meta.get("name") and meta.get("version"):  # tarball / git dependency: the key is a URL
            name, ver = str(meta["name"]), str(meta["version"])
        if not ver or (name, ver) in components:
            continue
        dev = bool(meta["dev"]) if "dev" in meta else ((name, ver) in dev_only and (name, ver) not in prod)
        components[(name, ver)] = _component(name, ver, f"{lockfile.name}#{name}@{ver}", dev=dev)
    return list(components.values())


def _walk(roots: Iterable[str], graph: Mapping[str, Any]) -> set[str]:
    """Keys reachable from ``roots`` through the entries' (optional) dependencies."""
    seen: set[str] = set()
    todo = [r.lstrip("/") for r in roots]
    keys = {k.lstrip("/"): k for k in graph}
    while todo:
        key = todo.pop()
        if key in seen:
            continue
        seen.add(key)
        entry = graph.get(keys.get(key, key)) or {}
        for section in ("dependencies", "optionalDependencies"):
            for dep, ref in (entry.get(section) or {}).items():
                todo.append(_pnpm_target(dep, str(ref)))
    return seen


# -- yarn ------------------------------------------------------------------------------------------
_SKIPPED_PROTOCOLS = ("workspace:", "link:", "portal:", "file:", "patch:", "exec:")


def components_from_yarn_lock(path: str | Path) -> list[Component]:
    """Components of a ``yarn.lock``: classic v1 or berry (2+, YAML with ``__metadata``)."""
    lockfile = Path(path)
    try:
        text = lockfile.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LockfileError(f"{lockfile}: cannot read yarn lockfile: {exc}") from exc
    if "__metadata:" in text:
        entries = _yarn_berry_entries(lockfile)
    elif "# yarn lockfile v1" in text:
        entries = _yarn_classic_entries(text, lockfile)
    else:
        raise LockfileError(f"{lockfile}: not a yarn lockfile (no '# yarn lockfile v1' header or __metadata)")
    by_spec: dict[str, tuple[str, str, dict[str, str]]] = {}
    for specs, name, version, deps in entries:
        for spec in specs:
            by_spec[spec] = (name, version, deps)
    dev_names = _package_json_roots(lockfile.parent)
    prod = _yarn_walk(dev_names[False], by_spec)
    dev = _yarn_walk(dev_names[True], by_spec)
    components: dict[tuple[str, str], Component] = {}
    for _, name, version, _ in entries:
        if (name, version) not in components:
            only_dev = (name, version) in dev and (name, version) not in prod
            components[(name, version)] = _component(name, version, f"{lockfile.name}#{name}@{version}",
                                                     dev=only_dev)
    return list(components.values())


YarnEntry = tuple[list[str], str, str, dict[str, str]]  # specs, package name, version, dependencies


def _yarn_name(spec: str) -> tuple[str, str]:
    """``alias@npm:real@^1`` → (real, ^1); ``name@npm:^1`` → (name, ^1); ``name@^1`` → (name, ^1)."""
    name, rng = _split_spec(spec)
    if rng.startswith("npm:"):
        rng = rng[4:]
        if "@" in rng[1:]:  # an alias to another package
            name, rng = _split_spec(rng)
    return name, rng


def _yarn_classic_entries(text: str, lockfile: Path) -> list[YarnEntry]:
    entries: list[YarnEntry] = []
    specs: list[str] | None = None
    version = ""
    deps: dict[str, str] = {}
    section = ""

    def flush() -> None:
        if specs and version:
            name, _ = _yarn_name(specs[0])
            ranges = [s for s in specs if not _split_spec(s)[1].startswith(_SKIPPED_PROTOCOLS)]
            if ranges:
                entries.append((specs, name, version, dict(deps)))

    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        indent = len(raw) - len(raw.lstrip(" "))
        line = raw.strip()
        if indent == 0:
            flush()
            if not line.endswith(":"):
                raise LockfileError(f"{lockfile}:{number}: expected an entry header ending in ':'")
            specs = [s.strip().strip('"') for s in line[:-1].split(",")]
            version, deps, section = "", {}, ""
        elif indent == 2:
            key, _, value = line.partition(" ")
            section = key.rstrip(":") if not value else ""
            if key == "version":
                version = value.strip('"')
        elif indent == 4 and section in ("dependencies", "optionalDependencies"):
            dep, _, rng = line.partition(" ")
            deps[dep.strip('"')] = rng.strip('"')
    flush()
    return entries


def _yarn_berry_entries(lockfile: Path) -> list[YarnEntry]:
    doc = _read_yaml(lockfile, "yarn lockfile")
    entries: list[YarnEntry] = []
    for key, meta in doc.items():
        if key == "__metadata" or not isinstance(meta, dict) or not meta.get("version"):
            continue
        resolution = str(meta.get("resolution", ""))
        _, resolved = _split_spec(resolution)
        if resolved.startswith(_SKIPPED_PROTOCOLS) or meta.get("linkType") == "soft":
            continue
        specs = [s.strip() for s in str(key).split(",")]
        name, _ = _yarn_name(resolution) if resolution else _yarn_name(specs[0])
        deps = {dep: (rng if ":" in rng else f"npm:{rng}")
                for section in ("dependencies", "optionalDependencies")
                for dep, rng in ((meta.get(section) or {}).items()) for rng in [str(rng)]}
        entries.append((specs, name, str(meta["version"]), deps))
    return entries


def _package_json_roots(app_dir: Path) -> dict[bool, list[str]]:
    """``name@range`` specs of package.json's dependencies (False) and devDependencies (True)."""
    try:
        manifest = json.loads((app_dir / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {False: [], True: []}
    roots: dict[bool, list[str]] = {False: [], True: []}
    for section, dev in (("dependencies", False), ("optionalDependencies", False), ("devDependencies", True)):
        for dep, rng in (manifest.get(section) or {}).items():
            roots[dev].append(f"{dep}@{rng}")
    return roots


def _yarn_walk(roots: Iterable[str], by_spec: Mapping[str, tuple[str, str, dict[str, str]]]) -> set[tuple[str, str]]:
    seen: set[tuple[str, str]] = set()
    todo = list(roots)
    while todo:
        spec = todo.pop()
        name, rng = _split_spec(spec)
        found = by_spec.get(spec) or by_spec.get(f"{name}@npm:{rng}")
        if found is None or (found[0], found[1]) in seen:
            continue
        seen.add((found[0], found[1]))
        todo += [f"{dep}@{r}" for dep, r in found[2].items()]
    return seen
