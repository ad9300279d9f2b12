from __future__ import annotations

import contextlib
import shutil
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from sevenp_pipeline.config import AppConfig, Settings, load_app_config
from sevenp_pipeline.definitions import build_definitions
from sevenp_pipeline.files import shared_dir
from sevenp_pipeline_tests.containers import Stack, container_stack
from sevenp_pipeline_tests.gitutil import Remote

FIXTURES = Path(__file__).parent / "fixtures"
TINY_APP = FIXTURES / "tiny-app"
SAMPLE_APP = Path(__file__).resolve().parents[1] / "examples" / "7p-education-api"
# Outside /tmp (which the stage sandbox hides); .ci/run removes it first, as a new machine has none.
STAGE_VISIBLE_ROOT = Path("/run/sevenp-tests")


@dataclass
class Pipeline:
    """A configured pipeline on a tiny app: remote, settings, definitions, instance."""

    remote: Remote
    settings: Settings
    instance: dg.DagsterInstance
    app: AppConfig

    @property
    def defs(self) -> dg.Definitions:
        return build_definitions(self.settings)

    @property
    def key(self) -> str:
        return self.app.key

    def materialize(self, sha: str, selection: str | None = None, *, raise_on_error: bool = False,
                    run_config: dict | None = None, tags: dict[str, str] | None = None,
                    ) -> dg.ExecuteInProcessResult:
        self.instance.add_dynamic_partitions(f"{self.key}_commits", [sha])
        defs = self.defs
        job = defs.resolve_implicit_global_asset_job_def()
        assets = defs.resolve_asset_graph()
        keys = [k for k in assets.get_all_asset_keys() if k.path[0] == self.key]
        if selection:
            keys = [k for k in keys if k.path[-1] in selection.split(",")]
        else:  # the app's pipeline, as its CI job selects it: deploys are their own jobs
            keys = [k for k in keys if not k.path[-1].endswith("_deployment") and k.path[-1] != "release_notes"]
        return job.execute_in_process(
            instance=self.instance,
            partition_key=sha,
            asset_selection=keys,
            raise_on_error=raise_on_error,
            run_config=run_config,
            tags=tags,
        )


def write_app_config(path: Path, name: str, url: str, extra: str = "") -> None:
    path.write_text(textwrap.dedent(f"""\
        name: {name}
        repository:
          url: {url}
        stages: {{}}
        """) + textwrap.dedent(extra))


@contextlib.contextmanager
def reachable_home(prefix: str = "sevenp-test-home-") -> Iterator[Path]:
    """A pipeline home outside pytest's tmp tree, whose folders above each test's are 0700: the
    unprivileged test-database user must traverse to ``<home>/services`` (else the services fall
    back to a folder under /tmp that would outlive the test)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def stage_visible_dir() -> Iterator[Path]:
    """A folder a sandboxed stage can read (the sandbox hides /tmp, where pytest's tmp_path is):
    for tests that change what a stage sees between two runs."""
    # mkdir's mode is masked by the umask (077 once sevenp_pipeline.definitions is imported), and /run
    # is a tmpfs: on a new machine this folder does not exist yet, so its mode is set here, every time.
    root = shared_dir(STAGE_VISIBLE_ROOT)
    folder = Path(tempfile.mkdtemp(dir=root))  # 0700 whatever the umask
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pipeline_home() -> Iterator[Path]:
    with reachable_home() as home:
        yield home


@pytest.fixture
def make_pipeline(tmp_path: Path, pipeline_home: Path) -> Callable[..., Pipeline]:
    def make(extra: str = "", source: Path = TINY_APP, name: str = "tiny-app") -> Pipeline:
        remote = Remote(tmp_path, source, name)
        apps = tmp_path / "apps"
        apps.mkdir(exist_ok=True)
        config_text = extra.replace("stages: {}", "")
        if "stages:" not in config_text:
            config_text += "\nstages: {}\n"
        (apps / f"{name}.yaml").write_text(
            f"name: {name}\nrepository:\n  url: {remote.url}\n" + textwrap.dedent(config_text)
        )
        settings = Settings(home=pipeline_home, apps_dir=apps)
        instance = dg.DagsterInstance.ephemeral(tempdir=str(tmp_path / "dagster"))
        app = load_app_config(apps / f"{name}.yaml")
        return Pipeline(remote, settings, instance, app)

    return make


@pytest.fixture
def pipeline(make_pipeline) -> Pipeline:
    return make_pipeline()


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    """One home with container storage, a local registry and the bootstrapped Node base image per
    session, shared by the image and the deploy tests (created on first use)."""
    with container_stack() as made:
        yield made
