"""Which Node package manager an app uses (npm, pnpm, yarn classic or berry), and the argv to drive it.

``detect(app_dir)`` reads the lockfile and the ``packageManager`` field of package.json and returns a
``PackageManager`` whose methods build argv lists (never shell strings) for the frozen-lockfile install,
for running a package.json script, and for printing the tool's version.

Choices (verified with npm 11.19, pnpm 9.15.x, yarn 1.22.22 and yarn 4.5.1 through corepack 0.34):

- A pinned ``packageManager`` (``pnpm@9.15.9``, ``yarn@4.5.1``, ``npm@10.9.0``, optionally ``+sha512...``)
  runs through corepack: ``corepack pnpm ...``. Corepack reads the pin from package.json, downloads that
  exact version once into COREPACK_HOME and checks the ``+sha...`` hash when there is one. That holds for
  npm too: ``corepack npm`` runs the pinned npm (corepack only leaves npm out of ``corepack enable``).
- Unpinned pnpm and yarn classic run the tool on PATH when there is one (scripts/install-system-deps.sh
  installs pnpm 9 and yarn 1 globally), else ``corepack <tool>`` (corepack's default version). Unpinned
  npm is the npm on PATH.
- Unpinned yarn berry: only with a ``yarnPath`` in .yarnrc.yml (any yarn, classic or corepack, hands over to
  that release file). A berry lockfile with no pin at all is an error: no yarn on a machine would install it
  reproducibly.
- Plug'n'Play is not supported: the pipeline caches a ``node_modules`` tree (mounted into each stage). When .yarnrc.yml
  leaves ``nodeLinker`` unset (berry's default is pnp), ``env()`` sets ``YARN_NODE_LINKER=node-modules``;
  when it says ``nodeLinker: pnp`` explicitly, ``detect`` fails: the app says its code relies on PnP, and
  silently installing another layout would test something the app does not ship.
- pnpm before 9.15.5 pastes script arguments into a double-quoted shell string (``$HOME`` and backticks
  expand), so ``run_script_argv`` refuses ``$``, backtick, backslash and newline in arguments unless the
  pinned pnpm is 9.15.5 or newer.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from sevenp_pipeline.files import read_text_inside

ManagerName = Literal["npm", "pnpm", "yarn"]
YarnFlavor = Literal["classic", "berry"]

# Lockfile name -> manager, in the order they are reported. npm prefers npm-shrinkwrap.json over
# package-lock.json when both exist (both are npm's: not a conflict).
LOCKFILES: dict[str, ManagerName] = {
    "npm-shrinkwrap.json": "npm",
    "package-lock.json": "npm",
    "pnpm-lock.yaml": "pnpm",
    "yarn.lock": "yarn",
}
# Configuration files that change what an install produces: part of the dependency-cache key when present.
CONFIG_FILES = (".npmrc", ".yarnrc", ".yarnrc.yml", ".pnpmfile.cjs", "pnpm-workspace.yaml")

# pnpm quotes script arguments for the shell from this version on.
PNPM_SAFE_ARGS_SINCE = (9, 15, 5)
_UNSAFE_FOR_OLD_PNPM = re.compile(r"[$`\\\n\r]")
_PACKAGE_MANAGER_FIELD = re.compile(r"^(?P<name>[a-z][a-z0-9-]*)@(?P<version>\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?)"
                                    r"(?:\+(?P<hash>[a-z0-9]+\.[0-9a-fA-F]+))?$")
_BERRY_LOCK = re.compile(r"^__metadata:", re.MULTILINE)


class PackageManagerError(Exception):
    """The app's package manager cannot be determined, or its files contradict each other."""


