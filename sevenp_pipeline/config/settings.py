"""Installation-wide settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sevenp_pipeline.files import HOME_DIR_MODE, private_dir

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    """Where the pipeline keeps its state.

    ``home`` holds workspaces (one checkout per commit), caches, artifacts and local remotes;
    ``apps_dir`` holds one pipeline YAML per application.
    """

    home: Path
    apps_dir: Path
    registry: str = "local"  # SEVENP_REGISTRY: local | ecr
    ecr_endpoint_url: str | None = None  # SEVENP_ECR_ENDPOINT_URL: e.g. a moto server

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("SEVENP_HOME") or PROJECT_ROOT / ".sevenp").resolve()
        apps = Path(os.environ.get("SEVENP_APPS_DIR") or PROJECT_ROOT / "apps").resolve()
        registry = os.environ.get("SEVENP_REGISTRY", "local")
        if registry not in ("local", "ecr"):
            raise ValueError(f"SEVENP_REGISTRY={registry!r}: expected 'local' or 'ecr'")
        return cls(home=home, apps_dir=apps, registry=registry,
                   ecr_endpoint_url=os.environ.get("SEVENP_ECR_ENDPOINT_URL") or None)

    def ensure_home(self) -> Path:
        """Creates the home 0711 (the test-database user passes through it to ``services/``; nobody
        else lists it), everything in it private: it holds checkouts, logs and artifacts that may
        quote a secret. An existing home keeps its mode: it may be a folder the operator set up.
        """
        return private_dir(self.home, mode=HOME_DIR_MODE)

    @property
    def workspaces_dir(self) -> Path:
        return self.home / "workspaces"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def stage_cache_dir(self) -> Path:
        """Stage results by input key (resources/stage_cache.py)."""
        return self.cache_dir / "stages"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def services_dir(self) -> Path:
        return self.home / "services"
