"""The skopeo transport: moves images between a local layout and registries, and inspects them there.

Pushing *by digest* works the same for every builder and registry: the builder exports the image to
a ``dir:`` layout (:meth:`ImageBuilder.export`: compressed layers, the exact manifest a registry
receives, so its digest is known before anything is uploaded), and ``skopeo copy dir:...
docker://repo@digest`` uploads it unchanged. The same transport exports a pushed image to an
``oci:`` layout for the secret scan and reads remote digests and labels with ``skopeo inspect``.

It runs through the builder's :meth:`ImageBuilder.run_tool`, so skopeo reads the project's own
container settings (policy, registries.conf) and plain-HTTP loopback registries are recognised the
same way the builder recognises them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from sevenp_pipeline.resources.builders.role import (
    BuiltImage,
    ImageBuilder,
    ImagePushError,
    RemoteImage,
    looks_missing,
    split_ref,
)
from sevenp_pipeline.resources.processes import LogFn, Outcome


@dataclass(frozen=True)
class SkopeoTransport:
    """``skopeo copy`` / ``skopeo inspect`` with the settings of ``builder`` (binary, policy, TLS, timeouts)."""

    builder: ImageBuilder

    def _base(self) -> list[str]:
        return [self.builder.skopeo, "--policy", str(self.builder.config().policy)]

    def copy(self, *, source: str, dest: str, log: LogFn | None, label: str, extra: Sequence[str] = ()) -> Outcome:
        """Copies between two transports (``dir:``, ``oci:``, ``docker-archive:``, ``docker://``).

        Raises:
            ImagePushError: skopeo failed; the message carries the command and the output tail.
        """
        argv = [*self._base(), "copy", "--retry-times", "0"]
        # TLS flags only to turn it off: an explicit true would override registries.conf's insecure
        # mirrors (a Docker Hub name served by a loopback registry).
        if source.startswith("docker://") and not self.builder.tls_verify(source[9:]):
            argv.append("--src-tls-verify=false")
        if dest.startswith("docker://") and not self.builder.tls_verify(dest[9:]):
            argv.append("--dest-tls-verify=false")
        argv += [*extra, source, dest]
        return self.builder.check_tool(argv, label=label, log=log, timeout=self.builder.push_timeout_seconds)

    def push_by_digest(self, *, image: BuiltImage, destination_ref: str, log: LogFn | None = None,
                       extra: Sequence[str] = ()) -> str:
        """Uploads the builder's export of ``image`` to ``host/repo@sha256:...`` (nothing is tagged).

        Returns:
            The digest, after checking it is the one the export has (the registry stores those exact bytes).
        """
        _, _, _, digest = split_ref(destination_ref)
        if digest is None:
            raise ValueError(f"{destination_ref}: a push by digest needs host/repo@sha256:...")
        exported = self.builder.export(image=image, log=log)
        if exported.manifest_digest != digest:
            raise ImagePushError(
                f"push to {destination_ref}: the image {image.local_name} exports as {exported.manifest_digest}, "
                f"not {digest}"
            )
        self.copy(source=f"dir:{exported.path}", dest=f"docker://{destination_ref}", log=log,
                  label=f"push {destination_ref}", extra=extra)
        return digest

    def inspect(self, ref: str) -> RemoteImage | None:
        """The image at ``ref`` as its registry serves it, or None when the registry does not have it."""
        tls = [] if self.builder.tls_verify(ref) else ["--tls-verify=false"]  # see copy()
        argv = [*self._base(), "inspect", "--no-tags", "--retry-times", "0", *tls, f"docker://{ref}"]
        outcome = self.builder.run_tool(argv, label=f"inspect {ref}", log=None, timeout=120, capture=True)
        text = "\n".join(outcome.output)
        if not outcome.ok:
            if looks_missing(text):
                return None
            raise ImagePushError(f"{outcome.describe()}\n{outcome.tail_text()}", outcome=outcome)
        data = json.loads(text[text.index("{"):])
        raw = self.builder.run_tool([*self._base(), "inspect", "--raw", "--retry-times", "0", *tls, f"docker://{ref}"],
                                    label=f"inspect {ref}", log=None, timeout=120, capture=True)
        media_type = json.loads("\n".join(raw.output)).get("mediaType", "") if raw.ok else ""
        return RemoteImage(ref=ref, digest=data["Digest"], media_type=media_type,
                           labels=dict(data.get("Labels") or {}), layer_count=len(data.get("Layers") or []))
