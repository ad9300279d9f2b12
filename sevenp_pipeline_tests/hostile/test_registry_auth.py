"""The local registry only answers the orchestrator (round one: another app's stage overwrote the
victim's ``main`` and ``inputs-<hash>`` tags through the unauthenticated registry on loopback).

Stages and builds do not reach loopback at all (test_hostile_branch, test_images); this is the next
wall: a process of this machine without the orchestrator's credentials gets 401 for a read and for a
tag overwrite, the tag stays where it was, and the credentials appear in no log.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from sevenp_pipeline.resources.registries.role import MANIFEST_TYPES
from sevenp_pipeline_tests.image.conftest import Stack, needs_buildah

pytestmark = [pytest.mark.integration, needs_buildah]


def _status(url: str, *, method: str = "GET", data: bytes | None = None, headers: dict | None = None) -> int:
    request = urllib.request.Request(url, method=method, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_without_the_orchestrators_credentials_the_registry_answers_401_and_keeps_its_tags(
    stack: Stack, tmp_path: Path,
) -> None:
    registry = stack.registry
    repository = stack.base_image.repository
    tag = stack.base.node_version
    before = registry.find(repository, tag)
    assert before is not None
    base = f"http://{registry.address()}/v2"
    # An attacker's manifest for the protected tag: any valid-looking manifest will do for the attempt.
    manifest = json.dumps({"schemaVersion": 2, "mediaType": MANIFEST_TYPES[0],
                           "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                                      "digest": "sha256:" + "0" * 64, "size": 2}, "layers": []}).encode()
    assert _status(f"{base}/") == 401
    assert _status(f"{base}/_catalog") == 401
    assert _status(f"{base}/{repository}/manifests/{tag}", method="HEAD") == 401
    assert _status(f"{base}/{repository}/manifests/{tag}", method="PUT", data=manifest,
                   headers={"Content-Type": MANIFEST_TYPES[0]}) == 401
    assert _status(f"{base}/{repository}/blobs/uploads/", method="POST") == 401
    wrong = base64.b64encode(b"sevenp:guessed").decode()
    assert _status(f"{base}/", headers={"Authorization": f"Basic {wrong}"}) == 401
    # The container tools without the auth file: skopeo's own push of an image over the tag fails too.
    empty_auth = tmp_path / "auth.json"
    empty_auth.write_text('{"auths": {}}')
    layout = stack.builder.export(image=stack.builder.local_image(stack.base.local_name)).path
    copy = subprocess.run(
        ["skopeo", "--policy", str(stack.builder.config().policy), "copy", "--authfile", str(empty_auth),
         "--dest-tls-verify=false", f"dir:{layout}", f"docker://{registry.repository_ref(repository)}:{tag}"],
        capture_output=True, text=True, timeout=120, check=False)
    assert copy.returncode != 0 and "authentication required" in (copy.stdout + copy.stderr)
    assert registry.find(repository, tag) == before  # the orchestrator (with them) sees the tag unmoved
    # The credentials are in their 0600 files and nowhere in the logs.
    creds = json.loads((registry.root / "credentials.json").read_text())
    token = base64.b64encode(f"{creds['username']}:{creds['password']}".encode()).decode()
    for path in (registry.root / "credentials.json", registry.root / "htpasswd", registry.auth_dir / "config.json"):
        assert path.stat().st_mode & 0o077 == 0, path
    logs = [p for p in stack.home.rglob("*.log") if p.is_file()]
    assert logs
    for path in logs:
        text = path.read_text(errors="replace")
        assert creds["password"] not in text and token not in text, path
