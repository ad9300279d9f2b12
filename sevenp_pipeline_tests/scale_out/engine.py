"""Test helper: a Docker engine of the tests' own (dockerd as root, its own socket, data and exec
roots; no iptables, no bridge: containers use the host network), the Debian base bootstrapped
locally (no Docker Hub) and the project's image built from docker/Dockerfile on it."""

from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from sevenp_pipeline.config.settings import PROJECT_ROOT
from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessRunner
from sevenp_pipeline_tests.waiting import wait_until

BASE_IMAGE = "sevenp-base/debian:bookworm"  # the Dockerfile's default BASE_IMAGE (README, "Running at scale")
IMAGE = "sevenp-pipeline:scale-out-test"  # docker/Dockerfile's user-code target
DAGSTER_IMAGE = "sevenp-dagster:scale-out-test"  # its dagster target (compose's webserver and daemon)
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sevenp" / "base-images"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


def require_dockerd() -> None:
    """Skips outside CI when the machine has no dockerd/debootstrap; fails in CI (never a silent skip there)."""
    missing = [tool for tool in ("dockerd", "docker", "debootstrap") if shutil.which(tool) is None]
    if not missing:
        return
    message = (f"{', '.join(missing)} not found: the scale-out tests start their own Docker engine "
               "(run scripts/install-system-deps.sh as root: Debian packages docker.io and debootstrap)")
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Engine:
    """A running dockerd; ``docker(...)`` runs the client against its socket."""

    root: Path
    host: str  # DOCKER_HOST

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host, "DOCKER_BUILDKIT": "0"}

    def docker(self, *args: str, input_: bytes | None = None, timeout: float = 120) -> str:
        proc = subprocess.run(["docker", *args], env=self.env, input=input_, capture_output=True,
                              timeout=timeout, check=False)
        if proc.returncode != 0:
            raise AssertionError(f"docker {' '.join(args[:3])} failed ({proc.returncode}): "
                                 f"{proc.stderr.decode(errors='replace')[-3000:]}")
        return proc.stdout.decode(errors="replace").strip()

    def logs(self, container: str) -> str:
        """The container's output, stdout and stderr (a run worker logs on stderr)."""
        proc = subprocess.run(["docker", "logs", container], env=self.env, capture_output=True, text=True,
                              timeout=60, check=False)
        return proc.stdout + proc.stderr

    def inspect(self, container: str) -> dict:
        return json.loads(self.docker("inspect", container))[0]

    def containers(self) -> list[str]:
        return self.docker("ps", "-aq", "--no-trunc").split()


def _storage_driver() -> str:
    """overlay2 when the kernel has overlayfs, else vfs (slow, but works everywhere)."""
    filesystems = Path("/proc/filesystems").read_text()
    return "overlay2" if "overlay" in filesystems else "vfs"


@contextmanager
def docker_engine(root: Path) -> Iterator[Engine]:
    """Starts dockerd under ``root`` (never /var/run/docker.sock, nothing in /etc); at the end removes
    every container it ran and stops it."""
    socket = root / "docker.sock"
    # SEVENP_TEST_DOCKER_DATA_ROOT keeps images (and the build's layer cache) between sessions.
    data_root = os.environ.get("SEVENP_TEST_DOCKER_DATA_ROOT") or str(root / "data")
    argv = ["dockerd", "--iptables=false", "--ip-masq=false", "--bridge=none",
            "--storage-driver", _storage_driver(), "--data-root", data_root,
            "--exec-root", str(root / "exec"), "--pidfile", str(root / "dockerd.pid"),
            "-H", f"unix://{socket}", "--containerd-namespace", "sevenp-test",
            "--containerd-plugins-namespace", "sevenp-test-plugins"]
    log = root / "dockerd.log"
    daemon = ProcessRunner().start(ExecuteRequest(argv=argv, cwd=root, label="dockerd", log_path=log,
                                                  die_with_parent=True))
    engine = Engine(root=root, host=f"unix://{socket}")

    def ready() -> bool:
        assert daemon.alive(), f"dockerd exited: {log.read_text()[-3000:]}"
        return subprocess.run(["docker", "version"], env=engine.env, capture_output=True, check=False).returncode == 0

    try:
        wait_until(ready, timeout=60, what=f"dockerd to answer on {socket} (log: {log})", interval=0.3)
        yield engine
    finally:
        if daemon.alive():
            left = engine.containers()
            if left:
                engine.docker("rm", "-f", "-v", *left)  # with their anonymous volumes (SEVENP_HOME)
            engine.docker("volume", "prune", "-f")
        daemon.stop()
        _unmount_under(root)  # what a killed dockerd left mounted (its netns, overlay layers)
    assert not daemon.alive()


