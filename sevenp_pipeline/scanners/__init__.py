"""The supply-chain scanner library: SBOMs, advisory matching, lockfiles, VEX, licenses, secrets, SARIF and
signed provenance. No Dagster here: the scan assets in ``sevenp_pipeline/security`` call it."""
