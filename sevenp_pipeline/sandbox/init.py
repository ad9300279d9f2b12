"""pid 1 of a stage's sandbox: builds the stage's view of the filesystem, runs the stage command as
the unprivileged stage user, and ends every process the command left behind.

Started by ``unshare --mount --pid --fork --kill-child --mount-proc`` (see sandbox/__init__.py), as
``python -I -S init.py SPEC -- argv...``; standard library only, so it starts in ~20 ms. SPEC is
JSON with paths only (no secrets): ``overlays``, ``binds``, ``hide``, ``uid``, ``gid``, ``cwd``,
``report``, ``network``, ``files``, ``userns``, ``limits``. In order:

0. network (unless ``network`` is null): the command gets a network namespace of its own with only
   ``lo`` up, so the host's loopback (the Dagster webserver, the image registry, the environments'
   databases and front doors) and other stages' servers are out of reach. What it may reach is
   relayed by a helper process that stays in the host's namespace: each ``[inside, host]`` pair in
   ``forwards`` is listened on at 127.0.0.1 (and ::1, so ``localhost`` works either way) port
   ``inside`` and connected to port ``host`` on the host's loopback (the stage's own test services
   on their standard ports, a smoke test's front door); with ``outbound``, slirp4netns gives the
   namespace a route out with host loopback disabled and the host's own addresses prohibited (the
  package registry for an install stage).
   The helper runs as root, not dumpable, so the stage user can neither signal nor trace it;
1. overlays: a copy-on-write layer over a read-only tree (the dependency cache) at a target inside
   a folder bound in step 3, so the stage writes into its own upper layer and never into the cache;
2. the folders to keep (the checkout, the stage's HOME and TMPDIR) are opened (O_PATH) before
3. the private paths (project home, /tmp, the orchestrator's HOME) are covered with empty tmpfs,
   and the kept folders are bound back at their own paths from those descriptors;
4. the command runs as ``uid:gid`` with no supplementary groups and ``no_new_privs``, and a
   developer's umask (022, not the orchestrator's 077: a build's files end up in images whose
   non-root user must read them; the stage's view is private anyway). With ``userns`` (``[base,
   count]``, an image build) it first enters a user namespace of its own, and a mount namespace that
   namespace owns, as its root, which the host sees as uid ``base``: buildah works as root there, and
   a RUN step that leaves buildah's chroot is a stranger to every host file that is not world-readable;
   With ``limits`` (``memory_mb``, ``pids``, ``cpu_shares``, ``disk_mb``) the command first moves
   itself into a cgroup of its own (:class:`Cgroup`: memory, pids and cpu; v1 or v2, whichever the
   machine mounts) made by pid 1, sets RLIMIT_FSIZE to ``disk_mb`` and RLIMIT_CORE to 0, and its
   ``oom_score_adj`` to 1000; everything it starts inherits all of it. pid 1 and the network helper
   stay outside: the relay is not the stage's, and an OOM kill never takes the sandbox itself;
5. when it exits, every process still alive in the namespace is written to ``report`` (one JSON
   line each) and killed: nothing a stage starts outlives it, detached (``setsid``) or not. The
   limits it ran into (the cgroup's OOM-kill and refused-fork counters, a SIGXFSZ death) are
   written there too (``{"limit": key, "value": n, "events": n}``), and the cgroup is removed.
   Cgroups left by a sandbox that was killed itself are removed by the next one.

Exit status: the command's (128 + signal when it was killed); 125 when the sandbox could not be
built, 127 when the command could not be started.
"""

import ctypes
import fcntl
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
import threading
import time
import warnings  # noqa: F401  (os.get_exec_path imports it lazily; the interpreter's own files may be hidden)

MS_RDONLY, MS_NOSUID, MS_NODEV = 1, 2, 4
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS = 38
PR_SET_DUMPABLE = 4
CLONE_NEWNET = 0x40000000
CLONE_NEWUSER, CLONE_NEWNS = 0x10000000, 0x00020000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
SLIRP_READY_SECONDS = 10
CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_PARENT = "sevenp"
CGROUP_V1_CONTROLLERS = ("memory", "pids", "cpu")
CGROUP_STALE_SECONDS = 60  # an empty cgroup this old is a killed sandbox's (a new one is filled at once)
STAGE_OOM_SCORE_ADJ = 1000

_libc = ctypes.CDLL(None, use_errno=True)


class SandboxError(Exception):
    pass


