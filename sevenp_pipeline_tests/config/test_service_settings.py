"""Service settings under the app's ``services:`` (issue 20 part 3): what loads, how it reaches the
servers' command lines, and the errors naming the file and the key."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from sevenp_pipeline.config import ConfigError, load_app_config


def _load(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "web.yaml"
    path.write_text("name: web\nrepository: {url: /srv/web.git}\n" + textwrap.dedent(extra))
    return path


def test_settings_become_server_arguments(tmp_path: Path) -> None:
    app = load_app_config(_load(tmp_path, """\
        services:
          postgresql:
            version: "15"
            settings: {wal_level: logical, max_connections: 200, jit: false, auto_explain.log_min_duration: 10}
            extensions: [pgcrypto, hstore]
            databases: [other_db]
            init_sql: db/init.sql
          redis:
            version: "7.0"
            settings: {notify-keyspace-events: Ex, maxmemory: 64mb, lazyfree-lazy-eviction: true}
        """))
    pg, redis = app.services.postgresql, app.services.redis
    assert pg is not None and redis is not None
    assert pg.server_settings() == ("wal_level=logical", "max_connections=200", "jit=off",
                                    "auto_explain.log_min_duration=10")
    assert (pg.version, pg.extensions, pg.databases, pg.init_sql) == ("15", ["pgcrypto", "hstore"], ["other_db"],
                                                                      "db/init.sql")
    assert redis.server_arguments() == ("--notify-keyspace-events", "Ex", "--maxmemory", "64mb",
                                        "--lazyfree-lazy-eviction", "yes")


@pytest.mark.parametrize(("extra", "error"), [
    ("services: {postgresql: {settings: {port: 5433}}}", r"services\.postgresql\.settings: port: set by the pipeline"),
    ("services: {postgresql: {settings: {listen_addresses: '*'}}}",
     r"services\.postgresql\.settings: listen_addresses: set by the pipeline"),
    ("services: {postgresql: {settings: {data_directory: /tmp}}}", r"settings: data_directory: set by the pipeline"),
    ("services: {postgresql: {settings: {archive_command: 'rm -rf /'}}}", r"settings: archive_command: .*runs a"),
    ("services: {postgresql: {settings: {'wal level': logical}}}", r"settings: wal level: not a PostgreSQL setting"),
    ("services: {postgresql: {settings: {wal_level: \"a\\nb\"}}}", r"settings: wal_level: .*one line"),
    ("services: {postgresql: {version: fifteen}}", r"services\.postgresql\.version: 'fifteen' is not a version"),
    ("services: {postgresql: {extensions: [pg-crypto]}}", r"services\.postgresql\.extensions: \['pg-crypto'\]"),
    ("services: {postgresql: {databases: ['x\"; DROP']}}", r"services\.postgresql\.databases: "),
    ("services: {postgresql: {databases: [test_db]}}", r"services\.postgresql: .*'test_db' is the test database"),
    ("services: {postgresql: {user: Test-User}}", r"services\.postgresql\.user: 'Test-User'"),
    ("services: {postgresql: {init_sql: ../x.sql}}", r"services\.postgresql\.init_sql: .*leaves the app folder"),
    ("services: {postgresql: {wal_level: logical}}", r"services\.postgresql\.wal_level: unknown key"),
    ("services: {redis: {settings: {port: 6379}}}", r"services\.redis\.settings: port: set by the pipeline"),
    ("services: {redis: {settings: {dir: /etc}}}", r"services\.redis\.settings: dir: set by the pipeline"),
    ("services: {redis: {settings: {loadmodule: /x.so}}}", r"settings: loadmodule: .*loads code"),
    ("services: {redis: {settings: {protected-mode: 'no'}}}", r"settings: protected-mode: set by the pipeline"),
    ("services: {redis: {settings: {tls-port: 1}}}", r"settings: tls-port: set by the pipeline"),
    ("services: {redis: {settings: {Max_Memory: 1}}}", r"settings: Max_Memory: not a Redis config directive"),
    ("services: {redis: {settings: {maxmemory: '--port 1'}}}", r"settings: maxmemory: .*another directive"),
    ("services: {redis: {version: 7.x}}", r"services\.redis\.version: '7\.x' is not a version"),
])
def test_a_wrong_setting_is_named_with_its_file_and_key(tmp_path: Path, extra: str, error: str) -> None:
    with pytest.raises(ConfigError, match=re.compile(r"web\.yaml: .*" + error)):
        load_app_config(_load(tmp_path, extra + "\n"))