@dataclass(frozen=True)
class PackageManager:
    """An app's package manager, and how this machine runs it.

    ``launcher`` is the argv prefix that starts the tool: ``("corepack", "pnpm")`` for a pinned version,
    ``("pnpm",)`` for the one on PATH.
    """

    name: ManagerName
    lockfile: str
    version: str | None = None
    flavor: YarnFlavor | None = None
    launcher: tuple[str, ...] = ()
    node_linker: str | None = None  # yarn berry: nodeLinker from .yarnrc.yml, None when unset
    yarn_path: str | None = None  # yarn berry: yarnPath from .yarnrc.yml
    notes: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not self.launcher:
            object.__setattr__(self, "launcher", (self.name,))

    @property
    def label(self) -> str:
        """e.g. ``pnpm 9.15.9``, ``yarn berry 4.5.1``, ``npm`` (for logs and metadata)."""
        parts = [self.name, self.flavor or "", self.version or ""]
        return " ".join(p for p in parts if p)

    @property
    def uses_corepack(self) -> bool:
        return self.launcher[0] == "corepack"

    @property
    def version_from_project(self) -> bool:
        """Whether the app folder decides which version runs (yarn's yarnPath, corepack's pin); the
        npm on PATH is the machine's whatever the project holds."""
        return self.name != "npm" or self.uses_corepack

    def install_argv(self) -> list[str]:
        """The frozen-lockfile install: fails instead of changing the lockfile."""
        if self.name == "npm":
            return [*self.launcher, "ci", "--no-audit", "--no-fund"]
        if self.name == "pnpm":
            # confirmModulesPurge=false: never stop to ask before replacing a node_modules of another layout.
            return [*self.launcher, "install", "--frozen-lockfile", "--config.confirmModulesPurge=false"]
        if self.flavor == "berry":
            return [*self.launcher, "install", "--immutable"]
        return [*self.launcher, "install", "--frozen-lockfile", "--non-interactive"]

    def run_script_argv(self, script: str, args: Sequence[str] = ()) -> list[str]:
        """Run a package.json script without the manager's banner, passing ``args`` on to the script.

        npm needs ``--`` before the arguments; pnpm and yarn pass everything after the script name on
        (they would hand a ``--`` to the script literally; yarn classic drops it with a warning).
        """
        args = list(args)
        if self.name == "npm":
            return [*self.launcher, "run", "--silent", script, *(["--", *args] if args else [])]
        if self.name == "pnpm":
            self._check_pnpm_args(script, args)
            return [*self.launcher, "run", "--silent", script, *args]
        if self.flavor == "berry":
            return [*self.launcher, "run", script, *args]  # berry prints no banner; it has no --silent
        return [*self.launcher, "run", "--silent", script, *args]

    def version_argv(self) -> list[str]:
        """Prints the version that runs (run it in the app folder: corepack reads the pin there)."""
        return [*self.launcher, "--version"]

    def env(
        self,
        *,
        npm_registry: str | None = None,
        verify_corepack_signatures: bool = True,
        corepack_home: Path | None = None,
    ) -> dict[str, str]:
        """Environment variables for a CI-safe, non-interactive run (added to the inherited environment).

        ``npm_registry``: where corepack downloads pnpm/yarn/npm (COREPACK_NPM_REGISTRY); with it set,
        yarn berry comes from the npm package @yarnpkg/cli-dist instead of repo.yarnpkg.com.
        ``verify_corepack_signatures=False`` sets COREPACK_INTEGRITY_KEYS=0, for a registry or mirror that
        serves package metadata without npm's signatures (corepack then fails with "No compatible
        signature found in package metadata"). A ``+sha512...`` pin is still checked.
        """
        env = {
            "COREPACK_ENABLE_DOWNLOAD_PROMPT": "0",
            "COREPACK_ENABLE_AUTO_PIN": "0",  # never write a packageManager field into the checkout
            "npm_config_update_notifier": "false",
        }
        if npm_registry:
            # corepack appends "/<package>": a trailing slash (as `npm config get registry` prints it)
            # makes "//<package>", which the registry answers with HTTP 400.
            env["COREPACK_NPM_REGISTRY"] = npm_registry.rstrip("/")
        if not verify_corepack_signatures:
            env["COREPACK_INTEGRITY_KEYS"] = "0"
        if corepack_home is not None:
            env["COREPACK_HOME"] = str(corepack_home)
        if self.name == "npm":
            env.update({"npm_config_audit": "false", "npm_config_fund": "false"})
        elif self.flavor == "berry":
            env.update({
                "YARN_ENABLE_IMMUTABLE_INSTALLS": "true",
                "YARN_ENABLE_TELEMETRY": "0",
                "YARN_ENABLE_PROGRESS_BARS": "false",
            })
            if self.node_linker is None:
                env["YARN_NODE_LINKER"] = "node-modules"
        return env

    def cache_inputs(self, app_dir: Path) -> list[Path]:
        """The files the dependency-cache key is made of: lockfile, package.json, install config present."""
        paths = [app_dir / self.lockfile, app_dir / "package.json"]
        paths += [app_dir / name for name in CONFIG_FILES if (app_dir / name).is_file()]
        if self.yarn_path and (app_dir / self.yarn_path).is_file():
            paths.append(app_dir / self.yarn_path)
        return paths

    def _check_pnpm_args(self, script: str, args: list[str]) -> None:
        if self.version and _version_tuple(self.version) >= PNPM_SAFE_ARGS_SINCE:
            return
        unsafe = [a for a in args if _UNSAFE_FOR_OLD_PNPM.search(a)]
        if unsafe:
            pinned = f"pnpm {self.version}" if self.version else "an unpinned pnpm"
            raise PackageManagerError(
                f"cannot pass {unsafe!r} to script {script!r} with {pinned}: pnpm before 9.15.5 hands script "
                f"arguments to the shell unquoted ($ and backticks expand); pin pnpm >= 9.15.5 in packageManager"
            )


