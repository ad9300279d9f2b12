"""Running one declared stage of one commit: the engine behind every stage asset.

A stage resolves its command from the app config (a package.json script, run through the app's
package manager, or an explicit argv), checks that the script exists, runs it through the process
runner in the commit's workspace with the app's env, secrets and (optionally) test services and an
app port, keeps the redacted log as an artifact, and computes the stage's data version from
everything it read.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import os
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from sevenp_pipeline.asset_helpers import STAGE_CODE_VERSION, failure, fingerprint, md_table
from sevenp_pipeline.config import AppConfig, StageSpec
from sevenp_pipeline.config.kinds import KIND_SCHEMAS
from sevenp_pipeline.config.models import Limits, PostgresService, RedisService
from sevenp_pipeline.config.references import expand
from sevenp_pipeline.files import open_private
from sevenp_pipeline.models import Workspace
from sevenp_pipeline.redaction import Redactor
from sevenp_pipeline.resources.artifacts import ArtifactStore, sha256_file
from sevenp_pipeline.resources.git import CommitNotFound, GitClient, GitError
from sevenp_pipeline.resources.processes import MB, ExecuteRequest, LogFn, Outcome, ProcessRunner
from sevenp_pipeline.resources.services import (
    PostgresOptions,
    RedisOptions,
    ServiceEndpoints,
    ServiceError,
    TestServices,
    free_port,
)
from sevenp_pipeline.resources.stage_cache import StageResultCache
from sevenp_pipeline.resources.tool_answers import asked_once, npm_registry, tool_answer, tool_versions
from sevenp_pipeline.resources.workspaces import StageRoom, Workspaces, disk_usage, read_inputs, record_inputs
from sevenp_pipeline.sandbox import LimitHit, Network, SandboxError, loopback_port
from sevenp_pipeline.source.checkout import make_checkout
from sevenp_pipeline.source.package_managers import PackageManager, PackageManagerError, detect
from sevenp_pipeline.stages.confined import LinkInTheWay, remove_beneath
from sevenp_pipeline.stages.dependency_tree import ROOT_INSTALL_SCRIPTS, restore_tree
from sevenp_pipeline.stages.test_runners import REPORT_DIR, ReportPlan, UnknownRunner, plan_for
from sevenp_pipeline.triggers.identity import ensure_run_identity

URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.I)
TEXT_SUFFIXES = {".json", ".xml", ".log", ".txt", ".html", ".md", ".sarif", ".lcov", ".info"}

class StageSkipped(Exception):
    """An optional stage whose script the app does not define: not applicable to this app."""


@dataclass
class Stage:
    """One stage of one commit, with everything it needs to run."""

    context: dg.AssetExecutionContext
    app: AppConfig
    name: str
    runner: ProcessRunner
    workspaces: Workspaces
    store: ArtifactStore
    git: GitClient  # to make the commit's checkout on a worker where source_checkout did not run
    # Where a worker without the install's node_modules fetches the tree (None: this disk only).
    stage_cache: StageResultCache | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    extra_secrets: tuple[str, ...] = ()
    # Host loopback ports the stage reaches from its own network namespace (its test services, the
    # URL a smoke test checks); outbound: also a route out (see sandbox.Network).
    forwards: tuple[int | tuple[int, int], ...] = ()  # a port, or (inside, host) (see sandbox.Network)
    outbound: bool | None = None  # None: the stage spec's (StageSpec.outbound)
    room: StageRoom | None = None
    kept: dict[str, str] = field(default_factory=dict)  # artifact name -> URI, what the stage cache stores
    # While its services run: what `${postgresql.url}` & co. in its env stand for (service_view), and the
    # versions it got (in its metadata).
    service_facts: dict[str, str] = field(default_factory=dict)
    service_versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ensure_run_identity(self.context, self.app)  # a run launched by hand gets its branch, commit, trigger

    @property
    def sha(self) -> str:
        return self.context.partition_key

    @property
    def spec(self) -> StageSpec:
        return self.app.stage(self.name)

    @functools.cached_property
    def workspace(self) -> Workspace:
        return self.workspaces.for_commit(app=self.app.key, sha=self.sha, subdir=self.app.repository.subdirectory)

    def log(self, message: str) -> None:
        self.context.log.info(message)

    def require_workspace(self, *, node_modules: bool = True) -> None:
        """Makes the commit's checkout when this worker has none (checked_out); fails clearly when no
        install stage has prepared its node_modules."""
        checked_out(self.workspaces, self.app, self.sha, stage=self.name, git=self.git, log=self.log)
        cached = read_inputs(self.workspace).get("node_modules")
        if node_modules and not (cached and Path(cached).is_dir()) and not self._restore_node_modules():
            install = self.app.install_stage or "an install stage"
            raise failure(f"{self.name}: no node_modules in {self.workspace.app_dir}: "
                          f"materialize {self.app.key}/{install} for this partition first (and list it in "
                          f"stages.{self.name}.needs)")

    def _restore_node_modules(self) -> bool:
        """On a worker where the install stage did not run for this commit (a fresh run container
        re-executing from failure): the tree its materialization of this commit recorded (``cache_key``),
        from this worker's dependency cache or the stage cache's second tier, once it is the tree of this
        checkout's lockfile. Not for pnpm/yarn (the pinned tool comes from the install's network) or an
        app whose own install scripts ran (its tree belongs to one source tree): those re-run the install."""
        install = self.app.install_stage
        if not install or self.package_manager.uses_corepack or set(self.package_scripts()) & ROOT_INSTALL_SCRIPTS:
            return False
        records = self.context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey([self.app.key, install]), asset_partitions=[self.sha]),
            limit=1).records
        meta = records[0].asset_materialization.metadata if records and records[0].asset_materialization else {}
        key = meta.get("cache_key")
        lock_hash = sha256_file(self.workspace.app_dir / self.package_manager.lockfile)
        restored = key and restore_tree(self.context, self.stage_cache, self.workspaces, str(key.value), lock_hash)
        if not restored:
            return False
        tree, where = restored
        (self.workspace.app_dir / "node_modules").mkdir(exist_ok=True)  # where each stage's layer is mounted
        record_inputs(self.workspace, lock=lock_hash, node_modules=str(tree))
        self.log(f"{self.name}: node_modules of {install} (cache key {str(key.value)[:12]}) brought to this worker "
                 f"from {where}: {install} did not run here")
        return True

    @functools.cached_property
    def package_manager(self) -> PackageManager:
        try:
            return detect(self.workspace.app_dir)
        except PackageManagerError as exc:
            raise failure(f"{self.name}: {exc}") from exc

    def package_scripts(self) -> dict[str, str]:
        scripts = self.package_json().get("scripts") or {}
        return scripts if isinstance(scripts, dict) else {}

    def package_json(self) -> dict[str, Any]:
        path = self.workspace.app_dir / "package.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise failure(f"{self.name}: {path.relative_to(self.workspace.src)} not found in commit "
                          f"{self.sha[:12]}: is repository.subdirectory right?") from None
        except ValueError as exc:
            raise failure(f"{self.name}: package.json is not valid JSON: {exc}") from exc
        return data if isinstance(data, dict) else {}

    @functools.cached_property
    def report_plan(self) -> ReportPlan | None:
        """A test/e2e stage configured with neither 'junit' nor 'report': its detected runner's report
        flags (stages/test_runners.py). They are part of argv() and env(), so of the stage's cache key."""
        spec = self.spec
        if not KIND_SCHEMAS[spec.kind].test_report or spec.junit or spec.report:
            return None
        package = self.package_json() if spec.command is None else {}
        try:
            return plan_for(self.name, package, script=spec.script, command=spec.command)
        except UnknownRunner as exc:
            raise failure(str(exc)) from None

    def argv(self) -> list[str]:
        spec = self.spec
        args = [a.replace("{report}", spec.report or "") for a in spec.args]
        if spec.command is not None:
            return [*spec.command, *args, *self._plan_args()]
        assert spec.script is not None
        scripts = self.package_scripts()
        pm = self.package_manager
        if spec.script not in scripts:
            if spec.optional:
                raise StageSkipped(f"script '{spec.script}' is not defined in package.json (optional stage)")
            raise failure(
                f"{self.name}: script '{spec.script}' is missing from package.json, which {pm.name} would run "
                f"(defined: {', '.join(sorted(scripts)) or 'none'}); add it, set stages.{self.name}.script "
                f"to one of them, or set stages.{self.name}.optional: true in the app config"
            )
        return pm.run_script_argv(spec.script, [*args, *self._plan_args()])

    def _plan_args(self) -> tuple[str, ...]:
        plan = self.report_plan
        return plan.args if plan else ()

    def _plan_env(self, env: dict[str, str]) -> dict[str, str]:
        """The detected runner's env over ``env``; NODE_OPTIONS is added to, never replaced."""
        plan = self.report_plan if KIND_SCHEMAS[self.spec.kind].test_report else None
        added: dict[str, str] = {}
        for key, value in plan.env if plan else ():
            added[key] = f"{env[key]} {value}" if key == "NODE_OPTIONS" and env.get(key) else value
        return added

    def env(self, *, per_run: bool = True) -> dict[str, str]:
        """The stage's environment: the pipeline's, the package manager's, the app's and the stage's env
        (its service references expanded while its services run), then the per-run values (services,
        APP_PORT). ``per_run=False``: without the per-run values and with the references unexpanded,
        what the stage's cache key and data version count (ports and passwords are new every run)."""
        stage_env = self.spec.env
        if per_run and self.service_facts:
            stage_env = {name: expand(value, self.service_facts) for name, value in stage_env.items()}
        app_env = {name: expand(value, {}) for name, value in self.app.env.items()}  # only `$${`: no references
        pm_env = self.package_manager.env(
            npm_registry=npm_registry(self.runner),
            # A mirror that serves npm metadata without signatures makes corepack refuse every download;
            # SEVENP_COREPACK_INTEGRITY_KEYS=0 turns its check off for such a registry (never the default).
            verify_corepack_signatures=os.environ.get("SEVENP_COREPACK_INTEGRITY_KEYS") != "0",
        )
        registry = npm_registry(self.runner)
        # The machine's registry as the orchestrator's npm sees it (its user config is not the stage's),
        # without credentials: an app that needs a token declares it in `secrets:`.
        public = {"npm_config_registry": URL_USERINFO.sub(r"\g<scheme>", registry)} if registry else {}
        env = {"CI": "true", "FORCE_COLOR": "0", "NO_COLOR": "1", **public, **pm_env, **app_env, **stage_env}
        return {**env, **self._plan_env(env), **(self.extra_env if per_run else {})}

    def data_version(self, argv: list[str], *extra: Any) -> str:
        """A stage's data version when its input key (stages/cache.py, which also counts the needed
        stages' data versions and ``inputs``) cannot be computed."""
        inputs = read_inputs(self.workspace)
        public_env = self.env(per_run=False)
        return fingerprint(STAGE_CODE_VERSION, self.name, self.spec.kind, inputs.get("tree"), inputs.get("lock"),
                           argv, public_env, self.tool_versions(), *extra)

    def tool_versions(self) -> dict[str, str]:
        """node's and the package manager's versions. An unpinned yarn or pnpm is asked in the sandbox:
        in the app folder it may run the branch's own code (yarn's yarn-path/yarnPath)."""
        versions = tool_versions(self.runner)
        pm = self.package_manager
        if pm.version:
            return {**versions, pm.name: pm.version}
        if not pm.version_from_project:  # one answer for the machine, outside the sandbox
            return {**versions, pm.name: tool_answer(self.runner, pm.version_argv(), Path("/"))}
        key = (*pm.version_argv(), str(self.workspace.app_dir))
        found = asked_once(key, lambda: self.runner.run(self.request(pm.version_argv(), capture=True)))
        return {**versions, pm.name: found}

    def run(self, argv: list[str], *, node_modules: bool = True, fail_over_limits: bool = True) -> Outcome:
        """Runs the stage's command. A stage over one of its limits (memory, processes, a file's size,
        its checkout's size after it) fails here with one line naming the limit, unless
        ``fail_over_limits`` is off (the outcome then carries them and is not ``ok``)."""
        spec = self.spec
        log_path = self.workspace.logs / f"{self.name}.log"
        log_path.unlink(missing_ok=True)
        plan = self.report_plan if KIND_SCHEMAS[spec.kind].test_report else None
        # The detected runner's own report file: only this stage's (stages at once share the folder).
        planned = plan.report if plan and plan.report else None
        for rel in (spec.report, spec.junit, spec.coverage, spec.artifacts, planned):  # never read a stale report
            if rel:
                try:
                    remove_beneath(self.workspace.app_dir, rel)
                except LinkInTheWay as exc:  # left alone: report_path() refuses to read through it
                    self.context.log.warning(f"{self.name}: stale {rel} not removed: {exc}")
        if planned:  # node's junit reporter does not create the folder of its destination
            self.report_dir()
        request = self.bounded(self.request(argv, log_path=log_path, node_modules=node_modules))
        outcome = self.runner.run(request, log=self.log)
        shutil.rmtree(self.room.root, ignore_errors=True)  # HOME, TMPDIR, the node_modules layer
        if log_path.exists():  # stored now, whatever follows: the run log's truncation line links to it
            self.keep(log_path, f"logs/{self.name}.log", redacted=True)
        if outcome.output_exceeded:
            self.context.log.error(f"{self.name}: output passed limits.output_mb = {self.limits.output_mb} MB; "
                                   f"the command was killed (stages.{self.name}.limits.output_mb to change)")
        if outcome.leftovers:
            self.context.log.warning(
                f"{self.name}: exited leaving {len(outcome.leftovers)} process(es) running, now killed: "
                + "; ".join(outcome.leftovers[:10]))
        if outcome.timed_out:
            self.context.log.error(f"{self.name}: killed after its timeout of {spec.timeout_seconds:.0f}s "
                                   f"(stages.{self.name}.timeout_seconds)")
        over_disk = self.checkout_over_disk_limit()
        if over_disk is not None:
            outcome = dataclasses.replace(outcome, limit_hits=(*outcome.limit_hits, over_disk))
        if outcome.limit_hits:
            hit = outcome.limit_hits[0]
            message = f"{self.name}: {hit.describe(f'stages.{self.name}.limits.{hit.key} to change')}"
            self.context.log.error(message)
            if fail_over_limits:
                raise failure(message, outcome, limit=f"limits.{hit.key}", limit_value=hit.value)
        return outcome

    def report_dir(self) -> None:
        """The folder detected runners write their reports to, made by us and handed to the stage user
        (the checkout is the stage user's; a folder we make in it is ours until handed over)."""
        folder = self.workspace.app_dir / REPORT_DIR
        if folder.is_symlink():
            raise failure(f"{self.name}: {REPORT_DIR} in the checkout is a link: not written through")
        with contextlib.suppress(FileExistsError):
            folder.mkdir()
        folder.chmod(0o755)
        if self.workspaces.sandbox:
            self.workspaces.user.own(folder)

    @property
    def limits(self) -> Limits:
        """The stage's limits (``limits:`` of the app, ``stages.<name>.limits``, the defaults)."""
        return self.app.limits_of(self.name)

    def bounded(self, request: ExecuteRequest) -> ExecuteRequest:
        """``request`` with the stage's output limits: ``log_mb`` of output in the run's log, then a
        line naming the full log (kept as ``logs/<stage>.log``); ``output_mb`` in all, then killed."""
        limits = self.limits
        return dataclasses.replace(
            request,
            log_limit_bytes=int(limits.log_mb * MB),
            full_log=self.store.uri(app=self.app.key, sha=self.sha, name=f"logs/{self.name}.log"),
            output_limit_bytes=limits.output_mb * MB,
            output_limit_note=f"limits.output_mb = {limits.output_mb}; set stages.{self.name}.limits.output_mb "
                              f"to change it",
        )

    def checkout_over_disk_limit(self) -> LimitHit | None:
        """The commit's checkout over ``limits.disk_mb`` after the stage (with node_modules when the
        install stage wrote it there; other stages see the cached tree through a layer of their own)."""
        limit = self.app.limits_of(self.name).disk_mb
        size = disk_usage(self.workspace.src)
        if size <= limit << 20:
            return None
        return LimitHit(key="disk_mb", value=limit, measured=-(-size // (1 << 20)))

    def request(self, argv: list[str], *, log_path: Path | None = None, capture: bool = False,
                node_modules: bool = True) -> ExecuteRequest:
        """The stage's command as the runner gets it: sandboxed in the app folder, with a minimal
        environment plus the app's env, its declared secrets and the stage's services; timeout.

        ``node_modules=False``: the install stage, which writes the checkout's tree itself.
        """
        self.room = self.workspaces.stage_room(self.workspace, self.name)
        cached = read_inputs(self.workspace).get("node_modules") if node_modules else None
        try:
            sandbox, base = self.workspaces.stage_sandbox(self.workspace, self.room, cwd=self.workspace.app_dir,
                                                          node_modules=Path(cached) if cached else None,
                                                          network=self.network(),
                                                          limits=self.app.limits_of(self.name))
        except SandboxError as exc:
            raise failure(f"{self.name}: cannot sandbox the stage: {exc}") from exc
        return ExecuteRequest(
            argv=argv,
            cwd=self.workspace.app_dir,
            label=self.name,
            timeout_seconds=self.spec.timeout_seconds,
            env={**base, **self.env(), **self.declared_secrets()},
            inherit_env=False,
            sandbox=sandbox,
            secret_env=self.app.secrets,
            secrets=self.extra_secrets,
            log_path=log_path,
            capture=capture,
        )

    def network(self) -> Network:
        """The stage's network namespace: its forwarded ports and whether it goes outbound. An install
        stage whose registry is on this machine's loopback (a local mirror) gets that port too."""
        outbound = self.spec.outbound if self.outbound is None else self.outbound
        forwards = {(f, f) if isinstance(f, int) else f for f in self.forwards}
        if outbound and (registry := loopback_port(npm_registry(self.runner) or "")):
            forwards.add((registry, registry))
        return Network(forwards=tuple(sorted(forwards)), outbound=outbound)

    def declared_secrets(self) -> dict[str, str]:
        """The app's ``secrets:``: the only variables of the orchestrator's environment a stage gets."""
        return {name: os.environ[name] for name in self.app.secrets if name in os.environ}

    @property
    def redact(self) -> Redactor:
        """The same redaction the runner applies to the command's output, for reports and metadata."""
        redactor = Redactor(self.extra_secrets)
        redactor.add_from_env({**self.env(), **self.declared_secrets()}, self.app.secrets)
        return redactor

    def keep(self, path: Path, name: str | None = None, *, redacted: bool = False) -> str:
        """Stores a file of this commit once; text files are redacted first (a test report can echo a
        secret), line by line into the store, never read whole. ``redacted``: the runner's log, already
        redacted with the same secrets, stored as is (a hard link: one copy of its bytes).

        A text file above ``limits.report_mb`` is refused (a failure naming it): its lines are read."""
        name = name or path.name
        inside = path.is_relative_to(self.workspace.src)  # the stage's output, not our log or tarball
        if inside:
            self.confine(path)
        if path.suffix in TEXT_SUFFIXES and not redacted:
            self.check_size(path)
            clean = self.workspace.logs / f".keep-{os.getpid()}-{threading.get_ident()}"
            try:
                self.redact_into(path, clean)
                uri = self.store.put_file(app=self.app.key, sha=self.sha, name=name, path=clean, link=True)
            finally:
                clean.unlink(missing_ok=True)
        else:
            # The stage's own files are copied: a later stage of this checkout (its user) could change
            # them in place. Ours (the log, a tarball) are linked.
            uri = self.store.put_file(app=self.app.key, sha=self.sha, name=name, path=path, link=not inside)
        self.kept[name] = uri
        return uri

    def redact_into(self, source: Path, dest: Path) -> None:
        """``self.redact`` of ``source``'s text written to ``dest`` a line at a time (as ``Redactor(text)``
        would: universal newlines, undecodable bytes replaced)."""
        stream = self.redact.stream()
        first = True
        with source.open(encoding="utf-8", errors="replace") as text, open_private(dest, append=False) as out:
            def write(lines: list[str]) -> None:
                nonlocal first
                for line in lines:
                    out.write((("" if first else "\n") + line).encode("utf-8", errors="replace"))
                    first = False

            last = ""
            for line in text:
                if line.endswith("\n"):
                    write(stream.feed(line[:-1]))
                    last = ""
                else:
                    last = line
            write(stream.feed(last))
            write(stream.flush())

    def check_size(self, path: Path, rel: str | None = None) -> None:
        """Refuses a report above ``limits.report_mb`` before anything reads it: a step failure naming
        the file (relative to the app folder), its size and the limit's key."""
        limit = self.limits.report_mb
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return  # the parser says it was not written
        if size > limit * MB:
            shown = rel or (path.relative_to(self.workspace.app_dir).as_posix()
                            if path.is_relative_to(self.workspace.app_dir) else path.name)
            raise failure(f"{self.name}: {shown} is {size / MB:.1f} MB, over limits.report_mb = {limit} MB: "
                          f"not read (stages.{self.name}.limits.report_mb to change)")

    def report_file(self, rel: str | None) -> Path:
        """:meth:`report_path` of a file the pipeline parses, refused above ``limits.report_mb``."""
        path = self.report_path(rel)
        self.check_size(path, rel)
        return path

    def base_metadata(self, outcome: Outcome) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "command": outcome.command,
            # Text, not a number: Dagster plots every numeric entry across commits, and a constant
            # exit code is a flat line that says nothing.
            "exit_code": dg.MetadataValue.text(str(outcome.exit_code if outcome.exit_code is not None else -1)),
            "duration_s": round(outcome.duration, 2),
        }
        if outcome.leftovers:
            meta["leftover_processes"] = dg.MetadataValue.md(md_table(["killed after the stage"],
                                                                      [[p] for p in outcome.leftovers]))
        meta.update(self.service_versions)
        if outcome.log_path and outcome.log_path.exists():
            name = f"logs/{self.name}.log"
            meta["log"] = dg.MetadataValue.url(self.kept.get(name) or self.keep(outcome.log_path, name, redacted=True))
        if not outcome.ok:
            meta["output_tail"] = dg.MetadataValue.md("```\n" + outcome.tail_text(30) + "\n```")
        return meta

    def report_path(self, rel: str | None) -> Path:
        """A file or folder the stage wrote, never read through a link out of the checkout: the
        stage is a branch's code, and the orchestrator reading ``reports/x.json -> /etc/shadow``
        would publish it as a report."""
        assert rel is not None
        path = self.workspace.app_dir / rel
        self.confine(path)
        return path

    def confine(self, path: Path) -> None:
        if not path.resolve().is_relative_to(self.workspace.src.resolve()):
            raise failure(f"{self.name}: {path.relative_to(self.workspace.app_dir)} resolves to {path.resolve()}, "
                          f"outside the checkout: a stage's output is never read through a link out of it")

    @contextlib.contextmanager
    def with_services(self, services: TestServices, *, app_port: bool = False) -> Iterator[Stage]:
        """Starts the stage's configured services for the duration of the block; with ``app_port``
        the stage also gets APP_HOST/APP_PORT, a free loopback port to start the built app on."""
        if app_port:
            self.extra_env = {**self.extra_env, "APP_HOST": "127.0.0.1", "APP_PORT": str(free_port())}
        names = list(self.spec.services)
        if not names:
            yield self
            return
        missing = [n for n in names if getattr(self.app.services, n) is None]
        if missing:
            raise failure(f"{self.name}: stage needs services {missing} that services: disables")
        pg, redis = self.app.services.postgresql, self.app.services.redis
        try:
            with services.provide(names, postgresql=postgres_options(pg), redis=redis_options(redis),
                                  log=self.log, standard_ports=self.workspaces.sandbox) as endpoints:
                env, self.service_facts = self.service_view(endpoints)
                self.extra_env = {**self.extra_env, **env}
                self.forwards = (*self.forwards, *endpoints.ports)
                self.extra_secrets = (*self.extra_secrets, *endpoints.secrets)
                self.service_versions = {f"{s.name}_version": s.version for s in endpoints.servers}
                if pg and pg.init_sql and "postgresql" in names:
                    server = next(s for s in endpoints.servers if s.name == "postgresql")
                    self.run_init_sql(pg.init_sql, Path(server.bin_dir) / "psql")
                yield self
        except ServiceError as exc:
            raise failure(f"{self.name}: test service failed: {exc}") from exc
        finally:
            self.service_facts = {}

    def service_view(self, endpoints: ServiceEndpoints) -> tuple[dict[str, str], dict[str, str]]:
        """Every address value the stage sees, made here and nowhere else: its variables (POSTGRESQL_URI,
        PG*, REDIS_URI) and what its env's ``${<service>.<fact>}`` stand for, from each server and the
        host and port the stage reaches it on: its standard port in the stage's own network namespace
        (relayed to the server's host port), or the host port itself without a sandbox (``stage_port``)."""
        env: dict[str, str] = {}
        facts: dict[str, str] = {}
        for server in endpoints.servers:
            host, port = "127.0.0.1", server.stage_port  # the address as the stage reaches it
            env.update(server.env(host=host, port=port))
            facts.update(server.facts(host=host, port=port))
        return env, facts

    def run_init_sql(self, rel: str, psql: Path) -> None:
        """Runs ``services.postgresql.init_sql`` (a file of the commit) against the test database.

        The SQL is the branch's, as untrusted as its tests: psql's backslash commands run programs
        (``\\!``, ``\\o |cmd``) as the OS user running psql. So psql runs here exactly as the stage's
        own command does, in the stage's sandbox as the stage user, connecting through the stage's
        network namespace with the stage's PG* variables: the file can do nothing the stage's tests
        could not. Never as the server user outside the sandbox (that would hand the branch a shell as
        it, beside every other stage's servers)."""
        path = self.report_path(rel)  # never read through a link out of the checkout
        if not path.is_file():
            raise failure(f"{self.name}: services.postgresql.init_sql: {rel} is not a file in commit {self.sha[:12]}")
        request = self.bounded(self.request([str(psql), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-f", rel]))
        outcome = self.runner.run(dataclasses.replace(request, label=f"{self.name} init_sql"), log=self.log)
        if not outcome.ok:
            raise failure(f"{self.name}: services.postgresql.init_sql {rel} failed (exit code {outcome.exit_code}): "
                          f"{outcome.tail_text(5)}", outcome)
        self.log(f"{self.name}: ran services.postgresql.init_sql {rel}")


def postgres_options(pg: PostgresService | None) -> PostgresOptions | None:
    if pg is None:
        return None
    return PostgresOptions(user=pg.user, database=pg.database, version=pg.version, settings=pg.server_settings(),
                           extensions=tuple(pg.extensions), databases=tuple(pg.databases))


def redis_options(redis: RedisService | None) -> RedisOptions | None:
    return RedisOptions(version=redis.version, arguments=redis.server_arguments()) if redis else None


def checked_out(workspaces: Workspaces, app: AppConfig, sha: str, *, stage: str, git: GitClient,
                log: LogFn) -> Workspace:
    """The commit's workspace. On a worker where source_checkout did not run (a fresh run container
    re-executing a run from failure, a stage materialized alone) the stage makes the checkout itself,
    as source_checkout does; a commit the remote no longer has fails naming the commit and remote."""
    workspace = workspaces.for_commit(app=app.key, sha=sha, subdir=app.repository.subdirectory)
    if workspace.is_checked_out:
        return workspace
    try:
        workspace, tree = make_checkout(git, workspaces, app, sha, log=log)
    except GitError as exc:
        raise failure(f"{stage}: no checkout of {sha[:12]} on this worker, and making it failed: {exc}",
                      retry=not isinstance(exc, CommitNotFound)) from exc
    except SandboxError as exc:
        raise failure(f"{stage}: no checkout of {sha[:12]} on this worker, and making it failed: {exc}") from exc
    log(f"{stage}: recreated the checkout of {sha[:12]} (tree {tree[:12]}) on this worker at {workspace.src}: "
        "source_checkout did not run here")
    return workspace


NOT_APPLICABLE = "not_applicable"  # an optional stage whose script the app does not have
SKIPPED_BY_REQUEST = "skip_tests"  # a person launched the run with skip_tests
TAG_SKIPPED_STAGES = "sevenp/skipped_stages"


def not_run(context: dg.AssetExecutionContext, reason: str, *, why: str = NOT_APPLICABLE) -> dg.MaterializeResult:
    """A stage that did not run (optional script missing, skip_tests): recorded as skipped with no
    check result, so Dagster shows its gates as skipped (planned, not evaluated, the run went on),
    neither passed nor failed, and nothing downstream is blocked. Promotion reads ``not_run``: a stage
    skipped by request never lets an image be promoted; the run is tagged with the skipped stages."""
    context.log.warning("%s not run: %s", context.asset_key.to_user_string(), reason)
    if why == SKIPPED_BY_REQUEST:
        run = context.instance.get_run_by_id(context.run.run_id)
        already = [s for s in (run.tags.get(TAG_SKIPPED_STAGES, "") if run else "").split(",") if s]
        stage = context.asset_key.path[-1]
        context.instance.add_run_tags(context.run.run_id, {TAG_SKIPPED_STAGES: ",".join([*already, stage])})
    return dg.MaterializeResult(metadata={"skipped": True, "reason": reason, "not_run": why, "gates_passed": False})
