"""The stage sandbox: a pushed branch's commands run here, never beside the orchestrator.

A branch's package.json scripts, lifecycle scripts and tests are untrusted code. Each stage command
runs in its own mount and PID namespace (``unshare``, util-linux), with :mod:`.init` as pid 1:

- as the unprivileged stage user (``sevenp-stage``), no supplementary groups, ``no_new_privs``;
- with a minimal environment (:func:`minimal_env`): PATH, HOME and TMPDIR of its own, LANG,
  ``CI=true``, the machine's CA/proxy settings, then what the app declares. Nothing of the
  orchestrator's own (signing key, registry, AWS, webhooks) is passed;
- seeing the project home, the orchestrator's HOME and /tmp as empty folders, except its own
  checkout (read-write), its HOME and TMPDIR, and what is bound read-only (the git mirror);
- on the dependency cache through an overlay: writes into ``node_modules`` land in a layer of its
  own, discarded after the stage, never in the cache or another commit's tree;
- in a fresh /proc: no other process of the machine is visible, the orchestrator's environ included;
- and ended with every process it started: when the command exits, the processes it left (a
  detached daemon) are reported by name and killed; when the run worker dies, all of it dies.

- in a network namespace of its own (:class:`Network`): the host's loopback (Dagster's webserver
  and code server, the image registry, the environments' databases and front doors) and other
  stages' servers are unreachable; the ports it is given (its own test services, a smoke test's
  URL) are relayed, and only a stage that goes ``outbound`` (the install stage) gets a route out,
  through slirp4netns with host loopback disabled and a ``prohibit`` route to each of this machine's
  own addresses (:func:`host_addresses`), so nothing listening on the host is reachable that way either;
- and ended with every process it started (see above);
- within its limits (:class:`SandboxSpec.limits`, the app's ``limits:``): the command and everything it
  starts are in a cgroup of their own (v1: ``/sys/fs/cgroup/{memory,pids,cpu}/sevenp/<id>``; v2:
  ``/sys/fs/cgroup/sevenp/<id>``) capping memory (no swap beyond it), processes and threads at once,
  and weighting its CPU share; rlimits cap the size of any one file it writes (``disk_mb``) and
  turn core dumps off; its ``oom_score_adj`` is 1000, so under memory pressure the kernel kills a
  stage before the orchestrator or an environment. A limit it hit comes back as a :class:`LimitHit`.
  The size of its checkout is checked by the stage runner after it (stages/runner.py).

Not covered: disk written outside the checkout during the stage (its HOME, TMPDIR and
node_modules layer are removed after it; /tmp is a 512 MB tmpfs), I/O bandwidth.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pwd
import shutil
import sys
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sevenp_pipeline.config.models import Limits

INIT = Path(__file__).with_name("init.py")
STAGE_USER = "sevenp-stage"

# Orchestrator variables a stage may need to reach the network the way the machine does; a proxy
# URL with credentials is masked like a secret (the redactor treats URL userinfo as secret).
PASSTHROUGH_ENV = (
    "LANG", "LC_ALL", "TZ", "NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)
_OVERLAY_UNSAFE = (",", ":", "\\", "\n")


class SandboxError(Exception):
    """The sandbox cannot be set up here; the message says what is missing and how to fix it."""


@dataclass(frozen=True)
class Bind:
    src: Path
    dst: Path | None = None  # default: the same path
    readonly: bool = False


@dataclass(frozen=True)
class Overlay:
    lower: Path  # read-only tree (the dependency cache)
    upper: Path  # the stage's own layer
    work: Path   # overlayfs scratch, same filesystem as upper
    target: Path  # where the merged tree appears; inside a bound folder


@dataclass(frozen=True)
class Network:
    """The stage's own network namespace: ``forwards`` are host loopback ports reachable inside, at
    the same port (an int) or at another one (``(inside, host)``: a test service on its standard
    port, 5432 inside for a server on a random host port); ``outbound``: a route out (slirp4netns,
    no host loopback) with its own resolver."""

    forwards: tuple[int | tuple[int, int], ...] = ()

    def port_pairs(self) -> list[tuple[int, int]]:
        """``forwards`` as ``(inside, host)`` pairs; two forwards to one inside port are refused."""
        pairs = [(f, f) if isinstance(f, int) else (int(f[0]), int(f[1])) for f in self.forwards]
        inside = [p[0] for p in pairs]
        clash = sorted({p for p in inside if inside.count(p) > 1})
        if clash:
            raise SandboxError(f"network: two forwards to inside port(s) {clash}: {pairs}")
        return pairs
    outbound: bool = False
    resolv_conf: Path | None = None  # "nameserver 10.0.2.3", bound over /etc/resolv.conf when outbound


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def loopback_port(url: str) -> int | None:
    """The port of ``url`` when it points at this machine's loopback (a stage's network namespace
    reaches it only forwarded), else None."""
    parts = urllib.parse.urlsplit(url)
    if parts.hostname not in LOOPBACK_HOSTS:
        return None
    return parts.port or (443 if parts.scheme == "https" else 80)


# slirp4netns's own addresses in the namespace (gateway, resolver, the namespace's own): never blocked.
SLIRP_ADDRESSES = frozenset({"10.0.2.2", "10.0.2.3", "10.0.2.100"})


def host_addresses(fib_trie: Path = Path("/proc/net/fib_trie")) -> list[str]:
    """This machine's own IPv4 addresses but loopback (every ``/32 host LOCAL`` entry of the kernel's
    routing trie, secondary addresses included). An outbound stage's route out (slirp4netns) goes
    through the host's network stack: without a ``prohibit`` route for each of them, the install
    stage's scripts would reach a webserver, code server, database or registry listening on
    ``0.0.0.0`` through the host's own address, which ``--disable-host-loopback`` does not cover."""
    found: set[str] = set()
    last = ""
    for line in fib_trie.read_text(encoding="ascii", errors="replace").splitlines():
        text = line.strip()
        if text.startswith("|--"):
            last = text[3:].strip()
        elif text.startswith("/32 host LOCAL") and last and not last.startswith("127."):
            found.add(last)
    return sorted(found - SLIRP_ADDRESSES)