def detect(app_dir: Path, *, which: Callable[[str], str | None] = shutil.which) -> PackageManager:
    """The package manager of the app in ``app_dir``, from its lockfile and package.json's packageManager.

    ``which`` finds tools on PATH (injectable for tests). Raises ``PackageManagerError`` naming the files
    and the field when they disagree, or every lockfile name looked for when there is none.
    """
    manifest = app_dir / "package.json"
    pin = _read_pin(manifest)
    present = [name for name in LOCKFILES if (app_dir / name).is_file()]
    managers = {LOCKFILES[name] for name in present}
    if not present:
        raise PackageManagerError(
            f"no lockfile in {app_dir}: looked for {', '.join(LOCKFILES)}; the pipeline installs with a "
            f"frozen lockfile, commit the one your package manager writes"
        )
    if len(managers) > 1:
        raise PackageManagerError(
            f"lockfiles of different package managers in {app_dir}: {', '.join(present)}; keep the one of "
            f"the manager the app uses" + (f" (package.json packageManager says {pin[0]}@{pin[1]})" if pin else "")
        )
    name = managers.pop()
    lockfile = present[0]  # npm-shrinkwrap.json before package-lock.json, as npm reads them
    if pin and pin[0] != name:
        raise PackageManagerError(
            f"package.json packageManager is {pin[0]}@{pin[1]} but the lockfile in {app_dir} is {lockfile} "
            f"({name}'s); commit {pin[0]}'s lockfile or change the packageManager field"
        )
    version = pin[1] if pin else None
    notes: list[str] = []

    if name != "yarn":
        if version:
            launcher = _corepack(name, version, which, manifest)
        elif name == "pnpm" and not which("pnpm") and which("corepack"):
            launcher = ("corepack", "pnpm")
            notes.append("pnpm is not on PATH and package.json pins no version: corepack's default pnpm runs")
        else:
            launcher = (name,)
        return PackageManager(name=name, lockfile=lockfile, version=version, launcher=launcher, notes=tuple(notes))

    flavor = _yarn_flavor(app_dir, lockfile, version)
    rc = _read_yarnrc_yml(app_dir) if flavor == "berry" else {}
    node_linker = rc.get("nodeLinker")
    yarn_path = rc.get("yarnPath")
    if node_linker == "pnp":
        raise PackageManagerError(
            f"{app_dir / '.yarnrc.yml'} sets nodeLinker: pnp; the pipeline caches a node_modules "
            f"tree and does not support Plug'n'Play: set nodeLinker: node-modules"
        )
    if version:
        launcher = _corepack("yarn", version, which, manifest)
    elif flavor == "berry" and not yarn_path:
        raise PackageManagerError(
            f"{app_dir / lockfile} is a yarn berry (v2+) lockfile but neither package.json packageManager nor "
            f".yarnrc.yml yarnPath pins a yarn version; add e.g. \"packageManager\": \"yarn@4.5.1\""
        )
    elif which("yarn"):
        launcher = ("yarn",)
    elif which("corepack"):
        launcher = ("corepack", "yarn")
        notes.append("yarn is not on PATH and package.json pins no version: corepack's default yarn runs")
    else:
        launcher = ("yarn",)
    return PackageManager(name="yarn", lockfile=lockfile, version=version, flavor=flavor, launcher=launcher,
                          node_linker=node_linker, yarn_path=yarn_path, notes=tuple(notes))