def _mount(source, target, fstype, flags, data=None):
    def b(value):
        return value.encode() if value is not None else None

    if _libc.mount(b(source), b(target), b(fstype), ctypes.c_ulong(flags), b(data)) != 0:
        err = ctypes.get_errno()
        raise SandboxError(f"mount {fstype or 'bind'} on {target}: {os.strerror(err)}")


def build_view(spec):
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    for lower, upper, work, target in spec["overlays"]:
        _mount("overlay", target, "overlay", MS_NOSUID | MS_NODEV,
               f"lowerdir={lower},upperdir={upper},workdir={work}")
    kept = []
    for src, dst, readonly in spec["binds"]:
        try:
            kept.append((os.open(src, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), dst, readonly))
        except OSError as exc:
            raise SandboxError(f"cannot open {src}: {exc.strerror}") from exc
    files = []
    for src, dst in spec.get("files", ()):
        try:
            files.append((os.open(src, os.O_PATH | os.O_CLOEXEC), dst))
        except OSError as exc:
            raise SandboxError(f"cannot open {src}: {exc.strerror}") from exc
    hidden = []
    for path in sorted(spec["hide"], key=lambda p: (p.count("/"), p)):
        if any(path == h or path.startswith(h.rstrip("/") + "/") for h in hidden) or not os.path.isdir(path):
            continue  # already under a covered path, or absent
        _mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777,size=512m")
        hidden.append(path)
    for fd, dst, readonly in sorted(kept, key=lambda k: k[1].count("/")):
        os.makedirs(dst, exist_ok=True)
        _mount(f"/proc/self/fd/{fd}", dst, None, MS_BIND | MS_REC)
        if readonly:
            _mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        os.close(fd)
    for fd, dst in files:  # read-only files over the host's (resolv.conf for an outbound namespace)
        _mount(f"/proc/self/fd/{fd}", dst, None, MS_BIND)
        _mount(None, dst, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        os.close(fd)


# -- network ---------------------------------------------------------------------------------
def _loopback_up():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


def isolate_network(net):
    """Moves this process (and so the command) into a new network namespace with ``lo`` up; starts
    the relay helper first when ports are forwarded or the namespace goes outbound. Returns the
    helper's processes (pids), which are not the command's leftovers."""
    if not net["forwards"] and not net["outbound"]:
        _enter_new_netns()
        return set()
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    helper = os.fork()
    if helper == 0:  # stays in the host's network namespace
        ours.close()
        quiet = os.open(os.devnull, os.O_WRONLY)  # the stage's output is the command's alone
        os.dup2(quiet, 1)
        os.dup2(quiet, 2)
        code = 1
        try:
            code = relay(theirs, net)
        except BaseException as exc:  # reported to pid 1, which fails the sandbox
            try:
                theirs.sendall(f"error: {exc}".encode()[:500])
            except OSError:
                pass
        os._exit(code)
    theirs.close()
    _enter_new_netns()
    listeners = []
    targets = []  # the host port of each listener, in order
    for inside, host in net["forwards"]:
        for family, address in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address, inside))
            except OSError:
                sock.close()
                if family == socket.AF_INET:
                    raise
                continue  # no IPv6 on this machine's loopback: 127.0.0.1 only
            sock.listen(128)
            listeners.append(sock)
            targets.append(host)
    socket.send_fds(ours, [" ".join(map(str, targets)).encode() or b"-"], [sock.fileno() for sock in listeners])
    for sock in listeners:
        sock.close()
    answer = ours.recv(600).decode(errors="replace")
    ours.close()
    if not answer.startswith("ok"):
        raise SandboxError(f"network: {answer or 'the relay helper exited'}")
    if net["outbound"]:
        _block_host_addresses(net)
    return {helper, *(int(pid) for pid in answer.split()[1:])}


def _block_host_addresses(net):
    """A ``prohibit`` route in the namespace for each of the host's own addresses (slirp4netns's route
    out would reach them: ``--disable-host-loopback`` covers 127.0.0.1 only). Pid 1 adds them as the
    host's root, before the command's user namespace: the command cannot remove them. Fails closed."""
    for address in net.get("blocked", ()):
        pid = os.fork()
        if pid == 0:
            try:
                quiet = os.open(os.devnull, os.O_WRONLY)
                os.dup2(quiet, 1)
                os.execv(net["ip"], [net["ip"], "route", "add", "prohibit", f"{address}/32"])
            finally:
                os._exit(127)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SandboxError(f"network: could not close the route to this machine's address {address}")


