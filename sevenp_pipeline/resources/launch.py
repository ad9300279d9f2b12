"""Options a person sets when launching a run by hand: the spec's ``workflow_dispatch`` inputs."""

from __future__ import annotations

import dagster as dg
from pydantic import Field


class LaunchOptions(dg.ConfigurableResource):
    """Set in the launchpad under ``resources.launch_options.config``; pushes use the defaults."""

    environment: str = Field(
        default="",
        description="Where to deploy when the pipeline passes: empty = by branch (the app's environments.<env>."
                    "branches), 'none' = nowhere, or an environment name (it and the environments it comes after; "
                    "launching it is the approval a manual environment needs).",
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
