"""Stage family 'monitoring': what a run did, per stage, read back from the Dagster instance."""