def _enter_new_netns():
    if _libc.unshare(CLONE_NEWNET) != 0:
        raise SandboxError(f"unshare(CLONE_NEWNET): {os.strerror(ctypes.get_errno())}")
    _loopback_up()


def relay(channel, net):
    """The helper: starts slirp4netns when asked, then relays each connection accepted inside the
    namespace to its host port on the host's loopback, until the sandbox ends (pid 1 kills it)."""
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    message, fds, _, _ = socket.recv_fds(channel, 4096, 128)
    targets = [int(p) for p in message.decode().split() if p != "-"]
    listeners = {socket.socket(fileno=fd): port for fd, port in zip(fds, targets, strict=True)}
    pids = []
    if net["outbound"]:
        pids.append(_start_slirp(net["slirp4netns"]))
    channel.sendall(" ".join(["ok", *map(str, pids)]).encode())
    channel.close()
    if not listeners:
        while True:
            signal.pause()
    while True:
        ready, _, _ = select.select(list(listeners), [], [])
        for listener in ready:
            try:
                inside, _ = listener.accept()
            except OSError:
                continue
            threading.Thread(target=_pump_connection, args=(inside, listeners[listener]), daemon=True).start()


def _pump_connection(inside, port):
    with inside:
        outside = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with outside:
            try:  # numeric, no resolver: the interpreter's own files are hidden by now (codecs, idna)
                outside.connect((b"127.0.0.1", port))
            except OSError:
                return  # the service is gone: the stage sees its connection closed
            for sock in (inside, outside):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sockets = [inside, outside]
            open_ends = 2
            while open_ends:
                ready, _, _ = select.select(sockets, [], [])
                for sock in ready:
                    other = outside if sock is inside else inside
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        return
                    if not data:
                        sockets.remove(sock)
                        open_ends -= 1
                        try:
                            other.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                        continue
                    try:
                        other.sendall(data)
                    except OSError:
                        return


def _start_slirp(binary):
    """slirp4netns for pid 1's namespace (10.0.2.0/24, DNS 10.0.2.3), host loopback disabled."""
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.close(read_end)
            os.set_inheritable(write_end, True)
            quiet = os.open(os.devnull, os.O_WRONLY)  # its "sent tapfd" chatter is not the stage's output
            os.dup2(quiet, 1)
            os.dup2(quiet, 2)
            os.execv(binary, [binary, "--configure", "--mtu=65520", "--disable-host-loopback",
                              f"--ready-fd={write_end}", "1", "tap0"])
        finally:
            os._exit(127)
    os.close(write_end)
    ready, _, _ = select.select([read_end], [], [], SLIRP_READY_SECONDS)
    answer = os.read(read_end, 1) if ready else b""
    os.close(read_end)
    if answer != b"1":
        raise SandboxError(f"slirp4netns did not become ready within {SLIRP_READY_SECONDS}s")
    return child


