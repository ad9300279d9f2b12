"""Named locks as PostgreSQL session-level advisory locks: exclusion between workers on any machines
that reach one server (the Dagster instance's).

Each :meth:`~sevenp_pipeline.resources.locks.Locks.hold` opens its own connection and polls
``pg_try_advisory_lock(key)``, so a terminated run stops waiting and a timeout is ours to raise; the
key is a stable 64-bit hash of the lock name (the name is in the messages and in the session's
``application_name``, which ``pg_stat_activity`` shows). The lock belongs to that session: when the
holder dies (even by SIGKILL) the server ends the session and frees the lock, as the kernel does for
``flock``. The connection comes from the instance's variables (``dg.EnvVar``, resolved at run time),
and no message carries the password.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlsplit

import psycopg2
from pydantic import Field

from sevenp_pipeline.execution.cancellation import raise_if_cancelled
from sevenp_pipeline.locks import LockTimeout
from sevenp_pipeline.resources.locks import Locks, LocksUnavailable


def lock_key(name: str) -> int:
    """The advisory lock key of ``name``: the first 8 bytes of its SHA-256 as a signed 64-bit integer."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def libpq_url(url: str) -> str:
    """A SQLAlchemy URL (``postgresql+psycopg2://...``) as libpq reads it (``postgresql://...``)."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.split("+", 1)[0] not in ("postgres", "postgresql"):
        raise ValueError("a PostgreSQL URL (postgresql://user:password@host:port/db) expected")
    return f"postgresql://{rest}"


class PostgresLocks(Locks):
    """Session-level ``pg_advisory_lock`` on a dedicated connection per held lock."""

    url: str | None = Field(default=None, description="postgresql[+psycopg2]://user:password@host:port/db; "
                                                      "or the separate fields below.")
    host: str | None = Field(default=None, description="Server host (without url).")
    port: str | None = Field(default=None, description="Server port (default 5432).")
    user: str | None = Field(default=None, description="User name.")
    password: str | None = Field(default=None, description="Password (a dg.EnvVar: never in run config).")
    dbname: str | None = Field(default=None, description="Database.")
    poll_seconds: float = Field(default=0.2, description="How often a waiting run asks again.")
    connect_timeout_seconds: int = Field(default=10, description="libpq connect_timeout.")

    def _connect_args(self) -> dict[str, Any]:
        if self.url:
            return {"dsn": libpq_url(self.url)}
        if not (self.host and self.user and self.dbname):
            raise LocksUnavailable("PostgreSQL locks need a url, or host, user and dbname")
        args = {"host": self.host, "port": self.port or "5432", "user": self.user, "dbname": self.dbname}
        return {**args, "password": self.password} if self.password else args

    def describe(self) -> str:
        if self.url:
            try:
                parts = urlsplit(self.url)
                return f"PostgreSQL advisory locks at {parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"
            except ValueError:
                return "PostgreSQL advisory locks (unparsable URL)"
        return f"PostgreSQL advisory locks at {self.host}:{self.port or 5432}/{self.dbname}"

    def _redacted(self, text: str) -> str:
        secret = self.password or (urlsplit(self.url).password if self.url else None)
        return text.replace(secret, "***") if secret else text

    def _connection(self, name: str) -> Any:
        try:
            connection = psycopg2.connect(**self._connect_args(), connect_timeout=self.connect_timeout_seconds,
                                          application_name=f"sevenp lock {name}"[:63])
        except (psycopg2.Error, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise LocksUnavailable(self._redacted(f"{self.describe()}: cannot connect: {first}")) from None
        connection.autocommit = True  # session-level locks; no transaction left open while held
        return connection

    @contextmanager
    def _hold(self, name: str, *, timeout: float, what: str) -> Iterator[None]:
        key = lock_key(name)
        deadline = time.monotonic() + timeout
        connection = self._connection(name)
        try:
            with connection.cursor() as cursor:
                while True:
                    cursor.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                    if cursor.fetchone()[0]:
                        break
                    raise_if_cancelled(f"waiting for the lock on {what}")
                    if time.monotonic() > deadline:
                        raise LockTimeout(f"waited {timeout:.0f}s for the lock on {what} (lock {name!r}, "
                                          f"advisory key {key}, {self.describe()})")
                    time.sleep(self.poll_seconds)
                try:
                    yield
                finally:
                    with suppress(psycopg2.Error):  # a lost connection has released it already
                        cursor.execute("SELECT pg_advisory_unlock(%s)", (key,))
        finally:
            connection.close()
