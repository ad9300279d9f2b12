"""The demo and the local Dagster stack behind make demo, make dev, make rerun (not the pipeline)."""
