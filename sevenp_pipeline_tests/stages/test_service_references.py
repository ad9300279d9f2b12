"""Service values under the app's own names and service settings (issue 20 parts 2 and 3), through
the pipeline with real PostgreSQL and Redis: a stage's env refers to ``${postgresql.url}`` & co., the
servers get the app's settings, extensions, databases and init SQL, the password stays masked, the
stage cache still hits, and a version the machine lacks is named.

One home and three apps share one module-scoped setup (four runs in all)."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster._serdes import serialize_value

from sevenp_pipeline.config import Settings, load_app_config
from sevenp_pipeline.resources.services import installed_postgresql
from sevenp_pipeline_tests.conftest import TINY_APP, Pipeline, reachable_home
from sevenp_pipeline_tests.gitutil import Remote
from sevenp_pipeline_tests.results import artifact_file, metadata_of

pytestmark = pytest.mark.integration

# psql from the stage (host PATH, visible in the sandbox) through the stage's own network namespace.
HELPERS = r"""
const { execFileSync } = require("child_process");
const net = require("net");
exports.sql = (url, query) =>
  execFileSync("psql", [url, "-XtA", "-v", "ON_ERROR_STOP=1", "-c", query], { encoding: "utf8" }).trim();
exports.redis = (url, command) => {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: hostname, port: Number(port) }, () => sock.write(command + "\r\n"));
    sock.setTimeout(5000, () => reject(new Error(`timeout talking to ${hostname}:${port}`)));
    sock.once("data", (d) => { resolve(d.toString()); sock.destroy(); });
    sock.once("error", reject);
  });
};
"""

SLOT_TEST = r"""
const assert = require("assert");
const { sql } = require("../../scripts/clients.js");
// What a PostgreSQL client library's replication tests do: it needs wal_level=logical.
exports.logicalReplicationSlot = async () => {
  const slot = sql(process.env.DATABASE_URL,
    "SELECT slot_name FROM pg_create_logical_replication_slot('ci_slot', 'test_decoding')");
  assert.strictEqual(slot, "ci_slot");
};
"""

REFS_TEST = r"""
const assert = require("assert");
const fs = require("fs");
const { execFileSync } = require("child_process");
const { sql, redis } = require("../../scripts/clients.js");

exports.referencesReachTheServers = async () => {
  const db = process.env.DATABASE_URL;
  assert.ok(db && db.startsWith("postgresql://testuser:"), `DATABASE_URL is not the test database's URL`);
  fs.writeFileSync("seen-password.txt", new URL(db).password);  // for the test to grep the logs for
  console.log(`DATABASE_URL=${db}`);  // printed on purpose: the logs must mask the password
  console.log(`DB_PASSWORD=${process.env.DB_PASSWORD}`);
  assert.strictEqual(process.env.DB_PASSWORD, new URL(db).password);
  assert.strictEqual(sql(db, "SELECT current_user || '@' || current_database()"), "testuser@test_db");
  const { hostname, port } = new URL(db);
  assert.strictEqual(process.env.PG_HOSTPORT, `postgres://${hostname}:${port}/x`);
  assert.strictEqual(process.env.LITERAL, "${HOME}");
  assert.strictEqual(process.env.BEE_QUEUE_TEST_REDIS, new URL(process.env.REDIS_URL).port);
  assert.strictEqual((await redis(process.env.REDIS_URL, "PING")).trim(), "+PONG");
};

