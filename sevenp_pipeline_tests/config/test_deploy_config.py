"""Environments in the app YAML: the spec's defaults, what a team changes, and bad input named by key."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.test_utils import create_run_for_test

from sevenp_pipeline.config import ConfigError, Settings, load_app_config
from sevenp_pipeline.definitions import build_definitions
from sevenp_pipeline.deploy.triggers import chain_to, chosen_environment, next_deploys
from sevenp_pipeline.resources.notify import SlackNotifier
from sevenp_pipeline_tests.httpserver import http_server

# build_run_status_sensor_context(repository_def=...) is marked beta; it is how a run status sensor is tested.
pytestmark = pytest.mark.filterwarnings("ignore::dagster.BetaWarning")

BASE = "name: web\nrepository: {url: /srv/web.git}\n"
IMAGE = "image: {dockerfile: Dockerfile}\n"


def _load(tmp_path: Path, text: str):
    path = tmp_path / "web.yaml"
    path.write_text(text)
    return load_app_config(path)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as info:
        _load(tmp_path, text)
    return str(info.value)


def test_spec_defaults_with_an_image(tmp_path: Path) -> None:
    app = _load(tmp_path, BASE + IMAGE)
    envs = app.deploy_environments
    assert list(envs) == ["staging", "production"]
    assert envs["staging"].branches == ["develop", "main"] and envs["staging"].approval == "auto"
    assert envs["production"].after == "staging" and envs["production"].approval == "manual"
    assert app.health_for("staging").attempts == 30 and app.health_for("staging").interval_seconds == 10
    assert app.deploy.smoke is not None and app.deploy.smoke.script == "test:smoke"


def test_no_image_no_environments_and_empty_means_none(tmp_path: Path) -> None:
    assert _load(tmp_path, BASE).deploy_environments == {}
    assert _load(tmp_path, BASE + IMAGE + "environments: {}\n").deploy_environments == {}


def test_environment_overrides(tmp_path: Path) -> None:
    app = _load(tmp_path, BASE + IMAGE + """\
deploy: {health: {attempts: 3, interval_seconds: 0.5}, smoke: null}
environments:
  qa: {branches: ["feature/*"], health: {path: /ready, attempts: 2}}
