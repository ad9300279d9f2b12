from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from sevenp_pipeline.scanners.secrets_scan import ImageScanError, scan_image_layers, scan_tree
from sevenp_pipeline_tests.scanners.conftest import FAKE_AWS_KEY_ID, FAKE_AWS_SECRET, FAKE_CREDENTIALS

SHA1_KEY_ID = hashlib.sha1(FAKE_AWS_KEY_ID.encode()).hexdigest()


def test_planted_aws_key_found_in_source_tree_without_plaintext(tmp_path: Path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "index.js").write_text("const port = process.env.PORT || 3000;\n")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "aws.ini").write_text(FAKE_CREDENTIALS)
    for skipped in ("node_modules/pkg", ".git/objects"):
        (tmp_path / skipped).mkdir(parents=True)
        (tmp_path / skipped / "creds.ini").write_text(FAKE_CREDENTIALS)
    (tmp_path / "image.bin").write_bytes(b"\0\x01" + FAKE_CREDENTIALS.encode())

    findings = scan_tree(tmp_path)
    assert {f.file for f in findings} == {"config/aws.ini"}
    aws = [f for f in findings if f.type == "AWS Access Key"]
    assert (aws[0].line, aws[0].hashed_secret) == (3, SHA1_KEY_ID)
    assert any(f.line == 4 for f in findings), "the secret access key line is reported too"
    assert FAKE_AWS_KEY_ID not in repr(findings) and FAKE_AWS_SECRET not in repr(findings)
    assert scan_tree(tmp_path / "src") == []


def _layer(entries: list[tuple[str, bytes | None, str]]) -> bytes:
    """(name, data, kind) with kind file|dir|symlink:TARGET|hardlink:TARGET → an uncompressed layer tar."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind.startswith("symlink:"):
                info.type, info.linkname = tarfile.SYMTYPE, kind.split(":", 1)[1]
            elif kind.startswith("hardlink:"):
                info.type, info.linkname = tarfile.LNKTYPE, kind.split(":", 1)[1]
            info.size = len(data or b"")
            tar.addfile(info, io.BytesIO(data or b""))
    return buf.getvalue()


LOWER = [
    ("app", None, "dir"),
    ("app/config/aws.ini", FAKE_CREDENTIALS.encode(), "file"),
    ("app/old/leaked.env", f"AWS_ACCESS_KEY_ID={'AKIA' + 'QW3RT5YU7IO9PL2K'}\n".encode(), "file"),
    ("app/cache/a.env", f"aws_access_key_id = {'AKIA' + 'MN4BV6CX8ZL1KJ3H'}\n".encode(), "file"),
    ("app/node_modules/dep/creds.ini", FAKE_CREDENTIALS.encode(), "file"),
    ("etc/creds.ini", FAKE_CREDENTIALS.encode(), "file"),  # outside the scanned paths
]
UPPER = [
    ("app/.wh.old", None, "file"),  # whiteout: app/old is gone in the final image
    ("app/cache/.wh..wh..opq", None, "file"),  # opaque dir: lower contents of app/cache hidden
    ("app/cache/b.txt", b"nothing here\n", "file"),
    ("app/link-to-etc", None, "symlink:/etc/creds.ini"),
    ("app/hard.ini", None, "hardlink:app/config/aws.ini"),
    ("/app/abs.env", f"aws_access_key_id = {'AKIA' + 'HG5FD7SA9QW2ER4T'}\n".encode(), "file"),  # "/" dropped
]


def write_oci_layout(root: Path, layers: list[bytes]) -> Path:
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def blob(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return f"sha256:{digest}"

    config = blob(b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}')
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 1},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": blob(layer),
                    "size": len(layer)} for layer in layers],
    }).encode()
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
        {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": blob(manifest), "size": len(manifest),
         "platform": {"architecture": "amd64", "os": "linux"}}]}))
    return root


def tar_folder(folder: Path, target: Path) -> Path:
    with tarfile.open(target, "w") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return target


def test_image_layers_oci_layout_and_archive(tmp_path: Path):
    layout = write_oci_layout(tmp_path / "layout", [_layer(LOWER), _layer(UPPER)])
    for image in (layout, tar_folder(layout, tmp_path / "image.oci.tar")):
        findings = scan_image_layers(image, paths=("app",))
        files = {f.file for f in findings}
        assert "app/config/aws.ini" in files
        assert "app/hard.ini" in files  # hard link to an in-tree file is scanned as a copy
        assert "app/abs.env" in files  # an absolute member name lands inside the extraction root
        assert not files & {"app/old/leaked.env", "app/cache/a.env"}, "whiteouts are honoured"
        assert not any("node_modules" in f or f.startswith("etc/") or "link-to-etc" in f for f in files)
        assert any(f.type == "AWS Access Key" and f.hashed_secret == SHA1_KEY_ID for f in findings)
        assert FAKE_AWS_KEY_ID not in repr(findings)


def test_docker_archive_with_gzip_layer(tmp_path: Path):
    archive = tmp_path / "image.docker.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("l1/layer.tar", gzip.compress(_layer(LOWER))), ("l2/layer.tar", _layer(UPPER)),
                           ("manifest.json", json.dumps([{"Config": "c.json", "RepoTags": ["api:1"],
                                                          "Layers": ["l1/layer.tar", "l2/layer.tar"]}]).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    assert {f.file for f in scan_image_layers(archive)} == {"app/config/aws.ini", "app/hard.ini", "app/abs.env"}


def test_layer_escaping_the_root_is_refused(tmp_path: Path):
    victim = tmp_path / "escaped.txt"
    evil = _layer([("app/../../escaped.txt", b"pwned", "file")])
    layout = write_oci_layout(tmp_path / "layout", [_layer(LOWER), evil])
    with pytest.raises(ImageScanError, match="escapes the image root"):
        scan_image_layers(layout)
    assert not victim.exists()
    with pytest.raises(ImageScanError, match=r"neither index\.json"):
        scan_image_layers(tmp_path)  # a folder that is not an image
