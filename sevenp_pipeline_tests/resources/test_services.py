"""Test services' folders and secrets: per instance under the home, the password never on a command
line, a long home's socket path, and the janitor that removes the folders of dead run workers."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sevenp_pipeline.config.settings import PROJECT_ROOT
from sevenp_pipeline.files import private_dir
from sevenp_pipeline.resources.processes import ExecuteRequest, LogFn, Outcome, ProcessRunner, RunningProcess
from sevenp_pipeline.resources.service_dirs import (
    OWNER_FILE,
    SETUP_GRACE_SECONDS,
    SETUP_PREFIX,
    Owner,
    make_service_dir,
    record_owner,
    remove_abandoned,
    remove_service_dir,
    services_root,
)
from sevenp_pipeline.resources.services import PostgresOptions, RedisOptions, ServiceError, TestServices
from sevenp_pipeline_tests.conftest import reachable_home
from sevenp_pipeline_tests.waiting import wait_while

AS_ROOT = os.geteuid() == 0


ARGVS: list[tuple[str, ...]] = []  # what RecordingRunner was asked to run (resources are copied: not a field)


class RecordingRunner(ProcessRunner):
    """The real runner; keeps the argv of every request it is given."""

    def run(self, request: ExecuteRequest, *, log: LogFn | None = None) -> Outcome:
        ARGVS.append(tuple(request.argv))
        return super().run(request, log=log)

    def start(self, request: ExecuteRequest) -> RunningProcess:
        ARGVS.append(tuple(request.argv))
        return super().start(request)


@pytest.fixture
def home() -> Iterator[Path]:
    with reachable_home() as path:
        yield path


def _services(root: Path) -> TestServices:
    ARGVS.clear()
    return TestServices(runner=RecordingRunner(), root_dir=str(root))


def _files_containing(root: Path, needle: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and needle.encode() in p.read_bytes()]


@pytest.mark.integration
def test_password_stays_off_every_command_line_and_folders_are_private(home: Path) -> None:
    services = _services(home / "services")
    with services.provide(["postgresql", "redis"]) as endpoints:
        password = endpoints.env["PGPASSWORD"]
        (workdir,) = (home / "services").glob("svc-*")  # under this instance's home, not a shared temp dir
        assert json.loads((workdir / OWNER_FILE).read_text())["pid"] == os.getpid()
        assert stat.S_IMODE(workdir.stat().st_mode) == 0o700
        if AS_ROOT:
            assert workdir.stat().st_uid == pwd.getpwnam("postgres").pw_uid
            assert stat.S_IMODE(home.stat().st_mode) == 0o711  # traversable, not listable
            assert stat.S_IMODE((home / "services").stat().st_mode) == 0o711
        # The password was really set: log in over TCP with it (from the environment, not argv).
        login = subprocess.run(
            ["psql", "-X", "-tA", "-h", "127.0.0.1", "-p", endpoints.env["PGPORT"], "-U", "testuser",
             "-d", "test_db", "-c", "select current_user"],
            env={**os.environ, "PGPASSWORD": password}, capture_output=True, text=True, timeout=30, check=False)
        assert login.stdout.strip() == "testuser", login.stderr
        assert _files_containing(home, password) == []  # the setup SQL file is gone
    argvs = ARGVS
    assert any(a[0].endswith("/psql") and "-f" in a for a in argvs)  # the ALTER ROLE went through a file
    assert [a for a in argvs if any(password in part for part in a)] == []
    assert list((home / "services").glob("svc-*")) == []


@pytest.mark.integration
def test_long_home_keeps_data_under_it_and_the_socket_short(home: Path) -> None:
    home.chmod(0o711)
    long_home = private_dir(home / ("h" * 60) / ("o" * 60), mode=0o711)
    services = _services(long_home / "services")
    with services.provide(["postgresql"]) as endpoints:
        assert len(list((long_home / "services").glob("svc-*"))) == 1
        assert endpoints.env["POSTGRESQL_URI"].startswith("postgresql://testuser:")
        (server,) = [a for a in ARGVS if a[0].endswith("/postgres")]
        sockets = next(a.split("=", 1)[1] for a in server if a.startswith("unix_socket_directories="))
        assert not sockets.startswith(str(long_home)) and len(sockets) + len("/.s.PGSQL.65535") <= 107
        assert Path(sockets).is_dir()
    assert not Path(sockets).exists()


@pytest.mark.integration
def test_a_missing_extension_or_an_unknown_setting_fails_naming_it(home: Path) -> None:
    services = _services(home / "services")
    with pytest.raises(ServiceError, match=r"services\.postgresql\.extensions \['pgcrypto', 'no_such_ext'\]: "
                                           r"extension \"no_such_ext\" is not available"), \
            services.provide(["postgresql"], postgresql=PostgresOptions(extensions=("pgcrypto", "no_such_ext"))):
        pass
    with pytest.raises(ServiceError, match=r"(?s)postgresql exited at startup: .*\"no_such_setting\""), \
            services.provide(["postgresql"], postgresql=PostgresOptions(settings=("no_such_setting=1",))):
        pass
    with pytest.raises(ServiceError, match=r"(?s)redis: redis exited at startup: .*no-such-directive"), \
            services.provide(["redis"], redis=RedisOptions(arguments=("--no-such-directive", "1"))):
        pass
    assert list((home / "services").glob("svc-*")) == []  # torn down every time


@pytest.mark.skipif(not AS_ROOT, reason="not root: the servers run as this user, every folder of ours is reachable")
def test_unreachable_home_falls_back_to_a_per_instance_temp_folder(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir()
    private.chmod(0o700)  # the server user cannot pass, whatever the umask
    configured = private / "home" / "services"
    root = services_root(configured, "postgres")
    other = services_root(tmp_path / "other" / "home" / "services", "postgres")
    assert root != configured and root.name.startswith("sevenp-services-") and root != other
    assert stat.S_IMODE(root.stat().st_mode) == 0o711
    reachable = Path(tempfile.mkdtemp(prefix="sevenp-home-"))
    try:
        assert services_root(reachable / "services", "postgres") == reachable / "services"
    finally:
        shutil.rmtree(reachable)
        shutil.rmtree(root)
        shutil.rmtree(other)


def _dead_owner() -> Owner:
    child = subprocess.Popen(["sleep", "30"])
    ticks = int(Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    owner = Owner(pid=child.pid, start_ticks=ticks, boot_id=Owner.current().boot_id)
    assert owner.alive()
    child.kill()
    child.wait()
    return owner


def test_janitor_removes_folders_of_dead_owners_only(tmp_path: Path) -> None:
    def folder(name: str, owner: Owner | None, age: float = 0) -> Path:
        path = tmp_path / name
        path.mkdir()
        (path / "pgdata").mkdir()
        if owner is not None:
            record_owner(path, owner)
        os.utime(path, (time.time() - age, time.time() - age))
        return path

    me = Owner.current()
    alive = folder("svc-alive", me)
    dead = folder("svc-dead", _dead_owner())
    reused = folder("svc-reused", Owner(pid=me.pid, start_ticks=me.start_ticks - 1, boot_id=me.boot_id))
    rebooted = folder("svc-rebooted", Owner(pid=me.pid, start_ticks=me.start_ticks, boot_id="another-boot"))
    # A removal interrupted after the record went: no record, and just modified (the leak of issue 13).
    interrupted = folder("svc-interrupted", None)
    in_setup = folder(f"{SETUP_PREFIX}fresh", None)
    left_in_setup = folder(f"{SETUP_PREFIX}old", None, age=SETUP_GRACE_SECONDS + 60)
    other = folder("templates", None, age=SETUP_GRACE_SECONDS + 60)
    removed, failed = remove_abandoned(tmp_path)
    assert sorted(removed) == sorted([dead, reused, rebooted, interrupted, left_in_setup]) and failed == []
    assert alive.exists() and in_setup.exists() and other.exists()
    assert not any(p.exists() for p in removed)


class _Killed(BaseException):
    """Stands for SIGKILL: nothing catches it, no cleanup after it runs."""


def test_a_service_folder_has_its_owner_from_its_first_moment_to_its_last(tmp_path: Path) -> None:
    """Made under a setup name and renamed once the owner is recorded; removed with the record last, so
    a removal killed at any point leaves a folder still owned by its (dead) process, or nothing."""
    folder = make_service_dir(tmp_path)
    assert folder.name.startswith("svc-") and (folder / OWNER_FILE).is_file()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and list(tmp_path.glob(f"{SETUP_PREFIX}*")) == []
    remove_service_dir(folder)
    assert not folder.exists()

    real_unlink, real_rmdir = os.unlink, os.rmdir
    for kill_at in range(40):
        folder = make_service_dir(tmp_path)
        for n in range(12):
            (folder / f"redis-{n}.log").write_text("x")
        (folder / "pgdata" / "base").mkdir(parents=True)
        for n in range(12):
            (folder / "pgdata" / "base" / f"{n}").write_text("x")
        calls = [0]

        def counted(real, calls=calls, kill_at=kill_at):
            def call(*args, **kwargs):
                calls[0] += 1
                if calls[0] > kill_at:
                    raise _Killed
                return real(*args, **kwargs)
            return call

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(os, "unlink", counted(real_unlink))
            patch.setattr(os, "rmdir", counted(real_rmdir))
            with contextlib.suppress(_Killed):
                remove_service_dir(folder)
        left = folder.exists()
        owned = left and (folder / OWNER_FILE).exists()
        # Still owned, or gone, or (killed between the record and the rmdir) an empty folder with no record.
        assert not left or owned or not any(folder.iterdir()), f"killed after {kill_at} removals"
        # The janitor keeps a folder whose owner (this process) lives, and removes one with no record.
        assert remove_abandoned(tmp_path) == ([folder] if left and not owned else [], [])
        if folder.exists():
            remove_service_dir(folder)


def test_a_folder_that_cannot_be_removed_is_named(tmp_path: Path) -> None:
    folder = make_service_dir(tmp_path)
    stuck = folder / "pgdata"
    stuck.mkdir()
    (stuck / "f").write_text("x")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(shutil, "rmtree", lambda path, onerror=None, **_: onerror(os.rmdir, str(path),
                                                                              (OSError, OSError(39, "busy"), None)))
        with pytest.raises(OSError, match=f"service folder {folder} not removed: {stuck}: .*busy"):
            remove_service_dir(folder, attempts=2)
    assert (folder / OWNER_FILE).exists()  # still owned: the janitor will try again


WORKER = textwrap.dedent("""
    import sys, time
    from sevenp_pipeline.resources.processes import ProcessRunner
    from sevenp_pipeline.resources.services import PostgresOptions, RedisOptions, ServiceError, TestServices
    services = TestServices(runner=ProcessRunner(), root_dir=sys.argv[1])
    with services.provide(["redis"]) as endpoints:
        print(endpoints.env["REDIS_URI"], flush=True)
        time.sleep(300)
""")


def _redis_servers_in(root: Path) -> list[int]:
    """Redis servers working in a folder under ``root`` (redis rewrites its command line: use its cwd)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
                cwd = os.readlink(entry / "cwd")
            except OSError:
                continue
            if b"redis-server" in cmd.split(b"\0")[0] and cwd.startswith(str(root)):
                pids.append(int(entry.name))
    return pids


@pytest.mark.integration
def test_a_killed_workers_service_folder_is_removed_by_the_next_provide(home: Path) -> None:
    root = home / "services"
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(root)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    try:
        assert worker.stdout is not None and worker.stdout.readline().startswith("redis://")
        (left,) = root.glob("svc-*")
        assert _redis_servers_in(root)
    finally:
        worker.send_signal(signal.SIGKILL)  # as a run worker killed with -9: no finally runs
        worker.wait()
    wait_while(lambda: _redis_servers_in(root), timeout=30, what="the server to die with its parent")
    assert left.exists()  # ... but its folder stayed
    messages: list[str] = []
    with TestServices(runner=ProcessRunner(), root_dir=str(root)).provide([], log=messages.append):
        assert not left.exists()
        assert any(f"left by dead runs: {left.name}" in m for m in messages)
