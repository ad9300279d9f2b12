"""The local deploy target: podman containers blue-green behind the environment's own nginx front door,
with the environment's long-lived PostgreSQL and Redis. One module per concern: podman.py, nginx.py,
services.py, target.py (the flow)."""

from sevenp_pipeline.deploy.targets.local.target import LocalTarget

__all__ = ["LocalTarget"]
