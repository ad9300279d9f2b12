"""Amazon ECS as a deploy target, through boto3 (spec: ``deploy_to_ecs`` and ``rollback_deployment``).

A deploy registers a new revision of the service's current task definition family with the container's
image replaced by the rollout's **digest** reference (never a tag: what was verified is what runs),
points the service at it (``forceNewDeployment``), waits with boto3's ``services_stable`` waiter, then
checks health and runs the smoke tests against the environment's URL. Any failure after the service
was updated points it back at the previous task definition and waits again.

Differences from the spec's script, on purpose:

* the previous release is the service's *current* task definition, not "the second newest ACTIVE
  revision of the family" (that one is wrong after a failed deploy or a manual registration);
* ``placementConstraints`` is kept (the script deleted it; it is a valid, meaningful input);
* which fields are copied is decided by the ``RegisterTaskDefinition`` input shape of the botocore
  model, so fields AWS adds to ``DescribeTaskDefinition`` later do not break registration.

Imported from here, not from the ``targets`` package: only ECS deployments pay for boto3.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sevenp_pipeline.config.models import AppConfig, HealthCheckSettings
from sevenp_pipeline.config.targets import EcsTargetSettings
from sevenp_pipeline.deploy.health import check_health
from sevenp_pipeline.deploy.targets.role import (
    DeployError,
    DeployOutcome,
    DeployTarget,
    LogFn,
    Release,
    Rollout,
    SmokeFn,
)
from sevenp_pipeline.resources.registries.aws import AwsResource

if TYPE_CHECKING:
    from sevenp_pipeline.deploy.targets.resource import DeployTargets

COMMIT_ENV = "SEVENP_COMMIT"
ENVIRONMENT_ENV = "SEVENP_ENVIRONMENT"
COMMIT_TAG = "sevenp/commit"
RUN_TAG = "sevenp/run"
# What DescribeTaskDefinition returns that RegisterTaskDefinition refuses (the spec's jq del(...)).
READ_ONLY_FIELDS = ("taskDefinitionArn", "revision", "status", "requiresAttributes", "compatibilities",
                    "registeredAt", "registeredBy", "deregisteredAt", "deleteRequestedAt")


class EcsDeployer(AwsResource):
    """Deploys to Amazon ECS services (region, endpoint and credentials: the :class:`AwsResource` fields;
    credentials come from ``dg.EnvVar`` in the resource set and are never logged)."""

    def target(self, app: AppConfig, environment: str) -> EcsTarget:
        """The ECS target of ``app``'s ``environment`` (its ``ecs`` section names cluster, service and URL).

        Args:
            app: the app's configuration.
            environment: one of ``app.deploy_environments`` whose target is ``ecs``.

        Raises:
            DeployError: the environment is not declared or is not an ECS environment.
        """
        spec = app.deploy_environments.get(environment)
        settings = spec.target_settings if spec is not None else None
        if not isinstance(settings, EcsTargetSettings):
            ecs = sorted(n for n, e in app.deploy_environments.items() if e.target == "ecs")
            raise DeployError(f"{app.name}: environment '{environment}' is not an ECS environment "
                              f"(ECS environments: {ecs})")
        return EcsTarget(client=self.client("ecs", region=settings.region), app=app.name, environment=environment,
                         settings=settings, health=app.health_for(environment))


def build_target(*, targets: DeployTargets, app: AppConfig, environment: str) -> EcsTarget:
    """The registry's factory: ``targets.ecs`` is the AWS connection (None: boto3's default chain)."""
    return (targets.ecs or EcsDeployer()).target(app, environment)


def _error_code(exc: BaseException) -> str:
    """AWS's error code (``ThrottlingException``, ``ClusterNotFoundException``...) or botocore's exception
    name for errors without an answer (``EndpointConnectionError``, ``NoCredentialsError``)."""
    response = getattr(exc, "response", None)
    if isinstance(response, Mapping):
        code = response.get("Error", {}).get("Code")
        if code:
            message = response.get("Error", {}).get("Message") or ""
            return f"{code}: {message}" if message else str(code)
    return f"{type(exc).__name__}: {exc}"


def _aws_errors() -> tuple[type[BaseException], ...]:
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    return (ClientError, BotoCoreError)


def _digest_of(image: str) -> str:
    return image.partition("@")[2] if "@sha256:" in image else ""


class EcsTarget(DeployTarget):
    """One ECS service of one environment. ``client`` is a boto3 ECS client (any endpoint)."""

    def __init__(self, *, client: Any, app: str, environment: str, settings: EcsTargetSettings,
                 health: HealthCheckSettings, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.app = app
        self.environment = environment
        self.settings = settings
        self.health = health
        self.sleep = sleep

    @property
    def where(self) -> str:
        return f"ECS {self.environment} (cluster {self.settings.cluster}, service {self.settings.service})"

    def url(self) -> str:
        return self.settings.url

    # -- reading --------------------------------------------------------------------------------------

    def _aws(self, what: str, call: Callable[[], Any]) -> Any:
        """Runs one boto3 call (boto3 already retried throttling and connection errors); a failure
        becomes a :class:`DeployError` naming the environment, the step and AWS's error code."""
        try:
            return call()
        except _aws_errors() as exc:
            raise DeployError(f"{self.where}: {what} failed: {_error_code(exc)}") from exc

    def _service(self) -> dict[str, Any]:
        found = self._aws("describe service", lambda: self.client.describe_services(
            cluster=self.settings.cluster, services=[self.settings.service]))
        services = [s for s in found.get("services") or [] if s.get("status") == "ACTIVE"]
        if not services:
            failures = [f.get("reason", "?") for f in found.get("failures") or []]
            states = [s.get("status", "?") for s in found.get("services") or []]
            raise DeployError(f"{self.where}: service not found ({', '.join(failures + states) or 'no answer'})")
        return services[0]

    def _task_definition(self, arn: str) -> tuple[dict[str, Any], dict[str, str]]:
        found = self._aws(f"describe task definition {arn}", lambda: self.client.describe_task_definition(
            taskDefinition=arn, include=["TAGS"]))
        tags = {t["key"]: t["value"] for t in found.get("tags") or []}
        return found["taskDefinition"], tags

    def _container(self, task_definition: Mapping[str, Any]) -> dict[str, Any]:
        containers = task_definition.get("containerDefinitions") or []
        name = self.settings.container
        for container in containers:
            if name is None or container.get("name") == name:
                return container
        raise DeployError(f"{self.where}: task definition {task_definition.get('taskDefinitionArn')} has no "
                          f"container {name!r} (containers: {[c.get('name') for c in containers]})")

    def _release(self, task_definition: Mapping[str, Any], tags: Mapping[str, str], since: float) -> Release:
        container = self._container(task_definition)
        env = {e["name"]: e["value"] for e in container.get("environment") or [] if "name" in e}
        image = str(container.get("image", ""))
        return Release(commit=env.get(COMMIT_ENV) or tags.get(COMMIT_TAG, ""), image_ref=image,
                       image_digest=_digest_of(image), since=since, run_id=tags.get(RUN_TAG, ""),
                       slot=str(task_definition["taskDefinitionArn"]))

    @staticmethod
    def _since(service: Mapping[str, Any]) -> float:
        for deployment in service.get("deployments") or []:
            if deployment.get("status") == "PRIMARY":
                stamp = deployment.get("updatedAt") or deployment.get("createdAt")
                if stamp is not None:
                    return float(stamp.timestamp())
        return 0.0

    def current(self) -> Release | None:
        """The release of the service's current task definition; ``commit`` is "" when it was not
        deployed by this pipeline (no ``SEVENP_COMMIT``)."""
        service = self._service()
        arn = service.get("taskDefinition")
        if not arn:
            return None
        task_definition, tags = self._task_definition(arn)
        return self._release(task_definition, tags, self._since(service))

    # -- deploying ------------------------------------------------------------------------------------

    def registration(self, previous: Mapping[str, Any], tags: Mapping[str, str], rollout: Rollout) -> dict[str, Any]:
        """``RegisterTaskDefinition`` arguments: ``previous`` with the container's image set to the digest
        reference, ``rollout.env`` plus ``SEVENP_COMMIT``/``SEVENP_ENVIRONMENT`` in its environment, and the
        ``sevenp/commit``/``sevenp/run`` tags."""
        if "@sha256:" not in rollout.image_ref:
            raise DeployError(f"{self.where}: {rollout.image_ref!r} is not a digest reference (repository@sha256:...)")
        accepted = set(self.client.meta.service_model.operation_model("RegisterTaskDefinition").input_shape.members)
        kwargs = {k: v for k, v in previous.items() if k in accepted and k not in READ_ONLY_FIELDS}
        target = self._container(previous)
        containers = []
        for container in previous.get("containerDefinitions") or []:
            if container is target:
                env = {e["name"]: e["value"] for e in container.get("environment") or [] if "name" in e}
                env.update(rollout.env)
                env.update({COMMIT_ENV: rollout.commit, ENVIRONMENT_ENV: rollout.environment})
                container = {**container, "image": rollout.image_ref,  # noqa: PLW2901 (a changed copy)
                             "environment": [{"name": k, "value": v} for k, v in env.items()]}
            containers.append(container)
        kwargs["containerDefinitions"] = containers
        merged = {k: v for k, v in tags.items() if not k.startswith("sevenp/")}
        merged.update({COMMIT_TAG: rollout.commit, RUN_TAG: rollout.run_id})
        kwargs["tags"] = [{"key": k, "value": v} for k, v in merged.items() if v]
        return kwargs

    def _update(self, arn: str) -> None:
        self.client.update_service(cluster=self.settings.cluster, service=self.settings.service,
                                   taskDefinition=arn, forceNewDeployment=True)

    def _wait_stable(self) -> None:
        wait = self.settings.wait
        self.client.get_waiter("services_stable").wait(
            cluster=self.settings.cluster, services=[self.settings.service],
            WaiterConfig={"Delay": wait.delay_seconds, "MaxAttempts": wait.max_attempts})

    def deploy(self, rollout: Rollout, *, smoke: SmokeFn | None, log: LogFn) -> DeployOutcome:
        """Registers a revision with the rollout's digest, updates the service, waits until stable, checks
        health and runs ``smoke``; on a failure after the update the service goes back to the previous
        task definition (``ok=False, rolled_back=True``). When the rollback itself fails (update refused, or
        not stable again) the outcome has ``rolled_back=False``, ``live=None`` and a reason that says
        ``ROLLBACK FAILED`` / ``ROLLBACK INCOMPLETE`` and what to check: it is reported, not raised.

        Raises:
            DeployError: before any change (throttling that outlasted boto3's retries, cluster or service
                missing, credentials, endpoint unreachable, a task definition without the container).
        """
        steps: list[str] = []

        def step(text: str) -> None:
            steps.append(text)
            log(f"{self.where}: {text}")

        service = self._service()
        previous_arn = str(service["taskDefinition"])
        previous_td, previous_tags = self._task_definition(previous_arn)
        previous = self._release(previous_td, previous_tags, self._since(service))
        step(f"current task definition {previous_arn} (commit {previous.commit[:12] or 'unknown'})")
        kwargs = self.registration(previous_td, previous_tags, rollout)
        registered = self._aws("register task definition",
                               lambda: self.client.register_task_definition(**kwargs))["taskDefinition"]
        new_arn = str(registered["taskDefinitionArn"])
        step(f"registered {new_arn} with image {rollout.image_ref}")
        try:
            self._update(new_arn)
        except _aws_errors() as exc:
            self._deregister(new_arn, step)
            raise DeployError(f"{self.where}: update service to {new_arn} failed: {_error_code(exc)}; "
                              f"the service still runs {previous_arn}") from exc
        step(f"service updated to {new_arn} (force new deployment); waiting until stable")
        started = time.monotonic()
        release = Release(commit=rollout.commit, image_ref=rollout.image_ref, image_digest=rollout.image_digest,
                          since=0.0, run_id=rollout.run_id, slot=new_arn)
        outcome = DeployOutcome(environment=self.environment, ok=False, url=self.url(), live=release,
                                previous=previous, steps=steps)
        failure = self._verify(outcome, smoke, step, log, started)
        if failure is None:
            outcome.ok = True
            outcome.live = Release(**{**release.to_json(), "since": time.time()})
            step(f"{rollout.commit[:12]} is live")
            return outcome
        outcome.reason = failure
        step(f"{failure}; rolling back to {previous_arn}")
        outcome.live = None  # unknown until the rollback is through
        try:
            self._update(previous_arn)
        except Exception as exc:  # whatever broke the rollback is reported in the outcome, not raised
            outcome.reason = (f"{failure}; ROLLBACK FAILED: update service back to {previous_arn}: "
                              f"{_error_code(exc)}. The service still points at {new_arn}: check it by hand")
            step(outcome.reason)
            return outcome
        step(f"service points at {previous_arn} again; waiting until stable")
        try:
            self._wait_stable()
        except Exception as exc:
            outcome.reason = (f"{failure}; ROLLBACK INCOMPLETE: the service points at {previous_arn} again but "
                              f"did not become stable: {_error_code(exc)}. Check it by hand")
            step(outcome.reason)
            return outcome
        outcome.rolled_back = True
        outcome.live = previous
        step(f"rolled back: the service runs {previous_arn} again and is stable")
        self._deregister(new_arn, step)
        return outcome

    def _verify(self, outcome: DeployOutcome, smoke: SmokeFn | None, step: LogFn, log: LogFn,
                started: float) -> str | None:
        """Waits until stable, checks health, runs smoke tests; returns the reason of the first failure."""
        try:
            self._wait_stable()
        except Exception as exc:  # WaiterError, throttling, connection: all mean "not stable"
            wait = self.settings.wait
            return (f"service did not become stable within {wait.max_attempts} checks {wait.delay_seconds:g}s "
                    f"apart: {_error_code(exc)}")
        step(f"service stable after {time.monotonic() - started:.1f}s")
        outcome.health = check_health(self.url(), self.health, log=log, sleep=self.sleep)
        if not outcome.health.ok:
            return f"health check failed: {outcome.health.summary()}"
        step(outcome.health.summary())
        if smoke is not None:
            outcome.smoke = smoke(self.url())
            if not outcome.smoke.ok:
                return f"smoke tests failed: {outcome.smoke.summary()}"
            step(outcome.smoke.summary())
        return None

    def _deregister(self, arn: str, step: LogFn) -> None:
        """Deregisters a revision that never served (best effort: it would only clutter the family)."""
        try:
            self.client.deregister_task_definition(taskDefinition=arn)
            step(f"deregistered {arn}")
        except _aws_errors() as exc:
            step(f"could not deregister {arn}: {_error_code(exc)}")
