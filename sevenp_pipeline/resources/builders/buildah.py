"""Daemonless builds with buildah: what runs on the pipeline's own machines."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field

from sevenp_pipeline.config.models import DEFAULT_LIMITS, Limits
from sevenp_pipeline.files import read_untrusted_text
from sevenp_pipeline.resources.builders.context import base_image_refs, copy_context
from sevenp_pipeline.resources.builders.role import (
    BuiltImage,
    ImageBuilder,
    ImageBuildError,
    ImagePushError,
    RemoteImage,
    read_digest_file,
)
from sevenp_pipeline.resources.builders.stores import BuildStore, build_store, store_key
from sevenp_pipeline.resources.processes import LogFn, Outcome
from sevenp_pipeline.resources.registries.transport import SkopeoTransport
from sevenp_pipeline.resources.workspaces import ALWAYS_PRIVATE
from sevenp_pipeline.sandbox import Bind, Network, SandboxSpec, with_resolver


class BuildahBuilder(ImageBuilder):
    """Daemonless builds with buildah (chroot isolation, overlay storage, layer cache, docker format).

    An app's build runs as root of a user namespace of its own, with a container store per trust
    domain (see builders/stores.py), in a sandbox that shows it only that store and the build
    context, and in a network namespace with a route out but no host loopback. A RUN step that
    leaves buildah's chroot is an unprivileged host uid that sees neither the pipeline home (the
    signing key, other apps' checkouts and stores) nor this machine's loopback services.

    The Node base image, bootstrapped from the host's own files (no branch code), is built in the
    builder's own store as root (``buildah_argv``/``has_local``)."""

    buildah: str = Field(default="buildah", description="buildah binary")
    jobs: int = Field(default=2, description="build stages run in parallel (buildah bud --jobs)")
    userns: bool = Field(default=True, description="build apps as root of a user namespace of their own, "
                         "one store per trust domain; false: as host root in the builder's store (only "
                         "where user namespaces are unavailable: a RUN step that escapes is then host root)")
    userns_uid_base: int = Field(default=2_000_000, description="host uid of store 0's root; store n's is "
                                 "base + n * 65536 (keep the ranges clear of /etc/subuid and real users)")

    def buildah_argv(self) -> list[str]:
        """``buildah`` with the global options every call uses."""
        return [self.buildah, "--storage-driver", "overlay"]

    # -- build stores ----------------------------------------------------------------------------
    def store(self, repository: str, trusted: bool) -> BuildStore | None:
        """The build store of ``repository``'s trusted or untrusted commits (None: userns off)."""
        if not self.userns:
            return None
        return build_store(home=Path(self.home), key=store_key(repository, trusted), uid_base=self.userns_uid_base,
                           insecure_registries=self.insecure_registries, mirrors=self.mirrors)

    def _store_of(self, image: BuiltImage) -> BuildStore | None:
        if not image.store:
            return None
        repository, _, trust = image.store.rpartition("#")
        return self.store(repository, trust == "trusted")

    def store_sandbox(self, store: BuildStore, tmp: Path, *, network: Network | None,
                      readonly: tuple[Path, ...] = (), limits: Limits | None = None) -> SandboxSpec:
        """What a command in ``store`` sees: the store (read-write) and ``readonly`` folders; not the
        pipeline home, /tmp or the orchestrator's HOME; root of a user namespace mapped to the store's uid."""
        # /var/lib/containers: the host's own store (podman's deployments); an empty folder there also
        # answers c/image's lookup of signatures in its default lookaside with "none".
        hide = {Path(self.home).resolve(), Path("/var/lib/containers"), *(Path(p) for p in ALWAYS_PRIVATE)}
        for name in ("HOME", "DAGSTER_HOME"):
            if os.environ.get(name):
                hide.add(Path(os.environ[name]).resolve())
        binds = [Bind(store.home), *(Bind(path, readonly=True) for path in dict.fromkeys(readonly))]
        return SandboxSpec(cwd=store.config.root, report=tmp / "leftovers.jsonl", binds=tuple(binds),
                           hide=tuple(sorted(hide)), network=network, userns=store.userns, limits=limits)

    def _in_store(self, store: BuildStore, argv: list[str], *, label: str, log: LogFn | None, timeout: float,
                  network: Network | None = None, readonly: tuple[Path, ...] = (), capture: bool = False,
                  limits: Limits | None = None) -> Outcome:
        """Runs ``buildah ARGV`` in ``store``'s sandbox, in a network namespace of its own: nothing
        but ``lo`` unless ``network`` says more. A store never reaches a registry itself: base images
        come in through :meth:`_pull_into`, images go out through :meth:`export`."""
        with tempfile.TemporaryDirectory(dir=self.config().root / "tmp") as tmp:
            net = with_resolver(network or Network(), Path(tmp))  # root writes only in its own folder
            return self.run_tool([*self.buildah_argv(), *argv], label=label, log=log, timeout=timeout,
                                 capture=capture, settings=store.env(),
                                 sandbox=self.store_sandbox(store, Path(tmp), network=net, readonly=readonly,
                                                            limits=limits))

    def _check_in_store(self, store: BuildStore, argv: list[str], *, label: str, log: LogFn | None,
                        timeout: float, capture: bool = False, readonly: tuple[Path, ...] = ()) -> Outcome:
        outcome = self._in_store(store, argv, label=label, log=log, timeout=timeout, capture=capture,
                                 readonly=readonly)
        if not outcome.ok:
            raise ImagePushError(f"{outcome.describe()}\n{outcome.tail_text()}", outcome=outcome)
        return outcome

    def _buildah(self, store: BuildStore | None, argv: list[str], *, label: str, log: LogFn | None,
                 timeout: float, capture: bool = False) -> Outcome:
        """``buildah ARGV`` in ``store``, or in the builder's own store; raises on failure."""
        if store is None:
            return self.check_tool([*self.buildah_argv(), *argv], label=label, log=log, timeout=timeout,
                                   capture=capture)
        return self._check_in_store(store, argv, label=label, log=log, timeout=timeout, capture=capture)

    # -- the role --------------------------------------------------------------------------------
    def build(
        self, *, context_dir: Path, dockerfile: Path, image_name: str, build_args: Mapping[str, str],
        labels: Mapping[str, str], log: LogFn | None = None, trusted: bool = False, limits: Limits | None = None,
    ) -> BuiltImage:
        dockerfile = self.checked_dockerfile(context_dir, dockerfile)
        if not context_dir.is_dir():
            raise ImageBuildError(f"build context {context_dir} for {dockerfile} is not a directory",
                                  dockerfile=dockerfile)
        cfg = self.config()
        repository = image_name.split("/", 1)[-1].rsplit(":", 1)[0]
        store = self.store(repository, trusted)
        policy = str((store.config if store else cfg).policy)
        # The base images come first, pulled on the host's network: the build itself runs in a
        # namespace that reaches no registry on this machine's loopback (nor anything else there).
        for ref in base_image_refs(dockerfile, build_args):
            if store is not None:
                self._pull_into(store, ref, log=log)
                continue
            # --tls-verify only to turn it off: an explicit true would override registries.conf's
            # insecure mirrors (a Docker Hub name served by a loopback registry).
            tls = [] if self.tls_verify(ref) else ["--tls-verify=false"]
            self.check_tool([*self.buildah_argv(), "pull", "--policy", "missing", "--signature-policy", policy, *tls,
                             ref], label=f"pull {ref}", log=log, timeout=self.push_timeout_seconds)
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(dir=(store.config if store else cfg).root / "tmp"))
            if store is not None:
                os.chown(tmp, store.uid, store.uid)
                # The store's root reads a copy made for it, read-only and out of any stage's reach
                # (the checkout is the stage user's and may be private to it).
                copied = Path(stack.enter_context(tempfile.TemporaryDirectory(dir=cfg.root / "tmp")))
                copied.chmod(0o755)
                context_dir, build_file = self._copied_inputs(context_dir, dockerfile, copied, store)
            else:
                build_file = dockerfile
            iidfile = Path(tmp) / "iid"
            argv = ["bud", "--isolation", "chroot", "--layers", "--format", "docker",
                    "--signature-policy", policy, "--jobs", str(self.jobs), "--iidfile", str(iidfile)]
            base_refs = [v for k, v in build_args.items() if k.upper().endswith("IMAGE")]
            if any(not self.tls_verify(r) for r in base_refs if "/" in r):
                argv.append("--tls-verify=false")
            argv += self.arg_and_label_flags(build_args, labels)
            argv += ["-f", str(build_file), "-t", image_name, str(context_dir)]
            label = f"build {image_name}"
            if store is None:
                outcome = self.run_tool([*self.buildah_argv(), *argv], label=label, log=log,
                                        timeout=self.build_timeout_seconds, sandbox=SandboxSpec(
                                            cwd=cfg.root, report=Path(tmp) / "leftovers.jsonl",
                                            network=with_resolver(Network(outbound=True), Path(tmp)),
                                            limits=limits or DEFAULT_LIMITS))
            else:
                outcome = self._in_store(store, argv, label=label, log=log, timeout=self.build_timeout_seconds,
                                         network=Network(outbound=True), readonly=(context_dir.parent,),
                                         limits=limits or DEFAULT_LIMITS)
            if not outcome.ok:
                raise ImageBuildError(
                    f"building {dockerfile} failed: {outcome.describe()}", dockerfile=dockerfile,
                    log_tail=outcome.tail_text(40),
                )
            try:
                image_id = read_untrusted_text(iidfile).strip().removeprefix("sha256:")
            except OSError as exc:
                raise ImageBuildError(f"building {dockerfile}: no image id in {iidfile}: {exc}",
                                      dockerfile=dockerfile) from exc
            if not re.fullmatch(r"[0-9a-f]{64}", image_id):
                raise ImageBuildError(f"building {dockerfile}: {iidfile} holds no image id", dockerfile=dockerfile)
        return self.local_image(image_id, store=store)

    def _pull_into(self, store: BuildStore, ref: str, *, log: LogFn | None) -> None:
        """Base image ``ref`` into ``store``: pulled into the builder's own store by the orchestrator
        (registries.conf's mirrors, the registry's credentials, which a store never holds), then
        handed over as a ``dir:`` layout its root reads. Not handed over when the store already has
        that image id."""
        cfg = self.config()
        tls = [] if self.tls_verify(ref) else ["--tls-verify=false"]  # see build(): never an explicit true
        self.check_tool([*self.buildah_argv(), "pull", "--policy", "missing", "--signature-policy", str(cfg.policy),
                         *tls, ref], label=f"pull {ref}", log=log, timeout=self.push_timeout_seconds)
        fmt = ["inspect", "--type", "image", "--format", "{{.FromImageID}}", ref]
        image_id = self.check_tool([*self.buildah_argv(), *fmt], label=f"inspect {ref}", log=None, timeout=120,
                                   capture=True).output[-1].strip()
        have = self._in_store(store, fmt, label=f"inspect {ref}", log=None, timeout=120, capture=True)
        if have.ok and have.output and have.output[-1].strip() == image_id:
            return
        with tempfile.TemporaryDirectory(dir=cfg.root / "tmp") as tmp:
            layout = Path(tmp) / "image"
            Path(tmp).chmod(0o755)
            self.check_tool([*self.buildah_argv(), "push", "--disable-compression", "--signature-policy",
                             str(cfg.policy), image_id, f"dir:{layout}"], label=f"hand over {ref}", log=log,
                            timeout=self.push_timeout_seconds)
            for path in (layout, *layout.iterdir()):
                path.chmod(0o755 if path.is_dir() else 0o644)
            self._check_in_store(store, ["pull", "--policy", "always", "--signature-policy", str(store.config.policy),
                                         "--quiet", f"dir:{layout}"], label=f"load {ref}", log=log,
                                 timeout=self.push_timeout_seconds, readonly=(Path(tmp),))
        self._check_in_store(store, ["tag", image_id, ref], label=f"tag {ref}", log=None, timeout=120)

    @staticmethod
    def _copied_inputs(context_dir: Path, dockerfile: Path, folder: Path, store: BuildStore) -> tuple[Path, Path]:
        """The context and Dockerfile copied into ``folder`` for ``store``'s root (see copy_context); the
        Dockerfile itself is never followed through a link."""
        context = folder / "context"
        copy_context(context_dir, context, owner=store.uid)
        try:
            text = read_untrusted_text(dockerfile, limit=1 << 20)
        except OSError as exc:
            raise ImageBuildError(f"{dockerfile}: cannot read it as a regular file ({exc}): point image.dockerfile "
                                  f"at the file itself, not a link", dockerfile=dockerfile) from exc
        copy = folder / "Dockerfile"
        copy.write_text(text, encoding="utf-8")
        copy.chmod(0o644)
        ignore = Path(f"{dockerfile}.dockerignore")  # buildah reads <Dockerfile>.dockerignore before .dockerignore
        if ignore.is_file() and not ignore.is_symlink():
            (folder / "Dockerfile.dockerignore").write_text(read_untrusted_text(ignore, limit=1 << 20))
            (folder / "Dockerfile.dockerignore").chmod(0o644)
        return context, copy

    def local_image(self, name_or_id: str, *, store: BuildStore | None = None) -> BuiltImage:
        """The local image ``name_or_id`` (in ``store``, else the builder's own) as a :class:`BuiltImage`
        (raises ImagePushError if absent)."""
        outcome = self._buildah(store, ["inspect", "--type", "image", name_or_id], label=f"inspect {name_or_id}",
                                log=None, timeout=120, capture=True)
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
            store=store.key if store else "",
        )

    def has_local(self, name: str) -> bool:
        """Whether the builder's own store (the base image's) holds ``name``."""
        outcome = self.run_tool([*self.buildah_argv(), "inspect", "--type", "image", name], label=f"inspect {name}",
                                log=None, timeout=120)
        return outcome.ok

    def _export_dir(self, *, image: BuiltImage, dest: Path, log: LogFn | None) -> None:
        store = self._store_of(image)
        if store is None:
            self.check_tool([*self.buildah_argv(), "push", "--format", "v2s2", "--signature-policy",
                             str(self.config().policy), image.image_id, f"dir:{dest}"],
                            label=f"export {image.local_name}", log=log, timeout=self.push_timeout_seconds)
            return
        # Written by the store's root into the store, then taken out of its reach (and made root's).
        staging = Path(tempfile.mkdtemp(prefix=".export-", dir=store.config.root / "exports"))
        try:
            os.chown(staging, store.uid, store.uid)
            self._check_in_store(store, ["push", "--format", "v2s2", "--signature-policy", str(store.config.policy),
                                         image.image_id, f"dir:{staging / 'image'}"],
                                 label=f"export {image.local_name}", log=log, timeout=self.push_timeout_seconds)
            (staging / "image").rename(dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        # Out of the store's reach now; a layout is folders and regular files only (a link planted by
        # a RUN step that escaped would have the upload read a file of the host's).
        if not stat.S_ISDIR(os.lstat(dest).st_mode):
            dest.unlink()
            raise ImagePushError(f"export of {image.local_name}: {dest} is not a folder (a link?)")
        for root, dirs, files in os.walk(dest):
            for name in (*dirs, *files):
                path = Path(root, name)
                mode = os.lstat(path).st_mode
                if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                    shutil.rmtree(dest)
                    raise ImagePushError(f"export of {image.local_name}: {path} is neither a file nor a folder")
                os.lchown(path, 0, 0)
        os.chown(dest, 0, 0)

    def _push_tagged(self, *, image: BuiltImage, destination_ref: str, log: LogFn | None) -> str:
        cfg = self.config()
        with tempfile.TemporaryDirectory(dir=cfg.root / "tmp") as tmp:
            digestfile = Path(tmp) / "digest"
            if image.store:  # out of the store as its export; uploaded by the orchestrator
                exported = self.export(image=image, log=log)
                SkopeoTransport(self).copy(source=f"dir:{exported.path}", dest=f"docker://{destination_ref}", log=log,
                                           label=f"push {destination_ref}", extra=["--digestfile", str(digestfile)])
            else:
                self.check_tool([*self.buildah_argv(), "push", "--format", "v2s2", "--retry", "0",
                                 f"--tls-verify={str(self.tls_verify(destination_ref)).lower()}",
                                 "--signature-policy", str(cfg.policy), "--digestfile", str(digestfile),
                                 image.image_id, f"docker://{destination_ref}"],
                                label=f"push {destination_ref}", log=log, timeout=self.push_timeout_seconds)
            return read_digest_file(digestfile, f"push {destination_ref}")

    def inspect_remote(self, ref: str) -> RemoteImage | None:
        return SkopeoTransport(self).inspect(ref)

