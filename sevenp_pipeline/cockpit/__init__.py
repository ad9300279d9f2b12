"""The cockpit: each app's branches and environments at a glance, read live from the Dagster instance
(the runs the push sensor, a person or a re-execution started, and the deploys they recorded), served
as HTML pages and SVG badges beside the artifacts. Nothing here is kept by hand: every page is the
instance's state at the time it is asked for."""
