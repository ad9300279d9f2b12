"""Deployment assets end to end, in process, with the real local target (podman, nginx), a real
pipeline per commit (image, SBOM, scans, signed provenance, promotion) and a real Slack receiver.

One pipeline home serves the module; each test pushes its own commits of the deploy app
(sevenp_pipeline_tests/fixtures/deploy-pipeline-app: a dependency-free HTTP server whose version, health and
smoke result come from files in the commit).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from sevenp_pipeline.config import AppConfig, Settings, load_app_config
from sevenp_pipeline.definitions import build_definitions
from sevenp_pipeline.deploy import history
from sevenp_pipeline.deploy.approvals import find_approval, record_approval
from sevenp_pipeline.deploy.targets.resource import DeployTargets
from sevenp_pipeline.resource_set import build_resources
from sevenp_pipeline.scanners import provenance as prov
from sevenp_pipeline.triggers.tags import TAG_DEPLOY, TAG_ROLLBACK
from sevenp_pipeline_tests.conftest import FIXTURES, reachable_home
from sevenp_pipeline_tests.forge.forge_api import ForgeAPI
from sevenp_pipeline_tests.gitutil import Remote, git
from sevenp_pipeline_tests.httpserver import Server, http_server
from sevenp_pipeline_tests.waiting import wait_until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("podman") or not shutil.which("nginx"),
                       reason="needs root, podman and nginx (make system-deps installs them)"),
]

DEPLOY_APP = FIXTURES / "deploy-pipeline-app"
NAME = "deploy-app"
KEY = "deploy_app"
PIPELINE = ["source_checkout", "node_dependencies", "check", "container_image", "sbom", "vulnerability_report",
            "dependency_report", "license_report", "secret_scan", "provenance", "promoted_image"]
NO_DEFAULT_STAGES = "".join(f"  {s}: null\n" for s in (
    "lint_report", "security_lint_report", "format_report", "type_check_report", "unit_test_results",
    "integration_test_results", "api_test_results", "build_artifact", "api_docs", "e2e_test_results",
    "performance_report"))


def deploy_app_config(url: str, base_image: str, forge: str = "", approvers: str = "") -> str:
    """The deploy app's pipeline: install, one command stage, the package half, staging then production
    (a person's), short health checks, no environment servers."""
    return f"""\
name: {NAME}
repository: {{url: {url}}}
branches: {{include: ["*"]}}
trigger: {{poll_interval_seconds: 1}}
stages:
{NO_DEFAULT_STAGES}  check: {{kind: command, script: check, needs: [node_dependencies]}}
image: {{dockerfile: Dockerfile, base_image: "{base_image}"}}
deploy:
  services: []
  health: {{attempts: 4, interval_seconds: 0.5, timeout_seconds: 2}}
  smoke: {{script: "test:smoke", timeout_seconds: 60}}
  keep_previous_seconds: 0.5
  stop_timeout_seconds: 2
environments:
  staging: {{branches: [main]}}
  production: {{branches: [main], after: staging, approval: manual{approvers}}}
{forge}"""


def stop_environments(home: Path, app: AppConfig) -> None:
    targets = DeployTargets(home=str(home))
    for env in app.deploy_environments:
        targets.target(app, env).stop(log=lambda _line: None)


@dataclass
class Deploys:
    remote: Remote
    settings: Settings
    instance: dg.DagsterInstance
    app: AppConfig
    slack: Server
    public_key: str
    forge: ForgeAPI

    def forge_tick(self, cursor: str | None) -> dg.SensorResult:
        """One evaluation of the app's forge status sensor, as the daemon runs it."""
        defs = build_definitions(self.settings)
        sensor = defs.resolve_sensor_def(f"{KEY}_forge_status_sensor")
        with dg.build_sensor_context(instance=self.instance, cursor=cursor, resources=defs.resources,
                                     definitions=defs) as context:
            return sensor(context)

    def pipeline(self, sha: str, *, tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
        return self._run(sha, PIPELINE, tags=tags)

    def deploy(self, sha: str, env: str, *, tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
        return self._run(sha, [f"{env}_deployment"], tags=tags)

    def _run(self, sha: str, names: list[str], tags: dict[str, str] | None = None) -> dg.ExecuteInProcessResult:
        self.instance.add_dynamic_partitions(f"{KEY}_commits", [sha])
        defs = build_definitions(self.settings)
        graph = defs.resolve_asset_graph()  # what the UI's Materialize button selects: whole multi-assets
        keys = {k for n in names for k in graph.get(dg.AssetKey([KEY, n])).execution_set_asset_keys}
        return defs.resolve_implicit_global_asset_job_def().execute_in_process(
            instance=self.instance, partition_key=sha, asset_selection=sorted(keys),
            raise_on_error=False, tags=tags)

    def commit(self, message: str, *, version: str, files: dict[str, str] | None = None) -> str:
        for name in ("SMOKE_FAILS", "extra/HEALTH_FAILS"):
            (self.remote.clone / name).unlink(missing_ok=True)
        self.remote.write("VERSION", version + "\n")
        for rel, text in (files or {}).items():
            self.remote.write(rel, text)
        return self.remote.commit(message, push_to="main")

    def released(self, message: str, *, version: str, files: dict[str, str] | None = None) -> str:
        sha = self.commit(message, version=version, files=files)
        result = self.pipeline(sha)
        assert result.success, _failures(result)
        return sha

    def approve(self, sha: str, env: str) -> None:
        """What `make deploy` records for a manual environment before it launches the deploy."""
        record_approval(self.settings.home, KEY, env, sha, approver="Ada Lovelace", via="test")

    def url(self, env: str) -> str:
        return DeployTargets(home=str(self.settings.home)).target(self.app, env).url()

    def answer(self, env: str) -> tuple[dict, str]:
        with urllib.request.urlopen(self.url(env) + "/", timeout=5) as response:
            return json.loads(response.read()), response.headers.get("X-Sevenp-Release", "")

    def slack_messages(self) -> list[dict]:
        return [json.loads(r.body) for r in self.slack.requests if r.method == "POST"]


def _failures(result: dg.ExecuteInProcessResult) -> str:
    lines = []
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.STEP_FAILURE:
            data = event.step_failure_data
            lines.append(f"{event.step_key}: {(data.user_failure_data.description if data.user_failure_data else '')}"
                         f" {data.error.message if data.error else ''}")
    return "\n".join(lines)


def _materialization(result: dg.ExecuteInProcessResult, name: str) -> dict | None:
    for event in result.all_events:
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION:
            mat = event.step_materialization_data.materialization
            if mat.asset_key.path[-1] == name:
                return {k: v.value for k, v in mat.metadata.items()}
    return None


@pytest.fixture(scope="module")
def deploys(stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deploys]:
    root = tmp_path_factory.mktemp("deploys")
    private, public = prov.generate_keypair()
    forge = ForgeAPI(repository="acme/deploy-app", token="ghp_forge-token-no-stage-may-see-91c2")
    with (reachable_home() as home, http_server() as slack, http_server(forge) as forge_server,
          pytest.MonkeyPatch.context() as env):
        env.setenv("SEVENP_SIGNING_KEY", private)
        env.setenv("SEVENP_GITHUB_TOKEN", forge.token)
        env.setenv("SEVENP_SLACK_WEBHOOK_URL", slack.url + "/services/T0/B0/not-a-real-token-4e1c9")
        env.setenv("AWS_SECRET_ACCESS_KEY", "deploy-credential-that-no-stage-may-see-7f3a")
        remote = Remote(root, DEPLOY_APP, NAME)
        apps = root / "apps"
        apps.mkdir()
        (apps / f"{NAME}.yaml").write_text(deploy_app_config(
            remote.url, stack.base.ref,
            f"forge: {{kind: github, api_url: '{forge_server.url}', repository: acme/deploy-app}}\n",
            approvers=", approvers: [ada, '@acme/senior-developers']"))
        settings = Settings(home=home, apps_dir=apps)
        stack.registry.grant(home)  # the app's base image is in the session's registry
        instance = dg.DagsterInstance.ephemeral(tempdir=str(root / "dagster"))
        app = load_app_config(apps / f"{NAME}.yaml")
        try:
            yield Deploys(remote, settings, instance, app, slack, public, forge)
        finally:
            stop_environments(home, app)
            build_resources(settings)["registry"].stop()


def test_staging_then_production_by_a_person(deploys: Deploys) -> None:
    sha = deploys.released("feat: first release", version="1")
    result = deploys.deploy(sha, "staging")
    assert result.success, _failures(result)
    meta = _materialization(result, "staging_deployment")
    assert meta is not None and meta["status"] == "live" and meta["commit"] == sha
    assert meta["image_digest"].startswith("sha256:") and meta["image_ref"].endswith(meta["image_digest"])
    assert meta["health_passed"] is True and meta["smoke_passed"] is True
    assert meta["launched_by"] == "launched by hand (UI or API)"
    body, release = deploys.answer("staging")
    assert body["version"] == "1" and release == sha
    # The smoke tests ran sandboxed: none of the orchestrator's credentials reached them.
    smoke_env = meta["smoke_output"]
    assert "API_BASE_URL" in smoke_env and "SEVENP_ENVIRONMENT" in smoke_env
    for secret in ("SEVENP_SLACK_WEBHOOK_URL", "AWS_SECRET_ACCESS_KEY", "SEVENP_SIGNING_KEY"):
        assert secret not in smoke_env
    message = deploys.slack_messages()[-1]
    assert "is live in staging" in json.dumps(message) and result.run_id in json.dumps(message)

    # production is approval: manual: launching its deploy (as the graph, the Launchpad or a stage through
    # GraphQL does) is not an approval; a person's record is.
    unapproved = deploys.deploy(sha, "production")
    assert not unapproved.success and "nobody approved" in _failures(unapproved)
    assert f"make deploy ENV=production COMMIT={sha}" in _failures(unapproved)
    deploys.approve(sha, "production")
    # The production deployment and its release notes are one step: selecting the deployment alone (a
    # GraphQL launch, a job of one's own) is refused before anything runs; the UI selects both.
    with pytest.raises(dg.DagsterInvalidSubsetError, match="does not support subsetting"):
        build_definitions(deploys.settings).resolve_implicit_global_asset_job_def().execute_in_process(
            instance=deploys.instance, partition_key=sha, raise_on_error=False,
            asset_selection=[dg.AssetKey([KEY, "production_deployment"])])
    prod = deploys.deploy(sha, "production")
    assert prod.success, _failures(prod)
    assert deploys.answer("production")[1] == sha
    prod_meta = _materialization(prod, "production_deployment")
    assert prod_meta is not None and (prod_meta["approved_by"], prod_meta["approved_via"]) == ("Ada Lovelace", "test")
    notes = _materialization(prod, "release_notes")
    assert notes is not None and notes["previous_commit"] == "(first release)"
    assert "first release" in notes["notes"] and "Features" in notes["notes"]

    # The forge saw it: the pipeline's commit statuses, and one deployment per deploy step with its URL.
    deploys.forge_tick(None)
    assert deploys.forge.latest(sha)["sevenp/pipeline"]["state"] == "success"
    assert not any("deployment" in context for context in deploys.forge.latest(sha))  # deploys are deployments
    shown = [(d["environment"], d["sha"], d["states"], d["environment_url"], str(d["log_url"]).rsplit("/", 1)[-1])
             for d in deploys.forge.deployments.values()]
    assert shown == [
        ("staging", sha, ["success"], deploys.url("staging"), result.run_id),
        ("production", sha, ["failure"], "", unapproved.run_id),
        ("production", sha, ["success"], deploys.url("production"), prod.run_id)], shown


def test_an_approving_review_on_the_forge_deploys_production(deploys: Deploys) -> None:
    sha = deploys.released("feat: reviewed on the forge", version="1.1")
    assert deploys.deploy(sha, "staging").success
    defs = build_definitions(deploys.settings)
    sensor = defs.resolve_sensor_def(f"{KEY}_forge_approval_sensor")

    def tick() -> dg.SensorResult | dg.SkipReason:
        with dg.build_sensor_context(instance=deploys.instance, resources=defs.resources, definitions=defs) as context:
            return sensor(context)

    waiting = tick()
    assert isinstance(waiting, dg.SkipReason) and "no new approval" in waiting.skip_message
    # A review by someone who is not an approver, and a '/deploy production' comment by them: nothing.
    deploys.forge.pulls[21] = {"commits": [sha], "reviews": [("mallory", "APPROVED")]}
    deploys.forge.human_comment(21, "mallory", "/deploy production")
    assert isinstance(tick(), dg.SkipReason)
    assert find_approval(deploys.settings.home, KEY, "production", sha) is None
    deploys.forge.pulls[21]["reviews"].append(("ada", "APPROVED"))
    (request,) = tick().run_requests
    assert (request.job_name, request.partition_key) == (f"{KEY}_deploy_production_job", sha)
    record = find_approval(deploys.settings.home, KEY, "production", sha)
    assert record is not None and (record.approver, record.via) == ("ada", "github review on pull request 21")
    prod = deploys.deploy(sha, "production", tags=request.tags)
    assert prod.success, _failures(prod)
    meta = _materialization(prod, "production_deployment")
    assert meta is not None
    assert (meta["approved_by"], meta["approved_via"]) == ("ada", "github review on pull request 21")
    assert deploys.answer("production")[1] == sha
    done = tick()  # live there now: nobody is asked again
    assert isinstance(done, dg.SkipReason) and "no new approval" in done.skip_message

    # A member of the team the approvers name approves too; the record and the deployment say which team.
    # (mallory's review above asked the forge and found no membership.)
    deploys.forge.teams["acme/senior-developers"] = ["grace"]
    team_sha = deploys.released("feat: approved by a team", version="1.2")
    assert deploys.deploy(team_sha, "staging").success
    deploys.forge.pulls[22] = {"commits": [team_sha], "reviews": [("grace", "APPROVED")]}
    (request,) = tick().run_requests
    via = "github review on pull request 22 (member of @acme/senior-developers)"
    record = find_approval(deploys.settings.home, KEY, "production", team_sha)
    assert record is not None and (record.approver, record.via) == ("grace", via)
    prod = deploys.deploy(team_sha, "production", tags=request.tags)
    assert prod.success, _failures(prod)
    meta = _materialization(prod, "production_deployment")
    assert meta is not None and (meta["approved_by"], meta["approved_via"]) == ("grace", via)


def test_production_refused_until_staging_smoke_passed(deploys: Deploys) -> None:
    before = deploys.answer("production")
    sha = deploys.released("fix: not yet in staging", version="2")
    deploys.approve(sha, "production")  # approved, but not yet through staging
    result = deploys.deploy(sha, "production")
    assert not result.success
    assert "refused" in _failures(result) and "has not been deployed to staging" in _failures(result)
    assert deploys.answer("production") == before
    run = deploys.instance.get_run_by_id(result.run_id)
    assert run is not None and run.tags[TAG_DEPLOY] == "refused"


def test_failed_smoke_keeps_production_on_the_old_version(deploys: Deploys) -> None:
    before = deploys.answer("production")
    sha = deploys.released("feat: breaks production only", version="3", files={"SMOKE_FAILS": "production\n"})
    staged = deploys.deploy(sha, "staging")
    assert staged.success, _failures(staged)
    deploys.approve(sha, "production")
    result = deploys.deploy(sha, "production")
    assert not result.success
    text = _failures(result)
    assert "smoke tests FAILED" in text and f"traffic stays on {before[1][:12]}" in text
    assert deploys.answer("production") == before
    # The failed partition is no healthy release; the rollback message went out with the run link.
    assert history.latest_for_commit(deploys.instance, KEY, "production", sha) is None
    message = json.dumps(deploys.slack_messages()[-1])
    assert "rolled back in production" in message and result.run_id in message
    assert deploys.instance.get_run_by_id(result.run_id).tags[TAG_DEPLOY] == "rolled_back"


def test_failed_health_check_rolls_back_and_rollback_redeploys_the_last_healthy(deploys: Deploys) -> None:
    good = deploys.answer("staging")[1]
    broken = deploys.released("feat: unhealthy", version="4", files={"extra/HEALTH_FAILS": "yes\n"})
    result = deploys.deploy(broken, "staging")
    assert not result.success
    assert "health check failed" in _failures(result) and "HTTP 500" in _failures(result)
    assert "(after 4 attempt(s))" in _failures(result)
    assert deploys.answer("staging")[1] == good

    newer = deploys.released("fix: healthy again", version="5")
    assert deploys.deploy(newer, "staging").success
    assert deploys.answer("staging")[0]["version"] == "5"
    # Rollback: the last healthy partition before the live one, deployed again with the same checks.
    candidate = history.rollback_candidate(deploys.instance, KEY, "staging", newer)
    assert candidate is not None and candidate.commit == good
    # The registry died (kill -9): the rollback starts it again before it pulls, instead of failing.
    registry = build_resources(deploys.settings)["registry"]
    killed = registry.running_pid()
    assert killed is not None
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: registry.running_pid() is None, timeout=10, what="the killed registry to be gone")
    back = deploys.deploy(good, "staging", tags={TAG_ROLLBACK: newer})
    assert back.success, _failures(back)
    assert registry.healthy() and registry.running_pid() not in (None, killed)
    assert deploys.answer("staging")[1] == good
    assert _materialization(back, "staging_deployment")["launched_by"].startswith(f"rollback from {newer[:12]}")
    assert (_materialization(back, "staging_deployment")["rollback"],
            _materialization(back, "staging_deployment")["replaced"]) == (True, newer)
    # From the asset graph, with no rollback tag: forward again is not a rollback, back to the older
    # release is, and each names the release it replaced.
    forward = _materialization(deploys.deploy(newer, "staging"), "staging_deployment")
    assert (forward["rollback"], forward["replaced"]) == (False, good)
    again = _materialization(deploys.deploy(good, "staging"), "staging_deployment")
    assert (again["rollback"], again["replaced"]) == (True, newer)


def test_unsigned_tampered_or_unverifiable_images_are_refused(deploys: Deploys) -> None:
    before = deploys.answer("staging")
    sha = deploys.released("chore: to be tampered with", version="6")
    stored = deploys.settings.home / "artifacts" / KEY / sha / "provenance.intoto.json"
    envelope = json.loads(stored.read_text())

    stored.write_text(json.dumps({**envelope, "payload": envelope["payload"][:-8] + "AAAAAAA="}))
    result = deploys.deploy(sha, "staging")
    assert not result.success and "does not verify" in _failures(result)

    stored.unlink()
    result = deploys.deploy(sha, "staging")
    assert not result.success and "is unsigned" in _failures(result)
    stored.write_text(json.dumps(envelope))

    other, _ = prov.generate_keypair()  # a key that did not sign it
    saved = os.environ["SEVENP_SIGNING_KEY"]
    try:
        os.environ["SEVENP_SIGNING_KEY"] = other
        result = deploys.deploy(sha, "staging")
        assert not result.success and "does not verify" in _failures(result)
        os.environ["SEVENP_SIGNING_KEY"] = "-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"
        result = deploys.deploy(sha, "staging")
        assert not result.success and "SEVENP_SIGNING_KEY" in _failures(result)
        del os.environ["SEVENP_SIGNING_KEY"]  # unset: nothing to verify against
        result = deploys.deploy(sha, "staging")
        assert not result.success and "SEVENP_SIGNING_KEY is not set" in _failures(result)
    finally:
        os.environ["SEVENP_SIGNING_KEY"] = saved
    assert deploys.answer("staging") == before

    never = deploys.commit("chore: never built", version="7")
    result = deploys.deploy(never, "staging")
    assert not result.success and "was never promoted" in _failures(result)
    assert deploys.answer("staging") == before


def test_a_commit_off_the_allowed_branches_is_refused_from_the_graph(deploys: Deploys) -> None:
    """Materializing staging_deployment and production_deployment from the asset graph (or the Launchpad)
    for a feature branch's commit: refused by the branch rule, checked against the remote, nothing touched."""
    before = {env: deploys.answer(env) for env in ("staging", "production")}
    git("checkout", "--quiet", "-b", "feature/evil", cwd=deploys.remote.clone)
    try:
        deploys.remote.write("VERSION", "EVIL\n")
        sha = deploys.remote.commit("feat: evil", push_to="feature/evil")
        assert deploys.pipeline(sha).success  # it passed every gate: only the branch rule stands in the way
        for env in ("staging", "production"):
            result = deploys.deploy(sha, env, tags={"sevenp/branch": "main"})  # a tag proves nothing
            text = _failures(result)
            assert not result.success and f"is on no branch that environments.{env}.branches allows (main)" in text
            assert deploys.answer(env) == before[env]
    finally:
        git("checkout", "--quiet", "main", cwd=deploys.remote.clone)


def test_an_operators_override_deploys_off_branch_named_and_recorded_unless_the_environment_refuses(
    deploys: Deploys,
) -> None:
    """``make deploy OVERRIDE='why'`` (recorded like an approval, by a person, outside any run) lets a
    commit the branch rule refuses go out, with who and why on the deployment; an environment with
    ``allow_override: false`` refuses it all the same, naming the key."""
    git("checkout", "--quiet", "-b", "hotfix-from-laptop", cwd=deploys.remote.clone)
    try:
        deploys.remote.write("VERSION", "HOTFIX\n")
        sha = deploys.remote.commit("fix: urgent", push_to="hotfix-from-laptop")
        assert deploys.pipeline(sha).success
    finally:
        git("checkout", "--quiet", "main", cwd=deploys.remote.clone)
    record_approval(deploys.settings.home, KEY, "staging", sha, approver="Grace Hopper", via="make deploy",
                    override="payments down, main is frozen")
    config = deploys.settings.apps_dir / f"{NAME}.yaml"
    original = config.read_text()
    try:
        config.write_text(original.replace("staging: {branches: [main]}",
                                           "staging: {branches: [main], allow_override: false}"))
        before = deploys.answer("staging")
        result = deploys.deploy(sha, "staging")
        text = _failures(result)
        assert not result.success and "environments.staging.allow_override is false" in text
        assert "an override was recorded by Grace Hopper" in text
        assert deploys.answer("staging") == before
    finally:
        config.write_text(original)
    result = deploys.deploy(sha, "staging")
    assert result.success, _failures(result)
    meta = deploys.instance.get_latest_materialization_event(
        dg.AssetKey([KEY, "staging_deployment"])).asset_materialization.metadata
    assert meta["override_by"].value == "Grace Hopper"
    assert meta["override_reason"].value == "payments down, main is frozen"
    assert deploys.answer("staging")[0]["version"] == "HOTFIX"
    # No record for production: the branch rule there stands (and its manual approval is missing too).
    assert not deploys.deploy(sha, "production").success


def pushed(branch: str) -> dict[str, str]:
    """The tags of a run the push sensor starts for ``branch``: only a pushed head moves branch tags."""
    return {"sevenp/branch": branch, "sevenp/trigger": "push", "dagster/sensor_name": f"{KEY}_git_push_sensor"}


def test_a_branch_named_Main_leaves_the_main_tag_where_main_put_it(deploys: Deploys) -> None:
    """Round one: branches `Main` and `-main` moved the registry's `:main` through the orchestrator's own
    tagging (both sanitize to `main`). A `Main` branch's image gets a suffixed tag of its own."""
    sha = deploys.commit("chore: main's own", version="main-1")
    result = deploys.pipeline(sha, tags=pushed("main"))
    assert result.success, _failures(result)
    registry = build_resources(deploys.settings)["registry"]
    repository = deploys.app.image_repository
    main_digest = registry.find(repository, "main")
    assert main_digest is not None
    git("checkout", "--quiet", "-b", "Main", cwd=deploys.remote.clone)
    try:
        deploys.remote.write("VERSION", "IMPOSTOR\n")
        impostor = deploys.remote.commit("feat: looks like main", push_to="Main")
        result = deploys.pipeline(impostor, tags=pushed("Main"))
        assert result.success, _failures(result)
    finally:
        git("checkout", "--quiet", "main", cwd=deploys.remote.clone)
    assert registry.find(repository, "main") == main_digest
    own = [t for t in registry.tags(repository) if re.fullmatch(r"main-branch-[0-9a-f]{8}", t)]
    assert len(own) == 1 and registry.find(repository, own[0]) not in (None, main_digest)


def test_only_the_pushed_head_moves_the_branch_tag_a_graph_run_of_an_older_commit_does_not(
        deploys: Deploys) -> None:
    """Issue 17: a run from the graph (or the Launchpad, or of a commit the branch moved on from) tags
    its image with the commit's own tag only; `main` stays on the image of main's pushed head."""
    registry = build_resources(deploys.settings)["registry"]
    repository = deploys.app.image_repository
    older = deploys.commit("feat: the older one", version="older-1")
    assert deploys.pipeline(older, tags=pushed("main")).success
    newer = deploys.commit("feat: the newer one", version="newer-1")
    result = deploys.pipeline(newer, tags=pushed("main"))
    assert result.success, _failures(result)
    main_digest = registry.find(repository, "main")
    assert main_digest is not None and main_digest == registry.find(repository, f"main-{newer[:7]}")

    result = deploys.pipeline(older)  # a Materialize from the graph: no sevenp tags at launch
    assert result.success, _failures(result)
    run = deploys.instance.get_run_by_id(result.run_id)
    assert (run.tags["sevenp/branch"], run.tags["sevenp/trigger"]) == ("main", "graph")
    assert registry.find(repository, "main") == main_digest
    assert registry.find(repository, f"main-{older[:7]}") not in (None, main_digest)
    # A push run that finishes after its branch moved on does not move the tag back either.
    assert deploys.pipeline(older, tags=pushed("main")).success
    assert registry.find(repository, "main") == main_digest


def test_a_fast_forward_of_main_to_a_commit_built_on_develop_reaches_production(deploys: Deploys) -> None:
    """main moving to develop's head (merge --ff-only, "rebase and merge"): the push sensor starts main's own
    run, which restores every stage develop's run computed and applies main's tags; staging and then
    production (approved by a review on the forge) deploy it."""
    defs = build_definitions(deploys.settings)
    push_sensor = defs.resolve_sensor_def(f"{KEY}_git_push_sensor")

    def push_tick(cursor: str | None) -> dg.SensorResult:
        # A forge app polls git every poll_interval_seconds: this tick comes after it.
        cursor = json.dumps({**json.loads(cursor), "polled_at": 0}) if cursor else None
        with dg.build_sensor_context(instance=deploys.instance, cursor=cursor, resources=defs.resources,
                                     definitions=defs) as context:
            return push_sensor(context)

    def started_by(request: dg.RunRequest) -> dict[str, str]:
        return {**request.tags, "dagster/sensor_name": push_sensor.name}

    cursor = push_tick(None).cursor
    deploys.remote.write("VERSION", "2.0\n")
    sha = deploys.remote.commit("feat: built on develop first", push_to="develop")
    on_develop = push_tick(cursor)
    (request,) = on_develop.run_requests
    assert request.run_key == f"develop@{sha}"
    built = deploys.pipeline(sha, tags=started_by(request))
    assert built.success, _failures(built)
    assert "restored_from" not in (_materialization(built, "check") or {})

    deploys.remote.push("main")  # the fast-forward
    on_main = push_tick(on_develop.cursor)
    (request,) = on_main.run_requests
    assert (request.run_key, request.tags["sevenp/branch"]) == (f"main@{sha}", "main")
    main_run = deploys.pipeline(sha, tags=started_by(request))
    assert main_run.success, _failures(main_run)
    # Computed once, on develop: the install reuses the commit's node_modules, the stage is restored.
    assert (_materialization(main_run, "node_dependencies") or {}).get("reused") is True
    assert (_materialization(main_run, "check") or {}).get("restored_from") == sha
    promoted = _materialization(main_run, "promoted_image")
    assert promoted is not None and "main" in promoted["tags"] and f"main-{sha[:7]}" in promoted["tags"]

    assert deploys.deploy(sha, "staging").success
    deploys.forge.pulls[31] = {"commits": [sha], "reviews": [("ada", "APPROVED")]}
    approval_sensor = defs.resolve_sensor_def(f"{KEY}_forge_approval_sensor")
    with dg.build_sensor_context(instance=deploys.instance, resources=defs.resources, definitions=defs) as context:
        (approved,) = approval_sensor(context).run_requests
    prod = deploys.deploy(sha, "production", tags=approved.tags)
    assert prod.success, _failures(prod)
    assert deploys.answer("production")[1] == sha
