"""The supply-chain scan assets of a commit (SBOM, scans with their gates, provenance); the scanners they
call live in ``sevenp_pipeline/scanners``."""
