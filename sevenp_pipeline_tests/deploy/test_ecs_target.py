"""EcsTarget against a real moto_server (the same boto3 code path as AWS: only ``endpoint_url`` differs).

moto runs with ``MOTO_ECS_SERVICE_RUNNING=1``: every service reports one running task, so a service with
``desiredCount=1`` is stable and one with ``desiredCount=2`` never is. A loopback HTTP server plays the
environment's URL, so health checks pass or fail on demand. Throttling comes from a second loopback
server that answers every call with ``ThrottlingException``: boto3's real retry handler runs against it.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import dagster as dg
import pytest

from sevenp_pipeline.config.models import AppConfig
from sevenp_pipeline.deploy.targets.ecs import EcsDeployer, EcsTarget
from sevenp_pipeline.deploy.targets.role import DeployError, Rollout, SmokeReport
from sevenp_pipeline_tests.httpserver import Answer, Server, http_server
from sevenp_pipeline_tests.motoserver import CREDS, free_port, moto_server, needs_moto

pytestmark = [pytest.mark.integration, needs_moto]
REGION = "eu-west-1"
DIGEST = "sha256:" + "ab" * 32
IMAGE = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/sevenp/api@{DIGEST}"
COMMIT = "1" * 40
_names = itertools.count()


@pytest.fixture(scope="module")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with moto_server(tmp_path_factory.mktemp("moto"), env={"MOTO_ECS_SERVICE_RUNNING": "1"}) as endpoint:
        yield endpoint


@pytest.fixture
def site() -> Iterator[Server]:
    with http_server() as server:
        yield server


@dataclass
class Env:
    ecs: Any  # a plain boto3 client, for setup and assertions
    deployer: EcsDeployer
    app: AppConfig
    cluster: str
    service: str
    first_arn: str

    def target(self) -> EcsTarget:
        return self.deployer.target(self.app, "staging")

    def service_td(self) -> str:
        found = self.ecs.describe_services(cluster=self.cluster, services=[self.service])
        return str(found["services"][0]["taskDefinition"])

    def family_arns(self, status: str = "ACTIVE") -> list[str]:
        return list(self.ecs.list_task_definitions(familyPrefix=self.service, status=status)["taskDefinitionArns"])


def _app(*, cluster: str, service: str, url: str, health_attempts: int = 2) -> AppConfig:
    return AppConfig.model_validate({
        "name": "api", "repository": {"url": "/nowhere"}, "stages": {}, "image": {},
        "deploy": {"health": {"attempts": health_attempts, "interval_seconds": 0, "timeout_seconds": 2}},
        "environments": {
            "staging": {"target": "ecs", "ecs": {"cluster": cluster, "service": service, "container": "api",
                                                 "region": REGION, "url": url,
                                                 "wait": {"delay_seconds": 0.05, "max_attempts": 5}}},
            "preview": {"target": "local"},
        },
    })


def _setup(endpoint: str, url: str, *, desired: int = 1, create_cluster: bool = True,
           create_service: bool = True) -> Env:
    n = next(_names)
    cluster, service = f"cluster-{n}", f"api-{n}"
    ecs = boto3.client("ecs", region_name=REGION, endpoint_url=endpoint, **CREDS)
    if create_cluster:
        ecs.create_cluster(clusterName=cluster)
    first = ecs.register_task_definition(
        family=service, networkMode="bridge",
        containerDefinitions=[
            {"name": "api", "image": "example/api:old", "memory": 256, "essential": True,
             "environment": [{"name": "NODE_ENV", "value": "production"}, {"name": "SEVENP_COMMIT", "value": ""}],
             "portMappings": [{"containerPort": 3000}]},
            {"name": "sidecar", "image": "example/proxy:1", "memory": 64},
        ],
        tags=[{"key": "team", "value": "edu"}],
    )["taskDefinition"]["taskDefinitionArn"]
    if create_cluster and create_service:
        ecs.create_service(cluster=cluster, serviceName=service, taskDefinition=first, desiredCount=desired)
    deployer = EcsDeployer(endpoint_url=endpoint, region_name="us-east-1", max_attempts=2, **CREDS)
    return Env(ecs=ecs, deployer=deployer, app=_app(cluster=cluster, service=service, url=url), cluster=cluster,
               service=service, first_arn=first)


def _rollout(commit: str = COMMIT, run_id: str = "run-1") -> Rollout:
    return Rollout(app="api", environment="staging", commit=commit, image_ref=IMAGE, image_digest=DIGEST,
                   run_id=run_id, env={"NODE_ENV": "production", "LOG_LEVEL": "info"})


def _smoke(ok: bool, seen: list[str]):
    def run(url: str) -> SmokeReport:
        seen.append(url)
        return SmokeReport(url=url, ok=ok, seconds=0.1, command="npm run test:smoke", exit_code=0 if ok else 1,
                           tail="" if ok else "1 failing")
    return run


def test_deploy_registers_a_digest_revision_and_points_the_service_at_it(moto_endpoint: str, site: Server) -> None:
    env = _setup(moto_endpoint, site.url)
    target = env.target()
    before = target.current()
    assert before is not None and before.commit == "" and before.slot == env.first_arn  # not deployed by us
    log: list[str] = []
    smoked: list[str] = []
    outcome = target.deploy(_rollout(), smoke=_smoke(True, smoked), log=log.append)
    assert outcome.ok, outcome.reason
    assert not outcome.rolled_back and outcome.url == site.url and smoked == [site.url]
    assert outcome.previous == before
    assert outcome.health is not None and outcome.health.ok
    assert [r.path for r in site.requests] == ["/health"]
    new_arn = env.service_td()
    assert new_arn != env.first_arn and new_arn.endswith(f"{env.service}:2")
    assert outcome.live is not None and outcome.live.slot == new_arn and outcome.live.commit == COMMIT
    described = env.ecs.describe_task_definition(taskDefinition=new_arn, include=["TAGS"])
    containers = {c["name"]: c for c in described["taskDefinition"]["containerDefinitions"]}
    assert containers["api"]["image"] == IMAGE
    assert containers["sidecar"]["image"] == "example/proxy:1"  # only the configured container changes
    environment = {e["name"]: e["value"] for e in containers["api"]["environment"]}
    assert environment == {"NODE_ENV": "production", "SEVENP_COMMIT": COMMIT, "SEVENP_ENVIRONMENT": "staging",
                           "LOG_LEVEL": "info"}
    assert containers["api"]["portMappings"][0]["containerPort"] == 3000  # the rest is copied
    tags = {t["key"]: t["value"] for t in described["tags"]}
    assert tags == {"team": "edu", "sevenp/commit": COMMIT, "sevenp/run": "run-1"}
    now = target.current()
    assert now is not None
    assert (now.commit, now.image_ref, now.image_digest, now.run_id, now.slot) == (COMMIT, IMAGE, DIGEST, "run-1",
                                                                                   new_arn)
    assert any("registered" in line and IMAGE in line for line in log)
    # the next deploy's previous release is this one, commit and all
    second = target.deploy(_rollout("2" * 40, "run-2"), smoke=None, log=log.append)
    assert second.ok and second.previous is not None and second.previous.commit == COMMIT
    assert env.service_td().endswith(f"{env.service}:3")


def test_failing_health_check_puts_the_previous_task_definition_back(moto_endpoint: str, site: Server) -> None:
    env = _setup(moto_endpoint, site.url)
    site.respond = lambda _req: Answer(503, b"starting")
    smoked: list[str] = []
    outcome = env.target().deploy(_rollout(), smoke=_smoke(True, smoked), log=lambda _line: None)
    assert not outcome.ok and outcome.rolled_back
    assert outcome.reason.startswith("health check failed: unhealthy after 2/2")
    assert "HTTP 503" in outcome.reason
    assert smoked == []  # no smoke tests against an unhealthy release
    assert env.service_td() == env.first_arn
    assert outcome.live is not None and outcome.live.slot == env.first_arn
    # the failed revision never served: it is deregistered
    assert env.family_arns("INACTIVE") == [env.first_arn.rsplit(":", 1)[0] + ":2"]
    assert any(step.startswith("rolled back") for step in outcome.steps)


def test_failing_smoke_tests_roll_back(moto_endpoint: str, site: Server) -> None:
    env = _setup(moto_endpoint, site.url)
    outcome = env.target().deploy(_rollout(), smoke=_smoke(False, []), log=lambda _line: None)
    assert not outcome.ok and outcome.rolled_back
    assert outcome.reason.startswith("smoke tests failed: smoke tests FAILED (exit 1)")
    assert env.service_td() == env.first_arn


def test_a_service_that_never_stabilises_is_reported_with_the_incomplete_rollback(moto_endpoint: str,
                                                                                   site: Server) -> None:
    env = _setup(moto_endpoint, site.url, desired=2)  # moto reports 1 running: never stable
    started = time.monotonic()
    outcome = env.target().deploy(_rollout(), smoke=None, log=lambda _line: None)
    assert time.monotonic() - started < 10
    assert not outcome.ok and not outcome.rolled_back and outcome.live is None
    assert outcome.reason.startswith("service did not become stable within 5 checks 0.05s apart")
    assert "ROLLBACK INCOMPLETE" in outcome.reason and env.first_arn in outcome.reason
    assert env.service_td() == env.first_arn  # pointed back, even if not stable
    assert site.requests == []  # no health checks against a service that is not stable


def test_missing_cluster_raises_naming_it_and_registers_nothing(moto_endpoint: str, site: Server) -> None:
    env = _setup(moto_endpoint, site.url, create_cluster=False)
    with pytest.raises(DeployError, match=rf"cluster {env.cluster}, service {env.service}\): describe service "
                                          r"failed: ClusterNotFoundException"):
        env.target().deploy(_rollout(), smoke=None, log=lambda _line: None)
    assert env.family_arns() == [env.first_arn]


def test_missing_service_raises_and_registers_nothing(moto_endpoint: str, site: Server) -> None:
    env = _setup(moto_endpoint, site.url, create_service=False)
    with pytest.raises(DeployError, match=rf"service {env.service}\): service not found \(MISSING\)"):
        env.target().deploy(_rollout(), smoke=None, log=lambda _line: None)
    with pytest.raises(DeployError, match="service not found"):
        env.target().current()
    assert env.family_arns() == [env.first_arn]


def test_persistent_throttling_is_a_clear_error_after_boto3_retries() -> None:
    body = json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
    with http_server(lambda _req: Answer(400, body, {"Content-Type": "application/x-amz-json-1.1"})) as aws:
        deployer = EcsDeployer(endpoint_url=aws.url, region_name=REGION, max_attempts=3, **CREDS)
        target = deployer.target(_app(cluster="prod", service="api", url="http://127.0.0.1:9"), "staging")
        with pytest.raises(DeployError, match=r"ECS staging \(cluster prod, service api\): describe service "
                                              r"failed: ThrottlingException: Rate exceeded"):
            target.deploy(_rollout(), smoke=None, log=lambda _line: None)
        calls = [r.headers.get("x-amz-target") for r in aws.requests]
    # botocore's retries={"max_attempts": 3} means three retries after the first call: 4 calls, then it gave up
    assert calls == ["AmazonEC2ContainerServiceV20141113.DescribeServices"] * 4


def test_unreachable_endpoint_is_a_clear_error() -> None:
    deployer = EcsDeployer(endpoint_url=f"http://127.0.0.1:{free_port()}", region_name=REGION, max_attempts=1,
                           **CREDS)
    target = deployer.target(_app(cluster="prod", service="api", url="http://127.0.0.1:9"), "staging")
    with pytest.raises(DeployError, match=r"cluster prod, service api\): describe service failed: "
                                          r"EndpointConnectionError"):
        target.deploy(_rollout(), smoke=None, log=lambda _line: None)


def test_a_tag_reference_is_refused_before_anything_changes(moto_endpoint: str, site: Server) -> None:
    env = _setup(moto_endpoint, site.url)
    rollout = Rollout(app="api", environment="staging", commit=COMMIT, image_ref="example/api:latest",
                      image_digest="", run_id="r")
    with pytest.raises(DeployError, match="not a digest reference"):
        env.target().deploy(rollout, smoke=None, log=lambda _line: None)
    assert env.family_arns() == [env.first_arn] and env.service_td() == env.first_arn


def test_target_needs_an_ecs_environment(site: Server) -> None:
    app = _app(cluster="c", service="s", url=site.url)
    with pytest.raises(DeployError, match=r"'preview' is not an ECS environment \(ECS environments: \['staging'\]\)"):
        EcsDeployer(**CREDS).target(app, "preview")


def test_credentials_come_from_env_vars(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str, site: Server) -> None:
    env = _setup(moto_endpoint, site.url)
    monkeypatch.setenv("SEVENP_TEST_ECS_KEY", "AKIAECSEXAMPLE")
    monkeypatch.setenv("SEVENP_TEST_ECS_SECRET", "ecs-s3cr3t")
    resource = EcsDeployer(endpoint_url=moto_endpoint, region_name=REGION,
                           aws_access_key_id=dg.EnvVar("SEVENP_TEST_ECS_KEY"),
                           aws_secret_access_key=dg.EnvVar("SEVENP_TEST_ECS_SECRET"))
    with dg.build_resources({"deployer": resource}) as resources:
        target = resources.deployer.target(env.app, "staging")
        assert target.client._request_signer._credentials.access_key == "AKIAECSEXAMPLE"
        log: list[str] = []
        assert target.deploy(_rollout(), smoke=None, log=log.append).ok
    assert not any("ecs-s3cr3t" in line or "AKIAECSEXAMPLE" in line for line in log)
