"""``make deploy OVERRIDE='why'``: what the CLI records before it launches anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from sevenp_pipeline.config import load_app_config
from sevenp_pipeline.config.settings import Settings
from sevenp_pipeline.deploy.approvals import find_approval
from sevenp_pipeline.devtools.deploy import UsageError, _approve

SHA = "a" * 40
CONFIG = """name: web
repository: {url: /srv/web.git}
image: {dockerfile: Dockerfile}
environments:
  staging: {branches: [main]}
  production: {branches: [main], after: staging, approval: manual, allow_override: false}
"""


@pytest.fixture
def setup(tmp_path: Path):
    (tmp_path / "apps").mkdir()
    (tmp_path / "apps" / "web.yaml").write_text(CONFIG)
    return Settings(home=tmp_path / "home", apps_dir=tmp_path / "apps"), load_app_config(tmp_path / "apps" / "web.yaml")


def test_an_override_is_recorded_with_the_person_even_where_no_approval_is_needed(setup, monkeypatch) -> None:
    settings, app = setup
    monkeypatch.setenv("APPROVER", "Grace Hopper")
    _approve(settings, app, "staging", SHA, None, via="make deploy", override="payments down")
    record = find_approval(settings.home, app.key, "staging", SHA)
    assert record is not None and (record.approver, record.override) == ("Grace Hopper", "payments down")
    _approve(settings, app, "staging", "b" * 40, None, via="make deploy")  # auto, no override: nothing recorded
    assert find_approval(settings.home, app.key, "staging", "b" * 40) is None


def test_an_environment_without_overrides_refuses_one_naming_the_key_and_records_nothing(setup) -> None:
    settings, app = setup
    with pytest.raises(UsageError, match=r"environments.production.allow_override: false"):
        _approve(settings, app, "production", SHA, "Grace Hopper", via="make deploy", override="because")
    assert find_approval(settings.home, app.key, "production", SHA) is None
