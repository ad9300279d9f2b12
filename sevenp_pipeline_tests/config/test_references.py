"""Service references in a stage's env (issue 20 part 2): parsing, expansion and the load-time errors,
which name the file and the key."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from sevenp_pipeline.config import ConfigError, load_app_config
from sevenp_pipeline.config.references import KNOWN_REFERENCES, Reference, ReferenceError, expand, references

FACTS = {"postgresql.url": "postgresql://u:pw@127.0.0.1:5432/db", "postgresql.host": "127.0.0.1",
         "postgresql.port": "5432", "postgresql.user": "u", "postgresql.password": "pw",
         "postgresql.database": "db", "redis.url": "redis://127.0.0.1:6379/0", "redis.host": "127.0.0.1",
         "redis.port": "6379"}


def test_references_are_found_and_expanded_with_the_text_around_them_kept() -> None:
    value = "postgres://${postgresql.host}:${postgresql.port}/x?r=${redis.port}"
    assert references(value) == [Reference("postgresql", "host"), Reference("postgresql", "port"),
                                 Reference("redis", "port")]
    assert expand(value, FACTS) == "postgres://127.0.0.1:5432/x?r=6379"
    assert expand("${postgresql.url}", FACTS) == FACTS["postgresql.url"]
    assert len(KNOWN_REFERENCES) == len(FACTS)
    assert all(expand(ref, FACTS) == FACTS[ref[2:-1]] for ref in KNOWN_REFERENCES)


def test_a_doubled_dollar_is_a_literal_reference_and_nothing_else_expands() -> None:
    assert references("$${postgresql.url} and $${HOME}") == []
    assert expand("$${postgresql.url}:$${HOME}", FACTS) == "${postgresql.url}:${HOME}"
    assert expand("$HOME $PATH $$ ${redis.port}", FACTS) == "$HOME $PATH $$ 6379"  # no shell, no os.environ


@pytest.mark.parametrize("value", ["${HOME}", "${postgresql.uri}", "${mysql.url}", "${postgresql}", "${}",
                                   "x${redis.url"])
def test_anything_else_in_braces_is_refused(value: str) -> None:
    with pytest.raises(ReferenceError):
        references(value)


def _load(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "web.yaml"
    path.write_text("name: web\nrepository: {url: /srv/web.git}\n" + textwrap.dedent(extra))
    return path


def test_a_stage_env_with_references_loads_and_keeps_them_unexpanded(tmp_path: Path) -> None:
    app = load_app_config(_load(tmp_path, """\
        stages:
          integration_test_results:
            env: {DATABASE_URL: "${postgresql.url}", BEE_QUEUE_TEST_REDIS: "${redis.port}",
                  LITERAL: "$${HOME}"}
        """))
    assert app.stage("integration_test_results").env["DATABASE_URL"] == "${postgresql.url}"


@pytest.mark.parametrize(("extra", "error"), [
    ('stages:\n  integration_test_results: {env: {DATABASE_URL: "${postgresql.uri}"}}\n',
     r"web\.yaml: stages\.integration_test_results\.env\.DATABASE_URL: '\$\{postgresql\.uri\}' is not a service "
     r"fact; known: \$\{postgresql\.url\}, .*\$\{redis\.port\}"),
    ('stages:\n  integration_test_results: {env: {X: "${HOME}/x"}}\n',
     r"web\.yaml: stages\.integration_test_results\.env\.X: '\$\{HOME\}' is not a service fact"),
    ('stages:\n  unit_test_results: {env: {DATABASE_URL: "${postgresql.url}"}}\n',
     r"web\.yaml: stages\.unit_test_results\.env\.DATABASE_URL: .*refers to postgresql, which this stage does "
     r"not get: add postgresql to its services: \[postgresql\]"),
    ('stages:\n  integration_test_results: {services: [redis], env: {U: "${postgresql.user}"}}\n',
     r"stages\.integration_test_results\.env\.U: .*add postgresql to its services: \[redis, postgresql\]"),
    ('env: {DATABASE_URL: "${postgresql.url}"}\n',
     r"web\.yaml: env: DATABASE_URL: .*goes under the env of the stage that lists the service "
     r"\(stages\.<stage>\.env\.DATABASE_URL\)"),
])
def test_a_wrong_reference_is_a_config_error_naming_file_and_key(tmp_path: Path, extra: str, error: str) -> None:
    with pytest.raises(ConfigError, match=re.compile(error)):
        load_app_config(_load(tmp_path, extra))
