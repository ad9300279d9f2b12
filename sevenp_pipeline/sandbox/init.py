"""pid 1 of a stage's sandbox: builds the stage's view of the filesystem, runs the stage command as
the unprivileged stage user, and ends every process the command left behind.

Started by ``unshare --mount --pid --fork --kill-child --mount-proc`` (see sandbox/__init__.py), as
``python -I -S init.py SPEC -- argv...``; standard library only, so it starts in ~20 ms. SPEC is
JSON with paths only (no secrets): ``overlays``, ``binds``, ``hide``, ``uid``, ``gid``, ``cwd``,
``report``. In order:

1. overlays: a copy-on-write layer over a read-only tree (the dependency cache) at a target inside
   a folder bound in step 3, so the stage writes into its own upper layer and never into the cache;
2. the folders to keep (the checkout, the stage's HOME and TMPDIR) are opened (O_PATH) before
3. the private paths (project home, /tmp, the orchestrator's HOME) are covered with empty tmpfs,
   and the kept folders are bound back at their own paths from those descriptors;
4. the command runs as ``uid:gid`` with no supplementary groups and ``no_new_privs``, and a
   developer's umask (022, not the orchestrator's 077: a build's files end up in images whose
   non-root user must read them; the stage's view is private anyway);
5. when it exits, every process still alive in the namespace is written to ``report`` (one JSON
   line each) and killed: nothing a stage starts outlives it, detached (``setsid``) or not.

Exit status: the command's (128 + signal when it was killed); 125 when the sandbox could not be
built, 127 when the command could not be started.
"""

import ctypes
import json
import os
import signal
import sys
import warnings  # noqa: F401  (os.get_exec_path imports it lazily; the interpreter's own files may be hidden)

MS_RDONLY, MS_NOSUID, MS_NODEV = 1, 2, 4
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
PR_SET_NO_NEW_PRIVS = 38

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


def leftovers():
    """Processes of the namespace other than this one (zombies excluded): what the command left."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or name == "1":
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


def run(spec, argv):
    child = os.fork()
    if child == 0:
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                signal.signal(sig, signal.SIG_DFL)
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
    try:
        build_view(spec)
    except SandboxError as exc:
        sys.stderr.write(f"sandbox: {exc}\n")
        return 125
    status = run(spec, argv)
    left = leftovers()
    if left:
        os.write(report, "".join(json.dumps(p) + "\n" for p in left).encode())
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
    if status is None:
        return 125
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
