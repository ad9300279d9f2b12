"""The Dagster instance config (``$DAGSTER_HOME/dagster.yaml``) the local stack runs on: SQLite by
default, PostgreSQL when the environment names a server.

One source: the project's ``dagster.yaml`` (SQLite storage, the queued run coordinator, run and pool
concurrency with the tag limits, run retries, run monitoring). With PostgreSQL selected, the stack
gets that same config with only ``storage:`` replaced by Dagster's ``postgres`` storage, whose
connection fields are ``{env: VAR}`` references: Dagster reads them at load in each process (the
webserver, the daemon, the code server, every run worker), so no password is ever written to the
file or printed.

- ``SEVENP_DAGSTER_POSTGRES_URL`` (``postgresql+psycopg2://user:password@host:5432/db``): ``postgres_url``;
- else ``SEVENP_DAGSTER_POSTGRES_HOST`` with ``..._USER`` and ``..._DB`` (``..._PASSWORD`` and
  ``..._PORT`` optional): ``postgres_db``.

The driver is named (``+psycopg2``): SQLAlchemy 2.1 (pinned) reads a bare ``postgresql://`` as psycopg 3,
which is not installed; dagster-postgres installs psycopg2. A bare ``postgresql://`` (or ``postgres://``)
URL is accepted: ``devstack serve`` rewrites the variable to name the driver (:func:`use_driver`) before
it starts anything, so every process it starts reads the rewritten one. Any other scheme is refused at
start, naming the expected one.

The database must exist; Dagster creates its tables (runs, event logs, schedules, ...) on first use.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from sevenp_pipeline.config.settings import POSTGRES_FIELDS, POSTGRES_HOST, POSTGRES_URL, PROJECT_ROOT
from sevenp_pipeline.files import private_dir

SOURCE = PROJECT_ROOT / "dagster.yaml"
REQUIRED_FIELDS = ("hostname", "username", "db_name")
# SQLAlchemy's dialect+driver for the psycopg2 that dagster-postgres depends on.
SCHEME = "postgresql+psycopg2"
HEADER = ("# Written by sevenp_pipeline.devtools.instance_config at each start of the stack (make dev, make demo):\n"
          "# the project's dagster.yaml with PostgreSQL storage. Edit that file, not this one. The connection is\n"
          "# read from the environment by Dagster ({env: ...}); no password is written here.\n")


class InstanceConfigError(ValueError):
    """The environment selects PostgreSQL but does not say enough to connect (names variables, never values)."""


def postgres_storage(environ: Mapping[str, str]) -> dict[str, Any] | None:
    """Dagster's ``storage: {postgres: ...}`` for the server the environment names; None: SQLite."""
    if environ.get(POSTGRES_URL):
        with_driver(environ[POSTGRES_URL])  # raises on a scheme that is not PostgreSQL's
        return {"postgres": {"postgres_url": {"env": POSTGRES_URL}}}
    if not environ.get(POSTGRES_HOST):
        return None
    missing = [POSTGRES_FIELDS[f] for f in REQUIRED_FIELDS if not environ.get(POSTGRES_FIELDS[f])]
    if missing:
        raise InstanceConfigError(f"{POSTGRES_HOST} selects PostgreSQL instance storage but {', '.join(missing)} "
                                  f"{'is' if len(missing) == 1 else 'are'} not set (or set {POSTGRES_URL} instead)")
    fields: dict[str, Any] = {name: {"env": var} for name, var in POSTGRES_FIELDS.items() if environ.get(var)}
    return {"postgres": {"postgres_db": {**fields, "scheme": SCHEME}}}


def with_driver(url: str) -> str:
    """``url`` with the psycopg2 driver named: ``postgresql://`` and ``postgres://`` become
    ``postgresql+psycopg2://``; a URL naming it is returned as is; any other scheme raises (the
    message names the variable and the schemes, never the URL, which holds the password)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme == SCHEME:
        return url
    if sep and scheme in ("postgres", "postgresql"):
        return f"{SCHEME}://{rest}"
    raise InstanceConfigError(f"{POSTGRES_URL} must start with {SCHEME}:// or postgresql:// (dagster-postgres "
                              f"connects through psycopg2, the only PostgreSQL driver installed)")


def use_driver(environ: MutableMapping[str, str]) -> None:
    """Rewrites ``environ``'s URL to name the driver (:func:`with_driver`): SQLAlchemy 2.1 would read a
    bare ``postgresql://`` as psycopg 3, which is not installed. Each process of the stack inherits it."""
    if environ.get(POSTGRES_URL):
        environ[POSTGRES_URL] = with_driver(environ[POSTGRES_URL])


def base_config() -> dict[str, Any]:
    """The project's dagster.yaml as a dict: the settings every instance of the local stack shares."""
    loaded = yaml.safe_load(SOURCE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def instance_config(environ: Mapping[str, str]) -> dict[str, Any]:
    """The instance config for ``environ``: the project's, with PostgreSQL storage when selected."""
    config = base_config()
    storage = postgres_storage(environ)
    if storage is not None:
        config["storage"] = storage
    return config


def describe_storage(environ: Mapping[str, str]) -> str:
    """Where the instance keeps its runs and events, for a log line: host, port, database; no credentials."""
    if environ.get(POSTGRES_URL):
        try:
            parts = urlsplit(environ[POSTGRES_URL])
            where = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"
        except ValueError:
            where = "(unparsable URL)"
        return f"PostgreSQL at {where} ({POSTGRES_URL})"
    if environ.get(POSTGRES_HOST):
        port = environ.get(POSTGRES_FIELDS["port"]) or "5432"
        return f"PostgreSQL at {environ[POSTGRES_HOST]}:{port}/{environ.get(POSTGRES_FIELDS['db_name'], '')}"
    return f"SQLite under {environ.get('DAGSTER_HOME', '$DAGSTER_HOME')}"


def write_instance_config(dagster_home: Path, environ: Mapping[str, str] | None = None) -> Path:
    """Writes ``dagster_home/dagster.yaml`` for ``environ`` (default: this process's): the project's file
    as it is (comments kept) for SQLite, else the generated PostgreSQL variant; returns its path."""
    environ = os.environ if environ is None else environ
    storage = postgres_storage(environ)  # raises before anything is written
    private_dir(dagster_home)
    path = dagster_home / "dagster.yaml"
    if storage is None:
        shutil.copyfile(SOURCE, path)
    else:
        path.write_text(HEADER + yaml.safe_dump(instance_config(environ), sort_keys=False))
    return path