""")
    assert list(app.deploy_environments) == ["qa"]
    assert app.health_for("qa").path == "/ready" and app.health_for("qa").attempts == 2
    assert app.deploy.smoke is None


@pytest.mark.parametrize(("yaml", "expected"), [
    ("environments: {prod: {after: stage}}\n", "environments.prod.after: no environment named 'stage'"),
    ("environments: {a: {after: b}, b: {after: a}}\n", "environments.a.after: cycle"),
    ("environments: {Prod: {}}\n", "environments.Prod: names use lowercase"),
    ("environments: {prod: {target: ecs}}\n", "environments.prod: target 'ecs' needs an 'ecs' section"),
    ("environments: {prod: {target: kubernetes}}\n", "environments.prod.target"),
    ("environments: {prod: {approval: maybe}}\n", "environments.prod.approval"),
    ("deploy: {health: {path: health}}\n", "deploy.health.path: 'health': an absolute HTTP path"),
    ("deploy: {pre_deploy: []}\n", "deploy.pre_deploy"),
    ("deploy: {smoke: {script: null}}\n", "deploy.smoke: give exactly one of 'script' or 'command'"),
    ("environments: {prod: {target: ecs, ecs: {cluster: c, service: s, url: 'ftp://x'}}}\n",
     "environments.prod.ecs.url"),
    ("environments: {prod: {unknown: 1}}\n", "environments.prod.unknown: unknown key"),
])
def test_bad_environments_are_named(tmp_path: Path, yaml: str, expected: str) -> None:
    message = _error(tmp_path, BASE + IMAGE + yaml)
    assert str(tmp_path / "web.yaml") in message and expected in message, message


def test_environments_need_an_image(tmp_path: Path) -> None:
    assert "deployments need an 'image' section" in _error(tmp_path, BASE + "environments: {staging: {}}\n")


def test_deploy_assets_jobs_and_sensors(tmp_path: Path) -> None:
    (tmp_path / "web.yaml").write_text(BASE + IMAGE)
    defs = build_definitions(Settings(home=tmp_path / "home", apps_dir=tmp_path))
    graph = defs.resolve_asset_graph()
    staging = graph.get(dg.AssetKey(["web", "staging_deployment"]))
    production = graph.get(dg.AssetKey(["web", "production_deployment"]))
    assert {k.path[-1] for k in staging.parent_keys} == {"promoted_image"}
    assert {k.path[-1] for k in production.parent_keys} == {"promoted_image", "staging_deployment"}
    notes = graph.get(dg.AssetKey(["web", "release_notes"]))
    assert {k.path[-1] for k in notes.parent_keys} == {"production_deployment"}
    ci = defs.resolve_job_def("web_ci_job")
    assert not any(k.path[-1].endswith("_deployment") or k.path[-1] == "release_notes"
                   for k in ci.asset_layer.selected_asset_keys)
    prod_job = defs.resolve_job_def("web_deploy_production_job")
    assert {k.path[-1] for k in prod_job.asset_layer.selected_asset_keys} == {"production_deployment",
                                                                              "release_notes"}
    assert prod_job.tags["sevenp/deploy-env"] == "web/production"
    assert {s.name for s in defs.sensors} >= {"web_deploy_sensor", "web_failure_notifier"}


def test_who_deploys_next(tmp_path: Path) -> None:
    app = _load(tmp_path, BASE + IMAGE)
    # A push to develop: staging; to main: staging, and production waits for a person.
    assert next_deploys(app, finished_env=None, branch="develop", approved=set()) == (["staging"], [])
    assert next_deploys(app, finished_env=None, branch="feature/x", approved=set()) == ([], [])
    assert next_deploys(app, finished_env="staging", branch="main", approved=set()) == ([], ["production"])
    assert next_deploys(app, finished_env="staging", branch="develop", approved=set()) == ([], [])
    # A person picked production at launch: the chain, then production without waiting.
    assert chain_to(app, "production") == ["staging", "production"]
    approved = set(chain_to(app, "production"))
    assert next_deploys(app, finished_env=None, branch=None, approved=approved) == (["staging"], [])
    assert next_deploys(app, finished_env="staging", branch=None, approved=approved) == (["production"], [])
    assert chosen_environment({"resources": {"launch_options": {"config": {"environment": "production"}}}}) \
        == "production"
    assert chosen_environment({}) == ""


# --- the deploy sensor and the failure notifier, evaluated on recorded runs -------------------------

SHA = "a" * 40


def _sensor_setup(tmp_path: Path):
    (tmp_path / "web.yaml").write_text(BASE + IMAGE)
    defs = build_definitions(Settings(home=tmp_path / "home", apps_dir=tmp_path))
    instance = dg.DagsterInstance.ephemeral()

    def finished(job: str, tags: dict[str, str], run_config: dict | None = None,
                 status: dg.DagsterRunStatus = dg.DagsterRunStatus.SUCCESS) -> dg.DagsterRun:
        return create_run_for_test(instance, job_name=job, run_config=run_config or {}, status=status,
                                   tags={"sevenp/commit": SHA, "dagster/partition": SHA, **tags})

    def evaluate(name: str, run: dg.DagsterRun, **resources):
        sensor = defs.resolve_sensor_def(name)
        event = "PIPELINE_SUCCESS" if run.status == dg.DagsterRunStatus.SUCCESS else "PIPELINE_FAILURE"
        if name.endswith("failure_notifier"):
            context = dg.build_run_status_sensor_context(
                sensor_name=name, dagster_event=dg.DagsterEvent(event_type_value=event, job_name=run.job_name),
                dagster_instance=instance, dagster_run=run, resources=resources).for_run_failure()
        else:
            context = dg.build_run_status_sensor_context(
                sensor_name=name, dagster_event=dg.DagsterEvent(event_type_value=event, job_name=run.job_name),
                dagster_instance=instance, dagster_run=run, repository_def=defs.get_repository_def())
        return sensor(context)

    return finished, evaluate


def _requested(result) -> list[tuple[str, str, str]]:
    if isinstance(result, dg.SkipReason):
        return []
    return [(r.job_name, r.partition_key, r.tags.get("sevenp/approved", "")) for r in result]


def test_deploy_sensor_follows_branches_and_approvals(tmp_path: Path) -> None:
    finished, evaluate = _sensor_setup(tmp_path)
    # develop and main deploy staging after their pipeline; a feature branch deploys nowhere.
    for branch in ("develop", "main"):
        run = finished("web_ci_job", {"sevenp/branch": branch})
        assert _requested(evaluate("web_deploy_sensor", run)) == [("web_deploy_staging_job", SHA, "")]
    assert _requested(evaluate("web_deploy_sensor", finished("web_ci_job", {"sevenp/branch": "feature/x"}))) == []
    # A run from the graph or the Launchpad is named by its branch (triggers/identity.py), but deploys only
    # where its launch options say; a re-execution of a push run deploys as the push did.
    for by_hand in ({"sevenp/trigger": "graph", "sevenp/origin": "graph"}, {"sevenp/trigger": "manual"}):
        assert _requested(evaluate("web_deploy_sensor", finished("web_ci_job", {"sevenp/branch": "develop",
                                                                               **by_hand}))) == []
    rerun = {"sevenp/branch": "develop", "sevenp/trigger": "reexecution", "sevenp/origin": "push"}
    assert _requested(evaluate("web_deploy_sensor", finished("web_ci_job", rerun))) == [
        ("web_deploy_staging_job", SHA, "")]
    # staging went live from main: production (approval: manual) waits for a person.
    staged = finished("web_deploy_staging_job", {"sevenp/branch": "main", "sevenp/deploy": "live"})
    skipped = evaluate("web_deploy_sensor", staged)
    assert isinstance(skipped, dg.SkipReason) and "production need approval" in skipped.skip_message
    # A staging deploy that was superseded or rolled back starts nothing.
    superseded = finished("web_deploy_staging_job", {"sevenp/branch": "main", "sevenp/deploy": "superseded"})
    assert _requested(evaluate("web_deploy_sensor", superseded)) == []
    # A person launched the pipeline for production: staging first, then production, branch aside.
    chosen = {"resources": {"launch_options": {"config": {"environment": "production"}}}}
    run = finished("web_ci_job", {}, run_config=chosen)
    assert _requested(evaluate("web_deploy_sensor", run)) == [("web_deploy_staging_job", SHA,
                                                               "production,staging")]
    staged = finished("web_deploy_staging_job", {"sevenp/approved": "production,staging", "sevenp/deploy": "live"})
    assert _requested(evaluate("web_deploy_sensor", staged)) == [("web_deploy_production_job", SHA,
                                                                  "production,staging")]
    none = {"resources": {"launch_options": {"config": {"environment": "none"}}}}
    assert _requested(evaluate("web_deploy_sensor", finished("web_ci_job", {"sevenp/branch": "main"}, none))) == []
    # A pull request's run never deploys: not by a branch rule, not by launch options, not re-executed.
    for pr in ({"sevenp/branch": "main", "sevenp/trigger": "pull_request"}, {}):
        refused = evaluate("web_deploy_sensor", finished("web_ci_job", {"sevenp/pr": "7", **pr}, run_config=chosen))
        assert isinstance(refused, dg.SkipReason) and "pull request 7" in refused.skip_message


def test_failure_notifier_posts_once_per_failed_run(tmp_path: Path) -> None:
    finished, evaluate = _sensor_setup(tmp_path)
    with http_server() as slack:
        notifier = SlackNotifier(webhook_url=slack.url + "/hook", ui_url="http://ui.example")
        failed = finished("web_ci_job", {"sevenp/branch": "develop"}, status=dg.DagsterRunStatus.FAILURE)
        evaluate("web_failure_notifier", failed, notifier=notifier)
        assert len(slack.requests) == 1
        body = slack.requests[0].body.decode()
        assert "web_ci_job failed" in body and f"http://ui.example/runs/{failed.run_id}" in body
        # A deploy that already sent its own message is not announced twice.
        deploy = finished("web_deploy_staging_job", {"sevenp/notified": "true"}, status=dg.DagsterRunStatus.FAILURE)
        evaluate("web_failure_notifier", deploy, notifier=notifier)
        assert len(slack.requests) == 1