def _read_pin(manifest: Path) -> tuple[str, str] | None:
    try:
        data = json.loads(read_text_inside(manifest, manifest.parent))
    except FileNotFoundError:
        raise PackageManagerError(f"{manifest} is missing") from None
    except (OSError, ValueError) as exc:
        raise PackageManagerError(f"cannot read {manifest}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise PackageManagerError(f"{manifest} is not a JSON object")
    field_value = data.get("packageManager")
    if field_value is None:
        return None
    match = _PACKAGE_MANAGER_FIELD.match(field_value) if isinstance(field_value, str) else None
    if not match:
        raise PackageManagerError(
            f"{manifest}: packageManager {field_value!r} is not <name>@<exact version>[+<hash>], "
            f"e.g. \"pnpm@9.15.9\""
        )
    if match["name"] not in ("npm", "pnpm", "yarn"):
        raise PackageManagerError(
            f"{manifest}: packageManager {field_value!r} names {match['name']}; the pipeline supports npm, pnpm "
            f"and yarn"
        )
    return match["name"], match["version"]


def _yarn_flavor(app_dir: Path, lockfile: str, version: str | None) -> YarnFlavor:
    try:
        text = read_text_inside(app_dir / lockfile, app_dir)
    except (OSError, UnicodeDecodeError) as exc:
        raise PackageManagerError(f"cannot read {app_dir / lockfile}: {exc}") from exc
    lock_flavor: YarnFlavor = "berry" if _BERRY_LOCK.search(text) else "classic"
    if version:
        pin_flavor: YarnFlavor = "classic" if version.startswith("1.") else "berry"
        if pin_flavor != lock_flavor:
            raise PackageManagerError(
                f"package.json packageManager is yarn@{version} ({pin_flavor}) but {app_dir / lockfile} is a "
                f"yarn {lock_flavor} lockfile; install once with yarn {version} and commit the lockfile"
            )
    elif lock_flavor == "classic" and (app_dir / ".yarnrc.yml").is_file():
        raise PackageManagerError(
            f"{app_dir / lockfile} is a yarn classic (v1) lockfile but {app_dir / '.yarnrc.yml'} is yarn berry "
            f"configuration; pin the yarn version with package.json packageManager"
        )
    return lock_flavor


def _read_yarnrc_yml(app_dir: Path) -> dict[str, str]:
    path = app_dir / ".yarnrc.yml"
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(read_text_inside(path, app_dir)) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise PackageManagerError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise PackageManagerError(f"{path} is not a YAML mapping")
    return {key: str(data[key]) for key in ("nodeLinker", "yarnPath") if data.get(key) is not None}


def _corepack(name: str, version: str, which: Callable[[str], str | None], manifest: Path) -> tuple[str, ...]:
    if not which("corepack"):
        raise PackageManagerError(
            f"{manifest} pins {name}@{version} (packageManager) and running a pinned version needs corepack, "
            f"which is not on PATH: run scripts/install-system-deps.sh or npm install -g corepack"
        )
    return ("corepack", name)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version.split("-", maxsplit=1)[0])[:3])
