"""The lock role's contract, held by both implementations: flock files under the home, and PostgreSQL
advisory locks on a real server (the stages' throwaway PostgreSQL). Holders are separate processes,
as two run workers are: the second waits until the first releases, a holder killed by SIGKILL frees
the lock, a timeout names what was waited for, a terminated run stops waiting, and other names do not
block. The connection's password is in no message."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import dagster as dg
import pytest

from sevenp_pipeline.config.settings import PROJECT_ROOT
from sevenp_pipeline.execution.cancellation import cancel_on
from sevenp_pipeline.resources.locks import FileLocks, Locks, LocksUnavailable, LockTimeout
from sevenp_pipeline.resources.locks_postgres import PostgresLocks, lock_key
from sevenp_pipeline.resources.processes import ProcessRunner
from sevenp_pipeline.resources.services import PostgresOptions, Server, TestServices, free_port
from sevenp_pipeline_tests.conftest import reachable_home

# A run worker in miniature: takes the lock, says how long it waited, holds it, releases it.
HOLDER = """
import json, os, sys, time
from sevenp_pipeline.resources.locks import FileLocks
from sevenp_pipeline.resources.locks_postgres import PostgresLocks
kind, config = os.environ["TEST_LOCKS_KIND"], json.loads(os.environ["TEST_LOCKS_CONFIG"])
locks = (FileLocks if kind == "file" else PostgresLocks)(**config)
started = time.monotonic()
with locks.hold(sys.argv[1], timeout=60, what="the test queue"):
    print(f"held after {time.monotonic() - started:.2f}", flush=True)
    time.sleep(float(sys.argv[2]))
print("released", flush=True)
"""


@pytest.fixture(scope="module")
def postgres() -> Iterator[Server]:
    with reachable_home("sevenp-pg-locks-") as home:
        services = TestServices(runner=ProcessRunner(), root_dir=str(home / "services"))
        with services.provide(["postgresql"], postgresql=PostgresOptions(user="locks", database="locks")) as ends:
            yield ends.servers[0]


def _url(server: Server) -> str:
    return f"postgresql+psycopg2://{server.user}:{server.password}@127.0.0.1:{server.port}/{server.database}"


@pytest.fixture(params=["file", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """The implementation's name and config (as the holder processes build it)."""
    if request.param == "file":
        return "file", {"root": str(tmp_path / "home")}
    server: Server = request.getfixturevalue("postgres")
    return "postgres", {"url": _url(server)}


def _locks(backend: tuple[str, dict[str, str]]) -> Locks:
    kind, config = backend
    return FileLocks(**config) if kind == "file" else PostgresLocks(**config)


