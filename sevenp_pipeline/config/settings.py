"""Installation-wide settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Settings:
    """Where the pipeline keeps its state.

    ``home`` holds workspaces (one checkout per commit), caches, artifacts and local remotes;
    ``apps_dir`` holds one pipeline YAML per application.
    """

    home: Path
    apps_dir: Path

    @classmethod
    def from_env(cls) -> Settings:
        home = Path(os.environ.get("SEVENP_HOME") or PROJECT_ROOT / ".sevenp").resolve()
        apps = Path(os.environ.get("SEVENP_APPS_DIR") or PROJECT_ROOT / "apps").resolve()
        return cls(home=home, apps_dir=apps)

    @property
    def workspaces_dir(self) -> Path:
        return self.home / "workspaces"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "artifacts"

    @property
    def services_dir(self) -> Path:
        return self.home / "services"
