"""A local Dagster deployment (code server, webserver, daemon) for the demo, the integration tests
and the benchmarks, plus the GraphQL calls they need.

``python -m sevenp_pipeline.devtools.devstack serve --port P`` (``make dev``, and ``make demo``
through :class:`LocalDagster`) runs the stack under its supervisor (devtools/supervisor.py):

- it refuses to start, naming the port, when the UI port cannot be bound;
- it starts the code server (``dagster code-server start``, location ``sevenp_pipeline`` on a free
  loopback port), then the webserver and the daemon on a workspace file pointing at it
  (``$DAGSTER_HOME/workspace-supervised.yaml``), and the read-only artifact server
  (resources/artifact_server.py) on ``--artifacts-port`` (default: the UI's port + 1), whose address
  the code server links artifacts with (``SEVENP_ARTIFACTS_URL``, unless set); it restarts each one
  when it dies; it keeps the local image registry up;
- when ``SEVENP_WEBHOOK_SECRET`` is set (a forge delivers webhooks), it also runs the webhook receiver
  (forge/webhooks.py) on ``--webhook-port`` (default: the UI's port + 2); without it nothing changes;
- it exits non-zero when the UI does not answer within ``--startup-timeout``, or a process keeps
  dying right after its start; SIGINT/SIGTERM stop everything (the registry outlives it by design);
- its children start with SIGINT/SIGTERM at their defaults (a process started in the background by a
  shell inherits SIGINT ignored) and die with it (``setpriv --pdeathsig``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from sevenp_pipeline.config.settings import PROJECT_ROOT
from sevenp_pipeline.devtools.instance_config import (
    InstanceConfigError,
    describe_storage,
    postgres_storage,
    use_driver,
    write_instance_config,
)
from sevenp_pipeline.devtools.supervisor import (
    RegistryWatch,
    Service,
    Supervisor,
    SupervisorGaveUp,
    become_subreaper,
    service_pids,
)
from sevenp_pipeline.files import use_private_umask
from sevenp_pipeline.resources.processes import ExecuteRequest, ProcessRunner, RunningProcess

LOCATION = "sevenp_pipeline"
DAEMON = "sevenp_pipeline.devtools.daemon"  # dagster-daemon with a shorter sensor loop
REPOSITORY = "__repository__"

SENSOR_TICKS = """
query ($selector: SensorSelector!) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor { sensorState { status ticks(limit: 10) {
      status timestamp error { message causes { message } } } } }
    ... on PythonError { message }
  }
}"""

REEXECUTE = """
mutation ($parentRunId: String!, $strategy: ReexecutionStrategy!) {
  launchRunReexecution(reexecutionParams: {parentRunId: $parentRunId, strategy: $strategy}) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidStepError { invalidStepKey }
    ... on InvalidOutputError { stepKey invalidOutputName }
    ... on UnauthorizedError { message }
  }
}"""

LAUNCH = """
mutation ($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on InvalidStepError { invalidStepKey }
    ... on UnauthorizedError { message }
    ... on InvalidSubsetError { message }
  }
}"""

TERMINATE = """
mutation ($runId: String!) {
  terminateRun(runId: $runId) {
    __typename
    ... on TerminateRunFailure { message }
    ... on RunNotFoundError { message }
    ... on PythonError { message }
    ... on UnauthorizedError { message }
  }
}"""


class DevStackError(RuntimeError):
    pass


class _StopRequested(Exception):
    pass


@dataclass
class LocalDagster:
    """The supervised stack (``devstack serve``) on a DAGSTER_HOME under the pipeline home, bound to 127.0.0.1."""

    home: Path
    port: int
    apps_dir: Path | None = None
    artifacts_port: int = 0  # 0: the UI's port + 1 when free (make demo), else any free port
    extra_env: dict[str, str] = field(default_factory=dict)
    runner: ProcessRunner = field(default_factory=ProcessRunner)
    process: RunningProcess | None = None

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def artifacts_url(self) -> str:
        """Where the artifact server answers (set once :meth:`start` picked its port)."""
        return f"http://127.0.0.1:{self.artifacts_port or self.port + 1}"

    @property
    def log_path(self) -> Path:
        return self.home / "logs" / "dagster-dev.log"

    def env(self) -> dict[str, str]:
        env = {"DAGSTER_HOME": str(self.dagster_home), "SEVENP_HOME": str(self.home), **self.extra_env}
        if self.apps_dir:
            env["SEVENP_APPS_DIR"] = str(self.apps_dir)
        return env

    def prepare(self) -> None:
        """The instance config, as serve writes it: SQLite, or PostgreSQL when the environment
        (this process's with ``extra_env``) names a server (devtools/instance_config.py)."""
        write_instance_config(self.dagster_home, {**os.environ, **self.env()})

    def start(self, *, timeout: float = 120) -> None:
        self.prepare()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        if not self.artifacts_port:
            from sevenp_pipeline.resources.services import free_port  # noqa: PLC0415

            self.artifacts_port = self.port + 1 if port_available(self.port + 1) else free_port()
        self.process = self.runner.start(ExecuteRequest(
            argv=[sys.executable, "-m", "sevenp_pipeline.devtools.devstack", "serve", "--port", str(self.port),
                  "--artifacts-port", str(self.artifacts_port)],
            cwd=PROJECT_ROOT, label="devstack serve", env=self.env(), log_path=self.log_path,
        ))
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()  # whatever went wrong, nothing is left running
            raise

    def _wait_ready(self, timeout: float) -> None:
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.process.alive():
                raise DevStackError(f"the Dagster stack exited at startup; see {self.log_path}:\n{self._log_tail()}")
            try:
                if _answers(self.url) and self._location_loaded():
                    return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise DevStackError(f"the Dagster stack did not answer on {self.url} within {timeout:.0f}s:\n"
                            f"{self._log_tail()}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
            self.process = None

    def answers(self) -> bool:
        """Whether the UI answers ``/server_info`` now."""
        return _answers(self.url)

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def service_pids(self) -> dict[str, int]:
        """``{"code server" | "webserver" | "daemon": pid}`` of the supervised processes now."""
        return service_pids(self.process.pid) if self.process is not None else {}

    def location_entry(self) -> dict[str, Any] | None:
        """The webserver's view of the code location: ``loadStatus``, ``updatedTimestamp``, error."""
        data = self.graphql("""{ workspaceOrError { ... on Workspace { locationEntries {
            name loadStatus updatedTimestamp
            locationOrLoadError { __typename ... on PythonError { message } } } } } }""")
        return next((e for e in data["workspaceOrError"]["locationEntries"] if e["name"] == LOCATION), None)

    def _location_loaded(self) -> bool:
        data = self.graphql("""{ workspaceOrError { ... on Workspace { locationEntries {
            name loadStatus locationOrLoadError { __typename ... on PythonError { message } } } } } }""")
        for entry in data["workspaceOrError"]["locationEntries"]:
            if entry["name"] == LOCATION and entry["loadStatus"] == "LOADED":
                error = entry["locationOrLoadError"]
                if error and error["__typename"] == "PythonError":
                    raise DevStackError(f"code location {LOCATION} failed to load: {error['message']}")
                return True
        return False

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        return graphql(self.url, query, variables)

    def sensor_ticks(self, sensor: str) -> list[dict[str, Any]]:
        data = self.graphql(SENSOR_TICKS, {"selector": {"repositoryLocationName": LOCATION,
                                                        "repositoryName": REPOSITORY, "sensorName": sensor}})
        result = data["sensorOrError"]
        if result["__typename"] != "Sensor":
            raise DevStackError(f"sensor {sensor}: {result}")
        return result["sensorState"]["ticks"]

    def wait_for_sensor_tick(self, sensor: str, *, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(t["status"] in ("SKIPPED", "SUCCESS") for t in self.sensor_ticks(sensor)):
                return
            time.sleep(0.5)
        raise DevStackError(f"sensor {sensor} did not tick within {timeout:.0f}s: {self.sensor_ticks(sensor)}")


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{url}/graphql", data=body,  # noqa: S310
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            payload = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        raise DevStackError(f"GraphQL {exc.code} from {url}: {exc.read()[:2000].decode(errors='replace')}") from exc
    if payload.get("errors"):
        raise DevStackError(f"GraphQL error from {url}: {payload['errors']}")
    return payload["data"]


def reexecute(url: str, run_id: str, strategy: str = "FROM_FAILURE") -> str:
    """Launches a re-execution of ``run_id`` through the webserver; returns the new run id."""
    result = graphql(url, REEXECUTE, {"parentRunId": run_id, "strategy": strategy})["launchRunReexecution"]
    if result["__typename"] != "LaunchRunSuccess":
        raise DevStackError(f"re-execution of {run_id} was refused: {result}")
    return result["run"]["runId"]


def launch_run(url: str, job: str, *, partition: str, assets: list[list[str]] | None = None,
               run_config: dict[str, Any] | None = None, tags: dict[str, str] | None = None) -> str:
    """Launches ``job`` for one commit partition, as the UI's launchpad does (optionally only
    ``assets``, each an asset key path); returns the run id."""
    params: dict[str, Any] = {
        "selector": {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "jobName": job,
                     **({"assetSelection": [{"path": path} for path in assets]} if assets else {})},
        "runConfigData": run_config or {},
        "executionMetadata": {"tags": [{"key": k, "value": v}
                                       for k, v in {"dagster/partition": partition, **(tags or {})}.items()]},
    }
    result = graphql(url, LAUNCH, {"params": params})["launchRun"]
    if result["__typename"] != "LaunchRunSuccess":
        raise DevStackError(f"launching {job} for {partition[:12]} was refused: {result}")
    return result["run"]["runId"]


def terminate(url: str, run_id: str) -> None:
    """Asks the webserver to terminate ``run_id``, as the UI's Terminate button does."""
    result = graphql(url, TERMINATE, {"runId": run_id})["terminateRun"]
    if result["__typename"] != "TerminateRunSuccess":
        raise DevStackError(f"termination of {run_id} was refused: {result}")


def demo_signing_key(home: Path, *, log: Callable[[str], None] = print) -> dict[str, str]:
    """SEVENP_SIGNING_KEY for a local stack: the environment's, else a demo key made once under the
    home (make demo and make dev share it). Production deployments set their own."""
    if os.environ.get("SEVENP_SIGNING_KEY"):
        return {}
    from sevenp_pipeline.scanners.provenance import generate_keypair  # noqa: PLC0415 (crypto import is slow)

    key = home / "keys" / "signing-key.pem"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        private, public = generate_keypair()
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(private)
        key.with_suffix(".pub.pem").write_text(public)
        log(f"made a demo signing key {key} (set SEVENP_SIGNING_KEY to use your own)")
    return {"SEVENP_SIGNING_KEY": key.read_text()}


def port_available(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now: binds and listens as uvicorn does
    (SO_REUSEADDR, so connections of a stopped server in TIME_WAIT do not count as taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            sock.listen(1)
        except OSError:
            return False
    return True


def port_taken_message(port: int, host: str, target: str, *, what: str = "the Dagster UI",
                       variable: str = "PORT") -> str:
    return (f"port {port} on {host} is already in use, so {what} cannot start there: stop what "
            f"listens on it (e.g. `ss -ltnp 'sport = :{port}'`) or run `make {target} {variable}=<a free port>`")


def artifacts_taken_message(port: int, host: str, target: str) -> str:
    return port_taken_message(port, host, target, what="the artifact server (the UI's port + 1)",
                              variable="ARTIFACTS_PORT")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stdout_path(fallback: Path) -> Path:
    """Where the stack's processes write: this process's own stdout (the terminal of ``make dev``, or
    LocalDagster's log file), reopened through /dev/stdout; else a log file under the home."""
    try:
        with Path("/dev/stdout").open("ab"):
            return Path("/dev/stdout")
    except OSError:
        return fallback


WORKSPACE_FILE = "workspace-supervised.yaml"
WEBHOOK_SECRET = "SEVENP_WEBHOOK_SECRET"  # noqa: S105 (the variable's name; forge/webhooks.py reads it)
ARTIFACT_SERVER = "sevenp_pipeline.cockpit.server"  # the artifact store, and the apps' branch pages


def write_workspace(dagster_home: Path, *, host: str, grpc_port: int) -> Path:
    """The workspace the webserver and the daemon load: the code server on ``host:grpc_port``,
    under the fixed location name (run history and sensor cursors are keyed on it)."""
    path = dagster_home / WORKSPACE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Written by `python -m sevenp_pipeline.devtools.devstack serve` (make dev / make demo) at each start.\n"
        "load_from:\n"
        "  - grpc_server:\n"
        f"      host: {host}\n"
        f"      port: {grpc_port}\n"
        f"      location_name: {LOCATION}\n")
    return path


def stack_services(*, host: str, port: int, grpc_port: int, workspace: Path, env: dict[str, str],
                   log_path: Path, artifacts_root: Path | None, artifacts_port: int,
                   webhook_port: int | None = None) -> list[Service]:
    """The code server, the webserver, the daemon and the artifact server, as the supervisor starts
    them (the code server first), and the webhook receiver on ``webhook_port`` when given (it reads
    its secret from the inherited environment: the secret is in no argument list). ``artifacts_root``
    None: the artifact server serves the settings' store (the S3 bucket of ``SEVENP_ARTIFACTS=s3``)."""
    bindir = Path(sys.executable).parent

    def service(name: str, argv: list[str]) -> Service:
        # A 3 s grace: whoever stops serve (LocalDagster: SIGTERM, SIGKILL after 5 s) waits for it to have
        # stopped these; die_with_parent covers serve killed outright.
        return Service(name=name, request=ExecuteRequest(
            argv=argv, cwd=PROJECT_ROOT, label=name, env=env, die_with_parent=True, log_path=log_path,
            timeout_seconds=float("inf")))

    return [
        service("code server", [str(bindir / "dagster"), "code-server", "start", "-m", "sevenp_pipeline.definitions",
                                "--location-name", LOCATION, "-h", host, "-p", str(grpc_port)]),
        service("webserver", [str(bindir / "dagster-webserver"), "-w", str(workspace), "-h", host, "-p", str(port)]),
        # dagster-daemon with a 1 s sensor loop instead of 5 s (devtools/daemon.py): a webhook's push starts sooner.
        service("daemon", [sys.executable, "-m", DAEMON, "run", "-w", str(workspace)]),
        service("artifact server", [sys.executable, "-m", ARTIFACT_SERVER,
                                    *(["--root", str(artifacts_root)] if artifacts_root else []),
                                    "--host", host, "--port", str(artifacts_port),
                                    "--ui-url", f"http://{host}:{port}"]),
        *([service("webhook receiver", [sys.executable, "-m", "sevenp_pipeline.forge.webhooks", "--host", host,
                                        "--port", str(webhook_port)])] if webhook_port else []),
    ]


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def serve(port: int, *, host: str = "127.0.0.1", startup_timeout: float = 180,
          say: Callable[[str], None] | None = None, artifacts_port: int | None = None,
          webhook_port: int | None = None) -> int:
    """Runs the supervised stack (sevenp_pipeline/devtools/supervisor.py) until interrupted;
    returns the exit status (non-zero if it failed). ``artifacts_port``: the artifact server's
    (default: ``port + 1``); ``webhook_port``: the webhook receiver's (default: ``port + 2``), run
    only when ``SEVENP_WEBHOOK_SECRET`` is set."""
    from sevenp_pipeline.config.settings import Settings  # noqa: PLC0415
    from sevenp_pipeline.resources.registries.local import LocalRegistry  # noqa: PLC0415
    from sevenp_pipeline.resources.services import free_port  # noqa: PLC0415

    def tell(message: str) -> None:
        (say or (lambda m: print(f"sevenp dev: {m}", file=sys.stderr, flush=True)))(message)

    if not port_available(port, host):
        tell(port_taken_message(port, host, "dev"))
        return 2
    artifacts_port = artifacts_port or port + 1
    if not port_available(artifacts_port, host):
        tell(artifacts_taken_message(artifacts_port, host, "dev"))
        return 2
    try:
        postgres_storage(os.environ)  # a half-configured PostgreSQL fails here, not in each process
        use_driver(os.environ)  # a bare postgresql:// URL, as every process started below must read it
    except InstanceConfigError as exc:
        tell(str(exc))
        return 2
    webhook_port = (webhook_port or port + 2) if Settings.secret_is_set(WEBHOOK_SECRET) else None
    if webhook_port and not port_available(webhook_port, host):
        tell(port_taken_message(webhook_port, host, "dev", what="the webhook receiver (the UI's port + 2)",
                                variable="WEBHOOK_PORT"))
        return 2

    def _stop(*_: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):  # one stop at a time: Ctrl-C twice must not cut it short
            signal.signal(sig, signal.SIG_IGN)
        raise _StopRequested

    # Handlers, not SIG_IGN, before the children start: they then get both at their defaults (a
    # process started in the background by a shell inherits SIGINT ignored).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop)
    url = f"http://{host}:{port}"
    supervisor: Supervisor | None = None
    watch: RegistryWatch | None = None
    answered = False
    failure = ""
    try:
        settings = Settings.from_env()
        # make dev builds images like make demo: it needs the same local key, or every pushed run
        # would fail at its first stage asking for SEVENP_SIGNING_KEY.
        env = demo_signing_key(settings.home, log=tell)
        # The code server links artifacts to this server, unless the operator serves them elsewhere.
        artifacts_url = os.environ.get("SEVENP_ARTIFACTS_URL") or f"http://{host}:{artifacts_port}"
        env["SEVENP_ARTIFACTS_URL"] = artifacts_url
        dagster_home = Path(os.environ.get("DAGSTER_HOME") or settings.home / "dagster")
        env["DAGSTER_HOME"] = os.environ["DAGSTER_HOME"] = str(dagster_home)  # dagster.yaml reads it
        # The project's dagster.yaml, with PostgreSQL storage when SEVENP_DAGSTER_POSTGRES_* name a server
        # (devtools/instance_config.py): written at each start, so a changed environment takes effect.
        write_instance_config(dagster_home)
        tell(f"instance storage: {describe_storage(os.environ)}")
        # The storage's tables made once here: the webserver and the daemon making them at the same time
        # on a new home race in alembic ("more than one head present").
        with dg.DagsterInstance.from_config(str(dagster_home)):
            pass
        grpc_port = free_port()
        workspace = write_workspace(dagster_home, host=host, grpc_port=grpc_port)
        runner = ProcessRunner(kill_grace_seconds=3)
        become_subreaper()
        supervisor = Supervisor(
            stack_services(host=host, port=port, grpc_port=grpc_port, workspace=workspace, env=env,
                           log_path=_stdout_path(settings.home / "logs" / "dagster-dev-serve.log"),
                           artifacts_root=settings.artifacts_dir if settings.artifacts == "local" else None,
                           artifacts_port=artifacts_port,
                           webhook_port=webhook_port),
            runner=runner, say=tell)
        deadline = time.monotonic() + startup_timeout
        code_server, *others = supervisor.services.values()
        supervisor.start(code_server)  # first: the others find the location at once
        while not _listening(host, grpc_port) and time.monotonic() < deadline:
            supervisor.check()
            time.sleep(0.2)
        for service in others:
            supervisor.start(service)
        if settings.registry == "local":
            watch = RegistryWatch(LocalRegistry(runner=runner, home=str(settings.home)), say=tell,
                                  protect=supervisor.protect)
            watch.start()
        while True:
            supervisor.check()
            if not answered:
                answered = _answers(url)
                if answered:
                    tell(f"the Dagster UI answers on {url}; artifacts are served on {artifacts_url}, "
                         f"each app's branches and environments on {artifacts_url}/_cockpit/"
                         + (f", webhooks are received on http://{host}:{webhook_port}/webhooks/{{github,gitlab}} "
                            if webhook_port else " ") +
                         f"(code server on {host}:{grpc_port}; each process is restarted when it dies)")
                elif time.monotonic() > deadline:
                    failure = (f"the Dagster UI did not answer on {url} within {startup_timeout:.0f}s "
                               f"(is port {port} taken? see the log above)")
                    break
            time.sleep(0.2)
    except _StopRequested:
        pass  # Ctrl-C or SIGTERM (LocalDagster.stop): stop everything at once
    except SupervisorGaveUp as exc:
        failure = str(exc)
    finally:
        if failure:
            tell(f"{failure}; stopping the webserver, the daemon, the code server and the artifact server")
        if watch is not None:
            watch.stop()
        if supervisor is not None:
            supervisor.stop()  # SIGTERM to each process group, then SIGKILL; the registry outlives it
    return 1 if failure else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sevenp_pipeline.devtools.devstack")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_cmd = sub.add_parser("serve", help="run the supervised Dagster stack; exit non-zero if its UI port "
                                             "is taken or it never comes up")
    serve_cmd.add_argument("--port", type=int, default=3000)
    serve_cmd.add_argument("--host", default="127.0.0.1")
    serve_cmd.add_argument("--artifacts-port", type=int, default=None,
                           help="the read-only artifact server's port (default: --port + 1)")
    serve_cmd.add_argument("--webhook-port", type=int, default=None,
                           help=f"the webhook receiver's port (default: --port + 2; run only when {WEBHOOK_SECRET} "
                                "is set)")
    serve_cmd.add_argument("--startup-timeout", type=float, default=180,
                           help="seconds for the UI to answer before giving up")
    rerun = sub.add_parser("reexecute", help="re-execute a run (default: only failed steps and downstream)")
    rerun.add_argument("run_id")
    rerun.add_argument("--url", default=os.environ.get("DAGSTER_URL", "http://127.0.0.1:3000"))
    rerun.add_argument("--strategy", default="FROM_FAILURE", choices=["FROM_FAILURE", "FROM_ASSET_FAILURE",
                                                                       "ALL_STEPS"])
    sub.add_parser("stop-registry", help="stop the local image registry (it outlives runs by design)")
    args = parser.parse_args(argv)
    use_private_umask()  # inherited by the webserver, daemon, code server and run workers
    if args.command == "serve":
        return serve(args.port, host=args.host, startup_timeout=args.startup_timeout,
                     artifacts_port=args.artifacts_port, webhook_port=args.webhook_port)
    if args.command == "stop-registry":
        from sevenp_pipeline.config.settings import Settings  # noqa: PLC0415
        from sevenp_pipeline.resources.registries.local import LocalRegistry  # noqa: PLC0415

        stopped = LocalRegistry(runner=ProcessRunner(), home=str(Settings.from_env().home)).stop()
        print("local registry stopped" if stopped else "local registry was not running")
        return 0
    new_run = reexecute(args.url, args.run_id, args.strategy)
    print(f"launched {new_run}: {args.url}/runs/{new_run}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
