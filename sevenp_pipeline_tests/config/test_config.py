"""App config: validated at load, errors name the file and the key."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from pydantic import ValidationError

from sevenp_pipeline.config import (
    ConfigError,
    Settings,
    StageSpec,
    load_app_config,
    load_app_configs,
    load_app_directory,
)
from sevenp_pipeline.config.settings import PROJECT_ROOT
from sevenp_pipeline.definitions import build_definitions


def _write(tmp_path: Path, text: str, name: str = "app.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_are_the_spec_stages(tmp_path: Path) -> None:
    app = load_app_config(_write(tmp_path, "name: web\nrepository: {url: /srv/web.git}\n"))
    assert app.stage("lint_report").script == "lint"
    assert app.stage("security_lint_report").script == "lint:security"
    assert app.stage("unit_test_results").script == "test:unit"
    assert app.stage("integration_test_results").services == ["postgresql", "redis"]
    assert app.stage("unit_test_results").gates.min_coverage == 80
    assert app.stage("e2e_test_results").kind == "e2e" and app.stage("performance_report").gates.p95_ms == 500
    assert "commit_messages" not in app.stage_names()  # off by default
    assert app.needs("build_artifact") == ["unit_test_results", "integration_test_results", "api_test_results"]
    assert app.install_stage == "node_dependencies"
    assert app.branches.include[:4] == ["main", "develop", "release/*", "hotfix/*"]


def test_custom_stage_is_a_yaml_edit(tmp_path: Path) -> None:
    _write(tmp_path, """\
name: web
repository: {url: /srv/web.git}
stages:
  audit: {kind: command, command: [npm, audit, signatures], needs: [node_dependencies]}
  build_artifact: {needs: [unit_test_results, audit]}
  api_docs: null
  api_test_results: {enabled: false}