exports.settingsExtensionsDatabasesInitSql = async () => {
  const db = process.env.DATABASE_URL;
  assert.strictEqual(sql(db, "SHOW wal_level"), "logical");
  assert.strictEqual(sql(db, "SHOW max_connections"), "42");
  assert.strictEqual(sql(db, "SELECT encode(digest('x', 'sha256'), 'hex')").slice(0, 12), "2d711642b726");
  const other = db.replace(/\/test_db$/, "/other_db");
  assert.strictEqual(sql(other, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"),
                     "testuser");
  assert.strictEqual(sql(db, "SELECT name FROM seeded"), "from init_sql");
  // init_sql's `\!` ran in the stage's sandbox as the stage user, not as the server's user.
  assert.strictEqual(fs.readFileSync("init-ran-as.txt", "utf8").trim(),
                     execFileSync("id", ["-un"], { encoding: "utf8" }).trim());
  assert.match(await redis(process.env.REDIS_URL, "CONFIG GET notify-keyspace-events"), /\r\nxE\r\n/);
};
"""

INIT_SQL = """\
CREATE TABLE seeded (name text);
INSERT INTO seeded VALUES ('from init_sql');
\\! id -un > init-ran-as.txt
"""

SETTINGS_APP = """\
services:
  postgresql:
    version: "{pg_version}"
    settings: {{wal_level: logical, max_connections: 42}}
    extensions: [pgcrypto]
    databases: [other_db]
    init_sql: db/init.sql
  redis:
    settings: {{notify-keyspace-events: Ex}}
stages:
  service_tests:
    kind: test
    command: [node, scripts/test.js, refs]
    junit: reports/junit/refs.xml
    services: [postgresql, redis]
    needs: [node_dependencies]
    env:
      DATABASE_URL: "${{postgresql.url}}"
      DB_PASSWORD: "${{postgresql.password}}"
      REDIS_URL: "${{redis.url}}"
      BEE_QUEUE_TEST_REDIS: "${{redis.port}}"
      PG_HOSTPORT: "postgres://${{postgresql.host}}:${{postgresql.port}}/x"
      LITERAL: "$${{HOME}}"
"""

PLAIN_APP = """\
stages:
  service_tests:
    kind: test
    command: [node, scripts/test.js, slot]
    junit: reports/junit/slot.xml
    services: [postgresql]
    needs: [node_dependencies]
    env: {DATABASE_URL: "${postgresql.url}"}
"""

VERSIONS_APP = """\
services:
  postgresql: {version: "99"}
  redis: {version: "6"}
stages:
  pg_check: {kind: command, command: [node, -e, ""], services: [postgresql], needs: [node_dependencies]}
  redis_check: {kind: command, command: [node, -e, ""], services: [redis], needs: [node_dependencies]}
"""


@dataclass
class Runs:
    settings: Pipeline
    plain: Pipeline
    versions: Pipeline
    with_settings: dg.ExecuteInProcessResult
    again: dg.ExecuteInProcessResult  # the same commit once more: restored from the stage cache
    without_settings: dg.ExecuteInProcessResult
    missing_versions: dg.ExecuteInProcessResult
    password: str


def _pipeline(root: Path, home: Path, instance: dg.DagsterInstance, name: str, config: str) -> Pipeline:
    remote = Remote(root, TINY_APP, name)
    remote.write("scripts/clients.js", HELPERS)
    remote.write("tests/slot/slot.test.js", SLOT_TEST)
    remote.write("tests/refs/slot.test.js", SLOT_TEST)
    remote.write("tests/refs/services.test.js", REFS_TEST)
    remote.write("db/init.sql", INIT_SQL)
    remote.commit("test: service tests", push_to=None)
    apps = root / "apps"
    apps.mkdir(exist_ok=True)
    path = apps / f"{name}.yaml"
    path.write_text(f"name: {name}\nrepository:\n  url: {remote.url}\n" + textwrap.dedent(config))
    return Pipeline(remote, Settings(home=home, apps_dir=apps), instance, load_app_config(path))


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    root = tmp_path_factory.mktemp("service-refs")
    pg_version = list(installed_postgresql())[-1]
    with reachable_home() as home:
        instance = dg.DagsterInstance.ephemeral(tempdir=str(root / "dagster"))
        settings = _pipeline(root, home, instance, "svc-settings", SETTINGS_APP.format(pg_version=pg_version))
        plain = _pipeline(root, home, instance, "svc-plain", PLAIN_APP)
        versions = _pipeline(root, home, instance, "svc-versions", VERSIONS_APP)
        base = "source_checkout,node_dependencies,"
        sha = settings.remote.push("develop")
        with_settings = settings.materialize(sha, base + "service_tests")
        password_file = settings.settings.workspaces_dir / settings.key / sha / "src" / "seen-password.txt"
        password = password_file.read_text() if password_file.exists() else ""
        again = settings.materialize(sha, base + "service_tests")
        without = plain.materialize(plain.remote.push("develop"), base + "service_tests")
        missing = versions.materialize(versions.remote.push("develop"), base + "pg_check,redis_check")
        yield Runs(settings, plain, versions, with_settings, again, without, missing, password)


def _meta(result: dg.ExecuteInProcessResult, stage: str) -> dict:
    return metadata_of(result, stage)  # a stage whose gate failed recorded an observation instead


def _failures(result: dg.ExecuteInProcessResult) -> dict[str, str]:
    return {e.step_key.split("__")[-1]: str(e.step_failure_data.user_failure_data.description
                                            if e.step_failure_data.user_failure_data else e.step_failure_data.error)
            for e in result.all_events if e.is_step_failure}


def test_references_reach_the_servers_with_settings_extensions_databases_and_init_sql(runs: Runs) -> None:
    assert runs.with_settings.success, _failures(runs.with_settings)
    meta = _meta(runs.with_settings, "service_tests")
    assert (meta["passed"], meta["failed"]) == (3, 0)


def test_the_password_is_in_no_log(runs: Runs) -> None:
    password = runs.password
    assert len(password) >= 20  # the stage saw it (and wrote it where only this test reads it)
    events = "\n".join(serialize_value(entry) for entry in runs.settings.instance.all_logs(runs.with_settings.run_id))
    # the line the test printed is there, masked; the stage reached its database on the standard port
    assert "DATABASE_URL=postgresql://***@127.0.0.1:5432/test_db" in events
    assert "DB_PASSWORD=***" in events
    assert password not in events
    stored = artifact_file(runs.settings.settings, _meta(runs.with_settings, "service_tests")["log"])
    log = stored.read_text()
    assert "DATABASE_URL=postgresql://***@127.0.0.1:" in log and "DB_PASSWORD=***" in log
    assert password not in log
    leaked = [p for folder in (runs.settings.settings.artifacts_dir, runs.settings.settings.stage_cache_dir)
              for p in folder.rglob("*") if p.is_file() and password.encode() in p.read_bytes()]
    assert leaked == []


def test_the_stage_cache_hits_although_ports_and_password_change(runs: Runs) -> None:
    assert runs.again.success
    first, again = _meta(runs.with_settings, "service_tests"), _meta(runs.again, "service_tests")
    assert again["restored_run_id"] == runs.with_settings.run_id
    assert again["input_key"] == first["input_key"]


def test_metadata_records_the_versions_the_stage_got(runs: Runs) -> None:
    meta = _meta(runs.with_settings, "service_tests")
    major = list(installed_postgresql())[-1]
    assert meta["postgresql_version"].startswith(f"{major}.")  # e.g. "15.8 (Debian 15.8-0+deb12u1)"
    assert meta["redis_version"].count(".") == 2  # e.g. "7.0.15"


def test_without_wal_level_logical_the_replication_test_fails(runs: Runs) -> None:
    assert not runs.without_settings.success
    meta = _meta(runs.without_settings, "service_tests")
    assert (meta["passed"], meta["failed"]) == (0, 1)
    checks = [e.asset_check_evaluation_data for e in runs.without_settings.all_events
              if e.event_type_value == "ASSET_CHECK_EVALUATION"]
    assert [(c.check_name, c.passed) for c in checks] == [("all_tests_pass", False)]
    log = artifact_file(runs.settings.settings, meta["log"]).read_text()
    assert "logical decoding requires wal_level >= logical" in log


def test_a_version_the_machine_lacks_is_named_with_what_it_has(runs: Runs) -> None:
    failures = _failures(runs.missing_versions)
    installed = ", ".join(installed_postgresql())
    assert "postgresql 99 is not installed (services.postgresql.version)" in failures["pg_check"]
    assert f"this machine has {installed}" in failures["pg_check"]
    assert "redis 6 is not installed (services.redis.version)" in failures["redis_check"]
    assert "is redis 7." in failures["redis_check"]