def _unmount_under(root: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(f"{root}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def debian_mirror(sources: Sequence[Path] = (Path("/etc/apt/sources.list"),)) -> str:
    """The machine's Debian mirror (one-line or deb822 sources), else deb.debian.org."""
    files = [*sources, *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        text = path.read_text() if path.is_file() else ""
        match = (re.search(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", text, re.MULTILINE)
                 or re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.MULTILINE))
        if match:
            return match.group(1)
    return DEFAULT_MIRROR


def base_tarball(work: Path) -> Path:
    """The bootstrapped Debian bookworm root as a tarball, made once a day (cached under CACHE)."""
    tarball = CACHE / f"debian-bookworm-minbase-{datetime.date.today():%Y%m%d}.tar"
    if tarball.exists():
        return tarball
    rootfs = work / "rootfs"
    subprocess.run(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), debian_mirror()],
                   check=True, capture_output=True, timeout=600)
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_suffix(".partial")
    subprocess.run(["tar", "-C", str(rootfs), "-cf", str(partial), "."], check=True, timeout=300)
    partial.rename(tarball)
    for old in CACHE.glob("debian-bookworm-minbase-*.tar"):
        if old != tarball:
            old.unlink()
    shutil.rmtree(rootfs, ignore_errors=True)
    return tarball


def build_context(work: Path) -> Path:
    """What docker/Dockerfile copies, plus the machine's extra CA certificates (a TLS-inspecting
    proxy's: pip in the build must trust it), in a folder of its own: nothing is written in the repo."""
    context = work / "context"
    ignore = shutil.ignore_patterns("__pycache__", "node_modules", "*.pyc")
    for name in ("pyproject.toml", "README.md", "workspace.yaml"):
        context.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / name, context / name)
    for name in ("sevenp_pipeline", "apps", "docker"):
        shutil.copytree(PROJECT_ROOT / name, context / name, ignore=ignore, dirs_exist_ok=True)
    for cert in Path("/usr/local/share/ca-certificates").glob("*.crt"):
        shutil.copy2(cert, context / "docker" / "ca-certificates" / cert.name)
    return context


def build_images(engine: Engine, work: Path) -> dict[str, float]:
    """Imports the base and builds the project's two images (legacy builder, host network); seconds taken."""
    timings = {}
    start = time.monotonic()
    tarball = base_tarball(work)
    # An engine that keeps its images (SEVENP_TEST_DOCKER_DATA_ROOT) keeps the base of the same
    # tarball: a re-import would make a new image id and miss the build's layer cache.
    present = subprocess.run(["docker", "image", "inspect", "-f", '{{index .Config.Labels "sevenp.base"}}',
                              BASE_IMAGE], env=engine.env, capture_output=True, text=True, check=False)
    if present.returncode != 0 or present.stdout.strip() != tarball.name:
        engine.docker("import", "--change", f"LABEL sevenp.base={tarball.name}", str(tarball), BASE_IMAGE,
                      timeout=600)
    timings["base"] = time.monotonic() - start
    start = time.monotonic()
    context = build_context(work)
    engine.docker("build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
                  "-t", IMAGE, "-f", str(context / "docker" / "Dockerfile"), str(context), timeout=1800)
    # Its first stage, from the build cache the line above filled.
    engine.docker("build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", "--target", "dagster",
                  "-t", DAGSTER_IMAGE, "-f", str(context / "docker" / "Dockerfile"), str(context), timeout=1800)
    timings["image"] = time.monotonic() - start
    return timings