""", "web.yaml")
    app = load_app_configs(tmp_path)[0]
    assert app.needs("audit") == ["node_dependencies"]
    assert app.needs("build_artifact") == ["unit_test_results", "audit"]
    assert "api_docs" not in app.stage_names() and "api_test_results" not in app.stage_names()
    graph = build_definitions(Settings(home=tmp_path / "home", apps_dir=tmp_path)).resolve_asset_graph()
    audit = graph.get(dg.AssetKey(["web", "audit"]))
    assert {k.path[-1] for k in audit.parent_keys} == {"source_checkout", "node_dependencies"}
    build = graph.get(dg.AssetKey(["web", "build_artifact"]))
    assert {k.path[-1] for k in build.parent_keys} == {"source_checkout", "unit_test_results", "audit"}


def test_disabled_stage_passes_on_its_needs(tmp_path: Path) -> None:
    app = load_app_config(_write(tmp_path, "name: web\nrepository: {url: x}\nstages:\n"
                                           "  lint_report: {enabled: false}\n  security_lint_report: null\n"
                                           "  format_report: null\n  type_check_report: null\n"))
    assert app.needs("unit_test_results") == ["node_dependencies"]


def test_a_test_stage_reads_junit_a_report_or_a_detected_runner(tmp_path: Path) -> None:
    app = load_app_config(_write(tmp_path, "name: web\nrepository: {url: x}\nstages:\n"
                                 "  a: {kind: test, script: test}\n"
                                 "  b: {kind: e2e, script: e2e, report: out/r.tap, report_format: tap}\n"
                                 "  c: {kind: test, script: test, report: r.json}\n"
                                 "  d: {kind: test, script: test, junit: j.xml}\n"))
    assert [(app.stages[n].report, app.stages[n].report_format, app.stages[n].junit) for n in "abcd"] == [
        (None, None, None), ("out/r.tap", "tap", None), ("r.json", None, None), (None, None, "j.xml")]


@pytest.mark.parametrize(("stages", "error"), [
    ("  audit: {kind: lint-ish, command: [x]}\n",
     r"stages\.audit\.kind: unknown kind 'lint-ish' \(known: install, lint"),
    ("  audit: {command: [x]}\n", r"stages\.audit: a new stage needs a 'kind'"),
    ("  audit: {kind: command, command: [x], needs: [nowhere]}\n",
     r"app\.yaml: stages\.audit\.needs: no stage named 'nowhere'"),
    ("  lint_report: {needs: [build_artifact]}\n", r"app\.yaml: stages\.\w+\.needs: cycle .*lint_report"),
    ("  audit: {kind: command, command: [x]}\n  audit: {kind: command, command: [y]}\n",
     r"app\.yaml: invalid YAML \(line 5, column 3\): duplicate key 'audit'"),
    ("  unit: {kind: test, command: [x], junit: a.xml, report: b.json}\n",
     r"stages\.unit: give 'junit' or 'report' \(with 'report_format'\), not both"),
    ("  unit: {kind: test, command: [x], report_format: tap}\n",
     r"stages\.unit: 'report_format' needs 'report'"),
    ("  unit: {kind: test, command: [x], report: r.json, report_format: jest}\n",
     r"stages\.unit\.report_format: .*'jest-json'"),
    ("  audit: {kind: lint, command: [x], report: r.json, report_format: tap}\n",
     r"stages\.audit: 'report_format' is for test and e2e stages"),
    ("  Bad-Name: {kind: command, command: [x]}\n", r"stages: 'Bad-Name': stage names use"),
    ("  sbom: {kind: command, command: [x]}\n", r"stages: 'sbom': the name of a built-in asset"),
    ("  lint_report: {gates: {max_problemz: 1}}\n", r"stages\.lint_report\.gates\.max_problemz: unknown key"),
    # A gate key another kind reads would be silently ignored: it is refused, naming what applies.
    ("  lint_report: {gates: {p95_ms: 200}}\n",
     r"stages\.lint_report: gates\.p95_ms does not apply to a lint stage \(its gate keys: max_problems, count_"),
    ("  build_artifact: {gates: {min_coverage: 80}}\n",
     r"stages\.build_artifact: gates\.min_coverage does not apply to a build stage \(its gate keys: none\)"),
    ("  performance_report: {gates: {max_problems: 0}}\n",
     r"gates\.max_problems does not apply to a performance stage \(its gate keys: p95_ms, min_requests_per_second\)"),
])
def test_bad_stage_graphs_are_named(tmp_path: Path, stages: str, error: str) -> None:
    path = _write(tmp_path, "name: web\nrepository: {url: x}\nstages:\n" + stages)
    with pytest.raises(ConfigError, match=error):
        load_app_config(path)


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: web\nrepository: {url: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_app_config(path)
    assert str(path) in str(err.value) and "line" in str(err.value)


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: web\nrepository: {url: x}\nstages:\n  lint_report: {timout_seconds: 5}\n")
    with pytest.raises(ConfigError, match=r"app\.yaml: stages\.lint_report\.timout_seconds: unknown key"):
        load_app_config(path)


def test_wrong_type_is_named(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: web\nrepository: {url: x}\nstages:\n"
                            "  unit_test_results: {gates: {min_coverage: lots}}\n")
    with pytest.raises(ConfigError, match=r"stages\.unit_test_results\.gates\.min_coverage: "):
        load_app_config(path)


@pytest.mark.parametrize(("stage", "key", "value"), [
    ("lint_report", "report", "../../../etc/passwd"),
    ("unit_test_results", "junit", "/etc/passwd"),
    ("unit_test_results", "coverage", "coverage/../../x.json"),
    ("build_artifact", "output_dir", ".."),
    ("e2e_test_results", "artifacts", "../.."),
    ("build_artifact", "output_dir", "."),
])
def test_stage_paths_stay_inside_the_app_folder(tmp_path: Path, stage: str, key: str, value: str) -> None:
    path = _write(tmp_path, f"name: web\nrepository: {{url: x}}\nstages:\n  {stage}: {{{key}: '{value}'}}\n")
    with pytest.raises(ConfigError, match=rf"app\.yaml: stages\.{stage}\.{key}: .*'{re.escape(value)}'"):
        load_app_config(path)


def test_repository_subdirectory_stays_inside_the_repository(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: web\nrepository: {url: x, subdirectory: ../other}\nstages: {}\n")
    with pytest.raises(ConfigError, match=r"repository\.subdirectory: .*leaves the app folder"):
        load_app_config(path)


def test_script_and_command_are_exclusive(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: web\nrepository: {url: x}\nstages:\n"
                            "  build_artifact: {script: b, command: [make]}\n")
    with pytest.raises(ConfigError, match=r"stages\.build_artifact: .*exactly one"):
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
    loaded = load_app_directory(tmp_path)  # the second file is the broken one
    assert [a.repository.url for a in loaded.apps] == [str(tmp_path / "x")]
    assert [b.path.name for b in loaded.broken] == ["b.yaml"]


def _error_tick(defs: dg.Definitions, name: str) -> str:
    """Evaluates a sensor as the daemon does; returns the error text of the failed tick."""
    sensor = defs.resolve_sensor_def(name)
    with dg.build_sensor_context(definitions=defs) as context, pytest.raises(Exception) as err:
        sensor.evaluate_tick(context)
    chain, exc = [], err.value
    while exc is not None:
        chain.append(str(exc))
        exc = exc.__cause__
    return "\n".join(chain)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def load_warnings() -> Iterator[list[str]]:
    handler = _Records()
    logger = logging.getLogger("sevenp_pipeline.definitions")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def test_a_broken_app_file_breaks_only_its_app(tmp_path: Path, load_warnings: list[str]) -> None:
    _write(tmp_path, "name: web\nrepository: {url: /srv/web.git}\n", "web.yaml")
    _write(tmp_path, "name: billing\nrepository: {url: /srv/b.git}\nstages:\n  lint_report: {timout_seconds: 5}\n",
           "billing-api.yaml")
    defs = build_definitions(Settings(home=tmp_path / "home", apps_dir=tmp_path))
    # The good app is whole: its job, its assets, its push sensor.
    assert defs.resolve_job_def("web_ci_job")
    assert {k.path[0] for k in defs.resolve_asset_graph().get_all_asset_keys()} == {"web"}
    sensors = {s.name: s for s in defs.sensors}
    assert set(sensors) == {"web_git_push_sensor", "web_run_branch_sensor", "billing_api_config_error"}
    error = sensors["billing_api_config_error"]
    assert error.default_status == dg.DefaultSensorStatus.RUNNING
    assert "billing-api.yaml" in error.description and "stages.lint_report.timout_seconds" in error.description
    # Every tick of the error sensor fails with the file and the key.
    message = _error_tick(defs, "billing_api_config_error")
    assert f"{tmp_path / 'billing-api.yaml'}: stages.lint_report.timout_seconds: unknown key" in message
    assert len(load_warnings) == 1 and "billing-api.yaml" in load_warnings[0]


def test_only_broken_files_still_load(tmp_path: Path, load_warnings: list[str]) -> None:
    _write(tmp_path, "name: web\nrepository: {url: [unclosed\n", "web.yaml")
    _write(tmp_path, "name: web\nrepository: {url: x}\nstages:\n  lint_report: {gates: [1]}\n", "web.yml")
    _write(tmp_path, "- just\n- a list\n", "list.yaml")
    defs = build_definitions(Settings(home=tmp_path / "home", apps_dir=tmp_path))
    assert {s.name for s in defs.sensors} == {"web_config_error", "web_config_error_2", "list_config_error"}
    assert not list(defs.resolve_asset_graph().get_all_asset_keys())
    assert "web.yaml: invalid YAML (line" in _error_tick(defs, "web_config_error")
    assert "web.yml: stages.lint_report.gates: must be a mapping" in _error_tick(defs, "web_config_error_2")
    assert "list.yaml: top level must be a mapping" in _error_tick(defs, "list_config_error")
    assert len(load_warnings) == 3


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
    assert {s.name for s in defs.sensors} == {"web_git_push_sensor", "billing_api_git_push_sensor",
                                              "web_run_branch_sensor", "billing_api_run_branch_sensor"}


def test_relative_url_resolves_against_the_config_file(tmp_path: Path) -> None:
    app = load_app_config(_write(tmp_path, "name: web\nrepository: {url: ../remotes/web.git}\n"))
    assert app.repository.url == str((tmp_path.parent / "remotes/web.git").resolve())


@pytest.mark.parametrize(("extra", "key"), [
    ("provenance: {key_env: MY_KEY}\n", "provenance.key_env"),  # the key is always SEVENP_SIGNING_KEY
    ("image: {timeout_seconds: 60}\n", "image.timeout_seconds"),  # the builder's own limit applies
])
def test_keys_nothing_read_are_refused(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"app\.yaml: {re.escape(key)}: unknown key"):
        load_app_config(_write(tmp_path, "name: web\nrepository: {url: x}\n" + extra))


def test_shipped_app_configs_load_and_describe_their_job(tmp_path: Path) -> None:
    apps = load_app_configs(PROJECT_ROOT / "apps", variables={"SEVENP_HOME": str(tmp_path)})
    assert apps
    defs = build_definitions(Settings(home=tmp_path, apps_dir=PROJECT_ROOT / "apps"))
    for app in apps:
        assert app.description and app.description in defs.resolve_job_def(f"{app.key}_ci_job").description


def test_only_the_install_stage_goes_outbound_unless_a_stage_asks() -> None:
    assert StageSpec(kind="install").outbound
    assert not StageSpec(kind="lint", script="lint", report="r.json").outbound
    assert StageSpec(kind="command", command=["npx", "x"], network="outbound").outbound
    assert not StageSpec(kind="install", network="none").outbound
    with pytest.raises(ValidationError, match="network"):
        StageSpec(kind="command", command=["x"], network="host")
