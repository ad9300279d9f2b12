"""App config: validated at load, errors name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from sevenp_pipeline.config import ConfigError, Settings, StageName, load_app_config, load_app_configs
from sevenp_pipeline.definitions import build_definitions


def _write(tmp_path: Path, text: str, name: str = "app.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_the_spec_npm_scripts(tmp_path: Path) -> None:
    app = load_app_config(_write(tmp_path, "name: web\nrepository: {url: /srv/web.git}\n"))
    assert app.stage(StageName.lint).script == "lint"
    assert app.stage(StageName.lint_security).script == "lint:security"
    assert app.stage(StageName.unit_tests).script == "test:unit"
    assert app.stage(StageName.integration_tests).services == ["postgresql", "redis"]
    assert app.gates.coverage_min == 80
    assert app.branches.include[:4] == ["main", "develop", "release/*", "hotfix/*"]


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: web\nrepository: {url: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_app_config(path)
    assert str(path) in str(err.value) and "line" in str(err.value)


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: web\nrepository: {url: x}\nstages:\n  lint: {timout_seconds: 5}\n")
    with pytest.raises(ConfigError, match=r"app\.yaml: stages\.lint\.timout_seconds: unknown key"):
        load_app_config(path)


def test_unknown_stage_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: web\nrepository: {url: x}\nstages:\n  e2e: {script: e2e}\n")
    with pytest.raises(ConfigError, match=r"stages\.e2e: unknown stage"):
        load_app_config(path)


def test_wrong_type_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: web\nrepository: {url: x}\ngates: {coverage_min: lots}\n")
    with pytest.raises(ConfigError, match=r"gates\.coverage_min: "):
        load_app_config(path)


def test_script_and_command_are_exclusive(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: web\nrepository: {url: x}\nstages:\n  build: {script: b, command: [make]}\n")
    with pytest.raises(ConfigError, match=r"stages\.build: .*exactly one"):
        load_app_config(path)


def test_unset_variable_in_url_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: web\nrepository: {url: '${NO_SUCH_VAR_X}/web.git'}\n")
    with pytest.raises(ConfigError, match=r"repository\.url: environment variable \$\{NO_SUCH_VAR_X\}"):
        load_app_config(path)


def test_bad_app_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"app\.yaml: name: "):
        load_app_config(_write(tmp_path, "name: 'Web App!'\nrepository: {url: x}\n"))


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    _write(tmp_path, "name: web\nrepository: {url: x}\n", "a.yaml")
    _write(tmp_path, "name: web\nrepository: {url: y}\n", "b.yaml")
    with pytest.raises(ConfigError, match=r"b\.yaml: name: 'web' is already used by .*a\.yaml"):
        load_app_configs(tmp_path)


def test_two_apps_two_groups_no_code_change(tmp_path: Path) -> None:
    _write(tmp_path, "name: web\nrepository: {url: /srv/web.git}\n", "web.yaml")
    _write(tmp_path, "name: billing-api\nrepository: {url: /srv/billing.git}\n", "billing.yaml")
    defs = build_definitions(Settings(home=tmp_path / "home", apps_dir=tmp_path))
    graph = defs.resolve_asset_graph()
    groups = {graph.get(k).group_name for k in graph.get_all_asset_keys()}
    assert groups == {"web", "billing_api"}
    prefixes = {k.path[0] for k in graph.get_all_asset_keys()}
    assert prefixes == {"web", "billing_api"}
    assert defs.resolve_job_def("web_ci_job") and defs.resolve_job_def("billing_api_ci_job")
    assert {s.name for s in defs.sensors} == {"web_git_push_sensor", "billing_api_git_push_sensor"}


def test_relative_url_resolves_against_the_config_file(tmp_path: Path) -> None:
    app = load_app_config(_write(tmp_path, "name: web\nrepository: {url: ../remotes/web.git}\n"))
    assert app.repository.url == str((tmp_path.parent / "remotes/web.git").resolve())