# -- limits ----------------------------------------------------------------------------------
class Cgroup:
    """The command's cgroup: one folder per controller under ``sevenp/`` (v1) or one folder (v2)."""

    def __init__(self, limits, root=CGROUP_ROOT):
        self.limits = limits
        self.root = root
        self.v2 = os.path.exists(os.path.join(root, "cgroup.controllers"))
        self.name = f"{int(time.time())}-{os.urandom(6).hex()}"
        self.dirs = []

    def _parents(self):
        if self.v2:
            return [os.path.join(self.root, CGROUP_PARENT)]
        return [os.path.join(self.root, c, CGROUP_PARENT) for c in CGROUP_V1_CONTROLLERS]

    def create(self):
        """Makes the cgroup and writes its limits; removes stale siblings first."""
        memory = self.limits["memory_mb"] << 20
        try:
            for parent in self._parents():
                os.makedirs(parent, exist_ok=True)
                remove_stale(parent)
            if self.v2:
                self._enable_v2_controllers()
                path = os.path.join(self._parents()[0], self.name)
                os.mkdir(path)
                self.dirs.append(path)
                _write(path, "memory.max", memory)
                _write(path, "memory.swap.max", 0, optional=True)  # absent without swap accounting
                _write(path, "pids.max", self.limits["pids"])
                _write(path, "cpu.weight", shares_to_weight(self.limits["cpu_shares"]))
                return
            for parent in self._parents():
                path = os.path.join(parent, self.name)
                os.mkdir(path)
                self.dirs.append(path)
            memory_dir, pids_dir, cpu_dir = self.dirs
            _write(memory_dir, "memory.limit_in_bytes", memory)
            _write(memory_dir, "memory.memsw.limit_in_bytes", memory, optional=True)  # no swap beyond it
            _write(pids_dir, "pids.max", self.limits["pids"])
            _write(cpu_dir, "cpu.shares", self.limits["cpu_shares"])
        except OSError as exc:
            self.remove()
            raise SandboxError(f"limits: cannot set up the stage's cgroup ({exc.filename or self.root}: "
                               f"{exc.strerror}): the orchestrator must run as root with the memory, pids "
                               f"and cpu controllers mounted (cgroup v1 or v2) under {self.root}") from exc

    def _enable_v2_controllers(self):
        for folder in (self.root, os.path.join(self.root, CGROUP_PARENT)):
            with open(os.path.join(folder, "cgroup.subtree_control")) as handle:
                enabled = handle.read().split()
            missing = [c for c in ("memory", "pids", "cpu") if c not in enabled]
            if missing:
                _write(folder, "cgroup.subtree_control", " ".join("+" + c for c in missing))

    def enter(self):
        """Moves the calling process (the command, before it execs) into the cgroup."""
        for path in self.dirs:
            _write(path, "cgroup.procs", 0)

    def hits(self, status):
        """The limits the command ran into: ``[{"limit", "value", "events"}]``."""
        found = []
        memory_file, pids_file = ("memory.events", "pids.events") if self.v2 else \
            ("memory.oom_control", "pids.events")
        memory_dir = self.dirs[0]
        pids_dir = self.dirs[0] if self.v2 else self.dirs[1]
        oom_kills = _counter(memory_dir, memory_file, "oom_kill")
        if oom_kills:
            found.append({"limit": "memory_mb", "value": self.limits["memory_mb"], "events": oom_kills})
        refused = _counter(pids_dir, pids_file, "max")
        if refused:
            found.append({"limit": "pids", "value": self.limits["pids"], "events": refused})
        if status is not None and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGXFSZ:
            found.append({"limit": "disk_mb", "value": self.limits["disk_mb"], "events": 1})
        return found

    def remove(self):
        """Removes the cgroup (its processes must be gone: pid 1 has killed and reaped them)."""
        for path in self.dirs:
            for _ in range(50):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.02)  # exiting processes leave the cgroup a moment after they are reaped
        self.dirs = []


def shares_to_weight(shares):
    """cgroup v1 cpu.shares (2..262144, default 1024) as v2 cpu.weight (1..10000, default 100)."""
    return 1 + ((shares - 2) * 9999) // 262142


def remove_stale(parent, now=None):
    """Removes the empty cgroups under ``parent`` older than CGROUP_STALE_SECONDS: left by a sandbox
    that was killed before it could remove its own. A cgroup with processes cannot be removed."""
    now = time.time() if now is None else now
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        path = os.path.join(parent, name)
        try:
            if not os.path.isdir(path) or now - os.stat(path).st_mtime < CGROUP_STALE_SECONDS:
                continue
            with open(os.path.join(path, "cgroup.procs")) as handle:
                if handle.read().strip():
                    continue
            os.rmdir(path)
        except OSError:
            continue


def _write(folder, name, value, optional=False):
    path = os.path.join(folder, name)
    if optional and not os.path.exists(path):
        return
    with open(path, "w") as handle:
        handle.write(str(value))


def _counter(folder, name, key):
    try:
        with open(os.path.join(folder, name)) as handle:
            for line in handle:
                parts = line.split()
                if len(parts) == 2 and parts[0] == key:
                    return int(parts[1])
    except (OSError, ValueError):
        pass
    return 0


def limit_self(limits):
    """In the command's process, before it execs: the rlimits and the OOM priority it and all it
    starts inherit (RLIMIT_NPROC is per uid, shared by every stage: the pids cgroup counts instead)."""
    file_size = limits["disk_mb"] << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with open("/proc/self/oom_score_adj", "w") as handle:
        handle.write(str(STAGE_OOM_SCORE_ADJ))


def leftovers(exclude=()):
    """Processes of the namespace other than this one and the network helpers (zombies excluded):
    what the command left."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or name == "1" or int(name) in exclude:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                stat = handle.read().decode(errors="replace")
            if stat[stat.rindex(")") + 2:].startswith("Z"):
                continue
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
            comm = stat[stat.index("(") + 1: stat.rindex(")")]
        except (OSError, ValueError):
            continue  # exited meanwhile
        found.append({"pid": int(name), "name": comm, "command": cmdline[:300]})
    return found


def _exec(argv):
    """execvp, resolved in the sandbox's view (PATH entries under hidden folders are gone)."""
    if "/" in argv[0]:
        os.execv(argv[0], argv)
    error = FileNotFoundError(2, "not found on PATH")
    for folder in os.environ.get("PATH", "/usr/bin:/bin").split(":"):
        try:
            os.execv(os.path.join(folder or ".", argv[0]), argv)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except PermissionError as exc:
            error = exc
    raise error


