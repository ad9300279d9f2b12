"""Supply-chain security scanning: SBOMs, advisory matching, VEX, licenses, secrets and SARIF."""
