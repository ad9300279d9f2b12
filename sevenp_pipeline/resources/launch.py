"""Options a person sets when launching a run by hand: the spec's ``workflow_dispatch`` inputs."""

from __future__ import annotations

from typing import Literal

import dagster as dg
from pydantic import Field


class LaunchOptions(dg.ConfigurableResource):
    """Set in the launchpad under ``resources.launch_options.config``; pushes use the defaults."""

    environment: Literal["staging", "production"] = Field(
        default="staging", description="Target environment (used by the deploy stages)."
    )
    skip_tests: bool = Field(
        default=False,
        description="Skip test execution. The test gates then record a WARN result, never a pass.",
    )
    use_stage_cache: bool = Field(
        default=True,
        description="Restore a stage whose inputs are unchanged from the stage cache instead of running it. "
                    "false runs every stage again (its results still refresh the cache).",
    )