def _map_ids(pid, userns):
    """Writes ``0 base count`` as the uid and gid map of ``pid``'s new user namespace (we are root in
    the host's, so any range may be mapped; no newuidmap or /etc/subuid involved)."""
    base, count = userns
    for name in ("uid_map", "gid_map"):
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY)
        try:
            os.write(fd, f"0 {base} {count}\n".encode())
        finally:
            os.close(fd)


def _enter_userns(ready, mapped):
    """In the command's process: a user namespace (and a mount namespace it owns) in which it is root,
    root being host uid ``base``; pid 1 writes the maps between the two pipe messages."""
    if _libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWUSER)")
    os.write(ready, b"u")
    os.close(ready)
    if os.read(mapped, 1) != b"m":
        raise OSError(1, "the user namespace's id maps were not written")
    os.close(mapped)
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def run(spec, argv, cgroup=None):
    userns = spec.get("userns")
    pipes = (os.pipe(), os.pipe()) if userns else None
    child = os.fork()
    if child == 0:
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXFSZ):
                signal.signal(sig, signal.SIG_DFL)
            if cgroup is not None:  # still host root: before the user namespace and the uid switch
                try:
                    cgroup.enter()
                    limit_self(cgroup.limits)
                except OSError as exc:
                    sys.stderr.write(f"sandbox: cannot apply the stage's limits: {exc}\n")
                    sys.stderr.flush()
                    os._exit(125)
            if pipes:
                (r_ready, w_ready), (r_mapped, w_mapped) = pipes
                os.close(r_ready)
                os.close(w_mapped)
                _enter_userns(w_ready, r_mapped)
            if spec["gid"] is not None:
                os.setgroups([])
                os.setgid(spec["gid"])
            if spec["uid"] is not None:
                os.setuid(spec["uid"])
            if _libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(no_new_privs)")
            os.chdir(spec["cwd"])
            _exec(argv)
        except OSError as exc:
            sys.stderr.write(f"sandbox: cannot run {argv[0]}: {exc.strerror or exc}\n")
            sys.stderr.flush()
        os._exit(127)

    if pipes:
        (r_ready, w_ready), (r_mapped, w_mapped) = pipes
        os.close(w_ready)
        os.close(r_mapped)
        try:
            if os.read(r_ready, 1) == b"u":
                _map_ids(child, userns)
                os.write(w_mapped, b"m")
        except OSError as exc:
            sys.stderr.write(f"sandbox: cannot map the user namespace of the command: {exc}\n")
        os.close(r_ready)
        os.close(w_mapped)

    def forward(signum, _frame):
        try:
            os.kill(child, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    status = None
    while status is None:
        try:
            pid, wstatus = os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
        if pid == child:
            status = wstatus
    return status


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.stderr.write("usage: init.py SPEC -- argv...\n")
        return 125
    spec = json.loads(sys.argv[1])
    argv = sys.argv[3:]
    report = os.open(spec["report"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    # The folders made for mount points must be traversable by the stage user (the orchestrator's
    # umask is 077), and so must what the stage creates: see run().
    os.umask(0o022)
    helpers = set()
    cgroup = Cgroup(spec["limits"]) if spec.get("limits") else None
    try:
        if cgroup is not None:
            cgroup.create()
        if spec.get("network") is not None:
            helpers = isolate_network(spec["network"])
        build_view(spec)
    except (SandboxError, OSError) as exc:
        sys.stderr.write(f"sandbox: {exc}\n")
        if cgroup is not None:
            cgroup.remove()
        return 125
    status = run(spec, argv, cgroup)
    left = leftovers(helpers)
    hits = cgroup.hits(status) if cgroup is not None else []
    if left or hits:
        os.write(report, "".join(json.dumps(p) + "\n" for p in (*left, *hits)).encode())
    os.close(report)
    try:
        os.kill(-1, signal.SIGKILL)  # every process of the namespace but this one
    except ProcessLookupError:
        pass
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
    if cgroup is not None:
        cgroup.remove()
    if status is None:
        return 125
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