class Holder:
    def __init__(self, backend: tuple[str, dict[str, str]], name: str, seconds: float) -> None:
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "TEST_LOCKS_KIND": backend[0],
               "TEST_LOCKS_CONFIG": json.dumps(backend[1])}
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, name, str(seconds)], cwd=PROJECT_ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.strip())

    def waited(self, timeout: float) -> float | None:
        """Seconds it waited for the lock, once it holds it (None: not within ``timeout``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            held = [line for line in self.lines if line.startswith("held after ")]
            if held:
                return float(held[0].removeprefix("held after "))
            if self.proc.poll() is not None and not self._reader.is_alive():
                raise AssertionError(f"holder exited {self.proc.returncode}: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            time.sleep(0.05)
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.stop()


@pytest.mark.integration
def test_a_second_process_waits_until_the_first_releases(backend: tuple[str, dict[str, str]],
                                                         holders: list[Holder]) -> None:
    first = Holder(backend, "deploy/web/staging/queue", seconds=2.0)
    holders.append(first)
    assert first.waited(timeout=20) is not None
    second = Holder(backend, "deploy/web/staging/queue", seconds=0)
    holders.append(second)
    assert second.waited(timeout=0.8) is None  # the first still holds it
    waited = second.waited(timeout=20)
    assert waited is not None and waited >= 1.0, waited
    assert first.proc.wait(timeout=10) == 0 and "released" in first.lines


@pytest.mark.integration
def test_a_holder_killed_by_sigkill_frees_the_lock(backend: tuple[str, dict[str, str]],
                                                   holders: list[Holder]) -> None:
    first = Holder(backend, "image-pushes/web/inputs-abc", seconds=600)
    holders.append(first)
    assert first.waited(timeout=20) is not None
    second = Holder(backend, "image-pushes/web/inputs-abc", seconds=0)
    holders.append(second)
    assert second.waited(timeout=0.8) is None
    first.proc.kill()  # SIGKILL: no finally, no unlock; the kernel or the server frees it
    killed = time.monotonic()
    assert second.waited(timeout=5) is not None
    assert time.monotonic() - killed < 5


@pytest.mark.integration
def test_a_timeout_names_what_was_waited_for_and_other_names_do_not_block(
        backend: tuple[str, dict[str, str]]) -> None:
    locks = _locks(backend)
    with locks.hold("deploy/web/production/queue", timeout=5, what="the production deploy queue of web"):
        started = time.monotonic()
        with pytest.raises(LockTimeout, match="the production deploy queue of web") as raised, \
                locks.hold("deploy/web/production/queue", timeout=0.5, what="the production deploy queue of web"):
            pass
        assert 0.5 <= time.monotonic() - started < 3
        with locks.hold("deploy/web/staging/queue", timeout=0.5):  # another name: free
            pass
    if backend[0] == "postgres":
        assert "deploy/web/production/queue" in str(raised.value)  # the name, beside its hashed key
        assert _url_password(backend) not in str(raised.value)
    with locks.hold("deploy/web/production/queue", timeout=0.5):  # released on leaving the block
        pass


@pytest.mark.integration
def test_a_terminated_run_stops_waiting(backend: tuple[str, dict[str, str]]) -> None:
    locks = _locks(backend)
    cancelled = threading.Event()
    with locks.hold("dependency-cache/abc", timeout=5):
        cancelled.set()
        with cancel_on(cancelled), pytest.raises(dg.DagsterExecutionInterruptedError), \
                locks.hold("dependency-cache/abc", timeout=30):
            pass


def _url_password(backend: tuple[str, dict[str, str]]) -> str:
    return backend[1]["url"].split(":")[2].split("@")[0]


def test_names_must_be_relative_paths(tmp_path: Path) -> None:
    locks = FileLocks(root=str(tmp_path))
    for bad in ("", "../escape", "a/../b", "/abs", "a//b", ".hidden", "a b"):
        with pytest.raises(ValueError, match="invalid lock name"):
            locks.hold(bad)
    assert locks.path_of("deploy/web/staging/queue") == tmp_path.resolve() / "deploy/web/staging/queue.lock"
    assert lock_key("a") == lock_key("a") != lock_key("b")
    assert -(2**63) <= lock_key("deploy/web/staging/queue") < 2**63


def test_an_unreachable_server_is_named_without_the_password() -> None:
    password = "s3cret-never-in-a-message"
    for locks in (PostgresLocks(url=f"postgresql://ci:{password}@127.0.0.1:{free_port()}/ci"),
                  PostgresLocks(host="127.0.0.1", port=str(free_port()), user="ci", password=password, dbname="ci")):
        with pytest.raises(LocksUnavailable) as raised, locks.hold("x", timeout=1):
            pass
        assert "127.0.0.1" in str(raised.value) and password not in str(raised.value)
        assert password not in locks.describe()


@pytest.mark.integration
def test_a_wrong_password_is_not_repeated(postgres: Server) -> None:
    wrong = "wrong-" + postgres.password
    locks = PostgresLocks(url=f"postgresql://{postgres.user}:{wrong}@127.0.0.1:{postgres.port}/{postgres.database}")
    with pytest.raises(LocksUnavailable) as raised, locks.hold("x", timeout=1):
        pass
    assert wrong not in str(raised.value) and postgres.password not in str(raised.value)


@pytest.mark.integration
def test_the_resource_sets_postgres_locks_hold_on_the_instances_server(postgres: Server, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """As a run worker gets them: chosen by the resource set from the instance's (bare) URL, resolved
    from the environment by Dagster; the server shows the held lock under its name while it is held."""
    import psycopg2  # noqa: PLC0415

    from sevenp_pipeline.config import Settings  # noqa: PLC0415
    from sevenp_pipeline.resource_set import locks as chosen_locks  # noqa: PLC0415

    bare = _url(postgres).replace("postgresql+psycopg2://", "postgresql://")
    monkeypatch.delenv("SEVENP_LOCKS", raising=False)
    monkeypatch.setenv("SEVENP_DAGSTER_POSTGRES_URL", bare)
    monkeypatch.setenv("SEVENP_HOME", str(tmp_path / "home"))
    resource = chosen_locks(Settings.from_env())
    assert isinstance(resource, PostgresLocks) and postgres.password not in repr(resource)
    held = "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE l.locktype = 'advisory'"
    with dg.build_resources({"locks": resource}) as resources, closing(psycopg2.connect(bare)) as observer, \
            observer.cursor() as cursor:
        with resources.locks.hold("deploy/web/staging/queue", timeout=5):
            cursor.execute(held)
            assert cursor.fetchall() == [("sevenp lock deploy/web/staging/queue",)]
        cursor.execute(held)
        assert cursor.fetchall() == []
