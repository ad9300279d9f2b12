"""The builder role through the ``docker`` CLI, for hosts with a Docker engine."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import Field

from sevenp_pipeline.config.models import DEFAULT_LIMITS, Limits
from sevenp_pipeline.resources.builders.role import (
    BuiltImage,
    ImageBuilder,
    ImageBuildError,
    ImagePushError,
    RemoteImage,
    looks_missing,
)
from sevenp_pipeline.resources.processes import LogFn, Outcome
from sevenp_pipeline.resources.registries.transport import SkopeoTransport


class DockerBuilder(ImageBuilder):
    """The same interface through the ``docker`` CLI against the engine at ``docker_host``.

    Not runnable on the project's development machines (no Docker engine): its tests drive it with
    a fake :class:`ProcessRunner`. Exports use ``docker save`` + ``skopeo copy docker-archive:``,
    so pushing by digest needs skopeo on the machine running the CLI.
    """

    docker: str = Field(default="docker", description="docker CLI binary")
    docker_host: str = Field(default="unix:///var/run/docker.sock", description="DOCKER_HOST of the engine")

    def _docker_env(self) -> dict[str, str]:
        return {"DOCKER_HOST": self.docker_host, "DOCKER_BUILDKIT": "1"}

    def _docker(self, argv: Sequence[str], *, label: str, log: LogFn | None, timeout: float,
                capture: bool = False) -> Outcome:
        return self.run_tool([self.docker, *argv], label=label, log=log, timeout=timeout, capture=capture,
                             env=self._docker_env())

    def build(
        self, *, context_dir: Path, dockerfile: Path, image_name: str, build_args: Mapping[str, str],
        labels: Mapping[str, str], log: LogFn | None = None, trusted: bool = False, limits: Limits | None = None,
    ) -> BuiltImage:
        # One daemon, one store: ``trusted`` changes nothing here (the daemon's own isolation applies).
        dockerfile = self.checked_dockerfile(context_dir, dockerfile)
        cfg = self.config()
        with tempfile.TemporaryDirectory(dir=cfg.root / "tmp") as tmp:
            iidfile = Path(tmp) / "iid"
            limits = limits or DEFAULT_LIMITS  # the daemon's cgroup for each RUN step: memory and CPU weight
            argv = ["build", "--progress", "plain", "--iidfile", str(iidfile), "--memory", f"{limits.memory_mb}m",
                    "--cpu-shares", str(limits.cpu_shares)]
            argv += self.arg_and_label_flags(build_args, labels)
            argv += ["-f", str(dockerfile), "-t", image_name, str(context_dir)]
            outcome = self._docker(argv, label=f"build {image_name}", log=log, timeout=self.build_timeout_seconds)
            if not outcome.ok:
                raise ImageBuildError(f"building {dockerfile} failed: {outcome.describe()}",
                                      dockerfile=dockerfile, log_tail=outcome.tail_text(40))
            if not iidfile.exists():
                raise ImageBuildError(f"building {dockerfile}: docker wrote no image id", dockerfile=dockerfile)
            image_id = iidfile.read_text().strip()
        return self._local_image(image_id, image_name)

    def _local_image(self, image_id: str, name: str) -> BuiltImage:
        outcome = self._docker(["image", "inspect", image_id], label=f"inspect {name}", log=None,
                               timeout=120, capture=True)
        if not outcome.ok:
            raise ImagePushError(f"{outcome.describe()}\n{outcome.tail_text()}", outcome=outcome)
        data = json.loads("\n".join(outcome.output))[0]
        return BuiltImage(
            image_id=data["Id"].removeprefix("sha256:"),
            config_digest=data["Id"],
            size_bytes=int(data.get("Size", 0)),
            layer_count=len(data.get("RootFS", {}).get("Layers") or []),
            local_name=name,
        )

    def _export_dir(self, *, image: BuiltImage, dest: Path, log: LogFn | None) -> None:
        cfg = self.config()
        with tempfile.TemporaryDirectory(dir=cfg.root / "tmp") as tmp:
            archive = Path(tmp) / "image.tar"
            outcome = self._docker(["save", "-o", str(archive), image.local_name],
                                   label=f"save {image.local_name}", log=log, timeout=self.push_timeout_seconds)
            if not outcome.ok:
                raise ImagePushError(f"{outcome.describe()}\n{outcome.tail_text()}", outcome=outcome)
            SkopeoTransport(self).copy(source=f"docker-archive:{archive}", dest=f"dir:{dest}", log=log,
                                    label=f"export {image.local_name}", extra=["--format", "v2s2", "--dest-compress"])

    def _push_tagged(self, *, image: BuiltImage, destination_ref: str, log: LogFn | None) -> str:
        tagged = self._docker(["tag", image.image_id, destination_ref], label=f"tag {destination_ref}", log=log,
                              timeout=120)
        if not tagged.ok:
            raise ImagePushError(f"{tagged.describe()}\n{tagged.tail_text()}", outcome=tagged)
        outcome = self._docker(["push", destination_ref], label=f"push {destination_ref}", log=log,
                               timeout=self.push_timeout_seconds, capture=True)
        if not outcome.ok:
            raise ImagePushError(f"{outcome.describe()}\n{outcome.tail_text()}", outcome=outcome)
        found = re.findall(r"digest: (sha256:[0-9a-f]{64})", "\n".join(outcome.output))
        if not found:
            raise ImagePushError(f"push {destination_ref}: docker reported no digest\n{outcome.tail_text()}")
        return found[-1]

    def inspect_remote(self, ref: str) -> RemoteImage | None:
        argv = ["manifest", "inspect", "--verbose"]
        if not self.tls_verify(ref):
            argv.append("--insecure")
        outcome = self._docker([*argv, ref], label=f"inspect {ref}", log=None, timeout=120, capture=True)
        text = "\n".join(outcome.output)
        if not outcome.ok:
            if looks_missing(text) or "no such manifest" in text.lower():
                return None
            raise ImagePushError(f"{outcome.describe()}\n{outcome.tail_text()}", outcome=outcome)
        data = json.loads(text)
        data = data[0] if isinstance(data, list) else data
        manifest = data.get("SchemaV2Manifest") or data.get("OCIManifest") or {}
        return RemoteImage(ref=ref, digest=data["Descriptor"]["digest"],
                           media_type=data["Descriptor"].get("mediaType", ""), labels={},
                           layer_count=len(manifest.get("layers") or []))
