"""A branch's Dockerfile leaves buildah's chroot (round one read the signing key this way, as host root).

The RUN step runs a static binary that does the classic escape (``chroot`` into a subfolder,
``chdir("..")`` x64, ``chroot(".")``) and then tries the host: it does reach the host's filesystem
(a world-readable host file that is in no image is read), but as the root of the build's own user
namespace, an unprivileged stranger there: the signing key and the orchestrator's home are neither
read nor listed, and nothing is written.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from pathlib import Path

import pytest

from sevenp_pipeline_tests.image.conftest import Stack, needs_buildah

pytestmark = [pytest.mark.integration, needs_buildah]

ESCAPE_C = Path(__file__).with_name("escape.c")


def _said(lines: list[str]) -> dict[str, str]:
    text = "\n".join(lines).splitlines()
    return dict(line.split("ESCAPE-", 1)[1].split(": ", 1) for line in text if "ESCAPE-" in line)


def test_a_run_step_that_leaves_the_chroot_reads_no_secret_and_writes_nothing(stack: Stack, tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    assert gcc, "gcc (with libc6-dev) is installed by scripts/install-system-deps.sh"
    context = tmp_path / "context"
    context.mkdir()
    subprocess.run([gcc, "-static", "-O1", "-o", str(context / "escape"), str(ESCAPE_C)], check=True)
    # The signing key where the devstack keeps it, with a secret of this run; the orchestrator's HOME.
    secret = secrets.token_hex(24)
    key = stack.home / "keys" / "signing-key.pem"
    key.parent.mkdir(mode=0o700, exist_ok=True)
    key.write_text(f"-----BEGIN PRIVATE KEY-----\n{secret}\n-----END PRIVATE KEY-----\n")
    key.chmod(0o600)
    planted = Path("/etc") / f"sevenp-escape-{secrets.token_hex(4)}"
    host_only = Path("/etc/debian_version")  # world-readable, on the host, in no image we build
    assert host_only.is_file()
    probes = [f"read:{key}", f"list:{key.parent}", f"list:{stack.home}", "list:/root", "read:/etc/shadow",
              f"read:{host_only}", f"write:{planted}", f"write:{stack.home}/planted"]
    (context / "Dockerfile").write_text(
        "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY escape /escape\n"
        f'RUN ["/escape", {", ".join(f"{chr(34)}{p}{chr(34)}" for p in probes)}]\n')
    lines: list[str] = []
    try:
        stack.builder.build(context_dir=context, dockerfile=context / "Dockerfile", image_name="localhost/escape:1",
                            build_args={"BASE_IMAGE": stack.base.ref or ""}, labels={}, log=lines.append)
        said = _said(lines)
        assert said.get("uid") == "0", said  # root, but of the build's own user namespace
        assert said[str(host_only)].startswith("read "), said  # it did leave the chroot: the host's file
        assert said[str(key)] in ("ENOENT", "EACCES"), said
        assert said[str(key.parent)] in ("ENOENT", "EACCES"), said
        # The home is an empty folder in the build's view, but for the path to its own store.
        listed = said[str(stack.home)].removeprefix("listed").split()
        assert "keys" not in listed and "workspaces" not in listed and set(listed) <= {".", "..", "containers"}, said
        assert said["/root"] in ("EACCES", "listed . .."), said  # unreadable, or (HOME) an empty folder
        assert said["/etc/shadow"] == "EACCES", said
        assert said[str(planted)] == "EACCES", said
        assert secret not in "\n".join(lines)
        assert not planted.exists()
        assert not (stack.home / "planted").exists()
    finally:
        planted.unlink(missing_ok=True)
        key.unlink()
