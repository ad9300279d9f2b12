"""Daemonless builds with buildah: what runs on the pipeline's own machines."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field

from sevenp_pipeline.resources.builders.context import base_image_refs
from sevenp_pipeline.resources.builders.role import (
    BuiltImage,
    ImageBuilder,
    ImageBuildError,
    RemoteImage,
    read_digest_file,
)
from sevenp_pipeline.resources.processes import LogFn
from sevenp_pipeline.resources.registries.transport import SkopeoTransport
from sevenp_pipeline.sandbox import Network, SandboxSpec, with_resolver


class BuildahBuilder(ImageBuilder):
    """Daemonless builds with buildah (chroot isolation, overlay storage, layer cache, docker format), in a
    network namespace of their own.

    A RUN step is still root on the host (buildah 1.28's ``--userns-uid-map`` leaves COPY'd files owned
    by the unmapped root, so a mapped RUN step cannot write them): one that leaves the chroot can read
    and write the host's files. The README lists this under what is not covered."""

    buildah: str = Field(default="buildah", description="buildah binary")
    jobs: int = Field(default=2, description="build stages run in parallel (buildah bud --jobs)")

    def build_sandbox(self, tmp: Path) -> SandboxSpec:
        """The build's own network namespace with a route out (a RUN step's ``npm ci``), never to this
        machine's loopback: not Dagster's webserver, the registry or an environment's database."""
        return SandboxSpec(cwd=self.config().root, report=tmp / "leftovers.jsonl",
                           network=with_resolver(Network(outbound=True), tmp))

    def buildah_argv(self) -> list[str]:
        """``buildah`` with the global options every call uses."""
        return [self.buildah, "--storage-driver", "overlay"]

    def build(
        self, *, context_dir: Path, dockerfile: Path, image_name: str, build_args: Mapping[str, str],
        labels: Mapping[str, str], log: LogFn | None = None,
    ) -> BuiltImage:
        dockerfile = self.checked_dockerfile(context_dir, dockerfile)
        if not context_dir.is_dir():
            raise ImageBuildError(f"build context {context_dir} for {dockerfile} is not a directory",
                                  dockerfile=dockerfile)
        cfg = self.config()
        # The base images come first, pulled here on the host's network: the build itself runs in a
        # namespace that reaches no registry on this machine's loopback (nor anything else there).
        for ref in base_image_refs(dockerfile, build_args):
            # --tls-verify only to turn it off: an explicit true would override registries.conf's
            # insecure mirrors (a Docker Hub name served by a loopback registry).
            tls = [] if self.tls_verify(ref) else ["--tls-verify=false"]
            self.check_tool([*self.buildah_argv(), "pull", "--policy", "missing", "--signature-policy",
                             str(cfg.policy), *tls, ref],
                            label=f"pull {ref}", log=log, timeout=self.push_timeout_seconds)
        with tempfile.TemporaryDirectory(dir=cfg.root / "tmp") as tmp:
            iidfile = Path(tmp) / "iid"
            argv = [*self.buildah_argv(), "bud", "--isolation", "chroot", "--layers", "--format", "docker",
                    "--signature-policy", str(cfg.policy), "--jobs", str(self.jobs), "--iidfile", str(iidfile)]
            base_refs = [v for k, v in build_args.items() if k.upper().endswith("IMAGE")]
            if any(not self.tls_verify(r) for r in base_refs if "/" in r):
                argv.append("--tls-verify=false")
            argv += self.arg_and_label_flags(build_args, labels)
            argv += ["-f", str(dockerfile), "-t", image_name, str(context_dir)]
            outcome = self.run_tool(argv, label=f"build {image_name}", log=log, timeout=self.build_timeout_seconds,
                                    sandbox=self.build_sandbox(Path(tmp)))
            if not outcome.ok:
                raise ImageBuildError(
                    f"building {dockerfile} failed: {outcome.describe()}", dockerfile=dockerfile,
                    log_tail=outcome.tail_text(40),
                )
            image_id = iidfile.read_text().strip().removeprefix("sha256:")
        return self.local_image(image_id)

    def local_image(self, name_or_id: str) -> BuiltImage:
        """The local image ``name_or_id`` as a :class:`BuiltImage` (raises ImagePushError if absent)."""
        outcome = self.check_tool([*self.buildah_argv(), "inspect", "--type", "image", name_or_id],
                                  label=f"inspect {name_or_id}", log=None, timeout=120, capture=True)
        data = json.loads("\n".join(outcome.output))
        manifest = json.loads(data["Manifest"])
        names = [n for n in (data.get("FromImage"), name_or_id) if n]
        layers = manifest.get("layers") or []
        return BuiltImage(
            image_id=data["FromImageID"],
            config_digest=manifest["config"]["digest"],
            size_bytes=sum(int(layer["size"]) for layer in layers) + int(manifest["config"]["size"]),
            layer_count=len(layers),
            local_name=names[0],
        )

    def has_local(self, name: str) -> bool:
        outcome = self.run_tool([*self.buildah_argv(), "inspect", "--type", "image", name], label=f"inspect {name}",
                                log=None, timeout=120)
        return outcome.ok

    def _export_dir(self, *, image: BuiltImage, dest: Path, log: LogFn | None) -> None:
        policy = str(self.config().policy)
        self.check_tool([*self.buildah_argv(), "push", "--format", "v2s2", "--signature-policy", policy,
                         image.image_id, f"dir:{dest}"], label=f"export {image.local_name}", log=log,
                        timeout=self.push_timeout_seconds)

    def _push_tagged(self, *, image: BuiltImage, destination_ref: str, log: LogFn | None) -> str:
        cfg = self.config()
        with tempfile.TemporaryDirectory(dir=cfg.root / "tmp") as tmp:
            digestfile = Path(tmp) / "digest"
            self.check_tool([*self.buildah_argv(), "push", "--format", "v2s2", "--retry", "0",
                             f"--tls-verify={str(self.tls_verify(destination_ref)).lower()}",
                             "--signature-policy", str(cfg.policy), "--digestfile", str(digestfile),
                             image.image_id, f"docker://{destination_ref}"],
                            label=f"push {destination_ref}", log=log, timeout=self.push_timeout_seconds)
            return read_digest_file(digestfile, f"push {destination_ref}")

    def inspect_remote(self, ref: str) -> RemoteImage | None:
        return SkopeoTransport(self).inspect(ref)

