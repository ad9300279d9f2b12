"""sevenp_pipeline: the 7P delivery pipeline as Dagster assets, one partition per git commit."""
