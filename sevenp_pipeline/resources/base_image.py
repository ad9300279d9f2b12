"""A local Node.js base image, bootstrapped once from the host, for machines without Docker Hub.

``FROM node:20-bookworm-slim`` cannot be pulled here, so the pipeline makes its own base: an
image ``FROM scratch`` holding the host's ``node`` binary, the shared libraries ``ldd`` lists for
it, npm (the host's ``.../node_modules/npm`` tree, so ``RUN npm ci`` works), ``useradd`` and
``groupadd`` with their libraries (Dockerfiles create users the Debian way), a static busybox as
``/bin/sh`` and the usual applets, the CA bundle, and ``/etc/passwd``/``group`` with a non-root
``node`` user (uid 1000, like the official images). It is committed as
``localhost/<repository>:<node version>`` and pushed to the pipeline's registry so a Dockerfile's
``FROM ${BASE_IMAGE}`` can pull it.

The base stays a build argument: real users set ``BASE_IMAGE`` to their registry's node image
(or map ``docker.io`` to a mirror in registries.conf); nothing depends on this local name.

Idempotent: a file lock serializes bootstraps and a marker (recipe hash, image id, digest) under
``<home>/containers/base-images`` means found, not rebuilt, while the image is still in local
storage and, when a registry is given, still in the registry.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import tarfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import dagster as dg
from pydantic import Field

from sevenp_pipeline.locks import file_lock
from sevenp_pipeline.resources.builders.buildah import BuildahBuilder
from sevenp_pipeline.resources.builders.role import ImageBuildError
from sevenp_pipeline.resources.processes import ExecuteRequest, LogFn, ProcessRunner
from sevenp_pipeline.resources.registries.role import Registry

RECIPE_VERSION = "node-base-v1"
_LDD_RE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)", re.MULTILINE)


@dataclass(frozen=True)
class BaseImage:
    local_name: str  # localhost/sevenp/node-base:20.20.2
    image_id: str
    node_version: str  # 20.20.2
    recipe_hash: str
    ref: str | None  # in the registry, e.g. 127.0.0.1:5000/sevenp/node-base:20.20.2
    digest: str | None  # manifest digest in the registry
    built: bool  # False when an earlier bootstrap was found
    seconds: float


class NodeBaseImage(dg.ConfigurableResource):
    """Bootstraps ``localhost/<repository>:<node version>`` from the host's Node.js (once)."""

    runner: ProcessRunner
    home: str = Field(description="pipeline home; the marker lives in <home>/containers/base-images")
    repository: str = Field(default="sevenp/node-base", description="repository name of the base image")
    node_binary: str = Field(default="/usr/bin/node", description="the host's node executable")
    npm_dir: str = Field(default="", description="the host's npm package folder (default: found from `npm` on PATH)")
    busybox: str = Field(default="/bin/busybox", description="a STATIC busybox (Debian package busybox-static)")
    extra_binaries: list[str] = Field(
        default_factory=lambda: ["/usr/sbin/useradd", "/usr/sbin/groupadd"],
        description="more host binaries copied with their libraries",
    )
    ca_bundle: str = Field(default="/etc/ssl/certs/ca-certificates.crt", description="CA certificates")
    user: str = Field(default="node", description="the non-root user in /etc/passwd (uid/gid 1000)")

    def ensure(self, *, builder: BuildahBuilder, registry: Registry | None = None,
               log: LogFn | None = None) -> BaseImage:
        """The base image, built and pushed on first use; found (not rebuilt) afterwards."""
        started = time.monotonic()
        node_version = self._node_version()
        npm_dir = self._npm_dir()
        recipe_hash = self._recipe_hash(npm_dir)
        local_name = f"localhost/{self.repository}:{node_version}"
        markers = Path(self.home).resolve() / "containers" / "base-images"
        marker = markers / f"{self.repository.replace('/', '_')}-{node_version}.json"
        with file_lock(marker.with_suffix(".lock"), what=f"base image {local_name}", timeout=900):
            found = self._found(marker, recipe_hash, builder, registry)
            if found is not None:
                if log:
                    log(f"base image {local_name} found ({found.digest or found.image_id}); not rebuilt")
                return BaseImage(**{**asdict(found), "built": False, "seconds": time.monotonic() - started})
            image_id = self._build(builder, local_name, node_version, npm_dir, recipe_hash, log)
            self._smoke_test(builder, local_name, log)
            ref = digest = None
            if registry is not None:
                image = builder.local_image(local_name)
                pushed = registry.push(builder=builder, image=image, repository=self.repository,
                                       tags=[node_version], log=log)
                digest = pushed.digest
                ref = f"{registry.repository_ref(self.repository)}:{node_version}"
            result = BaseImage(local_name=local_name, image_id=image_id, node_version=node_version,
                               recipe_hash=recipe_hash, ref=ref, digest=digest, built=True,
                               seconds=time.monotonic() - started)
            marker.parent.mkdir(parents=True, exist_ok=True)
            tmp = marker.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(result), indent=2))
            tmp.replace(marker)
            if log:
                where = f", pushed as {ref}" if ref else ""
                log(f"base image {local_name} bootstrapped in {result.seconds:.1f}s{where}")
            return result

    # -- found? ------------------------------------------------------------------------------------
    def _found(self, marker: Path, recipe_hash: str, builder: BuildahBuilder,
               registry: Registry | None) -> BaseImage | None:
        try:
            data = json.loads(marker.read_text())
            previous = BaseImage(**data)
        except (OSError, ValueError, TypeError):
            return None
        if previous.recipe_hash != recipe_hash or not builder.has_local(previous.local_name):
            return None
        if registry is None:
            return previous
        ref = f"{registry.repository_ref(self.repository)}:{previous.node_version}"
        if previous.ref != ref or registry.find(self.repository, previous.node_version) != previous.digest:
            return None
        return previous

    # -- the host's pieces -----------------------------------------------------------------------
    def _run(self, argv: list[str], label: str, *, allow: str = "") -> list[str]:
        home = Path(self.home).resolve()
        home.mkdir(parents=True, exist_ok=True)
        outcome = self.runner.run(ExecuteRequest(argv=argv, cwd=home, label=label, timeout_seconds=120,
                                                 capture=True))
        if not outcome.ok and not (allow and any(allow in line for line in outcome.output)):
            raise ImageBuildError(f"base image: {outcome.describe()}", dockerfile=Path("(scratch)"),
                                  log_tail=outcome.tail_text())
        return list(outcome.output)

    def _node_version(self) -> str:
        out = self._run([self.node_binary, "--version"], "node --version")
        version = (out[-1] if out else "").strip().lstrip("v")
        if not re.fullmatch(r"\d+\.\d+\.\d+", version):
            raise ImageBuildError(f"base image: `{self.node_binary} --version` printed {out!r}",
                                  dockerfile=Path("(scratch)"))
        return version

    def _npm_dir(self) -> Path:
        if self.npm_dir:
            path = Path(self.npm_dir)
        else:
            npm = shutil.which("npm")
            if npm is None:
                raise ImageBuildError("base image: npm not found on PATH; set npm_dir", dockerfile=Path("(scratch)"))
            path = Path(npm).resolve().parents[1]  # .../node_modules/npm/bin/npm-cli.js -> .../npm
        if not (path / "package.json").exists() or not (path / "bin" / "npm-cli.js").exists():
            raise ImageBuildError(f"base image: {path} is not an npm package folder", dockerfile=Path("(scratch)"))
        return path

    def _libraries(self, binary: str) -> list[Path]:
        out = "\n".join(self._run(["ldd", binary], f"ldd {binary}", allow="not a dynamic executable"))
        if "not a dynamic executable" in out:
            return []
        return [Path(p) for p in _LDD_RE.findall(out)]

    def _recipe_hash(self, npm_dir: Path) -> str:
        digest = hashlib.sha256(RECIPE_VERSION.encode())
        for path in [Path(self.node_binary), Path(self.busybox), npm_dir / "package.json", Path(self.ca_bundle),
                     *map(Path, self.extra_binaries)]:
            digest.update(str(path).encode())
            digest.update(hashlib.sha256(path.read_bytes()).digest() if path.exists() else b"-")
        digest.update(self.user.encode())
        return digest.hexdigest()

    # -- the image -------------------------------------------------------------------------------
    def _rootfs_tar(self, dest: Path, node_version: str, npm_dir: Path) -> int:
        """Writes the root filesystem as a deterministic tar; returns the number of entries."""
        busybox = Path(self.busybox)
        if not busybox.exists():
            raise ImageBuildError(f"base image: {busybox} not found; apt-get install busybox-static",
                                  dockerfile=Path("(scratch)"))
        if self._libraries(str(busybox)):
            raise ImageBuildError(f"base image: {busybox} is dynamically linked; install busybox-static",
                                  dockerfile=Path("(scratch)"))
        tar = _Tar(dest)
        for name in ("usr", "usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/local/bin", "etc", "etc/ssl",
                     "etc/ssl/certs", "var", "var/cache", "var/lib", "run", "proc", "sys", "dev", "app"):
            tar.dir(name)
        for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
            tar.symlink(link, target)
        tar.dir("tmp", mode=0o1777)
        tar.dir("var/tmp", mode=0o1777)
        tar.dir("root", mode=0o700)
        tar.dir(f"home/{self.user}", uid=1000, gid=1000)
        tar.file("usr/bin/node", Path(self.node_binary), mode=0o755)
        tar.tree("usr/lib/node_modules/npm", npm_dir)
        tar.symlink("usr/bin/npm", "../lib/node_modules/npm/bin/npm-cli.js")
        tar.symlink("usr/bin/npx", "../lib/node_modules/npm/bin/npx-cli.js")
        tar.file("usr/bin/busybox", busybox, mode=0o755)
        libraries: dict[str, Path] = {}
        for binary in [self.node_binary, *self.extra_binaries]:
            for lib in self._libraries(binary):
                libraries[_usr_path(lib)] = lib
        for binary in self.extra_binaries:
            source = Path(binary)
            tar.file(_usr_path(source), source, mode=0o755)
        for name, lib in sorted(libraries.items()):
            tar.file(name, lib.resolve(), mode=0o755)
        taken = set(tar.names)
        for line in self._run([str(busybox), "--list-full"], "busybox --list-full"):
            applet = line.strip()
            if not applet or applet.endswith("linuxrc"):
                continue
            folder = "usr/sbin" if "sbin/" in applet else "usr/bin"
            name = f"{folder}/{applet.rsplit('/', 1)[-1]}"
            if name not in taken and f"usr/bin/{applet.rsplit('/', 1)[-1]}" not in taken:
                tar.symlink(name, "/usr/bin/busybox")
                taken.add(name)
        tar.file("etc/ssl/certs/ca-certificates.crt", Path(self.ca_bundle), mode=0o644)
        login_defs = Path("/etc/login.defs")
        if login_defs.exists():
            tar.file("etc/login.defs", login_defs, mode=0o644)
        tar.text("etc/passwd", f"root:x:0:0:root:/root:/bin/sh\n{self.user}:x:1000:1000::/home/{self.user}:/bin/sh\n"
                               "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
        tar.text("etc/group", f"root:x:0:\n{self.user}:x:1000:\nnogroup:x:65534:\n")
        tar.text("etc/shadow", f"root:*:19000:0:99999:7:::\n{self.user}:!:19000:0:99999:7:::\n"
                               "nobody:*:19000:0:99999:7:::\n", mode=0o640)
        tar.text("etc/gshadow", f"root:*::\n{self.user}:!::\nnogroup:*::\n", mode=0o640)
        tar.text("etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n")
        tar.text("etc/os-release", f'NAME="sevenp node base"\nID=sevenp-node-base\nVERSION_ID="{node_version}"\n'
                                   f'PRETTY_NAME="sevenp node base (node {node_version}, host libraries)"\n')
        if "usr/sbin/nologin" not in taken:
            tar.symlink("usr/sbin/nologin", "/usr/bin/busybox")  # busybox: unknown applet -> exit 1
        return tar.close()

    def _build(self, builder: BuildahBuilder, local_name: str, node_version: str, npm_dir: Path,
               recipe_hash: str, log: LogFn | None) -> str:
        cfg = builder.config()
        work = cfg.root / "tmp" / f"base-{recipe_hash[:12]}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        container = ""
        buildah = builder.buildah_argv()
        try:
            entries = self._rootfs_tar(work / "rootfs.tar", node_version, npm_dir)
            if log:
                log(f"base image: rootfs with {entries} entries ({(work / 'rootfs.tar').stat().st_size >> 20} MiB)")
            out = builder.check_tool([*buildah, "from", "--signature-policy", str(cfg.policy), "scratch"],
                                 label="buildah from scratch", log=log, timeout=120, capture=True)
            container = out.output[-1].strip()
            builder.check_tool([*buildah, "add", container, str(work / "rootfs.tar"), "/"],
                           label="buildah add rootfs", log=log, timeout=600)
            config = [*buildah, "config",
                      "--env", "PATH=/usr/local/bin:/usr/bin:/usr/sbin:/bin:/sbin",
                      "--env", f"NODE_VERSION={node_version}",
                      "--env", "NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt",
                      "--env", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
                      "--workingdir", "/", "--cmd", '["node"]', "--os", "linux",
                      "--label", f"org.sevenp.base-recipe={recipe_hash}",
                      "--label", f"org.opencontainers.image.version={node_version}",
                      "--label", "org.opencontainers.image.title=sevenp node base (bootstrapped from the host)",
                      container]
            builder.check_tool(config, label="buildah config", log=log, timeout=120)
            iid = work / "iid"
            builder.check_tool([*buildah, "commit", "--format", "docker", "--signature-policy", str(cfg.policy),
                            "--iidfile", str(iid), container, local_name],
                           label=f"buildah commit {local_name}", log=log, timeout=600)
            return iid.read_text().strip().removeprefix("sha256:")
        finally:
            if container:
                builder.run_tool([*buildah, "rm", container], label="buildah rm", log=None, timeout=120)
            shutil.rmtree(work, ignore_errors=True)

    def _smoke_test(self, builder: BuildahBuilder, local_name: str, log: LogFn | None) -> None:
        """node, npm and /bin/sh must run inside the image (a missing library shows up here, not mid-build)."""
        cfg = builder.config()
        buildah = builder.buildah_argv()
        out = builder.check_tool([*buildah, "from", "--pull-never", "--signature-policy", str(cfg.policy), local_name],
                             label="base image smoke test", log=None, timeout=120, capture=True)
        container = out.output[-1].strip()
        try:
            check = builder.run_tool([*buildah, "run", "--isolation", "chroot", container, "--", "/bin/sh", "-c",
                                  "node --version && npm --version && id node && useradd --help >/dev/null"],
                                 label="base image smoke test", log=log, timeout=120, capture=True)
            if not check.ok:
                raise ImageBuildError(f"base image {local_name}: node/npm/sh do not run inside it: {check.describe()}",
                                      dockerfile=Path("(scratch)"), log_tail=check.tail_text())
        finally:
            builder.run_tool([*buildah, "rm", container], label="buildah rm", log=None, timeout=120)


def _usr_path(path: Path) -> str:
    """``/lib/x86_64-linux-gnu/libc.so.6`` → ``usr/lib/x86_64-linux-gnu/libc.so.6`` (merged /usr)."""
    text = path.as_posix().lstrip("/")
    for top in ("lib64/", "lib/", "bin/", "sbin/"):
        if text.startswith(top):
            return "usr/" + text
    return text


class _Tar:
    """A deterministic tar writer: entries in call order, mtime 0, root-owned unless told."""

    def __init__(self, dest: Path) -> None:
        self._tar = tarfile.open(dest, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        self.names: list[str] = []
        self._seen: set[str] = set()

    def _info(self, name: str, kind: bytes, mode: int, uid: int = 0, gid: int = 0) -> tarfile.TarInfo:
        info = tarfile.TarInfo(name)
        info.type = kind
        info.mode = mode
        info.uid, info.gid = uid, gid
        info.mtime = 0
        self.names.append(name)
        self._seen.add(name)
        return info

    def dir(self, name: str, *, mode: int = 0o755, uid: int = 0, gid: int = 0) -> None:
        parts = name.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent not in self._seen:
                self._tar.addfile(self._info(parent, tarfile.DIRTYPE, 0o755))
        self._tar.addfile(self._info(name, tarfile.DIRTYPE, mode, uid, gid))

    def symlink(self, name: str, target: str) -> None:
        info = self._info(name, tarfile.SYMTYPE, 0o777)
        info.linkname = target
        self._tar.addfile(info)

    def file(self, name: str, source: Path, *, mode: int) -> None:
        data = source.read_bytes()
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))

    def text(self, name: str, content: str, *, mode: int = 0o644) -> None:
        data = content.encode()
        info = self._info(name, tarfile.REGTYPE, mode)
        info.size = len(data)
        self._tar.addfile(info, io.BytesIO(data))

    def tree(self, name: str, source: Path) -> None:
        self.dir(name)
        for path in _walk(source):
            rel = f"{name}/{path.relative_to(source).as_posix()}"
            if path.is_symlink():
                self.symlink(rel, str(path.readlink()))
            elif path.is_dir():
                self._tar.addfile(self._info(rel, tarfile.DIRTYPE, 0o755))
            else:
                self.file(rel, path, mode=0o755 if path.stat().st_mode & 0o111 else 0o644)

    def close(self) -> int:
        self._tar.close()
        return len(self.names)


def _walk(root: Path) -> Iterable[Path]:
    return sorted(root.rglob("*"))