SLIRP_RESOLV_CONF = "nameserver 10.0.2.3\n"  # slirp4netns's resolver, which forwards to the host's


def with_resolver(network: Network, folder: Path) -> Network:
    """``network``, with slirp4netns's resolver written to ``folder`` when it goes outbound (the host's
    /etc/resolv.conf may name a resolver on loopback, which the namespace cannot reach)."""
    if not network.outbound:
        return network
    resolv = folder / "resolv.conf"
    resolv.write_text(SLIRP_RESOLV_CONF, encoding="utf-8")
    resolv.chmod(0o644)
    return dataclasses.replace(network, resolv_conf=resolv)


@dataclass(frozen=True)
class SandboxSpec:
    """What one sandboxed command sees. ``uid``/``gid`` None: stay who we are (not root: a user
    namespace maps us to root inside, and the view is the same)."""

    cwd: Path
    report: Path
    binds: tuple[Bind, ...] = ()
    overlays: tuple[Overlay, ...] = ()
    hide: tuple[Path, ...] = ()
    uid: int | None = None
    gid: int | None = None
    user_namespace: bool = False
    network: Network | None = None  # None: the host's network (only with the sandbox's network off)
    userns: tuple[int, int] | None = None  # (host uid/gid base, count): root inside a user namespace of its own
    # memory_mb, pids, cpu_shares (a cgroup of its own) and disk_mb (RLIMIT_FSIZE); None: no limits
    limits: Limits | None = None

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """``argv`` as run inside the sandbox: ``unshare ... python init.py SPEC -- argv``."""
        unshare = shutil.which("unshare")
        if unshare is None:
            raise SandboxError("unshare (util-linux) not found: install the Debian package util-linux")
        for overlay in self.overlays:
            for path in (overlay.lower, overlay.upper, overlay.work):
                if any(c in str(path) for c in _OVERLAY_UNSAFE):
                    raise SandboxError(f"overlay path {path} contains one of {_OVERLAY_UNSAFE!r}: move the "
                                       f"project home (SEVENP_HOME) to a plainer path")
        network = None
        files: list[list[str]] = []
        if self.network is not None:
            slirp = shutil.which("slirp4netns") if self.network.outbound else None
            if self.network.outbound and slirp is None:
                raise SandboxError("slirp4netns not found: an outbound stage (the install stage, or one with "
                                   "network: outbound) needs it; install the Debian package slirp4netns "
                                   "(scripts/install-system-deps.sh)")
            network = {"forwards": [list(p) for p in self.network.port_pairs()], "outbound": self.network.outbound,
                       "slirp4netns": slirp}
            if self.network.outbound:
                ip = shutil.which("ip") or next((c for c in ("/usr/sbin/ip", "/sbin/ip") if Path(c).exists()), None)
                if ip is None:
                    raise SandboxError("ip (iproute2) not found: an outbound stage's namespace is closed to this "
                                       "machine's own addresses with it; install the Debian package iproute2")
                network.update(ip=ip, blocked=host_addresses())
            if self.network.outbound and self.network.resolv_conf is not None:
                files.append([str(self.network.resolv_conf), "/etc/resolv.conf"])
        payload = {
            "cwd": str(self.cwd),
            "report": str(self.report),
            "binds": [[str(b.src), str(b.dst or b.src), b.readonly] for b in self.binds],
            "overlays": [[str(o.lower), str(o.upper), str(o.work), str(o.target)] for o in self.overlays],
            "hide": [str(p) for p in self.hide],
            "uid": self.uid,
            "gid": self.gid,
            "network": network,
            "files": files,
            "userns": list(self.userns) if self.userns else None,
            "limits": None if self.limits is None else {
                "memory_mb": self.limits.memory_mb, "pids": self.limits.pids,
                "cpu_shares": self.limits.cpu_shares, "disk_mb": self.limits.disk_mb},
        }
        launcher = [unshare, *(["--user", "--map-root-user"] if self.user_namespace else []),
                    "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]
        return [*launcher, "--", sys.executable, "-I", "-S", str(INIT), json.dumps(payload), "--", *argv]

    def read_leftovers(self) -> list[dict[str, object]]:
        """The processes the command left running (reported by pid 1 before it killed them)."""
        return [entry for entry in self._report() if "limit" not in entry]

    def read_limit_hits(self) -> tuple[LimitHit, ...]:
        """The limits the command ran into (reported by pid 1 from its cgroup's counters)."""
        return tuple(LimitHit(key=str(e["limit"]), value=int(e["value"]), events=int(e.get("events", 1)))
                     for e in self._report() if "limit" in e)

    def _report(self) -> list[dict[str, object]]:
        try:
            text = self.report.read_text(encoding="utf-8")
        except OSError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class LimitHit:
    """A limit a sandboxed command ran into: ``key`` is the ``limits:`` key, ``value`` its setting,
    ``events`` how often the kernel counted it (OOM kills, refused forks)."""

    key: str
    value: int
    events: int = 1
    measured: int | None = None  # disk_mb of the checkout: its size in MB

    def describe(self, where: str = "") -> str:
        """One line naming the limit, e.g. ``killed: memory over its limit of 2048 MB (limits.memory_mb)``;
        ``where`` is added in the parentheses (how to change it)."""
        phrase = LIMIT_PHRASES.get(self.key, "over its limit of {value}")
        if self.key == "disk_mb" and self.measured is not None:
            phrase = "its checkout holds {measured} MB, over its limit of {value} MB"
        text = phrase.format(value=self.value, measured=self.measured)
        return f"{text} (limits.{self.key}{'; ' + where if where else ''})"


LIMIT_PHRASES = {
    "memory_mb": "killed: memory over its limit of {value} MB",
    "pids": "could not start processes: {value} processes at once",
    "disk_mb": "killed: a file over its limit of {value} MB",
}


@dataclass(frozen=True)
class StageUser:
    """Who stage commands run as: the unprivileged user when we are root, else ourselves."""

    name: str
    uid: int | None
    gid: int | None

    @classmethod
    def resolve(cls, name: str = STAGE_USER) -> StageUser:
        if os.geteuid() != 0:
            return cls(name=pwd.getpwuid(os.geteuid()).pw_name, uid=None, gid=None)
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            raise SandboxError(
                f"the stage user '{name}' does not exist: stages of pushed branches never run as root. "
                f"Create it with scripts/install-system-deps.sh (make install) or `useradd --system "
                f"--user-group --no-create-home --shell /usr/sbin/nologin {name}`, or set SEVENP_STAGE_USER"
            ) from None
        if entry.pw_uid == 0:
            raise SandboxError(f"the stage user '{name}' is root (uid 0): pick an unprivileged user")
        return cls(name=name, uid=entry.pw_uid, gid=entry.pw_gid)

    @property
    def switches(self) -> bool:
        return self.uid is not None

    def own(self, *paths: Path, recursive: bool = False) -> None:
        """Hands folders (and with ``recursive`` everything under them) to the stage user."""
        if self.uid is None or self.gid is None:
            return
        for path in paths:
            os.lchown(path, self.uid, self.gid)
            if recursive and path.is_dir() and not path.is_symlink():
                for root, dirs, files in os.walk(path):
                    for name in (*dirs, *files):
                        os.lchown(Path(root, name), self.uid, self.gid)


def minimal_env(*, home: Path, tmpdir: Path, user: str, source: Mapping[str, str] | None = None,
                private: Iterable[Path] = ()) -> dict[str, str]:
    """The base environment of a stage command: nothing of the orchestrator's own configuration.

    PATH is the orchestrator's, without entries under private folders (they are hidden anyway).
    """
    source = os.environ if source is None else source
    hidden = [str(p).rstrip("/") + "/" for p in private]
    path = [p for p in source.get("PATH", "/usr/local/bin:/usr/bin:/bin").split(":")
            if p and not any((p.rstrip("/") + "/").startswith(h) for h in hidden)]
    env = {k: source[k] for k in PASSTHROUGH_ENV if source.get(k)}
    env.setdefault("LANG", "C.UTF-8")
    env.update(PATH=":".join(path) or "/usr/bin:/bin", HOME=str(home), TMPDIR=str(tmpdir), USER=user,
               LOGNAME=user, CI="true")
    return env
